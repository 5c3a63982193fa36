"""configurator.py: config files and --key=value overrides, with key and type checks; --help."""

import ast
import os
import runpy
import sys

import pytest

from configurator import ConfigError, config_keys, configure

DEFAULTS = dict(learning_rate=6e-4, max_iters=100, compile=True, dataset='openwebtext', top_k=None)


def test_files_then_overrides_in_order(tmp_path):
    a = tmp_path / 'a.py'
    a.write_text("import math\nmax_iters = 10\nlearning_rate = 1e-3\n_private = 5\n")
    b = tmp_path / 'b.py'
    b.write_text("max_iters = 20\n")
    config = configure(DEFAULTS, [str(a), str(b), '--dataset=stdlib', '--compile=False', '--top_k=5'])
    assert config == dict(learning_rate=1e-3, max_iters=20, compile=False, dataset='stdlib', top_k=5)
    assert DEFAULTS['max_iters'] == 100  # defaults untouched


def test_int_is_accepted_for_float():
    config = configure(DEFAULTS, ['--learning_rate=1'])
    assert config['learning_rate'] == 1.0 and type(config['learning_rate']) is float


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'learing_rate'.*did you mean learning_rate"):
        configure(DEFAULTS, ['--learing_rate=1e-3'])


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / 'c.py'
    f.write_text("max_iter = 3\n")
    with pytest.raises(ConfigError, match=r"'max_iter' in .*c.py.*max_iters"):
        configure(DEFAULTS, [str(f)])


@pytest.mark.parametrize('arg,expected,given', [('--max_iters=1.5', 'int', 'float'),
                                                 ('--compile=1', 'bool', 'int'),
                                                 ('--max_iters=ten', 'int', 'str')])
def test_wrong_type(arg, expected, given):
    with pytest.raises(ConfigError, match=f"expects {expected} but .* gives {given}"):
        configure(DEFAULTS, [arg])


def test_missing_value_and_missing_file():
    with pytest.raises(ConfigError, match='--max_iters=VALUE'):
        configure(DEFAULTS, ['--max_iters'])
    with pytest.raises(ConfigError, match='cannot read config file'):
        configure(DEFAULTS, ['no/such/config.py'])


def test_config_keys_keeps_plain_values_only():
    import os
    ns = dict(a=1, b='x', c=None, _d=2, os=os, f=lambda: 0, e=[1], HERE='/repo', MAX_LEN=3)
    assert config_keys(ns) == dict(a=1, b='x', c=None)


def test_string_settings_take_the_text_as_is():
    config = configure(DEFAULTS, ['--dataset=42', '--max_iters=7'])
    assert config['dataset'] == '42' and config['max_iters'] == 7


def test_derived_defaults_follow_the_chosen_setting():
    defaults = dict(device='cuda', dtype='bfloat16')
    follow = lambda c: {'dtype': 'float32' if c['device'] == 'cpu' else 'bfloat16'}  # noqa: E731
    assert configure(defaults, ['--device=cpu'], derived=follow)['dtype'] == 'float32'
    # set explicitly, in any order, it wins over the derived default
    assert configure(defaults, ['--dtype=float16', '--device=cpu'], derived=follow)['dtype'] == 'float16'
    assert configure(defaults, [], derived=follow)['dtype'] == 'bfloat16'


def test_the_space_form_takes_the_next_word_as_the_value(tmp_path):
    f = tmp_path / 'a.py'
    f.write_text("max_iters = 10\n")
    config = configure(DEFAULTS, ['--max_iters', '5', str(f), '--dataset', 'stdlib', '--top_k', '-1'])
    assert config == dict(DEFAULTS, max_iters=10, dataset='stdlib', top_k=-1)  # the file came later
    with pytest.raises(ConfigError, match=r"^'--compile' has no value: write it as --compile=VALUE\.$"):
        configure(DEFAULTS, ['--compile', '--max_iters=3'])  # a word starting with -- is never a value
    from tools import bench  # which reads the model keys of its config files: a value is not a file
    assert bench.get_config(['--n_layer', '3', '--device', 'cpu'])[0]['n_layer'] == 3


# every script answers --help (or -h) from its docstring and config block, before any device
# or data work: (its command line, lines it prints: a few of its keys with their defaults, a group heading)
HELP = {
    'train.py': (['configs/tiny.py', '-h'], ['eval_interval = 2000', "init_from = 'scratch'", 'bptt_loops = 0',
                                            '# AdamW optimizer', 'device = default_device()']),
    'sample.py': (['--help'], ['max_new_tokens = 500', "ckpt = 'best'", 'top_p = None']),
    'tools/bench.py': (['--n_layer=3', '--help'], ['rounds = 2', "loop_counts = ''", '# inference benchmark']),
    'tools/gpu_check.py': (['--help'], ['steps = 30', "config = 'configs/loop6.py'", 'cache_tokens = 64']),
    'experiments/grid.py': (['--quick', '-h'], ["pairs = '1x2,2x2'", 'n_seeds = 2', '# the grid']),
    'experiments/hops.py': (['--help'], ["pairs = '1x2,2x2'", "dataset = 'stdlib'"]),
    'experiments/budget.py': (['--help'], ['n_seeds = 2', "budgets = ''"]),
    'experiments/depth.py': (['--help'], ["recurrent = ''", 'loop_norm = False']),
    'experiments/ablations.py': (['-h'], ["loop_counts = ''", 'ablations = False']),
    'experiments/exit.py': (['--studies=hops', '-h'], ["studies = 'stdlib,hops,deep,deep-hops'", 'batch_size = 64']),
    'experiments/kv_budget.py': (['--help'], ["budgets = '1,2,3'", 'exit_threshold = 0.01']),
    'eval.py': (['--tasks=hellaswag', '--help'], ["tasks = ''", "n_loop = ''", 'rolling_stride = 0']),
}


@pytest.mark.parametrize('script', HELP)
def test_help_prints_the_usage_and_the_config_keys_then_exits_0(script, monkeypatch, capsys):
    import numpy as np
    import torch

    def slow(*args, **kwargs):
        raise AssertionError('--help must be answered before devices are probed or data read')
    for module, name in ((torch.cuda, 'is_available'), (torch.backends.mps, 'is_available'), (np, 'memmap'),
                         (np, 'fromfile'), (torch, 'load')):
        monkeypatch.setattr(module, name, slow)
    argv, expected = HELP[script]
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), script)
    monkeypatch.setattr(sys, 'argv', [path, *argv])
    with pytest.raises(SystemExit) as exit:
        runpy.run_path(path, run_name='__main__')
    out, err = capsys.readouterr()
    assert exit.value.code == 0 and err == ''
    with open(path) as f:
        usage = ast.get_docstring(ast.parse(f.read()))
    assert out.startswith(usage + '\n')  # the whole docstring, then the keys
    lines = out.splitlines()
    for line in expected:
        assert any(printed.startswith(line + ' ') or printed == line for printed in lines), line
