"""
The GPU defaults, compile=True and bfloat16 autocast, under test on the CPU (inductor's
C++ backend stands in for Triton): compiled training logs the losses of eager training (and
dynamo's log shows model.py compiled, where the eager runs compile nothing), a checkpoint
written by a compiled run resumes in eager, the KV cache agrees with the uncached forward
under bf16, and tools/gpu_check.py runs its checks (and without CUDA says so), failing one
that hangs once its timeout has passed and going on to the next.

Compiling is slow on a CPU (tens of seconds per graph, cached afterwards in
/tmp/torchinductor_*), so the models are the smallest that still loop.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from checkpoint import load_checkpoint
from device import autocast_context, default_dtype
from engine import KVCache
from model import GPTConfig, LoopGPT
from tools import gpu_check

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
N = 2  # iterations before the checkpoint; the eager run does 2N
TINY = ['--dataset=check', '--n_layer=1', '--n_loop=2', '--n_head=2', '--n_embd=32', '--block_size=32',
        '--batch_size=4', '--gradient_accumulation_steps=1', '--learning_rate=1e-2', '--warmup_iters=0',
        f'--lr_decay_iters={2 * N}', f'--eval_interval={N}', '--eval_iters=1', '--log_interval=1',
        '--device=cpu', '--wandb_log=False']

needs_compiler = pytest.mark.skipif(not (shutil.which('g++') or shutil.which('c++')),
                                    reason="torch.compile on a CPU needs a C++ compiler")


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    gpu_check.stdlib_corpus(str(root / 'check'), 'bytes', n_bytes=200_000)
    return root


def train(data_dir, out_dir, *args):
    """train.py with dynamo's INFO log on, which names every frame it compiles: its stderr."""
    p = subprocess.run([sys.executable, os.path.join(HERE, 'train.py'), *TINY, f'--data_dir={data_dir}',
                        f'--out_dir={out_dir}', *args], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'TORCH_LOGS': 'dynamo'})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p.stderr


def traced_frames(stderr):
    """The functions dynamo traced to compile them, as 'name file:line'."""
    return re.findall(r'Step 1: torchdynamo start tracing (\S+ \S+)', stderr)


def losses(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        records = [json.loads(line) for line in f]
    return {(r['kind'], r['iter']): r.get('loss', r.get('val_loss')) for r in records}


@needs_compiler
@pytest.mark.parametrize('dtype,tol', [('float32', 1e-4), ('bfloat16', 2e-2)])
def test_compiled_training_matches_eager_and_resumes_in_eager(data_dir, tmp_path, dtype, tol):
    assert traced_frames(train(data_dir, tmp_path / 'eager', f'--dtype={dtype}', '--compile=False',
                               f'--max_iters={2 * N}')) == []
    stderr = train(data_dir, tmp_path / 'compiled', f'--dtype={dtype}', '--compile=True', f'--max_iters={N}')
    frames = traced_frames(stderr)  # the model's forward, traced and handed to inductor
    assert frames and all(f.startswith('forward ') and 'model.py:' in f for f in frames), frames
    assert 'Step 2: done compiler function inductor' in stderr
    eager, compiled = losses(tmp_path / 'eager'), losses(tmp_path / 'compiled')
    # train.py steps at iterations 0..max_iters-1 and only evaluates at max_iters
    assert set(compiled) == {k for k in eager if k[1] < N or k == ('eval', N)}
    for key, loss in compiled.items():
        assert loss == pytest.approx(eager[key], rel=tol), key
    # the compiled run's checkpoint holds the bare model, and eager training goes on from it
    ckpt = load_checkpoint(str(tmp_path / 'compiled'), 'last')
    assert not any(k.startswith('_orig_mod.') for k in ckpt['model'])
    assert traced_frames(train(data_dir, tmp_path / 'compiled', f'--dtype={dtype}', '--compile=False',
                               f'--max_iters={2 * N}', '--init_from=resume')) == []
    resumed = losses(tmp_path / 'compiled')
    assert set(resumed) == set(eager)
    for key, loss in resumed.items():
        assert loss == pytest.approx(eager[key], rel=tol), key


def sharp_loop_model():
    """A tiny LoopGPT (prelude, 2 loops, coda) whose logits are far from uniform, so that
    greedy decoding is decided by margins far above bf16's rounding."""
    torch.manual_seed(0)
    model = LoopGPT(GPTConfig(block_size=48, vocab_size=64, n_layer=1, n_head=2, n_embd=32, n_loop=2,
                              n_prelude=1, n_coda=1))
    with torch.no_grad():
        model.gates.uniform_(0.5, 1.5)
        model.lm_head.weight.mul_(30)
        for block in model.modules():  # blocks that move the residual stream a lot: every cached key shows
            if hasattr(block, 'c_proj'):
                block.c_proj.weight.mul_(10)
    return model.eval()


def test_kv_cache_matches_the_uncached_forward_under_bf16(monkeypatch):
    model = sharp_loop_model()
    prompt = torch.randint(64, (3, 5), generator=torch.Generator().manual_seed(1))
    worst, flips = gpu_check.cache_agreement(model, prompt, 40, autocast_context('cpu', 'bfloat16'))
    assert 1e-4 < worst < 0.02  # relative to the largest logit: bf16 rounding shows, and stays small
    assert flips == 0
    # in fp32 the two paths agree to float rounding, and the check catches a real difference
    worst32, _ = gpu_check.cache_agreement(model, prompt, 40, autocast_context('cpu', 'float32'))
    assert worst32 < 1e-5

    class OffCache(KVCache):  # a cache that stores wrong values: the check must notice
        def update(self, slot, k, v):
            return super().update(slot, k, v * 2)

    monkeypatch.setattr(gpu_check, 'KVCache', OffCache)
    assert gpu_check.cache_agreement(model, prompt, 10, autocast_context('cpu', 'float32'))[0] > 0.02


class Scripted(torch.nn.Module):
    """A stand-in model whose next-token logits are given rows, whatever the tokens: `plain`
    from the uncached forward, `cached` from the cached one."""
    config = SimpleNamespace(block_size=64)

    def __init__(self, plain, cached):
        super().__init__()
        self.plain, self.cached = torch.tensor(plain), torch.tensor(cached)

    def forward(self, idx, kv_cache=None):
        row = self.plain if kv_cache is None else self.cached
        return row.expand(idx.size(0), idx.size(1), -1), None


def test_cache_check_counts_a_flip_outside_a_near_tie(monkeypatch):
    monkeypatch.setattr(gpu_check, 'KVCache', lambda model, batch_size, max_len: object())
    fp32 = autocast_context('cpu', 'float32')
    # top two 0.5% of the largest logit apart: a near-tie (under 1%), rounding may flip it
    assert gpu_check.cache_agreement(Scripted([10, 9.95, 0], [9.95, 10, 0]), torch.zeros(2, 1, dtype=torch.long),
                                     5, fp32) == (pytest.approx(0.005, rel=1e-4), 0)
    # 2% apart, and the cached path moves the logits by 1.1% only: within the logit tolerance (2%),
    # so only the token count shows that a clear choice flipped, in both rows at every step
    worst, flips = gpu_check.cache_agreement(Scripted([10, 9.8, 0], [9.89, 9.91, 0]),
                                             torch.zeros(2, 1, dtype=torch.long), 5, fp32)
    assert worst == pytest.approx(0.011, rel=1e-4) and flips == 2 * 5
    # a real model whose cached path swaps its top two logits: every greedy choice flips, far from a tie
    monkeypatch.undo()  # a real cache again
    model = sharp_loop_model()
    forward = model.forward

    def swapped(idx, targets=None, kv_cache=None):
        logits, loss = forward(idx, targets, kv_cache=kv_cache)
        if kv_cache is not None:
            top2 = logits[:, -1].topk(2, dim=-1).indices  # (B, 2)
            logits[:, -1] = logits[:, -1].scatter(1, top2, logits[:, -1].gather(1, top2.flip(1)))
        return logits, loss

    model.forward = swapped
    prompt = torch.randint(64, (3, 5), generator=torch.Generator().manual_seed(1))
    assert gpu_check.cache_agreement(model, prompt, 10, autocast_context('cpu', 'bfloat16'))[1] == 3 * 10


def test_bf16_is_the_default_only_where_the_gpu_has_it(monkeypatch):
    """A V100 (compute capability 7.0) emulates bf16, and torch.cuda.is_bf16_supported() says yes
    after making a bf16 tensor on the current device, cuda:0 in every DDP process. The default
    must be float16 there and bfloat16 from 8.0 (A100) on, read from this process's own GPU
    (torchrun's LOCAL_RANK) without allocating anything. CUDA is simulated at torch's lowest level."""
    probed, allocated = [], []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 8)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 0)
    monkeypatch.setattr(torch.cuda, '_lazy_init', lambda: None)
    monkeypatch.setattr(torch.version, 'hip', None)
    monkeypatch.setattr(torch.cuda, '_check_bf16_tensor_supported', lambda device: allocated.append(device) or True)
    monkeypatch.setenv('LOCAL_RANK', '3')
    for major, expected in ((7, 'float16'), (8, 'bfloat16'), (9, 'bfloat16')):
        monkeypatch.setattr(torch.cuda, 'get_device_properties',
                            lambda device, major=major: probed.append(device) or SimpleNamespace(major=major, minor=0))
        assert default_dtype('cuda') == expected
        assert default_dtype('cuda:5') == expected
    assert probed == [3, 5] * 3 and allocated == []
    monkeypatch.setattr(torch.cuda, 'get_device_properties', lambda device: SimpleNamespace(major=7, minor=0))
    assert torch.cuda.is_bf16_supported() and allocated == [0]  # the emulated answer, made on cuda:0


def test_gpu_check_without_cuda_says_so_and_exits_0():
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    p = subprocess.run([sys.executable, '-m', 'tools.gpu_check'], capture_output=True, text=True, timeout=120, cwd=HERE)
    assert p.returncode == 0 and p.stdout.count('\n') == 1 and 'no CUDA GPU' in p.stdout, p.stdout + p.stderr


STUCK = """
import os, subprocess, sys, time
print('step 1 of a check that will hang')  # not flushed: gpu_check must read its children unbuffered
child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])  # what it started, a rank say
with open('pids', 'w') as f:
    f.write(f'{os.getpid()} {child.pid}')
time.sleep(300)
"""


class Clocked:
    """A stdout that notes when each piece of text arrived: [(seconds, text)]."""
    def __init__(self):
        self.t0, self.writes = time.monotonic(), []

    def write(self, text):
        self.writes.append((time.monotonic() - self.t0, text))

    def flush(self):
        pass

    def when(self, text):
        """The seconds at which text was written, and all of it."""
        return next(t for t, s in self.writes if text in s), ''.join(s for _, s in self.writes)


def ended(pids_file, within=10):
    """Have the processes named in pids_file ended, within a few seconds? (A signal is sent at
    once, but a busy machine may take a moment to end a process that gpu_check does not wait on,
    such as what the check's command started.)"""
    pids = [int(pid) for pid in pids_file.read_text().split()]
    deadline = time.monotonic() + within
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(running(pid) for pid in pids)


def running(pid):
    """Is the process alive (a zombie, ended and not yet reaped, is not)?"""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir('/proc'), reason="reads /proc to see that the hung processes ended")
def test_gpu_check_ends_a_check_that_hangs_and_runs_the_next(tmp_path, monkeypatch):
    """train.py stands in for one that hangs (a compile, a rendezvous): its output streams while it
    runs, its row fails once train_timeout has passed, it and what it started are ended, and the
    next check (tools/bench.py, standing in for itself) still runs."""
    (tmp_path / 'train.py').write_text(STUCK)
    (tmp_path / 'tools').mkdir()
    (tmp_path / 'tools' / 'bench.py').write_text("print('| a bench table |')\n")
    monkeypatch.setattr(gpu_check, 'HERE', str(tmp_path))  # where it runs the scripts
    monkeypatch.delenv('PYTHONUNBUFFERED', raising=False)  # as in most shells: gpu_check must set it
    corpus = gpu_check.stdlib_corpus
    monkeypatch.setattr(gpu_check, 'stdlib_corpus', lambda path, tokenizer: corpus(path, tokenizer, n_bytes=20_000))
    out = Clocked()
    monkeypatch.setattr(sys, 'stdout', out)
    code = gpu_check.main(['--device=cpu', f'--config={HERE}/configs/tiny.py', '--dtype=float32',
                           '--compile=False', '--train_timeout=4'])
    monkeypatch.undo()
    started, text = out.when('train> step 1 of a check that will hang\n')
    failed, _ = out.when('| train (float32, compile=False) | FAIL | timed out after 4 s')
    assert started < failed - 2, text  # streamed while it ran, not printed once it had ended
    assert 3.5 < failed < 30, text
    assert '| tools/bench.py | PASS | table below |' in text and '\n| a bench table |\n' in text
    table = text[text.index('| check | result | detail |'):].splitlines()
    assert [line.split(' | ')[:2] for line in table[2:4]] == [['| train (float32, compile=False)', 'FAIL'],
                                                                ['| tools/bench.py', 'PASS']]
    assert code == 1
    assert ended(tmp_path / 'pids')


@pytest.mark.skipif(not os.path.isdir('/proc'), reason="reads /proc to see that the processes ended")
def test_ctrl_c_in_gpu_check_ends_the_check_it_runs(tmp_path, monkeypatch):
    """A check's command runs in a session of its own (so that a timeout can end all it started),
    where the terminal's Ctrl-C does not reach it: gpu_check must end it before it stops itself."""
    (tmp_path / 'stuck.py').write_text(STUCK)
    monkeypatch.setattr(gpu_check, 'HERE', str(tmp_path))

    def ctrl_c():  # once the command has started what it starts
        deadline = time.monotonic() + 30
        while not (tmp_path / 'pids').exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        gpu_check.run(['stuck.py'], 'stuck', timeout=60)
    assert ended(tmp_path / 'pids')


def test_gpu_check_runs_its_checks_on_a_cpu():
    """The script a GPU user runs first, end to end on the CPU with configs/tiny.py's model:
    training, the cache check and 2-process DDP over gloo all pass."""
    p = subprocess.run([sys.executable, '-m', 'tools.gpu_check', '--device=cpu',
                        '--config=configs/tiny.py', '--steps=4', '--dtype=float32', '--compile=False',
                        '--gradient_accumulation_steps=2', '--batch_size=2', '--cache_tokens=8', '--bench=False'],
                       capture_output=True, text=True, timeout=600, cwd=HERE)
    assert p.returncode == 0, p.stdout + p.stderr
    table = p.stdout[p.stdout.index('| check | result | detail |'):].splitlines()[2:]  # the table at the end
    assert [r.split(' | ')[:2] for r in table] == [['| train (float32, compile=False)', 'PASS'],
                                                   ['| KV cache vs none (float32)', 'PASS'],
                                                   ['| DDP, 2 processes', 'PASS']]
    assert 'train> iter 3: loss ' in p.stdout and 'ddp> iter 3: loss ' in p.stdout  # their output, streamed
