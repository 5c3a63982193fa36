"""
What looping costs, measured in one run: a LoopGPT next to its two GPT twins,
the GPT with the same parameters (its blocks used once) and the GPT with the same
depth (as many blocks as the loop runs), on synthetic data.

    python -m tools.bench                          # configs/tiny.py's model and its twins (2-core CPU: ~1 min)
    python -m tools.bench configs/loop6.py --batch_size=12   # loop6 next to gpt6 and the 12-layer GPT-2
    python -m tools.bench --n_layer=2 --n_loop=4 --gen_batch=10
    python -m tools.bench --loop_counts=2,4,8,16 --bptt_loops=2  # recurrent-depth training: cost vs drawn count
    python -m tools.bench --exit_threshold=5e-4    # also: generation with per-token exit, and at each fixed count

Config files given on the command line describe the model: only their model keys
(n_layer, n_head, n_embd, n_loop, n_prelude, n_coda, bias, block_size) and dataset
(for vocab_size) are read; learning rates, out_dir and the rest are ignored.
--key=value sets any key below, model keys included. Without a config file the model
is configs/tiny.py's.

Prints one markdown table. Each model is measured `rounds` times, in a fresh process
each time (timings and memory do not leak from one model to the next) and in turn
with the others (a slow spell on a shared machine hits every model); the best of
each timing is kept.
  params        model.get_num_params(): without position embeddings, as nanoGPT counts
  FLOPs/token   model.flops_per_token(): training (forward + backward) FLOPs, a looped
                block counted once per iteration
  train         ms per optimizer step on batch_size x block_size random tokens (forward,
                backward, AdamW): the median of train_iters steps after warmup_iters
  tokens/s, TFLOP/s, MFU   from the train time; MFU is the fraction of peak_flops
                (looked up for common CUDA GPUs in bf16/fp16, checkpoint.GPU_PEAK_FLOPS;
                CPUs have no agreed peak: pass one, or read TFLOP/s)
  peak mem      CUDA: torch.cuda.max_memory_allocated() during training. CPU: how far
                training raised the process's peak resident memory (ru_maxrss) above
                what it was before the model was built (weights, grads, AdamW state,
                activations and allocator slack)
  infer         ms per generation step (gen_batch sequences, greedy, gen_tokens new tokens
                after a 1-token prompt, a different random token for each row; by default
                enough to fill one context window) with the KV cache and without, after a
                short warmup; eager, never compiled

With --exit_threshold, a line after the table: the LoopGPT's generation with per-token exit
next to each fixed count, the best of the rounds, and in how many rounds exit was no slower
than the fixed ceil(m) + 1 (m: its mean iterations per token), measured in the same process
one after the other; with gen_batch > 1, how often the rows' loop counts differed.

With --loop_counts=r1,r2,.. the table is about recurrent-depth training instead: the
LoopGPT alone, one row per loop count r, each training step running r iterations (as
when loop_sampling draws r) with backprop through the last bptt_loops of them (0: all).
FLOPs/token count the iterations run; inference is not measured. With bptt_loops = k,
step time grows with r only by the no-grad forward iterations, and peak memory stays flat.
"""

import math
import multiprocessing as mp
import os
import resource
import runpy
import sys
import time

import torch

from configurator import ConfigError, answer_help, config_keys, configure, join_values
from device import (DTYPES, autocast_context, default_device, default_dtype, device_defaults, device_type_of,
                    peak_flops_of)
from engine import EXIT_CRITERIA, ExitRule, KVCache, generate
from model import build_model

if __name__ == '__main__':  # --help: the docstring and the keys below, before they are computed
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
# the model (defaults: configs/tiny.py overrides these when it exists)
n_layer = 2
n_head = 4
n_embd = 128
n_loop = 3
n_prelude = 0
n_coda = 0
bias = True
block_size = 256
vocab_size = 256         # a config file sets it from its dataset: 256 for stdlib (bytes), else GPT-2's 50304
bptt_loops = 0           # LoopGPT: backprop through the last k loop iterations only (train.py's bptt_loops)
twins = True             # also run the same-parameter GPT and the same-depth GPT
loop_counts = ''         # e.g. '2,4,8,16': instead of the twins, train the LoopGPT at each drawn loop count
# training benchmark
batch_size = 8
warmup_iters = 3         # not timed: the first steps allocate, autotune and compile
train_iters = 10
# inference benchmark
gen_tokens = 0           # new tokens per generation, after a 1-token prompt; 0: fill the context (block_size - 1)
gen_batch = 1            # sequences generated together (sample.py generates its num_samples as one batch)
kv_budget = 0            # LoopGPT: loop groups the KV cache keeps (engine.KVCache); 0: one per iteration
exit_threshold = 0.0     # > 0: also time the LoopGPT's generation with per-token exit (criterion < this), and
                         # at each fixed count 1 .. n_loop; 0: skip
exit_criterion = 'kl'    # with exit: 'kl', 'entropy' (both read out every iteration) or 'state' (engine.ExitRule)
hf = False               # True: instead, time generate() of the exported LoopGPT (export.py) against transformers'
                         # GPT2LMHeadModel of the same depth and width, and engine.py, at batch 1 and 8 (one line)
# system
device = default_device()
dtype = default_dtype(device)               # 'float32', 'bfloat16' or 'float16' (autocast)
compile = device_type_of(device) == 'cuda'  # torch.compile the training step
peak_flops = 0.0         # FLOP/s the MFU column divides by; 0: look it up (CUDA bf16/fp16 only)
threads = 1              # CPU threads: 1 keeps timings steady on a shared machine; 0: one per core
rounds = 2               # each model is measured this many times, interleaved, in fresh processes; best kept
seed = 1337
# -----------------------------------------------------------------------------

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs', 'tiny.py')
MODEL_KEYS = ('n_layer', 'n_head', 'n_embd', 'n_loop', 'n_prelude', 'n_coda', 'bias', 'block_size')


def die(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def get_config(argv):
    """Defaults, then the model keys of the config files, then --key=value."""
    argv = join_values(argv)  # --key value -> --key=value: the value is not a file
    files = [a for a in argv if not a.startswith('--')]
    overrides = [a for a in argv if a.startswith('--')]
    if not files and os.path.exists(DEFAULT_CONFIG):
        files = [DEFAULT_CONFIG]
    defaults = config_keys(globals())
    for path in files:
        try:
            namespace = runpy.run_path(path)
        except OSError as e:
            raise ConfigError(f"cannot read config file {path} ({e.strerror}): check the path.") from None
        defaults.update({k: v for k, v in config_keys(namespace).items() if k in MODEL_KEYS})
        if 'dataset' in namespace:  # bytes for the offline stdlib corpus, else GPT-2 BPE padded to 64
            defaults['vocab_size'] = 256 if namespace['dataset'] == 'stdlib' else 50304
    # dtype and compile follow --device unless given too
    return configure(defaults, overrides, derived=device_defaults), files


def check_config(c):
    for key, default in config_keys(globals()).items():  # None is only for keys that default to None
        if c[key] is None and default is not None:
            return f"{key} cannot be None: give a value like {default!r}."
    for key in ('n_layer', 'n_head', 'n_embd', 'n_loop', 'block_size', 'vocab_size', 'batch_size',
                'train_iters', 'gen_batch', 'rounds'):
        if c[key] < 1:
            return f"{key} must be at least 1, not {c[key]}."
    for key in ('n_prelude', 'n_coda', 'warmup_iters', 'bptt_loops', 'exit_threshold', 'kv_budget'):
        if c[key] < 0:
            return f"{key} must not be negative, not {c[key]}."
    if c['exit_criterion'] not in EXIT_CRITERIA:
        return f"unknown exit_criterion {c['exit_criterion']!r}: use one of {', '.join(map(repr, EXIT_CRITERIA))}."
    try:
        counts = loop_counts_of(c)
    except ValueError:
        counts = [0]
    if min(counts, default=1) < 1:
        return f"loop_counts='{c['loop_counts']}': give loop counts of 1 or more, comma-separated, like '2,4,8'."
    if c['gen_tokens'] < 0:
        return f"gen_tokens must be 0 (fill the context) or more, not {c['gen_tokens']}."
    if c['threads'] < 0:
        return f"threads must be 0 (torch's default) or more, not {c['threads']}."
    if c['n_embd'] % c['n_head']:
        return f"n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}: choose values that divide."
    if c['dtype'] not in DTYPES:
        return f"unknown dtype '{c['dtype']}': use one of {', '.join(DTYPES)}."
    if device_type_of(c['device']) == 'cuda' and not torch.cuda.is_available():
        return f"device '{c['device']}' needs a CUDA GPU but torch sees none: use --device=cpu."
    return None


def loop_counts_of(c):
    """loop_counts as a list of ints ([] when not set); ValueError if it is not a list of numbers."""
    return [int(r) for r in c['loop_counts'].split(',')] if c['loop_counts'] else []


def models_to_run(c):
    """[(label, model_type, model_args, loops)]: the configured model, then its GPT twins; or,
    with loop_counts, the LoopGPT once per count. loops: the iterations each training step
    runs (None: the model's own n_loop)."""
    args = dict(block_size=c['block_size'], vocab_size=c['vocab_size'], n_head=c['n_head'],
                n_embd=c['n_embd'], bias=c['bias'], dropout=0.0)
    looped = c['n_loop'] > 1 or c['n_prelude'] or c['n_coda']
    if not looped and not c['loop_counts']:
        return [(f"GPT {c['n_layer']}L", 'gpt', dict(args, n_layer=c['n_layer']), None)]
    wrap = f" +{c['n_prelude']}/{c['n_coda']}" if c['n_prelude'] or c['n_coda'] else ''
    loop_args = dict(args, n_layer=c['n_layer'], n_loop=c['n_loop'], n_prelude=c['n_prelude'],
                     n_coda=c['n_coda'], bptt_loops=c['bptt_loops'])
    if c['loop_counts']:
        bptt = f"backprop through {c['bptt_loops']}" if c['bptt_loops'] else 'backprop through all'
        return [(f"LoopGPT {c['n_layer']}L{wrap}, {r} loops, {bptt}", 'loop', loop_args, r)
                for r in loop_counts_of(c)]
    loop = (f"LoopGPT {c['n_layer']}L x{c['n_loop']}{wrap}", 'loop', loop_args, None)
    if not c['twins']:
        return [loop]
    same_params = c['n_prelude'] + c['n_layer'] + c['n_coda']
    same_depth = c['n_prelude'] + c['n_layer'] * c['n_loop'] + c['n_coda']
    return [(f"GPT {same_params}L (same params)", 'gpt', dict(args, n_layer=same_params), None), loop,
            (f"GPT {same_depth}L (same depth)", 'gpt', dict(args, n_layer=same_depth), None)]


# -----------------------------------------------------------------------------
# one model, in its own process


def sync(device):
    if device_type_of(device) == 'cuda':
        torch.cuda.synchronize()


def rss_peak_bytes():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # Linux reports KiB


def bench_one(model_type, model_args, loops, c):
    """Measure one model, training it at `loops` iterations if given; returns a dict of numbers."""
    device, device_type = c['device'], device_type_of(c['device'])
    if c['threads']:
        torch.set_num_threads(c['threads'])
    torch.manual_seed(c['seed'])
    torch.set_float32_matmul_precision('high')
    ctx = autocast_context(device, c['dtype'])
    rss_before = rss_peak_bytes()
    model = build_model(model_type, model_args).to(device)
    r = dict(params=model.get_num_params(), flops_per_token=model.flops_per_token(n_loop=loops))

    # training: forward, backward and AdamW step on one random batch, over and over
    B, T = c['batch_size'], c['block_size']
    data = torch.randint(c['vocab_size'], (B, T + 1), device=device)
    x, y = data[:, :-1], data[:, 1:].contiguous()
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), device_type)
    step_model = torch.compile(model) if c['compile'] else model
    if device_type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(c['warmup_iters'] + c['train_iters']):
        t0 = time.perf_counter()
        with ctx:
            _, loss = step_model(x, y, n_loop=loops)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    r['train_ms'] = sorted(times[c['warmup_iters']:])[c['train_iters'] // 2] * 1000  # the median
    r['mem'] = (torch.cuda.max_memory_allocated(device) if device_type == 'cuda'
                else rss_peak_bytes() - rss_before)
    del optimizer, step_model, loss
    if c['loop_counts']:
        return r

    # inference: greedy generation from a 1-token prompt, after a short warmup
    model.eval()
    prompt = prompts(c).to(device)
    for use_cache in (True, False):
        kw = dict(temperature=0, use_cache=use_cache, kv_budget=c['kv_budget'])
        with torch.no_grad(), ctx:
            generate(model, prompt, min(c['gen_tokens'], 16), **kw)
            sync(device)
            t0 = time.perf_counter()
            generate(model, prompt, c['gen_tokens'], **kw)
            sync(device)
        r['infer_cache_ms' if use_cache else 'infer_ms'] = (time.perf_counter() - t0) / c['gen_tokens'] * 1000
    # what the cache holds at a full context, in the dtype attention runs in
    r['kv_bytes'] = KVCache(model, c['gen_batch'], c['block_size'], c['kv_budget']).nbytes(DTYPES[c['dtype']])
    if c['exit_threshold'] and model_type == 'loop':
        r.update(exit_timings(model, prompt, c, ctx))
    return r


def prompts(c):
    """(gen_batch, 1): a different token for each row (while the vocabulary lasts), drawn with the
    seed. Rows with one prompt would decode alike, greedy, and with exit never stop apart."""
    g = torch.Generator().manual_seed(c['seed'])
    if c['gen_batch'] <= c['vocab_size']:
        return torch.randperm(c['vocab_size'], generator=g)[:c['gen_batch'], None]
    return torch.randint(c['vocab_size'], (c['gen_batch'], 1), generator=g)


def exit_timings(model, prompt, c, ctx):
    """Generation ms/token with the cache and per-token exit (exit_criterion < exit_threshold, at most n_loop
    iterations), its mean iterations per token m, and ms/token at each fixed count n = 1 ..
    max(n_loop, ceil(m) + 1): exit pays for itself if it costs no more than ceil(m) + 1."""
    def ms_per_token(**kw):
        with torch.no_grad(), ctx:
            generate(model, prompt, min(c['gen_tokens'], 16), temperature=0, kv_budget=c['kv_budget'], **kw)
            sync(c['device'])
            t0 = time.perf_counter()
            out = generate(model, prompt, c['gen_tokens'], temperature=0, kv_budget=c['kv_budget'], **kw)
            sync(c['device'])
        return (time.perf_counter() - t0) / c['gen_tokens'] * 1000, out

    trained, r = model.n_loop, {}
    r['infer_exit_ms'], (_, loops) = ms_per_token(exit=ExitRule(c['exit_threshold'], criterion=c['exit_criterion']))
    r['exit_loops'] = loops.float().mean().item()
    r['exit_apart'] = (loops.amax(0) != loops.amin(0)).float().mean().item()  # steps whose rows ran different counts
    r['exit_row_loops'] = loops.float().mean(1).tolist()  # each row's mean iterations
    for n in range(1, max(trained, math.ceil(r['exit_loops']) + 1) + 1):
        model.n_loop = n
        r[f'infer_loops{n}_ms'] = ms_per_token()[0]
    model.n_loop = trained
    return r


def best_of(runs):
    """One model's rounds combined: the fastest of each timing, the highest memory peak; with
    exit, the rounds in which it was no slower than the fixed ceil(m) + 1 of the same round."""
    best = dict(runs[0], mem=max(r['mem'] for r in runs))
    for key in best:
        if key == 'train_ms' or key.startswith('infer'):
            best[key] = min(r[key] for r in runs)
    if 'infer_exit_ms' in best:
        best['exit_rounds_met'] = sum(r['infer_exit_ms'] <= r[f"infer_loops{math.ceil(r['exit_loops']) + 1}_ms"]
                                      for r in runs)
        best['rounds'] = len(runs)
    return best


def run_isolated(model_type, model_args, loops, c):
    """bench_one in a fresh process: its memory peak and warm caches are its own."""
    with mp.get_context('spawn').Pool(1) as pool:
        return pool.apply(bench_one, (model_type, model_args, loops, c))


# -----------------------------------------------------------------------------
# the table


def si(x, unit=''):
    for div, prefix in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(x) >= div:
            return f"{x / div:.2f}{prefix}{unit}"
    return f"{x:.0f}{unit}"


def table(rows, c):
    per = 'token' if c['gen_batch'] == 1 else f"step of {c['gen_batch']}"
    head = ['model', 'params', 'FLOPs/token', 'train ms/iter', 'tokens/s', 'TFLOP/s', 'MFU', 'peak mem']
    if not c['loop_counts']:  # --loop_counts measures training only
        head += [f'infer ms/{per} (cache)', f'infer ms/{per} (no cache)', 'cache speedup', 'KV cache']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    for label, r in rows:
        tok_s = c['batch_size'] * c['block_size'] / (r['train_ms'] / 1000)
        flops = r['flops_per_token'] * tok_s  # achieved model FLOP/s, as GPT.estimate_mfu counts them
        cells = [label, si(r['params']), si(r['flops_per_token']), f"{r['train_ms']:.1f}", f"{tok_s:,.0f}",
                 f"{flops / 1e12:.3f}", f"{flops / c['peak_flops'] * 100:.1f}%" if c['peak_flops'] else '–',
                 si(r['mem'], 'B')]
        if not c['loop_counts']:
            cells += [f"{r['infer_cache_ms']:.2f}", f"{r['infer_ms']:.2f}", f"{r['infer_ms'] / r['infer_cache_ms']:.1f}x",
                      si(r['kv_bytes'], 'B')]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def ratios(rows, c):
    """The loop overhead: LoopGPT time over each twin's, from this run."""
    if len(rows) != 3 or c['loop_counts']:  # only for a LoopGPT between its two twins
        return []
    (_, gpt_p), (_, loop), (_, gpt_d) = rows
    out = []
    for name, twin in (('same-params GPT', gpt_p), ('same-depth GPT', gpt_d)):
        out.append(f"LoopGPT / {name}: training x{loop['train_ms'] / twin['train_ms']:.2f}, "
                   f"inference x{loop['infer_cache_ms'] / twin['infer_cache_ms']:.2f} with the cache, "
                   f"x{loop['infer_ms'] / twin['infer_ms']:.2f} without")
    return out


def exit_line(rows, c):
    """The LoopGPT's generation with per-token exit, next to its fixed counts (from exit_timings),
    and whether it pays: no slower than the fixed count ceil(m) + 1, m its mean iterations."""
    for label, r in rows:
        if 'infer_exit_ms' in r:
            per = 'token' if c['gen_batch'] == 1 else f"step of {c['gen_batch']}"
            counts = sorted(int(k[len('infer_loops'):-len('_ms')]) for k in r if k.startswith('infer_loops'))
            fixed = ', '.join(f"n_loop={n} {r[f'infer_loops{n}_ms']:.2f}" for n in counts)
            m, rows_loops = r['exit_loops'], r['exit_row_loops']
            bound = r[f'infer_loops{math.ceil(m) + 1}_ms']
            apart = (f"its {len(rows_loops)} rows (a different prompt each) ran different loop counts at "
                     f"{r['exit_apart']:.0%} of steps, per-row mean iterations {min(rows_loops):.2f} to "
                     f"{max(rows_loops):.2f}" if len(rows_loops) > 1 else "one row, nothing to stop apart")
            return (f"{label}, generation ms/{per} with the KV cache, best of {r['rounds']} rounds: {fixed}; per-token "
                    f"exit ({c['exit_criterion']} < {c['exit_threshold']:g}) {r['infer_exit_ms']:.2f} at m = {m:.2f} "
                    f"iterations per token on average; no more than the fixed ceil(m) + 1 = {math.ceil(m) + 1} ({bound:.2f}) in "
                    f"{r['exit_rounds_met']} of {r['rounds']} rounds; {apart}. The weights are random: where tokens "
                    f"stop says nothing about a trained model, the line shows what the exit path costs at the depth "
                    f"it ran.")
    return None


def main(argv):
    try:
        c, files = get_config(argv)
    except ConfigError as e:
        die(e)
    problem = check_config(c)
    if problem:
        die(problem)
    c['peak_flops'] = c['peak_flops'] or peak_flops_of(c['device'], c['dtype'])
    c['gen_tokens'] = c['gen_tokens'] or c['block_size'] - 1
    if c['hf']:
        print(hf_line(c))
        return
    hardware = torch.cuda.get_device_name(c['device']) if device_type_of(c['device']) == 'cuda' \
        else f"CPU, {c['threads'] or torch.get_num_threads()} threads"
    print(f"model from {', '.join(os.path.relpath(f) for f in files) or 'tools/bench.py defaults'}; {hardware}, "
          f"torch {torch.__version__}, {c['dtype']}, compile={c['compile']}; "
          f"training: batch {c['batch_size']} x {c['block_size']}, median of {c['train_iters']} steps after "
          f"{c['warmup_iters']}" + ('' if c['loop_counts'] else
                                    f"; inference: {c['gen_tokens']} new tokens, batch {c['gen_batch']}, greedy") + '\n',
          flush=True)
    models = models_to_run(c)
    results = {label: [] for label, *_ in models}
    for round in range(c['rounds']):  # interleaved, so a slow spell on a shared machine hits every model
        for label, model_type, model_args, loops in models:
            t0 = time.time()
            results[label].append(run_isolated(model_type, model_args, loops, c))
            print(f"  round {round + 1}, {label}: {time.time() - t0:.0f}s", file=sys.stderr)
    rows = [(label, best_of(results[label])) for label in results]
    print(table(rows, c))
    exit_timed = exit_line(rows, c)
    for line in ratios(rows, c) + ([exit_timed] if exit_timed else []):
        print(f"\n{line}")
    if c['gen_tokens'] > c['block_size'] and not c['loop_counts']:  # step k runs on the 1-token prompt + k tokens made so far
        print(f"\nnote: {c['gen_tokens']} steps outgrow block_size={c['block_size']}: from then on the "
              f"window slides, every position changes, and both paths re-run the whole window each step, so the "
              f"cache speeds up only the first {c['block_size']} of the {c['gen_tokens']} steps.")


def hf_line(c):
    """--hf=True: ms per generated token (greedy, a 1-token prompt, gen_tokens new, fp32, the best of
    `rounds`) of the exported LoopGPT's generate(), transformers' GPT2LMHeadModel of the same depth
    (n_prelude + n_layer * n_loop + n_coda blocks) and width, and engine.generate, at batch 1 and 8."""
    import tempfile
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
    from hf.convert import write_loop
    torch.manual_seed(c['seed'])
    torch.set_num_threads(c['threads'] or torch.get_num_threads())
    args = {k: c[k] for k in MODEL_KEYS} | dict(vocab_size=c['vocab_size'])
    ours = build_model('loop', args).eval()
    with tempfile.TemporaryDirectory() as path:
        write_loop(ours, path, {})
        exported = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    depth = ours.depth()
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=c['vocab_size'], n_positions=c['block_size'], n_embd=c['n_embd'],
                                      n_layer=depth, n_head=c['n_head'], bos_token_id=None, eos_token_id=None)).eval()
    n = min(c['gen_tokens'], c['block_size'] - 1)

    def ms(run, batch):
        prompt = torch.zeros((batch, 1), dtype=torch.long)
        best = float('inf')
        for _ in range(c['rounds']):
            t0 = time.perf_counter()
            with torch.no_grad():
                run(prompt)
            best = min(best, time.perf_counter() - t0)
        return best / n * 1000

    hf_gen = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=c['vocab_size'] - 1)
    runs = {'exported LoopGPT': lambda x: exported.generate(x, **hf_gen),
            f'GPT2LMHeadModel ({depth} layers)': lambda x: gpt2.generate(x, **hf_gen),
            'engine.py': lambda x: generate(ours, x, n, temperature=0)}
    t = {name: [ms(run, b) for b in (1, 8)] for name, run in runs.items()}
    ratio = [a / b for a, b in zip(*list(t.values())[:2])]
    return (f"generate(), ms per token at batch 1 / 8 ({n} new tokens, CPU threads {torch.get_num_threads()}): "
            + ', '.join(f"{name} {a:.2f} / {b:.2f}" for name, (a, b) in t.items())
            + f"; exported / GPT2LMHeadModel {ratio[0]:.2f}x / {ratio[1]:.2f}x (goal <= 1.15x)")


if __name__ == '__main__':
    main(sys.argv[1:])
