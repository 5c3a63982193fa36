"""
Evaluate a trained model on the benchmarks the field reports, with EleutherAI's
lm-evaluation-harness (pip install lm-eval): HellaSwag, LAMBADA, ARC, PIQA, WikiText, and
any of its hundreds of tasks, or a task of your own (a YAML file and its data).

    python eval.py --out_dir=out-loop6 --tasks=hellaswag,lambada_openai,arc_easy,piqa,wikitext
    python eval.py --init_from=gpt2 --tasks=hellaswag                   # GPT-2 124M: the reference row
    python eval.py --out_dir=out-tiny --tasks=stdlib_next_line          # the demo's model, offline
    python eval.py --out_dir=out-tiny --tasks=stdlib_next_line --n_loop=1,2,3,4   # a loop-count sweep
    python eval.py --out_dir=out-loop6 --tasks=hellaswag --exit_threshold=5e-4    # per-token exit

Settings: the defaults below, then config files, then --key=value (as train.py). Tasks come
from lm-eval's own list, from --include_path, and from data_dir/DATASET/tasks/ of the
checkpoint's dataset (prepare.py stdlib writes stdlib_next_line there). A task's data is
downloaded from the Hugging Face hub on first use and cached.

How the model is asked (LoopLM below): a continuation is scored in one forward pass over
context + continuation, the context cut from the left to block_size; a document's perplexity
over disjoint windows of block_size tokens, as lm-eval's Hugging Face backend and published
GPT-2 figures (a smaller rolling_stride: overlapping windows, lower perplexity, not comparable);
generation with the KV cache, greedy unless the task says otherwise (a task whose max_gen_toks
leaves no room for a context in block_size is refused, as lm-eval's backend refuses it). A LoopGPT runs the loop count it was trained with, or each count of --n_loop.
With --exit_threshold (per-token exit) or --kv_budget, every score follows the path generation
takes instead: the context as one forward pass, then each scored token alone, through the
cache, with the exit rule (engine.teacher_forced); the table then also gives the mean loop
iterations per scored token.

Prints lm-eval's table (one per loop count, and a summary of a sweep) and writes
out_dir/eval-TASKS-CKPT[-nN]-HASH.json: lm-eval's results with the settings that produced
them; HASH covers every setting that changes a score, so no two settings share a file.
"""

import difflib
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections import defaultdict

import torch
from torch.nn import functional as F

from checkpoint import CheckpointError, load_model, load_tokenizer, set_n_loop
from configurator import ConfigError, answer_help, config_keys, configure
from device import DTYPES, autocast_context, default_device, default_dtype, device_type_of
from engine import EXIT_CRITERIA, ExitRule, stream, teacher_forced
from model import LoopGPT

# lm-eval is needed only to evaluate (LoopLM's base class): without it this file still imports
# and answers --help, and evaluate() says in one line what to install (import_lm_eval)
try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows
except ImportError:
    TemplateLM, get_rolling_token_windows = object, None

if __name__ == '__main__':  # --help: the docstring and the keys below, before they are computed
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
init_from = 'resume'     # 'resume' (out_dir's checkpoint), or GPT-2 weights: 'gpt2' ... 'gpt2-xl' or a local HF directory
out_dir = 'out'          # the training run to evaluate; the results JSON goes here too
ckpt = 'best'            # 'best' (falls back to last.pt) or 'last'
tasks = ''               # lm-eval task (or group) names, comma-separated, e.g. 'hellaswag,arc_easy'
include_path = ''        # a folder of your own task YAML files (lm-eval's --include_path)
data_dir = 'data'        # prepare.py's folder: data_dir/DATASET/tasks/ of the checkpoint's dataset is searched too
num_fewshot = None       # examples in each prompt (None: the task's own)
limit = None             # examples per task, for a quick look: a count (40) or a fraction (0.1); None: all
batch_size = 16          # sequences per forward pass
n_loop = ''              # LoopGPT: loop iterations ('' as trained), or several, '1,2,4,8': one evaluation each
exit_threshold = 0.0     # LoopGPT: per-token exit, each token stops once its criterion < this (0: off)
exit_min_loops = 1       # with exit: iterations every token runs at least
exit_criterion = 'kl'    # with exit: 'kl', KL(p_n || p_{n-1}), 'entropy', H(p_n), or 'state', |h_n - h_{n-1}| / |h_n|
kv_budget = 0            # LoopGPT: loop groups the KV cache keeps (engine.KVCache); 0: one per iteration
rolling_stride = 0       # perplexity: tokens scored per window; 0: block_size, lm-eval's disjoint windows, as published
                         # figures; smaller: overlapping windows (more context, lower perplexity, NOT comparable)
gen_kwargs = ''          # generation tasks: lm-eval's --gen_kwargs, e.g. 'max_gen_toks=64' (overrides the task's)
seed = 1234              # lm-eval's seeds (few-shot draws, sampled generation)
device = default_device()
dtype = default_dtype(device)  # 'float32', 'bfloat16' or 'float16' (autocast)
# -----------------------------------------------------------------------------


class EvalError(Exception):
    """A mistake the user can fix; main() prints it as one line."""


def import_lm_eval():
    """lm-eval, imported when an evaluation starts (like wandb in train.py), or the one-line
    EvalError that says what to install. LoopLM's base class comes from the optional import above."""
    try:
        import lm_eval
        import lm_eval.api.model  # noqa: F401  (the submodules used: LoopLM's, tasks, tables)
        import lm_eval.tasks  # noqa: F401
        import lm_eval.utils  # noqa: F401
    except ImportError:
        raise EvalError("eval.py needs EleutherAI's lm-evaluation-harness: pip install lm-eval") from None
    return lm_eval


# -----------------------------------------------------------------------------
# the model, as lm-eval asks for it


class LoopLM(TemplateLM):
    """lm-eval's model interface for a GPT or LoopGPT of model.py with one of tokenizer.py's
    tokenizers. exit (an ExitRule) or kv_budget > 0: scores follow the generation path.

    Built on lm-eval's TemplateLM, which turns its requests into token ids as its own Hugging
    Face backend does (a context's trailing spaces move to the continuation, an empty context
    becomes the prefix token), so that scores compare with published ones."""

    def __init__(self, model, tok, batch_size=16, device='cpu', dtype='float32', exit=None, kv_budget=0,
                 rolling_stride=0):
        super().__init__()
        self.model, self.tok, self.batch_size = model, tok, batch_size
        self._device, self.ctx = device, autocast_context(device, dtype)  # LM.device reads _device
        self.exit, self.kv_budget = exit, kv_budget
        self.stride = min(rolling_stride or self.max_length, self.max_length)  # 0: disjoint, lm-eval's
        self.iterations = defaultdict(list)  # task -> loop iterations of each scored or generated token
        self.task_names = None  # of the requests being scored, in order (see loglikelihood)

    @property
    def eot_token_id(self):
        # documents start after it (rolling perplexity) and an empty context is it; a tokenizer
        # without one (bytes) starts them after a newline, as a file's first line follows the last
        eot = self.tok.eot_token
        return eot if eot is not None else self.tok.encode('\n')[-1]

    @property
    def max_length(self):
        return self.model.config.block_size

    def tok_encode(self, string, add_special_tokens=None, **kwargs):
        return self.tok.encode(string)

    def tok_decode(self, tokens, **kwargs):
        return self.tok.decode(tokens)

    # --- scoring ---

    def loglikelihood(self, requests, disable_tqdm=False):
        self.task_names = [r.task_name for r in requests]
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kwargs):
        """requests: ((context, continuation), context ids, continuation ids) -> (log p of the
        continuation, whether greedy decoding would produce it). One window each: context +
        continuation cut from the left to block_size + 1 tokens, the last one never an input
        (a continuation longer than block_size is scored on its last block_size tokens)."""
        windows = []
        for (_, context, continuation), task in zip(requests, self.task_names or [None] * len(requests)):
            whole = (context + continuation)[-(self.max_length + 1):]
            windows.append((whole, min(len(continuation), len(whole) - 1), task))
        return self.score(windows)

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """Perplexity over whole documents: the log-likelihood of each, summed over windows of at
        most block_size inputs that predict every token once (lm-eval's get_rolling_token_windows).
        The stride rule: the first window predicts the first block_size tokens from the prefix
        token (end of text) on; each later one predicts the next `stride` tokens (the last ones,
        what is left), each from the block_size tokens before the last of them, so the first
        of them sees block_size - stride + 1 tokens and the last block_size. lm-eval's context_len
        is block_size - stride + 1; stride = block_size (context_len 1), the default, is its Hugging
        Face backend's disjoint windows; a smaller stride gives more context for more compute, and
        a lower perplexity that published figures do not share."""
        windows, owner = [], []
        for i, request in enumerate(requests):
            for x, y in get_rolling_token_windows(
                    token_list=self.tok_encode(request.args[0]), prefix_token=self.eot_token_id,
                    max_seq_len=self.max_length, context_len=self.max_length - self.stride + 1):
                windows.append((x + y[-1:], len(y), request.task_name))  # ids: the inputs, then the last target
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logp, _) in zip(owner, self.score(windows)):
            totals[i] += logp
        return totals

    def score(self, windows):
        """windows: (ids, n, task): the log-likelihood of the last n ids given those before, and
        whether each was the argmax. Batched by length (right-padded: a causal model's earlier
        positions never see the padding); with exit or a budget, by context length as well."""
        results = [None] * len(windows)
        generation_path = self.exit is not None or self.kv_budget > 0
        key = (lambda i: (len(windows[i][0]) - windows[i][1], -len(windows[i][0]))) if generation_path \
            else (lambda i: -len(windows[i][0]))
        order = sorted(range(len(windows)), key=key)
        batches, batch = [], []
        for i in order:  # a batch holds windows of one context length on the generation path
            if batch and (len(batch) == self.batch_size or (generation_path and key(i)[0] != key(batch[0])[0])):
                batches.append(batch)
                batch = []
            batch.append(i)
        batches += [batch] if batch else []
        for batch in batches:
            for i, r in zip(batch, self.score_batch([windows[i] for i in batch], generation_path)):
                results[i] = r
        return results

    @torch.no_grad()
    def score_batch(self, windows, generation_path):
        T = max(len(ids) for ids, _, _ in windows) - 1
        x = torch.zeros((len(windows), T), dtype=torch.long)
        for b, (ids, _, _) in enumerate(windows):
            x[b, :len(ids) - 1] = torch.tensor(ids[:-1])
        x = x.to(self.device)
        with self.ctx:
            if generation_path:  # the context in one pass, then one token at a time (engine.teacher_forced)
                n_prompt = len(windows[0][0]) - 1 - windows[0][1]
                logits, loops = teacher_forced(self.model, x, n_prompt, self.exit, self.kv_budget)
                first = [0] * len(windows)  # the scored positions start the returned ones
            else:
                h = self.model.transformer.ln_f(self.model.body(self.model.embed(x)))  # (B, T, C)
                logits, loops = None, None
                first = [len(ids) - 1 - n for ids, n, _ in windows]
        out = []
        for b, (ids, n, task) in enumerate(windows):
            target = torch.tensor(ids[-n:], device=self.device)
            if generation_path:
                z = logits[b, first[b]:first[b] + n].float()
                self.iterations[task] += loops[b, first[b]:first[b] + n].tolist()
            else:  # the head outside autocast, in the weights' precision: bf16 logits would round the scores
                with torch.autocast(x.device.type, enabled=False):
                    z = self.model.lm_head(h[b, first[b]:first[b] + n].to(self.model.lm_head.weight.dtype))
            logp = F.log_softmax(z, dim=-1)
            out.append((logp.gather(1, target[:, None]).sum().item(), bool((z.argmax(-1) == target).all())))
        return out

    # --- generation ---

    def generate_until(self, requests, disable_tqdm=False):
        """Our generation (engine.stream, with the KV cache) from each context, until one of the
        task's stop strings (and end of text) or max_gen_toks tokens; greedy unless the task
        asks to sample. Contexts of one length and settings are generated together."""
        groups = defaultdict(list)
        for i, request in enumerate(requests):
            context, kw = request.args
            kw = dict(kw or {})
            until = kw.pop('until', None) or []
            until = [until] if isinstance(until, str) else list(until)
            if self.tok.eot_token is not None:
                until.append(self.tok.decode([self.tok.eot_token]))
            max_gen = kw.pop('max_gen_toks', 256)
            if max_gen >= self.max_length:  # no room for a context: lm-eval's hf backend refuses it too
                raise EvalError(f"task {request.task_name!r} generates up to {max_gen} tokens, which leaves no room "
                                f"for its context in this model's block_size of {self.max_length}: give "
                                f"--gen_kwargs=max_gen_toks=N with N < {self.max_length}, or a model with a larger "
                                f"block_size.")
            ids = self.tok_encode(context)[-(self.max_length - max_gen):] or [self.eot_token_id]
            sample = kw.pop('do_sample', False) and kw.get('temperature', 1.0) > 0
            settings = (tuple(until), max_gen, kw.get('temperature', 1.0) if sample else 0.0,
                        kw.get('top_k'), kw.get('top_p'))
            groups[len(ids), settings].append((i, ids, request.task_name))
        results = [None] * len(requests)
        for (_, settings), members in groups.items():
            for k in range(0, len(members), self.batch_size):
                batch = members[k:k + self.batch_size]
                for (i, _, _), text in zip(batch, self.generate_batch(batch, *settings)):
                    results[i] = text
        return results

    def generate_batch(self, batch, until, max_gen, temperature, top_k, top_p):
        idx = torch.tensor([ids for _, ids, _ in batch], device=self.device)
        new, texts, done = [[] for _ in batch], [''] * len(batch), [False] * len(batch)
        with self.ctx:
            for tokens, loops in stream(self.model, idx, max_gen, temperature, top_k, top_p,
                                        exit=self.exit, kv_budget=self.kv_budget):
                tokens = tokens[:, 0].tolist()  # one wait for the device per step, not one per row
                loops = loops.tolist() if loops is not None else [self.model.n_loop] * len(batch)
                for b, (_, _, task) in enumerate(batch):
                    if done[b]:
                        continue
                    new[b].append(tokens[b])
                    self.iterations[task].append(loops[b])
                    texts[b] = self.tok_decode(new[b])
                    done[b] = any(s in texts[b] for s in until)
                if all(done):
                    break
        return [min((t.split(s)[0] for s in until if s in t), key=len, default=t) for t in texts]


# -----------------------------------------------------------------------------
# tasks


def task_manager(lm_eval, names, paths):
    """lm-eval's TaskManager that knows `names`, with the folders in `paths` searched too. Only
    local folders are indexed when they hold every task asked for (lm-eval's own ~200 folders
    take seconds to index). An unknown name is an EvalError that lists the closest."""
    tasks = lm_eval.tasks
    if paths:
        local = tasks.TaskManager(include_path=paths, include_defaults=False)
        if all(name in local.all_tasks for name in names):
            return local
    manager = tasks.TaskManager(include_path=paths or None)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        close = {name: difflib.get_close_matches(name, manager.all_tasks, n=4) for name in unknown}
        hints = '; '.join(f"{name!r}: did you mean {', '.join(c)}?" if c else f"{name!r}: no close name"
                          for name, c in close.items())
        raise EvalError(f"unknown task {hints} Use names lm-eval lists (lm-eval ls tasks), or point "
                        f"--include_path at a folder of task YAML files.")
    return manager


def load_tasks(manager, names):
    """Load each task (its dataset too, downloaded on first use) so that a task lm-eval cannot load
    is named in one line, before the model runs."""
    for name in names:
        try:
            manager.load([name])
        except Exception as e:  # datasets' offline and connection errors, a broken YAML, ...
            text = f"{type(e).__name__}: {e}"
            if re.search(r'offline|connect|resolve|reach|network|hub|LocalEntryNotFound', text, re.I):
                raise EvalError(f"task {name!r} needs its data from the Hugging Face hub, which cannot be reached "
                                f"here: run once with network access (it is cached then), or point --include_path "
                                f"at a local task.") from None
            raise EvalError(f"task {name!r} cannot be loaded ({text.splitlines()[0][:200]}): "
                            f"check its YAML and data files.") from None


# -----------------------------------------------------------------------------
# the command


def check_config(c):
    """Values of the right type can still be wrong: return what to fix, or None."""
    if not [t for t in c['tasks'].split(',') if t.strip()]:
        return "no tasks: give --tasks=NAME[,NAME...], e.g. --tasks=hellaswag (or stdlib_next_line offline)."
    if c['ckpt'] not in ('best', 'last'):
        return f"ckpt must be 'best' or 'last', not {c['ckpt']!r}."
    if c['batch_size'] < 1:
        return f"batch_size must be at least 1, not {c['batch_size']}."
    if n_loops(c) is None:
        return f"n_loop must be '' (as trained) or whole numbers of at least 1, like '4' or '1,2,4', not {c['n_loop']!r}."
    if c['exit_threshold'] < 0 or c['kv_budget'] < 0 or c['rolling_stride'] < 0:
        return "exit_threshold, kv_budget and rolling_stride must not be negative (0: off, or the default)."
    limit = c['limit']  # lm-eval reads a number below 1 as a fraction of the task's examples, else as a count
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or not
                              (isinstance(limit, int) and limit >= 1 or isinstance(limit, float) and 0 < limit < 1)):
        return (f"limit must be a count of examples of at least 1, like 40, or a fraction between 0 and 1, like 0.1 "
                f"(None: all), not {limit!r}.")
    if gen_kwargs_of(c) is None:
        return f"gen_kwargs must be KEY=VALUE pairs, comma-separated, like 'max_gen_toks=64', not {c['gen_kwargs']!r}."
    if c['exit_min_loops'] < 1:
        return f"exit_min_loops must be at least 1, not {c['exit_min_loops']}."
    if c['exit_criterion'] not in EXIT_CRITERIA:
        return f"unknown exit_criterion {c['exit_criterion']!r}: use one of {', '.join(map(repr, EXIT_CRITERIA))}."
    if c['dtype'] not in DTYPES:
        return f"unknown dtype '{c['dtype']}': use one of {', '.join(DTYPES)}."
    if device_type_of(c['device']) == 'cuda' and not torch.cuda.is_available():
        return f"device '{c['device']}' needs a CUDA GPU but torch sees none: use --device=cpu."
    return None


def n_loops(c):
    """--n_loop as a list ([None]: as trained), or None if it is not one."""
    text = str(c['n_loop']).strip()
    if not text:
        return [None]
    parts = [p.strip() for p in text.split(',')]
    return [int(p) for p in parts] if all(p.isdigit() and int(p) >= 1 for p in parts) else None


def gen_kwargs_of(c):
    """--gen_kwargs as lm-eval's 'k=v,k=v' string ('' -> None), or None where it is not one."""
    text = c['gen_kwargs'].strip() if isinstance(c['gen_kwargs'], str) else None
    if text is None or (text and not all(re.fullmatch(r'\s*\w+\s*=[^=]+', p) for p in text.split(','))):
        return None
    return text


def score_settings(c, checkpoint, n_loop, stride):
    """Every setting that changes a score (the results file's name hashes them, its JSON keeps
    them): the weights (init_from, and which checkpoint file at which iteration), the loop count
    run, exit, the cache budget, the perplexity stride in tokens, the prompts (num_fewshot, seed),
    the examples (limit), generation's overrides and the precision."""
    exit = dict(threshold=c['exit_threshold'], min_loops=c['exit_min_loops'], criterion=c['exit_criterion']) \
        if c['exit_threshold'] else None
    return dict(init_from=c['init_from'], checkpoint=checkpoint, n_loop=n_loop, exit=exit, kv_budget=c['kv_budget'],
                rolling_stride=stride, num_fewshot=c['num_fewshot'], limit=c['limit'], seed=c['seed'],
                gen_kwargs=c['gen_kwargs'].strip(), dtype=c['dtype'])


def results_path(c, names, n_loop, scored):
    """out_dir/eval-TASKS-CKPT[-nN]-HASH.json: readable, and HASH (8 hex digits of the settings in
    `scored`, score_settings) keeps two evaluations that can differ in a score apart."""
    what = 'gpt2' if c['init_from'] == 'gpt2' else (c['init_from'].strip('/').replace('/', '_')
                                                     if c['init_from'] != 'resume' else c['ckpt'])
    digest = hashlib.sha256(json.dumps(scored, sort_keys=True).encode()).hexdigest()[:8]
    parts = ['eval', '+'.join(names), what] + ([f'n{n_loop}'] if n_loop else []) + [digest]
    return os.path.join(c['out_dir'], '-'.join(parts) + '.json')


def evaluate(c, argv):
    """Load, check, evaluate at every loop count; returns {n_loop: lm-eval's results}."""
    lm_eval = import_lm_eval()
    names = [t.strip() for t in c['tasks'].split(',') if t.strip()]
    try:
        model, meta, where = load_model(c['init_from'], c['out_dir'], c['ckpt'], c['device'], use=('evaluate', 'eval.py'))
        tok = load_tokenizer(meta, model)
    except CheckpointError as e:
        raise EvalError(e) from None
    if (c['exit_threshold'] or c['kv_budget']) and not isinstance(model, LoopGPT):
        raise EvalError("exit_threshold and kv_budget act on a LoopGPT's loop, but this model is a plain GPT, which "
                        "does not loop: drop them.")
    trained = model.config.n_loop
    try:  # a GPT refuses --n_loop: say so before the tasks load
        set_n_loop(model, n_loops(c)[0])
    except CheckpointError as e:
        raise EvalError(e) from None
    exit = ExitRule(c['exit_threshold'], c['exit_min_loops'], c['exit_criterion']) if c['exit_threshold'] else None
    dataset = (meta.get('settings') or {}).get('dataset') or meta.get('dataset')
    paths = [p for p in [c['include_path'], os.path.join(c['data_dir'], dataset or '', 'tasks')]
             if p and os.path.isdir(p)]
    if c['include_path'] and c['include_path'] not in paths:
        raise EvalError(f"include_path {c['include_path']!r} is not a folder: give the folder of your task YAML files.")
    manager = task_manager(lm_eval, names, paths)
    load_tasks(manager, names)
    runs = {}
    for n in n_loops(c):
        set_n_loop(model, n)
        print(f"{where}: {type(model).__name__}, {model.get_num_params() / 1e6:.2f}M parameters, "
              f"tokenizer {meta['tokenizer']}" + (f", n_loop {model.n_loop} (trained with {trained})"
                                                  if isinstance(model, LoopGPT) else ''), file=sys.stderr)
        lm = LoopLM(model, tok, c['batch_size'], c['device'], c['dtype'], exit, c['kv_budget'], c['rolling_stride'])
        t0 = time.time()
        results = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, num_fewshot=c['num_fewshot'],
                                          limit=c['limit'], random_seed=c['seed'], numpy_random_seed=c['seed'],
                                          torch_random_seed=c['seed'], fewshot_random_seed=c['seed'],
                                          gen_kwargs=gen_kwargs_of(c) or None, log_samples=False)
        for task, its in lm.iterations.items():
            if task in results['results'] and (exit is not None or c['kv_budget']):
                results['results'][task]['iterations,none'] = sum(its) / max(len(its), 1)
        print(f"\nn_loop {model.n_loop}" + (f", exit {exit.criterion} < {exit.threshold:g}" if exit else '') +
              (f", kv_budget {c['kv_budget']}" if c['kv_budget'] else '') + f", perplexity {windows(lm)}"
              f" ({time.time() - t0:.0f} s):")
        print(lm_eval.utils.make_table(results))
        looped = model.n_loop if isinstance(model, LoopGPT) else None
        scored = score_settings(c, os.path.basename(where), looped, lm.stride)
        settings = dict(config=c, command=' '.join(['python eval.py'] + argv), model=where,
                        model_type=type(model).__name__, n_loop=model.n_loop, trained_n_loop=trained,
                        tokenizer=meta['tokenizer'], perplexity_windows=windows(lm), scored=scored,
                        lm_eval_version=getattr(lm_eval, '__version__', None), seconds=time.time() - t0)
        path = results_path(c, names, looped, scored)
        os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
        with open(path, 'w') as f:
            json.dump(dict(settings=settings, results={k: v for k, v in results.items() if k != 'samples'}), f,
                      indent=2, default=lm_eval.utils.handle_non_serializable)
        print(f"wrote {path}", file=sys.stderr)
        runs[model.n_loop] = results
    if len(runs) > 1:
        print('\n' + sweep_table(runs))
    return runs


def windows(lm):
    """How a document's perplexity was computed, for the table's header and the JSON."""
    if lm.stride == lm.max_length:
        return f"over disjoint windows of {lm.max_length} tokens (rolling_stride {lm.stride}, lm-eval's)"
    return (f"over overlapping windows (rolling_stride {lm.stride} of block_size {lm.max_length}: NOT comparable "
            f"with published figures)")


def sweep_table(runs):
    """One row per task and metric, one column per loop count."""
    counts = list(runs)
    rows = {}
    for n, results in runs.items():
        for task, metrics in results['results'].items():
            for key, value in metrics.items():
                if ',' in key and '_stderr' not in key and isinstance(value, (int, float)):
                    rows.setdefault((task, key.split(',')[0]), {})[n] = value
    lines = ["| task | metric | " + " | ".join(f"n_loop={n}" for n in counts) + " |",
             "|---|---|" + "--:|" * len(counts)]
    for (task, metric), values in rows.items():
        lines.append(f"| {task} | {metric} | " + " | ".join(f"{values[n]:.4f}" if n in values else '' for n in counts)
                     + " |")
    return '\n'.join(lines)


def main(argv):
    try:
        c = configure(config_keys(globals()), argv, derived=lambda c: {'dtype': default_dtype(c['device'])})
        problem = check_config(c)
        if problem:
            raise EvalError(problem)
        logging.getLogger('lm_eval').setLevel(logging.WARNING)  # its INFO lines would bury the table
        evaluate(c, argv)
    except (ConfigError, EvalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
