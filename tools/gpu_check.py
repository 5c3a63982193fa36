"""
One command for the first person with a GPU: does the default GPU path (bf16 autocast,
torch.compile, NCCL) work here, and how fast is it?

    make gpu-check                        # = python -m tools.gpu_check: configs/loop6.py on CUDA
    python -m tools.gpu_check --steps=50  # a longer training check

On CUDA it runs four checks on configs/loop6.py's model (81M parameters, 6 blocks
looped twice), on a corpus it writes itself (this Python's stdlib bytes as token ids,
so no download and a loss that falls within a few steps):

  train   `steps` iterations of train.py with its GPU defaults, bfloat16 and compile=True:
          the loss must fall; prints MFU and peak memory
  cache   the trained model generates with the KV cache and without, under bf16 autocast:
          logits within bf16 tolerance and the same greedy tokens, except at near-ties
          (the uncached top two within 1% of the largest logit)
  ddp     with 2 or more GPUs: torchrun with 2 processes logs the losses of 1 process
  bench   tools/bench.py on the config, one round and 256 generated tokens: the loop next to
          its same-params and same-depth GPTs

Each check's output streams as it runs, every line prefixed with the check's name, and its
pass/fail row follows as soon as it ends; the whole table comes again at the end (exit code 1
if a check fails). A check that runs past its timeout (train_timeout, ddp_timeout,
bench_timeout: a compile, a rendezvous or NCCL's set-up that hangs) is ended with everything it
started and fails with "timed out after N s", and the next check runs. Expect 4-6 minutes on
one H100 or H200, 1.5-3 more with DDP (an estimate: docs/gpu.md says how it was made). Without CUDA
it says so in one line and exits 0.
`--device=cpu --config=configs/tiny.py` runs the same checks on a CPU (DDP over gloo),
which is how test_compile.py tests this script.
"""

import json
import os
import runpy
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

import numpy as np
import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from configurator import ConfigError, answer_help, config_keys, configure
from device import autocast_context, device_type_of
from engine import KVCache

if __name__ == '__main__':  # --help: the docstring and the keys below, before they are computed
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
config = 'configs/loop6.py'   # the model and recipe to check
device = 'cuda'
dtype = 'bfloat16'
compile = True
steps = 30                    # training iterations of the train check
gradient_accumulation_steps = 0  # 0: the config's (loop6: 40, ~0.5M tokens per iteration)
batch_size = 0                # 0: the config's
cache_tokens = 64             # generation steps compared in the cache check
bench = True                  # run tools/bench.py on the config too
# seconds a check may run before it fails as hung: several times docs/gpu.md's estimate (not yet measured) of each
train_timeout = 900           # the train check: compile, `steps` iterations, evaluations and checkpoints
ddp_timeout = 900             # the DDP check: torchrun's rendezvous, NCCL's set-up, compile in 2 processes
bench_timeout = 900           # tools/bench.py: 3 fresh processes, each compiling its model
# -----------------------------------------------------------------------------

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root: scripts run there


def stdlib_corpus(path, tokenizer, n_bytes=20_000_000):
    """path/{train,val}.bin and meta.json: the stdlib's .py bytes as token ids (< 256) of
    `tokenizer` ('gpt2' for a GPT-2-sized model, 'bytes' for a byte-level one)."""
    text = b''
    root = sysconfig.get_paths()['stdlib']
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ('site-packages', 'test', 'tests'))
        for name in sorted(filenames):
            if name.endswith('.py') and len(text) < n_bytes:
                with open(os.path.join(dirpath, name), 'rb') as f:
                    text += f.read()
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    n = len(ids) * 99 // 100
    os.makedirs(path, exist_ok=True)
    ids[:n].tofile(os.path.join(path, 'train.bin'))
    ids[n:].tofile(os.path.join(path, 'val.bin'))
    meta = dict(tokenizer=tokenizer, vocab_size=50257 if tokenizer == 'gpt2' else 256, eot_token=None,
                dtype='uint16', train_tokens=n, val_tokens=len(ids) - n, source='gpu_check: stdlib bytes')
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(meta, f)


def train_records(out_dir, kind='train'):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [r for r in map(json.loads, f) if r['kind'] == kind]


@torch.no_grad()
def cache_agreement(model, prompt, n_tokens, ctx, near_tie=0.01):
    """Greedy generation with the KV cache, each step checked against the uncached forward
    on the same tokens. Returns (the largest logit difference relative to the largest logit,
    the tokens whose argmax differs outside a near-tie). A near-tie is a row whose uncached
    top two logits are closer than near_tie times its largest |logit|, a margin fixed in
    advance: there rounding may pick either. (A margin taken from the step's own difference
    would excuse every flip: if the argmax moves from a to b, plain[a] - plain[b] <= 2 x the
    difference.) prompt: (B, T) ids."""
    model.eval()
    idx, cache, worst, flips = prompt, None, 0.0, 0
    for _ in range(n_tokens):
        with ctx:
            if cache is None:
                cache = KVCache(model, idx.size(0), model.config.block_size)
                cached, _ = model(idx, kv_cache=cache)
            else:
                cached, _ = model(idx[:, -1:], kv_cache=cache)
            plain, _ = model(idx)
        cached, plain = cached[:, -1].float(), plain[:, -1].float()  # (B, vocab)
        diff = (cached - plain).abs().max().item()
        worst = max(worst, diff / plain.abs().max().item())
        top2 = plain.topk(2, dim=-1).values  # (B, 2)
        tie = top2[:, 0] - top2[:, 1] < near_tie * plain.abs().amax(dim=-1)  # (B,)
        flips += int(((cached.argmax(-1) != plain.argmax(-1)) & ~tie).sum())
        idx = torch.cat((idx, cached.argmax(-1, keepdim=True)), dim=1)  # follow the cached path
        if idx.size(1) >= model.config.block_size:
            break
    return worst, flips


def run(cmd, name, timeout):
    """python CMD in the repo, its stdout and stderr streamed line by line as `name> line`, so that
    a long check shows how far it got, and kept. A CompletedProcess, whose returncode is None if
    the command ran past `timeout` seconds and was ended."""
    p = subprocess.Popen([sys.executable] + cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'},  # its prints arrive at once
                         start_new_session=True)  # its own process group: end() ends what it started too
    out, err = [], []
    readers = [threading.Thread(target=tee, args=(pipe, lines, name), daemon=True)
               for pipe, lines in ((p.stdout, out), (p.stderr, err))]
    for reader in readers:
        reader.start()
    try:
        code = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        end(p)
        code = None
    except KeyboardInterrupt:  # in a session of its own, the command does not see the terminal's Ctrl-C
        end(p)
        raise
    for reader in readers:  # a process left running elsewhere may hold the pipes open: wait a little only
        reader.join(timeout=5)
    return subprocess.CompletedProcess(cmd, code, ''.join(out), ''.join(err))


def tee(pipe, lines, name):
    for line in pipe:
        lines.append(line)
        print(f"{name}> {line}", end='', flush=True)


def end(p, grace=40):
    """End a command that ran too long and everything it started: SIGTERM to its process group
    (torchrun passes it on to its ranks, which run in sessions of their own, and waits up to 30 s
    for them), then SIGKILL once `grace` seconds have passed."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
            p.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def failure(p, what, timeout):
    """The detail of a row whose command failed: the timeout, or the command's last error line."""
    if p.returncode is None:
        return f"timed out after {timeout} s; its output above shows how far {what} got"
    lines = p.stderr.strip().splitlines() or ['?']
    return f"{what} failed: " + ([line for line in lines if 'error: ' in line] or lines)[-1]


def check_train(c, data_dir, out_dir):
    """train.py with the GPU defaults for c['steps'] iterations; returns (ok, detail, args)."""
    args = [c['config'], f"--data_dir={data_dir}", '--dataset=check', f"--out_dir={out_dir}",
            f"--device={c['device']}", f"--dtype={c['dtype']}", f"--compile={c['compile']}",
            f"--max_iters={c['steps']}", f"--lr_decay_iters={c['steps']}", f"--eval_interval={c['steps']}",
            '--eval_iters=2', '--log_interval=1', f"--warmup_iters={max(c['steps'] // 5, 1)}", '--wandb_log=False']
    args += [f'--{k}={c[k]}' for k in ('gradient_accumulation_steps', 'batch_size') if c[k]]
    t0 = time.time()
    p = run(['train.py'] + args, 'train', c['train_timeout'])
    if p.returncode != 0:
        return False, failure(p, 'train.py', c['train_timeout']), args
    rec = train_records(out_dir)
    losses = [r['loss'] for r in rec]
    k = max(len(losses) // 5, 1)
    first, last = np.mean(losses[:k]), np.mean(losses[-k:])
    later = rec[len(rec) // 2:]  # after compiling and warming up
    mfu = [r['mfu'] for r in later if r['mfu'] is not None]
    speed = f"MFU {np.median(mfu) * 100:.1f}%" if mfu else f"{np.median([r['tflops'] for r in later]):.3g} TFLOP/s"
    mem = [r['peak_mem_gb'] for r in rec if r.get('peak_mem_gb') is not None]
    detail = (f"loss {first:.3f} -> {last:.3f} in {len(losses)} steps, {np.median([r['dt_ms'] for r in later]):.0f} "
              f"ms/step, {speed}" + (f", peak memory {max(mem):.1f} GB" if mem else '') +
              f"; {time.time() - t0:.0f} s in all")
    return bool(np.isfinite(last) and last < first - 0.1), detail, args


def check_cache(c, out_dir, data_path):
    model = model_from_checkpoint(load_checkpoint(out_dir, 'last', 'cpu')).to(c['device'])
    val = np.fromfile(os.path.join(data_path, 'val.bin'), dtype=np.uint16)[:32].astype(np.int64)
    prompt = torch.from_numpy(val).to(c['device'])[None]
    tol = 0.02 if c['dtype'] != 'float32' else 1e-4  # bf16 keeps ~3 significant digits
    # near-ties: top two within tol / 2 of the largest logit (bf16: 1%, 1.3 to 2.6 bf16 steps there)
    worst, flips = cache_agreement(model, prompt, c['cache_tokens'], autocast_context(c['device'], c['dtype']),
                                   near_tie=tol / 2)
    return worst < tol and flips == 0, (f"logits differ by at most {worst:.2%} of the largest (tolerance "
                                        f"{tol:.2%}) over {c['cache_tokens']} greedy steps; {flips} tokens "
                                        f"differ where the top two are {tol / 2 * 100:g}% or more apart")


def check_ddp(c, args, single_dir, ddp_dir):
    n_gpus = torch.cuda.device_count() if device_type_of(c['device']) == 'cuda' else 2
    if n_gpus < 2:
        return None, f"needs 2 GPUs, this machine has {n_gpus}"
    launch = ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', 'train.py']
    p = run(launch + [a for a in args if not a.startswith('--out_dir=')] + [f'--out_dir={ddp_dir}'], 'ddp',
            c['ddp_timeout'])
    if p.returncode != 0:
        return False, failure(p, 'torchrun', c['ddp_timeout'])
    one, two = [r['loss'] for r in train_records(single_dir)], [r['loss'] for r in train_records(ddp_dir)]
    rel = max(abs(a - b) / abs(a) for a, b in zip(one, two))
    tol = 2e-2 if c['dtype'] != 'float32' else 1e-4  # bf16: the summation order shows
    return len(one) == len(two) and rel < tol, f"2 processes vs 1: losses within {rel:.2g} (tolerance {tol:g})"


def check_bench(c, batch_size):
    """tools/bench.py on the config, cut to fit the check: one round (3 fresh processes, not 6) and
    256 generated tokens, at the train check's batch size, whose kernels inductor may have
    cached. `python -m tools.bench CONFIG` measures in full."""
    cut = ['--rounds=1', '--gen_tokens=256'] if device_type_of(c['device']) == 'cuda' else \
        ['--rounds=1', '--train_iters=2', '--gen_tokens=8']
    p = run(['-m', 'tools.bench', c['config'], f"--device={c['device']}", f"--dtype={c['dtype']}",
             f"--compile={c['compile']}"] + cut + ([f'--batch_size={batch_size}'] if batch_size else []), 'bench',
            c['bench_timeout'])
    if p.returncode != 0:
        return False, failure(p, 'tools/bench.py', c['bench_timeout']), ''
    return True, 'table below', p.stdout


def row(name, ok, detail):
    return f"| {name} | {'SKIP' if ok is None else 'PASS' if ok else 'FAIL'} | {detail} |"


def report(rows, name, ok, detail):
    """Keep a row and print it at once, below the check's output: a check that fails, hangs or
    times out loses only itself."""
    rows.append((name, ok, detail))
    print(row(name, ok, detail), flush=True)


def main(argv):
    try:
        c = configure(config_keys(globals()), argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if device_type_of(c['device']) == 'cuda' and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch sees none), nothing to check; run it on a machine with one.")
        return 0
    where = torch.cuda.get_device_name(c['device']) if device_type_of(c['device']) == 'cuda' else 'CPU'
    print(f"gpu_check: {c['config']} on {where}, {c['dtype']}, compile={c['compile']}, torch {torch.__version__}\n"
          f"each check's output follows, every line prefixed with its name, then its row of the table", flush=True)
    rows, bench_table = [], ''
    with tempfile.TemporaryDirectory(prefix='gpu_check-') as tmp:
        recipe = runpy.run_path(c['config'])
        # byte-level for a config trained on stdlib (tiny.py), else GPT-2's vocabulary
        data_path = os.path.join(tmp, 'data', 'check')
        stdlib_corpus(data_path, 'bytes' if recipe.get('dataset') == 'stdlib' else 'gpt2')
        single = os.path.join(tmp, 'train')
        ok, detail, args = check_train(c, os.path.join(tmp, 'data'), single)
        report(rows, f"train ({c['dtype']}, compile={c['compile']})", ok, detail)
        if ok:
            report(rows, f"KV cache vs none ({c['dtype']})", *check_cache(c, single, data_path))
            report(rows, 'DDP, 2 processes', *check_ddp(c, args, single, os.path.join(tmp, 'ddp')))
        if c['bench']:
            ok, detail, bench_table = check_bench(c, c['batch_size'] or recipe.get('batch_size'))
            report(rows, 'tools/bench.py', ok, detail)
    print('\n| check | result | detail |\n| --- | --- | --- |\n' + '\n'.join(row(*r) for r in rows))
    if bench_table:
        print('\n' + bench_table)
    return 1 if any(ok is False for _, ok, _ in rows) else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
