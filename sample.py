"""
Sample from a trained model (or from OpenAI's GPT-2 weights), in nanoGPT's style.

    python sample.py --out_dir=out-tiny --start="def " --num_samples=2
    python sample.py --out_dir=out-loop6 --n_loop=4     # a LoopGPT run for more iterations than trained
    python sample.py --init_from=gpt2-xl --start=FILE:prompt.txt --top_p=0.9

Settings: the defaults below, then config files, then --key=value (as train.py).
The samples go to stdout, one after another, each followed by a line of dashes;
what was loaded and how fast it sampled goes to stderr.

Test-time loops: --n_loop=N runs a LoopGPT's shared blocks N times instead of the
number it was trained with. Iterations beyond the trained count N_train reuse the
last trained gate a_{N_train}; fewer iterations use a_1 .. a_N as trained (see
LoopGPT in model.py). A plain GPT does not loop, so --n_loop is an error for it.

KV cache (--use_cache=True, the default): the prompt is run once, then one token per
step, with the keys and values of earlier tokens kept for every (loop iteration,
layer). It gives the same tokens as --use_cache=False, which re-runs the whole
context every step; past block_size both re-run the last block_size tokens.
--kv_budget=k keeps k groups of the loop's keys and values instead of one per
iteration: iterations 1 .. k-1 their own, the later ones the last (engine.KVCache).

Adaptive depth: --exit_threshold=T > 0 lets each new token of a LoopGPT stop iterating
once its prediction has settled, between exit_min_loops and n_loop iterations (the rule:
step_with_exit in engine.py). The mean iterations per generated token go to stderr.
"""

import os
import sys
import time

import torch

from checkpoint import HF_NAMES, CheckpointError, load_model, load_tokenizer, set_n_loop
from configurator import ConfigError, answer_help, config_keys, configure
from device import DTYPES, autocast_context, default_device, default_dtype, device_type_of
from engine import EXIT_CRITERIA, ExitRule, KVCache, generate
from model import LoopGPT

if __name__ == '__main__':  # --help: the docstring and the keys below, before they are computed
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
init_from = 'resume'     # 'resume' (out_dir's checkpoint), or GPT-2 weights: 'gpt2' ... 'gpt2-xl' or a local HF directory
out_dir = 'out'          # the training run to sample from (init_from='resume')
ckpt = 'best'            # 'best' (lowest val loss) or 'last'; 'best' falls back to last.pt if the run has no best.pt
start = "\n"             # the prompt, or "FILE:prompt.txt" to read it from a file
num_samples = 10         # samples, generated together as one batch
max_new_tokens = 500     # tokens generated per sample
temperature = 0.8        # 1.0: the model's distribution, < 1.0: more conservative, 0: greedy (argmax)
top_k = 200              # sample among the k likeliest tokens only (None: all)
top_p = None             # nucleus sampling: among the likeliest tokens whose probabilities reach top_p (None: all)
n_loop = None            # LoopGPT only: loop iterations at test time (None: as trained); with exit, the most
exit_threshold = 0.0     # LoopGPT: each new token stops iterating once its criterion < this (Huginn: 5e-4); 0: off
exit_min_loops = 1       # with exit: iterations every token runs at least
exit_criterion = 'kl'    # with exit: 'kl', KL(p_n || p_{n-1}) of successive read-outs, 'entropy', H(p_n), or
                         # 'state', |h_n - h_{n-1}| / |h_n|: no read-out until the token stops (large vocabularies)
use_cache = True         # KV cache: the same tokens as without it, faster (tools/bench.py measures by how much)
kv_budget = 0            # LoopGPT: loop groups the KV cache keeps (engine.KVCache); 0: one per iteration.
                         # 1: each token's last keys and values (drawn-depth models), 2: first + latest
seed = 1337
device = default_device()        # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = default_dtype(device)    # 'float32', 'bfloat16' or 'float16' (autocast)
compile = False          # torch.compile the forward pass: pays off for long generations only
# -----------------------------------------------------------------------------

class SampleError(Exception):
    """A mistake the user can fix; main() prints it as one line."""


def die(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def get_config(argv):
    """Defaults, then config files and --key=value. As in train.py, dtype follows --device
    unless it is given too."""
    return configure(config_keys(globals()), argv, derived=lambda c: {'dtype': default_dtype(c['device'])})


def check_config(c):
    """Values of the right type can still be wrong: return what to fix, or None."""
    for key, default in config_keys(globals()).items():  # None only where it means something
        if c[key] is None and default is not None and key != 'top_k':
            return f"{key} cannot be None: give a value like {default!r}."
    if c['init_from'] != 'resume' and c['init_from'] not in HF_NAMES and not os.path.isdir(c['init_from']):
        return (f"init_from={c['init_from']!r} is neither 'resume', a GPT-2 name ({', '.join(HF_NAMES)}) "
                f"nor a local Hugging Face directory: use one of those.")
    if c['ckpt'] not in ('best', 'last'):
        return f"ckpt must be 'best' or 'last', not {c['ckpt']!r}."
    for key in ('num_samples', 'max_new_tokens'):
        if c[key] < 1:
            return f"{key} must be at least 1, not {c[key]}."
    if c['temperature'] < 0:
        return f"temperature must be 0 (greedy) or more, not {c['temperature']}."
    if c['top_k'] is not None and (not isinstance(c['top_k'], int) or c['top_k'] < 1):
        return f"top_k must be a whole number of at least 1 (or None for all tokens), not {c['top_k']!r}."
    if c['top_p'] is not None and (not isinstance(c['top_p'], (int, float)) or not 0 < c['top_p'] <= 1):
        return f"top_p must be in (0, 1] (or None for all tokens), not {c['top_p']!r}."
    if c['n_loop'] is not None and (not isinstance(c['n_loop'], int) or c['n_loop'] < 1):
        return f"n_loop must be a whole number of at least 1 (or None: as trained), not {c['n_loop']!r}."
    if c['exit_threshold'] < 0:
        return f"exit_threshold must be 0 (off) or more, not {c['exit_threshold']}."
    if c['exit_min_loops'] < 1:
        return f"exit_min_loops must be at least 1, not {c['exit_min_loops']}."
    if c['exit_criterion'] not in EXIT_CRITERIA:
        return f"unknown exit_criterion {c['exit_criterion']!r}: use one of {', '.join(map(repr, EXIT_CRITERIA))}."
    if c['kv_budget'] < 0:
        return f"kv_budget must be 0 (a group per loop iteration) or more, not {c['kv_budget']}."
    if c['exit_threshold'] > 0 and not c['use_cache']:
        return "exit_threshold needs the KV cache (stopped tokens' keys and values live there): drop --use_cache=False."
    if c['dtype'] not in DTYPES:
        return f"unknown dtype '{c['dtype']}': use one of {', '.join(DTYPES)}."
    kind = device_type_of(c['device'])
    if kind == 'cuda' and not torch.cuda.is_available():
        return f"device '{c['device']}' needs a CUDA GPU but torch sees none: use --device=cpu (or mps on a Mac)."
    if kind == 'mps' and not torch.backends.mps.is_available():
        return "device 'mps' is not available here: use --device=cpu."
    return None


def exit_rule(model, c):
    """The ExitRule of exit_threshold and co, or None when it is off (0)."""
    if c['exit_threshold'] == 0:
        return None
    if not isinstance(model, LoopGPT):
        raise SampleError("exit_threshold stops a LoopGPT's loop early, but this model is a plain GPT, which does "
                          "not loop: drop --exit_threshold.")
    return ExitRule(c['exit_threshold'], c['exit_min_loops'], c['exit_criterion'])


def read_prompt(start, tok):
    """--start text, or the contents of the file after FILE:, as token ids."""
    if start.startswith('FILE:'):
        path = start[len('FILE:'):]
        try:
            with open(path, encoding='utf-8') as f:
                start = f.read()
        except OSError as e:
            raise SampleError(f"cannot read the prompt file {path} ({e.strerror}): check the path.") from None
        except UnicodeDecodeError:
            raise SampleError(f"the prompt file {path} is not UTF-8 text: save it as UTF-8.") from None
    ids = tok.encode(start)
    if not ids:
        raise SampleError("the prompt is empty: give at least one character, e.g. --start='\\n'.")
    return ids


def decode(tok, ids):
    # GPT-2 checkpoints pad the vocabulary to 50304; ids past the tokenizer's are never trained
    return tok.decode([i for i in ids if i < tok.vocab_size])


def main(argv):
    try:
        c = get_config(argv)
    except ConfigError as e:
        die(e)
    problem = check_config(c)
    if problem:
        die(problem)
    try:
        model, meta, where = load_model(c['init_from'], c['out_dir'], c['ckpt'], c['device'])
        tok = load_tokenizer(meta, model)
        trained = set_n_loop(model, c['n_loop'])
        exit = exit_rule(model, c)
        prompt = read_prompt(c['start'], tok)
    except (SampleError, CheckpointError) as e:
        die(e)
    loops = f", n_loop {model.n_loop} (trained with {trained})" if isinstance(model, LoopGPT) else ''
    print(f"{where}: {type(model).__name__}, {model.get_num_params() / 1e6:.2f}M parameters{loops}, "
          f"tokenizer {meta['tokenizer']}", file=sys.stderr)
    if c['compile']:
        # dynamic: the sequence length changes every step; one graph serves them all
        model.forward = torch.compile(model.forward, dynamic=True)

    x = torch.tensor(prompt, dtype=torch.long, device=c['device'])[None].repeat(c['num_samples'], 1)  # (B, T)
    torch.manual_seed(c['seed'])
    if device_type_of(c['device']) == 'cuda':
        torch.cuda.manual_seed(c['seed'])
    # top_p=1 keeps every token; passed on, fp32 rounding in sample_next's cumsum would drop some of the tail
    top_p = None if c['top_p'] == 1 else c['top_p']
    cuda = device_type_of(c['device']) == 'cuda'
    if cuda:
        torch.cuda.synchronize()
    t0 = time.time()
    with torch.no_grad(), autocast_context(c['device'], c['dtype']):
        y = generate(model, x, c['max_new_tokens'], temperature=c['temperature'], top_k=c['top_k'],
                     top_p=top_p, use_cache=c['use_cache'], exit=exit, kv_budget=c['kv_budget'])
    y, loops = y if exit is not None else (y, None)
    if cuda:  # the GPU runs behind the host: wait for it before reading the clock
        torch.cuda.synchronize()
    dt = time.time() - t0
    for row in y.tolist():
        print(decode(tok, row))
        print('---------------')
    cache = 'off'
    if c['use_cache']:  # keys and values are stored in the dtype attention runs in
        kv = KVCache(model, c['num_samples'], model.config.block_size, c['kv_budget'])
        cache = f"on, {kv.nbytes(DTYPES[c['dtype']]) / 1e6:.2f} MB"
    print(f"{c['num_samples']} x {c['max_new_tokens']} tokens in {dt:.2f}s "
          f"({dt / c['max_new_tokens'] * 1000:.1f} ms per step, KV cache {cache})", file=sys.stderr)
    if loops is not None:
        print(f"exit ({c['exit_criterion']} < {c['exit_threshold']:g}): {loops.float().mean():.2f} iterations per "
              f"generated token on average, of {model.n_loop} at most", file=sys.stderr)


if __name__ == '__main__':
    main(sys.argv[1:])
