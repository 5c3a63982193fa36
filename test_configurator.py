"""configurator.py: config files and --key=value overrides, with key and type checks."""

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
    ns = dict(a=1, b='x', c=None, _d=2, os=os, f=lambda: 0, e=[1])
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
