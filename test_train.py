"""
train.py end to end on CPU, offline: the loss falls, a resumed run is bit-identical to
an uninterrupted one, DDP over 2 processes matches 1 process, user mistakes end in one
line, a failed save keeps the previous checkpoint, a NaN loss stops training.

The runs that the other tests build on are subprocesses (torchrun for DDP); the short
ones (mistakes, failed save, NaN, GPT-2 start) run train.py in this process with runpy,
which saves the interpreter start-up. All use a tiny model on ~300 KB of Python source,
byte-tokenized, that the tests write themselves. conftest.py sets OMP_NUM_THREADS=1.
"""

import contextlib
import errno
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from unittest import mock

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')
N = 8  # iterations before the interruption; the full runs do 2N
TINY = ['--dataset=stdlib', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=4', '--dropout=0.1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=2', f'--lr_decay_iters={2 * N}', f'--eval_interval={N}', '--eval_iters=4',
        '--log_interval=1', '--device=cpu', '--dtype=float32', '--compile=False']
MODELS = {'gpt': ['--n_layer=2'], 'loop': ['--n_layer=1', '--n_loop=3']}
TIMING = ('dt_ms', 'tok_s', 'mfu', 'time_s')  # the only log fields allowed to differ between runs


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """data/stdlib: ~300 KB of the stdlib's Python source as bytes (uint16 ids < 256), as
    prepare.py writes it; and data/gpt2tok, the same tokens labelled as GPT-2's."""
    root = tmp_path_factory.mktemp('data')
    lib = sysconfig.get_paths()['stdlib']
    text = b''
    for name in sorted(os.listdir(lib)):
        if name.endswith('.py') and len(text) < 300_000:
            with open(os.path.join(lib, name), 'rb') as f:
                text += f.read()
    tokens = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    n = len(tokens) * 9 // 10
    for dataset, tokenizer, vocab in (('stdlib', 'bytes', 256), ('gpt2tok', 'gpt2', 50257)):
        os.makedirs(root / dataset)
        tokens[:n].tofile(root / dataset / 'train.bin')
        tokens[n:].tofile(root / dataset / 'val.bin')
        meta = dict(tokenizer=tokenizer, vocab_size=vocab, eot_token=None, dtype='uint16',
                    train_tokens=n, val_tokens=len(tokens) - n, source='test')
        (root / dataset / 'meta.json').write_text(json.dumps(meta))
    return root


def train(data_dir, out_dir, *args, nproc=1, cwd=None, env=None):
    launch = [sys.executable] if nproc == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    cmd = launch + [TRAIN, *TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def train_here(data_dir, out_dir, *args, env=None):
    """Run train.py in this process, its output captured: (exit code, stderr)."""
    argv = [TRAIN, *TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args]
    stderr = io.StringIO()
    try:
        with mock.patch.object(sys, 'argv', argv), mock.patch.dict(os.environ, env or {}), \
                torch.random.fork_rng(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(stderr):
            runpy.run_path(TRAIN, run_name='__main__')
        code = 0
    except SystemExit as e:
        code = e.code
    return code, stderr.getvalue()


def train_ok(*args, **kwargs):
    result = train(*args, **kwargs)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def read_log(out_dir, kind=None):
    """log.jsonl records (of one kind), without the wall-clock fields."""
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in TIMING}
            for r in records if kind is None or r['kind'] == kind]


@pytest.fixture(scope='module', params=list(MODELS))
def runs(request, data_dir, tmp_path_factory):
    """Per model: 2N iterations in one go ('full'); N iterations ('half'); and a copy of
    'half' resumed to 2N ('resumed'). 'half' itself is left as it was for other tests."""
    root = tmp_path_factory.mktemp(request.param)
    model = MODELS[request.param]
    train_ok(data_dir, root / 'full', *model, f'--max_iters={2 * N}')
    train_ok(data_dir, root / 'half', *model, f'--max_iters={N}')
    shutil.copytree(root / 'half', root / 'resumed')
    train_ok(data_dir, root / 'resumed', *model, f'--max_iters={2 * N}', '--init_from=resume')
    return dict(name=request.param, model=model, **{k: root / k for k in ('full', 'half', 'resumed')})


def model_state(out_dir, which='last'):
    return load_checkpoint(str(out_dir), which)['model']


# 1. the loss falls

def test_loss_falls(runs):
    evals = read_log(runs['full'], 'eval')
    assert [r['iter'] for r in evals] == [0, N, 2 * N]
    assert evals[0]['val_loss'] == pytest.approx(np.log(256), abs=0.3)  # uniform over bytes at init
    assert evals[-1]['val_loss'] < evals[0]['val_loss'] - 1.0
    losses = [r['loss'] for r in read_log(runs['full'], 'train')]
    assert len(losses) == 2 * N and np.mean(losses[-4:]) < np.mean(losses[:4]) - 1.0
    if runs['name'] == 'loop':  # the gates are logged and trained
        gates = [r['gates'] for r in read_log(runs['full'], 'train')]
        assert len(gates[0]) == 4 and gates[0] != gates[-1]


def test_checkpoints_and_log(runs):
    last = load_checkpoint(str(runs['full']), 'last')
    assert last['iter_num'] == 2 * N and last['model_type'] == runs['name']
    assert last['meta']['tokenizer'] == 'bytes' and last['config']['max_iters'] == 2 * N
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in last['model'])
    evals = read_log(runs['full'], 'eval')
    best = load_checkpoint(str(runs['full']), 'best')
    assert best['best_val_loss'] == min(r['val_loss'] for r in evals)
    assert last['tokens'] == 2 * N * 4 * 4 * 32 == evals[-1]['tokens']


# 2. exact resume

def test_resume_is_exact(runs):
    # every logged value (losses of each iteration, lr, gates, eval losses) is identical
    assert read_log(runs['resumed']) == read_log(runs['full'])
    full, resumed = (load_checkpoint(str(runs[k]), 'last') for k in ('full', 'resumed'))
    assert full['model'].keys() == resumed['model'].keys()
    for name, w in full['model'].items():
        assert torch.equal(w, resumed['model'][name]), name
    for a, b in zip(full['optimizer']['state'].values(), resumed['optimizer']['state'].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


# 3. DDP: 2 processes of 2 micro-steps each == 1 process of 4

def test_ddp_matches_one_process(runs, data_dir, tmp_path):
    train_ok(data_dir, tmp_path / 'ddp', *runs['model'], f'--max_iters={2 * N}', nproc=2, cwd=tmp_path)
    ddp, single = read_log(tmp_path / 'ddp'), read_log(runs['full'])
    assert [(r['kind'], r['iter']) for r in ddp] == [(r['kind'], r['iter']) for r in single]  # logged once
    for a, b in zip(ddp, single):
        for key in ('loss', 'train_loss', 'val_loss'):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a['iter'], key)
    # only rank 0 wrote, and only its three files
    assert sorted(os.listdir(tmp_path)) == ['ddp']
    assert sorted(os.listdir(tmp_path / 'ddp')) == ['best.pt', 'last.pt', 'log.jsonl']
    for name, w in model_state(tmp_path / 'ddp').items():
        torch.testing.assert_close(w, model_state(runs['full'])[name], rtol=1e-3, atol=1e-4)


# 4. user mistakes: exit 1 and one line on stderr

BAD_INPUTS = {
    'unknown key': (['--n_layr=2'], "unknown config key 'n_layr'"),
    'wrong type': (['--batch_size=four'], "config key 'batch_size' expects int but"),
    'missing data': (['--dataset=openwebtext'], "run `python prepare.py openwebtext --data_dir"),
    'resume without checkpoint': (['--init_from=resume'], 'no checkpoint at'),
    'indivisible accumulation': (['--gradient_accumulation_steps=3'], 'not divisible by the 2 processes'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input(case, data_dir, tmp_path):
    args, message = BAD_INPUTS[case]
    # the world size check happens before torchrun's process group exists, so its
    # WORLD_SIZE variable alone is enough to trigger it
    env = {'WORLD_SIZE': '2'} if case == 'indivisible accumulation' else None
    assert_one_line_error(train_here(data_dir, tmp_path / 'out', '--n_layer=1', *args, env=env), message)
    assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('args,message', [
    (['--n_layer=3'], 'was trained with n_layer='),
    (['--dataset=gpt2tok'], 'was trained on bytes tokens (vocab 256) but'),
], ids=['architecture', 'tokenizer'])
def test_mismatched_checkpoint(runs, args, message, data_dir, tmp_path):
    out = shutil.copytree(runs['half'], tmp_path / 'out')
    before = os.listdir(out), (out / 'log.jsonl').read_text()
    assert_one_line_error(train_here(data_dir, out, *runs['model'], '--init_from=resume', *args), message)
    assert (os.listdir(out), (out / 'log.jsonl').read_text()) == before


def assert_one_line_error(result, message):
    code, stderr = result
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), stderr
    assert message in lines[0], lines[0]


# 5. a save that fails half way leaves the previous last.pt loadable

def failing_save(obj, f, *args, **kwargs):
    f.write(b'the first bytes of a checkpoint')  # then the disk fills up
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_failed_save_keeps_last_checkpoint(runs, data_dir, tmp_path):
    out = shutil.copytree(runs['half'], tmp_path / 'out')
    before = model_state(out)
    with mock.patch.object(torch, 'save', failing_save):  # the torch.save inside save_checkpoint
        result = train_here(data_dir, out, *runs['model'], '--init_from=resume', f'--max_iters={2 * N}')
    assert_one_line_error(result, f"cannot write {out / 'last.pt'} (No space left on device)")
    ckpt = load_checkpoint(str(out), 'last')
    assert ckpt['iter_num'] == N
    assert all(torch.equal(w, before[k]) for k, w in ckpt['model'].items())
    # and training resumes from it as if nothing had happened (the log of the lost
    # iterations N .. 2N-1 is dropped, not duplicated)
    assert train_here(data_dir, out, *runs['model'], '--init_from=resume', f'--max_iters={2 * N}')[0] == 0
    assert read_log(out) == read_log(runs['full'])


# a NaN loss stops training; the last good checkpoint stays

def test_nan_loss_stops_training(runs, data_dir, tmp_path):
    out = shutil.copytree(runs['half'], tmp_path / 'out')
    before = model_state(out)
    # a learning rate of 1e30 sends the weights to ~1e30 in one step: inf, then NaN activations
    result = train_here(data_dir, out, *runs['model'], '--init_from=resume', f'--max_iters={2 * N}',
                        '--learning_rate=1e30', '--min_lr=1e30')
    assert_one_line_error(result, f"{out / 'last.pt'} (iter {N}) is the last good checkpoint")
    ckpt = load_checkpoint(str(out), 'last')
    assert ckpt['iter_num'] == N
    assert all(torch.equal(w, before[k]) for k, w in ckpt['model'].items())


# GPT-2 weights as the start (a local save_pretrained directory: no network needed)

def test_init_from_pretrained(data_dir, tmp_path):
    transformers = pytest.importorskip('transformers')
    hf_config = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=1, n_head=2)  # vocab 50257
    transformers.GPT2LMHeadModel(hf_config).save_pretrained(tmp_path / 'hf')
    args = ['--dataset=gpt2tok', f'--init_from={tmp_path / "hf"}', '--eval_interval=2', '--eval_iters=1']
    code, stderr = train_here(data_dir, tmp_path / 'out', *args, '--max_iters=2')
    assert code == 0, stderr
    ckpt = load_checkpoint(str(tmp_path / 'out'), 'last')
    assert ckpt['model_type'] == 'gpt' and ckpt['iter_num'] == 2
    assert {k: ckpt['model_args'][k] for k in ('vocab_size', 'n_layer', 'n_embd', 'block_size')} == \
        dict(vocab_size=50257, n_layer=1, n_embd=32, block_size=32)  # block_size cropped to the config's
    # the architecture comes from the weights, so the same config resumes
    resume = [a for a in args if not a.startswith('--init_from')] + ['--init_from=resume', '--max_iters=4']
    code, stderr = train_here(data_dir, tmp_path / 'out', *resume)
    assert code == 0, stderr
    assert_one_line_error(train_here(data_dir, tmp_path / 'out2', *args, '--n_loop=2'), 'loads a plain GPT-2')
