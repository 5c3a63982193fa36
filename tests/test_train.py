"""
train.py end to end on CPU, offline: the loss falls, a resumed run is bit-identical to
an uninterrupted one, DDP over 2 processes matches 1 process, a problem on one of two
localhost torchrun "nodes" stops both and both say so, user mistakes end in one
line, a failed save keeps the previous checkpoint, a NaN loss stops training; and, seen
from inside a run, each forward gets the iteration's loop count, the lr follows its
schedule and the first step's gradients are those of the mean loss of the micro-batches.

The runs that the other tests build on are subprocesses (torchrun for DDP); the short
ones (the recorded run, mistakes, failed save, NaN, GPT-2 start) run train.py in this
process with runpy, which saves the interpreter start-up and lets a test look inside. All use a tiny model on ~300 KB of Python source,
byte-tokenized, that the tests write themselves. conftest.py sets OMP_NUM_THREADS=1.
"""

import contextlib
import errno
import io
import json
import os
import re
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from unittest import mock

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import prepare
from checkpoint import load_checkpoint, model_from_checkpoint
from device import peak_flops_of
from model import LoopGPT

TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')
N = 8  # iterations before the interruption; the full runs do 2N
TINY = ['--dataset=stdlib', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=4',
        '--gradient_accumulation_steps=4', '--dropout=0.1', '--learning_rate=1e-2', '--min_lr=1e-3',
        '--warmup_iters=2', f'--lr_decay_iters={2 * N}', f'--eval_interval={N}', '--eval_iters=4',
        '--log_interval=1', '--device=cpu', '--dtype=float32', '--compile=False']
MODELS = {'gpt': ['--n_layer=2'], 'loop': ['--n_layer=1', '--n_loop=3'],
          # recurrent-depth training: loop counts drawn per iteration, truncated backprop, x_0 injected,
          # the state normalised after every iteration
          'sampled': ['--n_layer=1', '--n_loop=3', '--loop_sampling=poisson', '--bptt_loops=2', '--input_injection=True',
                      '--loop_norm=True']}
TIMING = ('dt_ms', 'tok_s', 'tflops', 'mfu', 'time_s')  # the only log fields allowed to differ between runs


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
    # data/hops: 5 nodes, 3 queries of 1 or 2 hops per example of 5 + 3 * 3 = 14 tokens
    prepare.run(['hops', '--nodes', '5', '--hops', '2', '--queries', '3', '--train_examples', '2000',
                 '--val_examples', '200', '--data_dir', str(root)])
    return root


def train(data_dir, out_dir, *args, nproc=1, cwd=None, env=None):
    launch = [sys.executable] if nproc == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
    cmd = launch + [TRAIN, *TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})


def train_here(data_dir, out_dir, *args, env=None, stdout=None):
    """Run train.py in this process, its output captured (stdout into the given StringIO):
    (exit code, stderr)."""
    argv = [TRAIN, *TINY, f'--data_dir={data_dir}', f'--out_dir={out_dir}', *args]
    stderr = io.StringIO()
    try:
        with mock.patch.object(sys, 'argv', argv), mock.patch.dict(os.environ, env or {}), \
                torch.random.fork_rng(), contextlib.redirect_stdout(stdout or io.StringIO()), \
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
    if runs['name'] != 'gpt':  # the gates are logged and trained
        gates = [r['gates'] for r in read_log(runs['full'], 'train')]
        assert len(gates[0]) == 4 and gates[0] != gates[-1]


def test_checkpoints_and_log(runs):
    last = load_checkpoint(str(runs['full']), 'last')
    assert last['iter_num'] == 2 * N and last['model_type'] == ('gpt' if runs['name'] == 'gpt' else 'loop')
    assert last['meta']['tokenizer'] == 'bytes' and last['config']['max_iters'] == 2 * N
    assert not any(k.startswith(('_orig_mod.', 'module.')) for k in last['model'])
    evals = read_log(runs['full'], 'eval')
    best = load_checkpoint(str(runs['full']), 'best')
    assert best['best_val_loss'] == min(r['val_loss'] for r in evals)
    assert last['tokens'] == 2 * N * 4 * 4 * 32 == evals[-1]['tokens']


def test_loop_counts_and_flops_in_the_log(runs):
    """Each iteration's loop count: n_loop, or drawn from (seed, iteration) alone; the FLOPs
    in the log count the iterations actually run."""
    last = load_checkpoint(str(runs['full']), 'last')
    model = model_from_checkpoint(last)
    train_log = read_log(runs['full'], 'train')
    if runs['name'] == 'sampled':
        expected = [model.draw_n_loop(np.random.default_rng([1337, 2, it])) for it in range(2 * N)]
        assert len(set(expected)) > 1  # sampling is really on
    else:
        expected = [model.n_loop] * (2 * N)
    assert [r.get('n_loop', 1) for r in train_log] == expected
    tokens_per_iter = 4 * 4 * 32
    flops = sum(model.flops_per_token(n_loop=n) for n in expected) * tokens_per_iter
    assert last['flops'] == read_log(runs['full'], 'eval')[-1]['flops'] == flops
    with open(runs['full'] / 'log.jsonl') as f:
        raw = [json.loads(line) for line in f if '"train"' in line]
    assert all(r['mfu'] is None and r['tflops'] > 0 for r in raw)  # a CPU has no known peak: no MFU


# inside a training run: what each forward is given, the lr, the gradients, the speed it logs;
# grad_clip, peak_flops and eval_only

@pytest.fixture(scope='module')
def recorded_run(data_dir, tmp_path_factory):
    """train.py in this process on the 'sampled' LoopGPT for 4 iterations, without dropout
    or clipping, recording (model.training, n_loop) of every forward call and, at every
    optimizer step, the lr of each param group; at the first step also each parameter
    (as initialised) and its gradient, in param-group order."""
    out = tmp_path_factory.mktemp('recorded')
    calls, lrs, first_step = [], [], []
    forward = LoopGPT.forward

    def recording_forward(self, *args, **kwargs):
        calls.append((self.training, kwargs.get('n_loop')))
        return forward(self, *args, **kwargs)

    def before_step(optimizer, args, kwargs):
        lrs.append([group['lr'] for group in optimizer.param_groups])
        if not first_step:
            first_step.extend((p.detach().clone(), p.grad.clone())
                              for group in optimizer.param_groups for p in group['params'])

    hook = register_optimizer_step_pre_hook(before_step)
    try:
        with mock.patch.object(LoopGPT, 'forward', recording_forward):
            code, stderr = train_here(data_dir, out, *MODELS['sampled'], '--max_iters=4', '--dropout=0.0',
                                      '--grad_clip=0', '--warmup_iters=1', '--lr_decay_iters=3',
                                      '--eval_interval=4', '--eval_iters=1', '--peak_flops=1e12')
    finally:
        hook.remove()
    assert code == 0, stderr
    return dict(out=out, calls=calls, lrs=lrs, first_step=first_step)


def recorded_run_model(recorded_run):
    return model_from_checkpoint(load_checkpoint(str(recorded_run['out']), 'last'))


def test_each_forward_gets_the_drawn_loop_count(recorded_run):
    model = recorded_run_model(recorded_run)
    draws = [model.draw_n_loop(np.random.default_rng([1337, 2, it])) for it in range(4)]
    assert len(set(draws)) > 1
    evaluation = [(False, None)] * 2  # eval_iters=1 batch of each split, at the trained n_loop
    micro_steps = [(True, n) for n in draws for _ in range(4)]  # 4 micro-batches an iteration
    assert recorded_run['calls'] == evaluation + micro_steps + evaluation


def test_lr_schedule(recorded_run):
    """warmup_iters=1, lr_decay_iters=3: lr * 1/2 (warmup), lr (the cosine's start), half-way
    down the cosine to min_lr, then min_lr; logged and set in every param group."""
    lr, min_lr = 1e-2, 1e-3
    expected = [lr / 2, lr, min_lr + (lr - min_lr) / 2, min_lr]
    logged = [r['lr'] for r in read_log(recorded_run['out'], 'train')]
    assert logged == pytest.approx(expected, rel=1e-12, abs=0)
    assert recorded_run['lrs'] == [[x, x] for x in logged]  # both param groups (decay and no decay)


def test_first_gradient_is_that_of_the_mean_loss_over_the_micro_batches(recorded_run, data_dir):
    """With 4 micro-batches of 4 sequences, the first step's gradients are those of the mean
    loss over the 16 sequences, as autograd gives it here for the same weights and batches."""
    model = recorded_run_model(recorded_run).train()
    groups = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu').param_groups
    params = [p for group in groups for p in group['params']]
    assert [p.shape for p in params] == [w.shape for w, _ in recorded_run['first_step']]
    with torch.no_grad():
        for p, (w, _) in zip(params, recorded_run['first_step']):
            p.copy_(w)
    train_tokens = np.fromfile(data_dir / 'stdlib' / 'train.bin', dtype=np.uint16).astype(np.int64)
    n_loop = model.draw_n_loop(np.random.default_rng([1337, 2, 0]))
    losses = []
    for k in range(4):  # train.py's get_batch('train', train_rng(0, k))
        ix = np.random.default_rng([1337, 0, 0, k]).integers(len(train_tokens) - 32, size=4)
        x, y = (torch.from_numpy(np.stack([train_tokens[i + s:i + s + 32] for i in ix])) for s in (0, 1))
        losses.append(model(x, y, n_loop=n_loop)[1])
    loss = torch.stack(losses).mean()
    loss.backward()
    for p, (_, grad) in zip(params, recorded_run['first_step']):
        torch.testing.assert_close(grad, p.grad, atol=1e-7, rtol=1e-5)
    assert read_log(recorded_run['out'], 'train')[0]['loss'] == pytest.approx(loss.item(), rel=1e-6)


def test_logged_speed_is_the_flops_of_the_tokens_in_the_step_time(recorded_run):
    """tok/s, TFLOP/s and MFU come from the step time, the tokens of an iteration and
    flops_per_token at the loop count run (peak_flops=1e12 given, so MFU = TFLOP/s)."""
    model = recorded_run_model(recorded_run)
    with open(recorded_run['out'] / 'log.jsonl') as f:
        records = [r for r in map(json.loads, f) if r['kind'] == 'train']
    tokens = 4 * 4 * 32
    for r in records:
        seconds = r['dt_ms'] / 1000
        assert r['tok_s'] == pytest.approx(tokens / seconds)
        assert r['tflops'] == pytest.approx(model.flops_per_token(n_loop=r['n_loop']) * tokens / seconds / 1e12)
        assert r['mfu'] == pytest.approx(r['tflops'])


def test_gradients_are_clipped_to_grad_clip(data_dir, tmp_path):
    norms = []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad.flatten() for group in optimizer.param_groups for p in group['params']]
        norms.append(torch.cat(grads).norm().item())

    hook = register_optimizer_step_pre_hook(before_step)
    try:
        code, stderr = train_here(data_dir, tmp_path / 'out', '--n_layer=1', '--gradient_accumulation_steps=1',
                                  '--max_iters=1', '--eval_iters=1', '--grad_clip=1e-3')
    finally:
        hook.remove()
    assert code == 0, stderr
    assert norms == [pytest.approx(1e-3, rel=1e-5)]  # a fresh model's gradient norm is far above it


def test_peak_flops_are_looked_up_by_gpu_name():
    """MFU divides by the data sheet's dense bf16/fp16 peak of the GPU torch names; the first
    match in the table wins, so 'H100 PCIe' must not be read as an H100 (SXM)."""
    peaks = {'NVIDIA H100 PCIe': 756e12, 'NVIDIA H100 80GB HBM3': 989e12, 'NVIDIA A100-SXM4-80GB': 312e12,
             'NVIDIA L40S': 362e12, 'NVIDIA L4': 121e12, 'Tesla T4': 0.0}
    for name, peak in peaks.items():
        with mock.patch.object(torch.cuda, 'is_available', return_value=True), \
                mock.patch.object(torch.cuda, 'get_device_name', return_value=name):
            assert (peak_flops_of('cuda', 'bfloat16'), peak_flops_of('cuda', 'float32')) == (peak, 0.0), name
    assert peak_flops_of('cpu', 'bfloat16') == 0.0


def test_eval_only_evaluates_the_checkpoint_and_writes_nothing(recorded_run, data_dir, tmp_path):
    out = shutil.copytree(recorded_run['out'], tmp_path / 'out')
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    stdout = io.StringIO()
    code, stderr = train_here(data_dir, out, *MODELS['sampled'], '--init_from=resume', '--eval_only=True',
                              '--max_iters=4', '--eval_iters=1', stdout=stdout)
    assert code == 0, stderr
    (record,) = [r for r in read_log(out, 'eval') if r['iter'] == 4]  # the run's own last evaluation
    assert f"eval at iter 4: train loss {record['train_loss']:.4f}, val loss {record['val_loss']:.4f}\n" \
        in stdout.getvalue()
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


# 2. exact resume

def test_resume_is_exact(runs):
    # every logged value (losses of each iteration, lr, gates, eval losses) is identical
    assert read_log(runs['resumed']) == read_log(runs['full'])
    full, resumed = (load_checkpoint(str(runs[k]), 'last') for k in ('full', 'resumed'))
    assert full['model'].keys() == resumed['model'].keys()
    for name, w in full['model'].items():
        assert torch.equal(w, resumed['model'][name]), name
    # and so is AdamW's state: every trained parameter's moments, after 2N steps
    full_opt, resumed_opt = full['optimizer'], resumed['optimizer']
    assert full_opt['param_groups'] == resumed_opt['param_groups']
    n_params = sum(len(g['params']) for g in full_opt['param_groups'])
    assert full_opt['state'].keys() == resumed_opt['state'].keys() == set(range(n_params))
    for i, a in full_opt['state'].items():
        b = resumed_opt['state'][i]
        assert a.keys() == b.keys() == {'step', 'exp_avg', 'exp_avg_sq'} and a['step'] == 2 * N
        assert all(torch.equal(a[k], b[k]) for k in a), i


def test_backprop_through_every_loop_is_the_default(runs, data_dir, tmp_path):
    """bptt_loops = n_loop truncates nothing: the same losses and weights, bit for bit."""
    if runs['name'] != 'loop':
        pytest.skip('one LoopGPT is enough')
    train_ok(data_dir, tmp_path / 'k3', *runs['model'], f'--max_iters={2 * N}', '--bptt_loops=3',
             '--loop_sampling=fixed')
    assert read_log(tmp_path / 'k3') == read_log(runs['full'])
    for name, w in model_state(runs['full']).items():
        assert torch.equal(w, model_state(tmp_path / 'k3')[name]), name


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
    # close, not equal: 2 processes sum the 4 micro-batch gradients as (g0 + g1) + (g2 + g3), one
    # as ((g0 + g1) + g2) + g3; float rounding (1e-7) that AdamW's step grows over the run
    for name, w in model_state(tmp_path / 'ddp').items():
        torch.testing.assert_close(w, model_state(runs['full'])[name], rtol=1e-3, atol=1e-4)


LEAVE_LAST = """
import os, runpy, sys, time
import torch.distributed as dist
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # argv: this script, train.py, its arguments
import checkpoint

save, destroy, log = checkpoint.save_checkpoint, dist.destroy_process_group, os.environ['EVENTS']

def event(line):
    with open(log, 'a') as f:
        f.write(line + '\\n')

def slow_save(obj, path):  # rank 0's final saves take a second longer
    time.sleep(obj['iter_num'] == 2)
    save(obj, path)
    event(f"saved {os.path.basename(path)} {obj['iter_num']}")

def leave():
    event(f"rank {os.environ['RANK']} leaves")
    destroy()

checkpoint.save_checkpoint, dist.destroy_process_group = slow_save, leave
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_ddp_processes_leave_after_the_final_save(data_dir, tmp_path):
    """Rank 1 tears down only once rank 0's final evaluation and save are done, however slow:
    train.py under torchrun (gloo), with its saves slowed and the events logged in order."""
    (tmp_path / 'leave_last.py').write_text(LEAVE_LAST)
    events = tmp_path / 'events'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                        str(tmp_path / 'leave_last.py'), TRAIN, *TINY, f'--data_dir={data_dir}',
                        f'--out_dir={tmp_path / "out"}', '--n_layer=1', '--n_loop=2', '--loop_sampling=poisson',
                        '--max_iters=2', '--eval_interval=2', '--eval_iters=1'],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'EVENTS': str(events)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lines = events.read_text().splitlines()
    saves = [i for i, line in enumerate(lines) if line.startswith('saved ')]
    assert 'saved last.pt 2' in lines and saves[-1] < lines.index('rank 1 leaves'), lines
    # loop counts drawn with backprop through all of them: rank 0 says once what bounds the memory
    assert r.stdout.count('bptt_loops=k bounds it') == 1, r.stdout


# a problem one rank meets (on one node of two, say): every node says which rank met it, and all stop at once

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_all(commands, timeout=120):
    """Start the commands (torchrun launches) together and wait for all, for at most `timeout`
    seconds in all: each one's exit code and output (stdout and stderr, torchrun's and its ranks'),
    and the seconds until all had ended."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd in commands]
    try:
        outputs = [p.communicate(timeout=max(timeout - (time.monotonic() - t0), 1))[0] for p in procs]
    finally:  # one still running (a hang) fails the test, once it is ended: SIGTERM, which torchrun
        for p in procs:  # passes on to its ranks (in sessions of their own), then SIGKILL
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [(p.returncode, out) for p, out in zip(procs, outputs)], time.monotonic() - t0


def two_nodes(data_dir, tmp_path, node_args):
    """train.py on two torchrun 'nodes' of one process each, on this machine: a c10d rendezvous on
    localhost, gloo between the two ranks; node k gets node_args[k] on top of TINY."""
    launch = [sys.executable, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1',
              '--rdzv_backend=c10d', f'--rdzv_endpoint=127.0.0.1:{free_port()}', f'--rdzv_id={tmp_path.name}']
    return run_all([launch + [TRAIN, *TINY, '--n_layer=1', '--max_iters=2', '--eval_interval=1', '--eval_iters=1',
                              f'--data_dir={data_dir}', *args] for args in node_args])


def error_lines(output):
    return [line for line in output.splitlines() if re.match(r'\[ranks? [0-9, -]+\] error: ', line)]


def test_a_problem_on_one_node_stops_both_nodes_at_once_and_both_say_so(data_dir, tmp_path):
    """The second node lacks the dataset: its rank says so, and so does the other node, which has
    built its model meanwhile; under NCCL it would wait in DDP's first collective for the rank that
    left until the timeout (10 minutes), and under gloo end with a traceback."""
    (tmp_path / 'empty').mkdir()
    nodes, seconds = two_nodes(data_dir, tmp_path, [
        [f'--out_dir={tmp_path / "a"}'], [f'--out_dir={tmp_path / "b"}', f'--data_dir={tmp_path / "empty"}']])
    missing = f"{tmp_path / 'empty' / 'stdlib'} is not prepared (no meta.json): run `python prepare.py stdlib"
    lines = [error_lines(output) for _, output in nodes]
    assert len(lines[0]) == 1 and lines[0] == lines[1], [output[-3000:] for _, output in nodes]
    assert re.fullmatch(r'\[rank [01]\] error: ', lines[0][0][:len('[rank 0] error: ')]) and missing in lines[0][0]
    for code, output in nodes:
        assert code != 0 and 'train.py", line' not in output, output[-3000:]  # no traceback of ours
    assert seconds < 60
    assert not os.path.exists(tmp_path / 'a' / 'log.jsonl')  # nothing started


def test_resume_on_two_nodes_needs_one_checkpoint_on_both(data_dir, tmp_path):
    """Every rank resumes from out_dir/last.pt, which only rank 0 writes: a node without it says what
    to do, and so does a node with an older copy."""
    common = ['--n_layer=1', '--eval_interval=1', '--eval_iters=1']
    assert train_here(data_dir, tmp_path / 'a', *common, '--max_iters=1')[0] == 0
    shutil.copytree(tmp_path / 'a', tmp_path / 'stale')
    assert train_here(data_dir, tmp_path / 'a', *common, '--max_iters=2', '--init_from=resume')[0] == 0
    for other, message in (('b', f"no checkpoint at {tmp_path / 'b' / 'last.pt'} on this node: every rank resumes "
                                 f"from it, and only rank 0 writes it; put out_dir on a filesystem all nodes share "
                                 f"or copy it to each node"),
                           ('stale', 'the ranks resumed from different checkpoints (rank 0 at iter ')):
        nodes, seconds = two_nodes(data_dir, tmp_path, [[f'--out_dir={tmp_path / "a"}', '--init_from=resume'],
                                                        [f'--out_dir={tmp_path / other}', '--init_from=resume']])
        lines = [error_lines(output) for _, output in nodes]
        assert len(lines[0]) == 1 and lines[0] == lines[1] and message in lines[0][0], lines
        assert all(code != 0 for code, _ in nodes) and seconds < 60
    # a stale copy: both ranks find the difference, and each says at which iteration it read
    assert re.search(r'^\[ranks 0-1\] error: the ranks resumed from different checkpoints \(rank [01] at iter [12], '
                     r'rank [01] at iter [12]\): the nodes hold different copies', lines[0][0])
    assert load_checkpoint(str(tmp_path / 'a'), 'last')['iter_num'] == 2  # nothing was written


def test_a_mistake_found_before_the_processes_connect_is_printed_once_per_node(data_dir, tmp_path):
    """Settings are read before torchrun's processes connect, alike by every rank of a node: its local
    rank 0 says what is wrong, naming its rank (rank 8: the second node of 8 GPUs each), the others
    exit without a word."""
    for local_rank, expected in ((0, ["[rank 8] error: unknown config key 'n_layr'"]), (3, [])):
        env = {'RANK': str(8 + local_rank), 'LOCAL_RANK': str(local_rank), 'WORLD_SIZE': '16'}
        code, stderr = train_here(data_dir, tmp_path / 'out', '--n_layr=2', env=env)
        lines = stderr.splitlines()
        assert code == 1 and len(lines) == len(expected), stderr
        assert all(line.startswith(start) for line, start in zip(lines, expected)), stderr


FULL_DISK = """
import errno, os, runpy, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # argv: this script, train.py, its arguments
import checkpoint

def full_disk(obj, path):
    raise OSError(errno.ENOSPC, 'No space left on device')

checkpoint.save_checkpoint = full_disk
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_ddp_a_failed_save_on_rank_0_stops_every_rank(data_dir, tmp_path):
    """Rank 0 alone evaluates and saves; when its save fails, rank 1, which has gone on to the next
    step, stops with it (agree() after each evaluation) and the error is printed once."""
    (tmp_path / 'full_disk.py').write_text(FULL_DISK)
    [(code, output)], seconds = run_all([[sys.executable, '-m', 'torch.distributed.run', '--standalone',
                                          '--nproc_per_node=2', str(tmp_path / 'full_disk.py'), TRAIN, *TINY,
                                          f'--data_dir={data_dir}', f'--out_dir={tmp_path / "out"}', '--n_layer=1',
                                          '--max_iters=2', '--eval_interval=2', '--eval_iters=1']])
    assert code != 0 and seconds < 60
    assert error_lines(output) == [f"[rank 0] error: cannot write {tmp_path / 'out' / 'last.pt'} (No space left on "
                                   f"device): free some disk space or set another out_dir (the previous checkpoint "
                                   f"is intact)."], output[-3000:]
    assert 'train.py", line' not in output, output[-3000:]


def test_compile_under_ddp_with_dropout_says_the_losses_depend_on_the_process_count(data_dir, tmp_path):
    """DDP in this process (a world of one, gloo), torch.compile standing in as the identity
    (inductor on a CPU takes minutes): rank 0 notes it once, and only when dropout is on; one
    process without DDP does not."""
    notes = {}
    for name, args in {'compiled': ['--compile=True'], 'no dropout': ['--compile=True', '--dropout=0.0'],
                       'eager': ['--compile=False'], 'no DDP': ['--compile=True']}.items():
        env = {'RANK': '0', 'LOCAL_RANK': '0', 'WORLD_SIZE': '1', 'LOCAL_WORLD_SIZE': '1',
               'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(free_port())} if name != 'no DDP' else None
        stdout = io.StringIO()
        try:
            with mock.patch.object(torch, 'compile', lambda model, **kwargs: model):
                code, stderr = train_here(data_dir, tmp_path / name, '--n_layer=1', '--max_iters=1', '--eval_iters=1',
                                          *args, env=env, stdout=stdout)
        finally:  # train.py leaves the process group only at its end
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        assert code == 0, stderr
        notes[name] = stdout.getvalue().count('note: under DDP, compile=True splits the compiled graph')
    assert notes == {'compiled': 1, 'no dropout': 0, 'eager': 0, 'no DDP': 0}


# a dataset of examples with answers: the loss and the accuracy count the answers only

def test_hops_loss_and_accuracy_are_on_the_answers(data_dir, tmp_path):
    L, B, T = 14, 4, 28  # example length; two examples per window
    train_ok(data_dir, tmp_path / 'out', '--dataset=hops', '--n_layer=1', f'--block_size={T}', f'--batch_size={B}',
             '--max_iters=2', '--eval_interval=2', '--eval_iters=3')
    model = model_from_checkpoint(load_checkpoint(str(tmp_path / 'out'), 'last')).eval()
    val = np.fromfile(data_dir / 'hops' / 'val.bin', dtype=np.uint16).astype(np.int64)
    # train.py's val batches, by hand: windows at example boundaries (rng as train.py's eval_rng)
    answer_at = [5 + 3 * j + 1 for j in range(3)]  # query j: hop, start, answer at 5+3j..5+3j+2
    hops_of = {p: 1 + j % 2 for j, p in enumerate(answer_at)}
    losses, hits = [], {1: [], 2: []}
    for k in range(3):
        ix = np.random.default_rng([1337, 1, 1, k]).integers((len(val) - T - 1) // L + 1, size=B) * L
        x = torch.from_numpy(np.stack([val[i:i + T] for i in ix]))
        with torch.no_grad():
            logits = model(x, torch.zeros_like(x))[0]
        terms = []
        for b, i in enumerate(ix):
            for start in (0, L):  # the two examples of the window
                for p in answer_at:
                    t = start + p  # the target of position t is the answer, token t + 1
                    assert val[i + t - 1] == 5 + hops_of[p] - 1  # the hop token, two before the answer
                    terms.append(torch.nn.functional.cross_entropy(logits[b, t], torch.tensor(val[i + t + 1])))
                    hits[hops_of[p]].append(logits[b, t].argmax().item() == val[i + t + 1])
        losses.append(torch.stack(terms).mean().item())
    (record,) = [r for r in read_log(tmp_path / 'out', 'eval') if r['iter'] == 2]
    assert record['val_loss'] == pytest.approx(np.mean(losses), abs=1e-5)
    assert record['val_acc_by'] == {'1 hop': pytest.approx(np.mean(hits[1])), '2 hops': pytest.approx(np.mean(hits[2]))}
    assert record['val_acc'] == pytest.approx(np.mean(hits[1] + hits[2]))
    assert 0 <= record['train_acc'] <= 1


# 4. user mistakes: exit 1 and one line on stderr

BAD_INPUTS = {
    'unknown key': (['--n_layr=2'], "unknown config key 'n_layr'"),
    'wrong type': (['--batch_size=four'], "config key 'batch_size' expects int but"),
    'missing data': (['--dataset=openwebtext'], "run `python prepare.py openwebtext --data_dir"),
    'resume without checkpoint': (['--init_from=resume'], 'no checkpoint at'),
    'indivisible accumulation': (['--gradient_accumulation_steps=3'], 'not divisible by the 2 processes'),
    'unknown loop sampling': (['--n_loop=2', '--loop_sampling=uniform'], "unknown loop_sampling 'uniform'"),
    'sampling one loop': (['--loop_sampling=poisson'], 'set n_loop to 2 or more'),
    'gpt with loop settings': (['--model_type=gpt', '--input_injection=True'],
                               "model_type='gpt' does not loop: set model_type='loop' (or 'auto') to use "
                               "input_injection"),
    'hops block size': (['--dataset=hops', '--block_size=20'], 'block_size=20 is not a multiple'),
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


def failing_save_as_torch_does(obj, f, *args, **kwargs):
    """torch's zip writer: the OSError of the failed write becomes the context of a RuntimeError."""
    try:
        failing_save(obj, f)
    except OSError:
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662')


@pytest.mark.parametrize('save', [failing_save, failing_save_as_torch_does], ids=['OSError', 'RuntimeError'])
def test_failed_save_keeps_last_checkpoint(runs, data_dir, tmp_path, save):
    out = shutil.copytree(runs['half'], tmp_path / 'out')
    before = model_state(out)
    with mock.patch.object(torch, 'save', save):  # the torch.save inside save_checkpoint
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
