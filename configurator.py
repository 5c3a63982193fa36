"""
Config handling shared by train.py, sample.py and bench.py, in nanoGPT's spirit:
a script's defaults are plain module-level values, then

    python train.py configs/loop6.py --batch_size=8 --compile=False

runs each config file (plain Python assignments) in order and applies the
--key=value overrides last. Unlike nanoGPT's exec-based configurator, keys and
types are checked, so a typo fails at once instead of being silently ignored.
"""

import ast
import difflib


class ConfigError(Exception):
    """A mistake in a config file or on the command line; the message says how to fix it."""


def config_keys(namespace):
    """The config values among a module's globals: public names of plain types."""
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}


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
    for arg in argv:
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
