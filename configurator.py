"""
Config handling shared by train.py, sample.py, eval.py, tools/ and experiments/,
in nanoGPT's spirit: a script's defaults are plain module-level values in its config block
(between two `# ----` rules), then

    python train.py configs/loop6.py --batch_size=8 --compile=False

runs each config file (plain Python assignments) in order and applies the
--key=value overrides last; --key value (argparse's habit) works too. Unlike nanoGPT's
exec-based configurator, keys and types are checked, so a typo fails at once instead of
being silently ignored. --help (or -h) prints the script's docstring and its config block.
"""

import ast
import difflib
import os
import sys


class ConfigError(Exception):
    """A mistake in a config file or on the command line; the message says how to fix it."""


def config_keys(namespace):
    """The config values among a module's globals: public names of plain types. UPPER_CASE
    names are the script's constants (a path, say), not settings."""
    return {k: v for k, v in namespace.items() if not k.startswith('_') and not k.isupper()
            and isinstance(v, (int, float, bool, str, type(None)))}


def answer_help(script, argv, keys_from=None):
    """With --help or -h anywhere in argv, print the usage of `script` (a path: its docstring)
    and its config block, every key with its default and comment, grouped as there; then exit
    0. Both are read from the source, not the running module, so a script calls this before
    its config block, whose defaults may probe the GPU. keys_from: the file whose config block
    the script uses, when it is another's (a study that runs experiments/grid.py's grid)."""
    if '--help' not in argv and '-h' not in argv:
        return
    with open(script) as f:
        source = f.read()
    with open(keys_from or script) as f:
        lines = f.read().splitlines()
    first, last = [i for i, line in enumerate(lines) if line.startswith('# ---')][:2]
    name = os.path.basename(script)
    if os.path.exists(os.path.join(os.path.dirname(os.path.abspath(script)), '__init__.py')):  # run with -m
        name = f"-m {os.path.basename(os.path.dirname(os.path.abspath(script)))}.{name[:-3]}"
    print(ast.get_docstring(ast.parse(source)).strip())
    print(f"\nConfig keys and their defaults; set them in config files (python {name} FILE.py ...) "
          f"or with --key=value, the later winning:\n")
    print('\n'.join(lines[first + 1:last]))
    sys.exit(0)


def join_values(argv):
    """['--key', 'value'] -> ['--key=value'], where the next word does not start with '--';
    every other word as it is."""
    out = []
    for arg in argv:
        if out and out[-1].startswith('--') and '=' not in out[-1] and not arg.startswith('--'):
            out[-1] += '=' + arg
        else:
            out.append(arg)
    return out


def configure(defaults, argv, derived=None):
    """Return a copy of `defaults` updated by the config files and --key=value in argv.

    derived(config) -> dict gives the defaults that depend on other settings, e.g. dtype
    on device: they are recomputed from the chosen settings, and a file or --key=value
    that sets them still wins."""
    config = _apply(defaults, argv)
    if derived is not None:
        config = _apply({**defaults, **derived(config)}, argv)
    return config


def _apply(defaults, argv):
    config = dict(defaults)
    for arg in join_values(argv):
        if arg.startswith('--'):
            key, sep, text = arg[2:].partition('=')
            if not sep:
                raise ConfigError(f"'{arg}' has no value: write it as --{key}=VALUE.")
            # a string setting takes the text as it is: --start=42 is the prompt '42'
            value = text if isinstance(config.get(key), str) else _parse(text)
            _set(config, key, value, source=arg)
        else:
            for key, value in _read_file(arg).items():
                _set(config, key, value, source=arg)
    return config


def _read_file(path):
    try:
        with open(path) as f:
            code = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path} ({e.strerror}): check the path.") from None
    namespace = {}
    exec(compile(code, path, 'exec'), namespace)
    return config_keys(namespace)


def _parse(text):
    """'3' -> 3, '1e-3' -> 0.001, 'True' -> True, 'None' -> None, anything else stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _set(config, key, value, source):
    if key not in config:
        close = difflib.get_close_matches(key, config, n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ''
        raise ConfigError(f"unknown config key '{key}' in {source}{hint}: "
                          f"use one of the keys the script defines.")
    config[key] = _check_type(key, config[key], value, source)


def _check_type(key, default, value, source):
    if default is None or value is None:  # optional settings such as top_k
        return value
    if type(default) is float and type(value) is int:
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"config key '{key}' expects {type(default).__name__} but {source} gives "
                          f"{type(value).__name__} {value!r}: give a value of type {type(default).__name__}.")
    return value
