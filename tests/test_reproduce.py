"""Provenance in every results.json (experiments/common.py), and experiments/reproduce.py: a
recorded run trained again from its record matches it bit for bit, and a difference fails."""

import json
import os
import shlex
import subprocess

import numpy as np
import pytest

from configurator import ConfigError, config_keys
from conftest import write_dataset
from experiments import reproduce, runs
from experiments.common import RunError, command_line, provenance

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root


def git(root, *args):
    return subprocess.run(['git', '-C', str(root), '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_provenance_reads_the_commit_and_the_dirty_flag(tmp_path):
    (tmp_path / 'a.py').write_text('x = 1\n')
    assert provenance('cmd', 1, root=str(tmp_path))['commit'] is None  # not a checkout: no commit, no flag
    assert provenance('cmd', 1, root=str(tmp_path))['dirty'] is None
    git(tmp_path, 'init', '-q')
    git(tmp_path, 'add', 'a.py')
    git(tmp_path, 'commit', '-q', '-m', 'one')
    p = provenance('python -m experiments.grid --quick', 3, root=str(tmp_path))
    assert p['commit'] == git(tmp_path, 'rev-parse', 'HEAD') and len(p['commit']) == 40
    assert p['dirty'] is False and p['threads'] == 3 and p['command'] == 'python -m experiments.grid --quick'
    assert set(p) == {'commit', 'dirty', 'torch', 'python', 'device', 'threads', 'command'}
    (tmp_path / 'new.py').write_text('')  # untracked: not counted
    assert provenance('cmd', 1, root=str(tmp_path))['dirty'] is False
    (tmp_path / 'a.py').write_text('x = 2\n')  # a tracked file changed
    assert provenance('cmd', 1, root=str(tmp_path))['dirty'] is True
    git(tmp_path, 'commit', '-q', '-am', 'two')
    p2 = provenance('cmd', 1, root=str(tmp_path))
    assert p2['dirty'] is False and p2['commit'] not in (None, p['commit'])


def test_the_command_recorded_is_the_argv():
    argv = ['--quick', '--out_dir=a dir/x', "--train_args=--device=cuda --start='def '", '--n_seeds=1']
    words = shlex.split(command_line('experiments.grid', argv))
    assert words[:3] == ['python', '-m', 'experiments.grid'] and words[3:] == argv


TINY = dict(loop_counts='1', pairs='', ablate_gates='', prelude_coda='', n_seeds=1, n_embd=16, n_head=2,
            block_size=16, batch_size=4, max_iters=6, eval_interval=3, eval_iters=2, eval_tokens=512,
            warmup_iters=1, jobs=1, threads=1, dataset='tiny')


def test_a_recorded_run_reproduces_bit_for_bit(tmp_path, capsys, monkeypatch):
    """A one-run grid recorded with provenance, then trained again from its results.json alone:
    every logged val loss and the final losses equal; a changed record fails with one line."""
    monkeypatch.setattr(runs, 'plot_all', lambda *args: None)  # the plots take seconds and are not tested here
    with open(os.path.join(HERE, 'model.py'), 'rb') as f:
        write_dataset(tmp_path, np.frombuffer(f.read(), dtype=np.uint8))
    cfg = {**config_keys(vars(runs)), **TINY, 'data_dir': str(tmp_path), 'out_dir': str(tmp_path / 'study')}
    runs.run_grid(cfg)
    record = tmp_path / 'study' / 'results.json'
    rec = json.loads(record.read_text())
    assert rec['provenance']['threads'] == 1 and rec['provenance']['torch']
    c = {**config_keys(vars(reproduce)), 'record': str(record), 'out_dir': str(tmp_path / 'again')}
    reproduce.main(c)  # the cheapest run: the only one, gpt1, seed 1337
    out = capsys.readouterr().out
    assert 'gpt1 (1⊗1) seed 1337' in out and 'made with this commit, torch, Python, device and threads' in out
    assert 'largest difference: bit for bit (tolerance 0)' in out
    assert out.count('val loss at iter') == 3  # iterations 0, 3, 6

    # a difference in the last digits fails, with one line; within a stated tolerance it passes
    res = rec['results']['gpt1'][0]
    changed = json.loads(json.dumps(res))
    changed['curve']['val_loss'][1] += 1e-6
    rows = reproduce.differences(res, changed)
    assert [r[0] for r in rows] == ['val loss at iter 0', 'val loss at iter 3', 'val loss at iter 6',
                                    'final train loss', 'final val loss']
    with pytest.raises(RunError, match=r'gpt1 seed 1337 differs from r.json by up to 1e-06, more than the '
                                       r'tolerance 0\.$'):
        reproduce.verdict(rows, 0.0, 'gpt1 seed 1337', 'r.json')
    reproduce.verdict(rows, 1e-5, 'gpt1 seed 1337', 'r.json')


def test_bad_records_are_one_line(tmp_path):
    c = config_keys(vars(reproduce))
    with pytest.raises(ConfigError, match='cannot be read'):
        reproduce.main({**c, 'record': str(tmp_path / 'none.json')})
    (tmp_path / 'r.json').write_text(json.dumps(dict(info={}, runs={})))  # an inference study's
    with pytest.raises(ConfigError, match="has no config, runs and results"):
        reproduce.main({**c, 'record': str(tmp_path / 'r.json')})
