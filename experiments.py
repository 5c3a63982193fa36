"""
The paper's comparison at small scale, and three studies of when looping pays, on your
own machine, one command each.

A loop model k⊗L (k transformer blocks applied L times, with learned gates) is
trained next to its two twins:

    k⊗1    a GPT of the same k blocks, looped once: the same parameters
    kL⊗1   a GPT of k*L blocks: the same depth, so the same FLOPs per token

plus two probes the paper leaves open: k⊗L with its gates frozen at 1 (do the gates
matter?) and a loop over a subset of the blocks, P + k⊗L + C (P unshared prelude
blocks, k blocks looped L times, C unshared coda blocks). Every run gets the same
token budget, the same seeds and the same data order (train.py's batches depend only
on the seed and the iteration), so differences come from the architecture; with
n_seeds > 1 the seed spread shows which gaps are real. Each trained LoopGPT then gets
a test-time loop sweep: its val loss when run with n_loop = 1 .. sweep_to * L, the
loss of reading out (coda, ln_f, lm_head) after each iteration, and its mean gates |a_n|.

    python prepare.py stdlib
    python experiments.py                 # the paper's grid on stdlib: ~15-25 min on a 2-core CPU
    python experiments.py --quick         # a smaller grid: a few minutes

    python prepare.py hops
    python experiments.py --dataset=hops  # a task that needs depth: 1⊗1 1⊗2 1⊗4 2⊗1 4⊗1, accuracy per hop count
    python experiments.py --budgets=1,4,16      # token budgets: 1⊗1 1⊗2 2⊗1 at 1x, 4x and 16x the tokens
    python experiments.py --recurrent=2x2       # recurrent depth: 2⊗2 with loop counts drawn in training
                                                # (with and without input injection) next to the fixed 2⊗2,
                                                # swept to 4x the trained loops; add --dataset=hops for the task
    python experiments.py --ablations          # the paper's open checks: 1 block looped 1, 2, 4, 6 times,
                                                # learned vs frozen gates, the unique-block twins; 3 seeds
    python experiments.py --ablations --quick  # its 1-seed pilot: does 1⊗2 beat 1⊗1 at this budget?
    python experiments.py --pairs=2x3 --n_seeds=3 --jobs=2 --train_args="--device=cuda --dtype=bfloat16"

--dataset=hops, --budgets, --recurrent and --ablations each bring their own defaults (the grid, the
model size and budget for hops, the out_dir), which --key=value still overrides;
--quick makes a smaller version of any of them. --jobs runs that many trainings at once
(default: 2 on a machine with 2 or more cores, each with threads=1).

Each run is a separate `python train.py --key=value ...` into runs_dir/NAME-sSEED/
(train.py's output: log.jsonl, last.pt; and train.out, its console output). A run
that already finished with the same settings is reused, so re-running the command
after an interruption, or to redraw the plots, only trains what is missing.
Written to out_dir and printed: results.md (tables); also results.json (every number)
and, if matplotlib is installed, val_loss_vs_tokens.png, val_loss_vs_flops.png,
loop_sweep.png, and for the studies budget.png, accuracy_by_hops.png or loop_counts.png.
"""

import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
import torch

from checkpoint import CheckpointError, default_device, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, answer_help, config_keys, configure
from dataformat import DataError, answer_groups, answer_hits, fixed_windows, load_meta

if __name__ == '__main__':  # --help: the docstring and the keys below, before they are computed
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
# settings: python experiments.py [--quick] [--key=value ...]
out_dir = ''                   # results.md, results.json and the plots; '' = experiments-out[-hops][-budget][-depth][-quick]
runs_dir = ''                  # one train.py out_dir per run; '' = out_dir/runs
rerun = False                  # True: train again runs that already finished with these settings
dataset = 'stdlib'             # any dataset prepare.py made in data_dir ('hops' brings its own defaults)
data_dir = 'data'
# the grid
pairs = '1x2,2x2'              # (k, L) pairs 'kxL': each trains k⊗L and its twins k⊗1 and kL⊗1
ablate_gates = '2x2'           # 'kxL,...': train each k⊗L again with its gates frozen at 1 ('' = skip)
loop_counts = ''               # '1,2,4,6': one block looped n times for each n (n = 1: the GPT 1⊗1), all with
                               # the parameters of one block; with pairs '1xn' the unique-block twins n⊗1 ('' = skip)
drawn = ''                     # 'kxL': k⊗L trained with loop counts drawn per iteration (mean L), input injection
                               # and loop_norm (the recurrent-depth recipe), next to the fixed k⊗L ('' = skip)
prelude_coda = '1+1x2+1'       # 'P+kxL+C': P unshared blocks, k looped L times, C unshared ('' = skip)
budgets = ''                   # token-budget sweep, e.g. '1,4,16': every run at 1x, 4x, 16x max_iters ('' = once)
recurrent = ''                 # 'kxL': k⊗L trained with loop_sampling='poisson', without and with
                               # input_injection, next to the fixed k⊗L ('' = skip)
bptt_loops = 0                 # train.py's bptt_loops for the recurrent runs (0: backprop through all)
loop_norm = False              # train.py's loop_norm for the recurrent runs (all three): deep recurrence
sweep_to = 2                   # test-time loop sweep: n_loop = 1 .. sweep_to x the trained count
n_seeds = 2                    # seeds seed, seed+1, ...: every run is trained once per seed
seed = 1337
# every run: the same width and the same token budget (max_iters * batch_size * block_size)
n_embd = 128
n_head = 4
block_size = 128
batch_size = 16
max_iters = 700                # 1.43M tokens per run
learning_rate = 2e-3           # cosine decay to min_lr over max_iters, after warmup_iters
min_lr = 2e-4
warmup_iters = 40
weight_decay = 0.1
eval_interval = 100            # train.py's evaluations: the points on the loss curves
eval_iters = 4                 # batches per split in train.py's evaluations (seed-dependent batches)
eval_tokens = 50_000           # final train and val loss, and the loop sweep: every run and seed is
                               # evaluated on the same windows, spread evenly over each split
train_args = ''                # more --key=value for every train.py run, e.g. '--device=cuda'
jobs = min(2, os.cpu_count() or 1)  # train.py runs at once, each with `threads` threads
threads = 1                    # CPU threads per run (OMP_NUM_THREADS), 0 = torch's default (all cores).
                               # On an idle 2-core machine 2 threads train ~1.7x faster, but on a busy one
                               # two thread pools fighting over the cores run 2-10x slower than 1 thread
quick = False                  # a smaller version of the chosen experiment, in a few minutes (or --quick)
ablations = False              # the gates and loop-count study (results/ablations), or --ablations
# -----------------------------------------------------------------------------

# the hops task (prepare.py hops, its defaults): a ~55k-parameter model learns 1 and 2 hops
# in a few thousand steps; 3 and 4 hops are where the models part
HOPS = dict(pairs='1x2,1x4', ablate_gates='', prelude_coda='', n_embd=64, n_head=4, block_size=32,
            batch_size=64, max_iters=5000, learning_rate=3e-3, min_lr=3e-4, warmup_iters=100,
            eval_interval=500, eval_iters=8, eval_tokens=131_072)

# the paper's open checks (results/ablations): do learned gates matter, and what do 1, 2, 4, 6 loops of one
# block buy at its parameters? Narrower than the other studies (n_embd 64), so that a block sees more tokens
# per parameter at the same cost: there 1⊗2 beats 1⊗1 by 0.072 after 4000 iterations (the pilot, --quick),
# and 3 seeds of the grid fit in ~90 minutes on 2 cores. Its --quick is that pilot, at the full budget.
ABLATIONS = dict(loop_counts='1,2,4,6', pairs='1x2,1x4', ablate_gates='1x2,1x4', drawn='1x4', prelude_coda='',
                 n_embd=64, max_iters=4000, eval_interval=500, n_seeds=3)


def presets(c):
    """The defaults that follow the chosen experiment (configure's `derived`: a config file
    or --key=value still wins): the hops task's model and budget, the grid of a budget or
    recurrent-depth study, the out_dir, and --quick's cuts."""
    d = dict(HOPS) if c['dataset'] == 'hops' else {}
    if c['budgets']:  # the smallest loop and its two twins
        d.update(pairs='1x2', ablate_gates='', prelude_coda='')
    if c['recurrent']:
        d.update(pairs='', ablate_gates='', prelude_coda='', sweep_to=4)
    if c.get('ablations'):
        d.update(ABLATIONS)
        if c['quick']:  # the pilot: 1⊗1 and 1⊗2, one seed, the study's budget
            d.update(loop_counts='1,2', pairs='', ablate_gates='', drawn='', n_seeds=1)
    elif c['quick']:
        d.update(n_seeds=1)
        if c['dataset'] == 'hops':
            d.update(max_iters=1500)
        else:
            d.update(max_iters=300, eval_interval=50)
        if not (c['budgets'] or c['recurrent'] or c['dataset'] == 'hops'):
            d.update(pairs='1x2', ablate_gates='1x2')
    study = [name for name, on in (('hops', c['dataset'] == 'hops'), ('budget', c['budgets']),
                                   ('depth', c['recurrent']), ('ablations', c.get('ablations')),
                                   ('quick', c['quick'])) if on]
    d['out_dir'] = '-'.join(['experiments-out'] + study)
    return d


TRAIN_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train.py')


class RunError(Exception):
    """A training run that failed or left no usable log; the message says where to look."""


# -----------------------------------------------------------------------------
# the grid


@dataclass(frozen=True)
class Run:
    """One architecture of the grid, trained once per seed."""
    name: str                 # directory name, e.g. 'loop2x2'
    label: str                # the paper's notation, e.g. '2⊗2'
    n_layer: int              # looped blocks (for a GPT: all of them)
    n_loop: int = 1
    n_prelude: int = 0
    n_coda: int = 0
    learn_gates: bool = True
    loop_sampling: str = 'fixed'    # recurrent-depth training (train.py)
    input_injection: bool = False
    bptt_loops: int = 0
    loop_norm: bool = False
    budget: int = 1           # trained for budget x max_iters iterations

    @property
    def model_type(self):
        return 'gpt' if (self.n_loop, self.n_prelude, self.n_coda) == (1, 0, 0) else 'loop'

    @property
    def blocks(self):
        """Blocks with their own weights."""
        return self.n_prelude + self.n_layer + self.n_coda

    @property
    def depth(self):
        """Blocks a token passes through: the FLOPs per token grow with it."""
        return self.n_prelude + self.n_layer * self.n_loop + self.n_coda


def gpt(n):
    return Run(f'gpt{n}', f'{n}⊗1', n)


def loop(k, L, learn_gates=True):
    if learn_gates:
        return Run(f'loop{k}x{L}', f'{k}⊗{L}', k, L)
    return Run(f'loop{k}x{L}-frozen', f'{k}⊗{L} gates=1', k, L, learn_gates=False)


def sampled(k, L, input_injection, bptt_loops):
    """k⊗L trained with loop counts drawn per iteration (mean L), optionally with x_0 injected."""
    name = f'loop{k}x{L}-poisson' + '-inject' * input_injection + (f'-bptt{bptt_loops}' if bptt_loops else '')
    label = f'{k}⊗{L} poisson' + ' +x0' * input_injection + (f' bptt {bptt_loops}' if bptt_loops else '')
    return Run(name, label, k, L, loop_sampling='poisson', input_injection=input_injection, bptt_loops=bptt_loops)


def with_norm(run):
    return replace(run, name=f'{run.name}-norm', label=f'{run.label} +norm', loop_norm=True)


def with_budget(run, b):
    return replace(run, name=f'{run.name}-x{b}', label=f'{run.label} ×{b}', budget=b)


def parse_pair(text, key):
    m = re.fullmatch(r'\s*(\d+)\s*[xX×]\s*(\d+)\s*', text)
    if not m or int(m[1]) < 1 or int(m[2]) < 2:
        raise ConfigError(f"{key}='{text}' is not a pair kxL with k >= 1 and L >= 2: write it like '2x3'.")
    return int(m[1]), int(m[2])


def parse_counts(text, key):
    parts = [p.strip() for p in text.split(',')]
    if not all(p.isdigit() and int(p) >= 1 for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"{key}='{text}' is not a list of different whole numbers of at least 1: "
                          f"write it like '1,2,4,6' (or '' to skip it).")
    return [int(p) for p in parts]


def parse_prelude_coda(text):
    m = re.fullmatch(r'\s*(\d+)\s*\+\s*(\d+)\s*[xX×]\s*(\d+)\s*\+\s*(\d+)\s*', text)
    if not m or int(m[2]) < 1 or int(m[3]) < 1 or int(m[1]) + int(m[4]) < 1:
        raise ConfigError(f"prelude_coda='{text}' is not P+kxL+C with P + C >= 1: "
                          f"write it like '1+1x2+1' (or '' to skip it).")
    return tuple(int(g) for g in m.groups())


def make_grid(cfg):
    """The runs (in table order, without duplicates) and the comparisons to report,
    as (run a, run b, what they share): the table shows val loss of a minus b."""
    runs, comparisons = [], []
    for n in parse_counts(cfg['loop_counts'], 'loop_counts') if cfg.get('loop_counts') else []:
        runs.append(gpt(1) if n == 1 else loop(1, n))
        comparisons += [(loop(1, n), gpt(1), 'parameters')] if n > 1 else []
    for text in filter(None, cfg['pairs'].split(',')):
        k, L = parse_pair(text, 'pairs')
        runs += [gpt(k), loop(k, L), gpt(k * L)]
        comparisons += [(loop(k, L), gpt(k), 'parameters'),
                        (loop(k, L), gpt(k * L), 'depth (FLOPs/token)')]
    for text in filter(None, cfg['ablate_gates'].split(',')):
        k, L = parse_pair(text, 'ablate_gates')
        runs += [loop(k, L), loop(k, L, learn_gates=False)]
        comparisons.append((loop(k, L, learn_gates=False), loop(k, L), 'everything but learned gates'))
    if cfg['prelude_coda']:
        P, k, L, C = parse_prelude_coda(cfg['prelude_coda'])
        pc = Run(f'loop{P}+{k}x{L}+{C}', f'{P}+{k}⊗{L}+{C}', k, L, n_prelude=P, n_coda=C)
        runs.append(pc)
        # compare with every learned-gate run of the same depth: looping a subset vs all or none
        comparisons += [(pc, r, 'depth (FLOPs/token)') for r in dict.fromkeys(runs)
                        if r != pc and r.depth == pc.depth and r.learn_gates]
    if cfg['recurrent']:
        k, L = parse_pair(cfg['recurrent'], 'recurrent')
        fixed, variants = loop(k, L), [sampled(k, L, inject, cfg['bptt_loops']) for inject in (False, True)]
        if cfg.get('loop_norm'):
            fixed, variants = with_norm(fixed), [with_norm(v) for v in variants]
        runs += [fixed] + variants
        comparisons += [(v, fixed, 'parameters, mean loop count') for v in variants]
    if cfg.get('drawn'):
        k, L = parse_pair(cfg['drawn'], 'drawn')
        variant = with_norm(sampled(k, L, True, cfg['bptt_loops']))
        runs += [loop(k, L), variant]
        comparisons.append((variant, loop(k, L), 'parameters, mean loop count'))
    runs, comparisons = list(dict.fromkeys(runs)), list(dict.fromkeys(comparisons))
    if not runs:
        raise ConfigError("nothing to train: give pairs, loop_counts, ablate_gates, prelude_coda, recurrent or drawn.")
    if cfg['budgets']:  # every run and comparison once per budget
        budgets = parse_counts(cfg['budgets'], 'budgets')
        runs = [with_budget(r, b) for b in budgets for r in runs]
        comparisons = [(with_budget(a, b), with_budget(c, b), same) for b in budgets for a, c, same in comparisons]
    if cfg['n_seeds'] < 1:
        raise ConfigError(f"n_seeds={cfg['n_seeds']}: train each run at least once (n_seeds >= 1).")
    if cfg['jobs'] < 1 or cfg['sweep_to'] < 1:
        raise ConfigError(f"jobs={cfg['jobs']}, sweep_to={cfg['sweep_to']}: both must be at least 1.")
    return runs, comparisons


# -----------------------------------------------------------------------------
# training: one train.py subprocess per (run, seed)


def train_command(cfg, run, seed, run_dir):
    iters, every = cfg['max_iters'] * run.budget, cfg['eval_interval'] * run.budget
    args = dict(
        out_dir=run_dir, init_from='scratch', dataset=cfg['dataset'], data_dir=cfg['data_dir'],
        model_type=run.model_type, n_layer=run.n_layer, n_loop=run.n_loop, n_prelude=run.n_prelude,
        n_coda=run.n_coda, learn_gates=run.learn_gates, n_head=cfg['n_head'], n_embd=cfg['n_embd'],
        block_size=cfg['block_size'], dropout=0.0, batch_size=cfg['batch_size'], gradient_accumulation_steps=1,
        max_iters=iters, lr_decay_iters=iters, learning_rate=cfg['learning_rate'],
        min_lr=cfg['min_lr'], warmup_iters=cfg['warmup_iters'], weight_decay=cfg['weight_decay'],
        eval_interval=every, eval_iters=cfg['eval_iters'], log_interval=every,
        seed=seed, compile=False, wandb_log=False,  # compiling would cost more than these short runs
    )
    if run.loop_sampling != 'fixed':
        args.update(loop_sampling=run.loop_sampling, input_injection=run.input_injection, bptt_loops=run.bptt_loops)
    if run.loop_norm:  # only when on: the argv of earlier runs, and so their reuse, stays as it was
        args.update(loop_norm=True)
    return [f'--{k}={v}' for k, v in args.items()] + shlex.split(cfg['train_args'])


def train(cfg, run, seed, run_dir):
    """Train one run, or reuse it if it already finished with the same arguments.
    Returns (its wall time in seconds, whether it was reused)."""
    argv = train_command(cfg, run, seed, run_dir)
    done_path = os.path.join(run_dir, 'experiment.json')
    if not cfg['rerun'] and os.path.exists(done_path):
        with open(done_path) as f:
            done = json.load(f)
        if done.get('argv') == argv:
            return done['wall_s'], True
    shutil.rmtree(run_dir, ignore_errors=True)  # log.jsonl is appended to: start it afresh
    os.makedirs(run_dir)
    t0 = time.time()
    env = dict(os.environ, **({'OMP_NUM_THREADS': str(cfg['threads'])} if cfg['threads'] > 0 else {}))
    with open(os.path.join(run_dir, 'train.out'), 'w') as out:
        rc = subprocess.call([sys.executable, TRAIN_PY] + argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    if rc != 0:
        with open(os.path.join(run_dir, 'train.out')) as f:
            print(''.join(f.readlines()[-15:]), file=sys.stderr, end='')
        raise RunError(f"train.py failed on {run.name} seed {seed} (exit code {rc}); its output is in "
                       f"{run_dir}/train.out: fix the cause shown above and run this again.")
    wall = time.time() - t0
    with open(done_path, 'w') as f:
        json.dump({'argv': argv, 'wall_s': wall}, f)
    return wall, False


def read_evals(run_dir):
    """The "eval" rows of train.py's log.jsonl, in order."""
    with open(os.path.join(run_dir, 'log.jsonl')) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in rows if r.get('kind') == 'eval']
    if not evals:
        raise RunError(f"{run_dir}/log.jsonl has no eval rows: set eval_interval <= max_iters.")
    return evals


def train_all(cfg, todo, run_dir):
    """Train every (run, seed) of todo, cfg['jobs'] at a time; print each as it finishes.
    Returns {(run name, seed): (wall time in seconds, whether it was reused)}."""
    done = {}
    with ThreadPoolExecutor(cfg['jobs']) as pool:
        jobs = {pool.submit(train, cfg, run, s, run_dir(run, s)): (run, s) for run, s in todo}
        try:
            for i, job in enumerate(as_completed(jobs), 1):
                run, s = jobs[job]
                wall, reused = done[run.name, s] = job.result()
                took = 'reused (--rerun=True trains it again)' if reused else f'trained in {wall:.0f} s'
                print(f"[{i}/{len(todo)}] {run.label:<20} seed {s}: {took}", flush=True)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the runs not yet started; those running finish
            raise
    return done


def summarize(run_dir, seed, model, data):
    """The numbers the table and the curves need, from one finished run. The final losses
    are last.pt's on the fixed batches, the same for every run and seed, so the spread over
    seeds is the spread of training; train.py's own evaluations (the curves) draw their
    batches from the seed and sample only a little of each split. On a dataset with
    answers: the val answer accuracy, overall and per answer group, too."""
    evals = read_evals(run_dir)
    last = evals[-1]
    val_loss, accuracy, accuracy_by = evaluate(model, data['val'], data['groups'])
    res = dict(seed=seed, params=model.get_num_params(), flops_per_token=model.flops_per_token(),
               tokens=last['tokens'], flops=last['flops'], time_s=last['time_s'],
               train_loss=evaluate(model, data['train'])[0], val_loss=val_loss,
               curve={k: [r[k] for r in evals] for k in ('iter', 'tokens', 'flops', 'val_loss')})
    if accuracy is not None:
        res.update(accuracy=accuracy, accuracy_by=dict(zip(data['names'], accuracy_by)))
    return res


def fixed_batches(data_dir, dataset, split, n_tokens, batch_size, block_size):
    """dataformat.fixed_windows as torch tensors: the same windows for every run and seed."""
    windows = fixed_windows(os.path.join(data_dir, dataset), split, n_tokens, batch_size, block_size)
    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in windows]


def load_data(cfg):
    """The fixed evaluation batches of both splits, and the dataset's answer groups (or None)."""
    try:  # a missing dataset, or a block_size that does not fit its examples
        groups, names = answer_groups(load_meta(os.path.join(cfg['data_dir'], cfg['dataset'])), cfg['block_size'])
    except DataError as e:
        raise ConfigError(str(e)) from None
    batches = {split: fixed_batches(cfg['data_dir'], cfg['dataset'], split, cfg['eval_tokens'],
                                    cfg['batch_size'], cfg['block_size']) for split in ('train', 'val')}
    return dict(batches, groups=groups, names=names)


@torch.no_grad()
def evaluate(model, batches, groups=None):
    """(mean loss, accuracy, accuracy per group) over the batches (all the same size: the
    loss is the mean over their tokens). The accuracies are those of a dataset with answers,
    given its answer groups, and None otherwise."""
    model.eval()
    losses, hits, answers = [], 0, 0
    for x, y in batches:
        logits, loss = model(x, y)
        losses.append(loss.item())
        if groups is not None:
            h, n = answer_hits(logits.argmax(dim=-1).numpy(), y.numpy(), groups)
            hits, answers = hits + h, answers + n
    loss = sum(losses) / len(losses)
    if groups is None:
        return loss, None, None
    return loss, float(hits.sum() / answers.sum()), (hits / answers).tolist()


# -----------------------------------------------------------------------------
# test-time loop sweep


@torch.no_grad()
def loop_sweep(model, batches, groups=None, sweep_to=2):
    """For a trained LoopGPT with N = model.n_loop iterations: val loss when run with
    n_loop = 1 .. sweep_to * N, read-out loss after iterations 0 .. N, and the mean gates
    |a_n|; with answer groups also the accuracy (overall and per group) at each n.
    Reading out after iteration n <= N is the same computation as running n iterations,
    so the two agree there; the sweep goes on past N, where the last gate is reused."""
    model.eval()
    trained = model.n_loop
    n_loops = list(range(1, sweep_to * trained + 1))
    scores = []
    try:
        for n in n_loops:
            model.n_loop = n
            scores.append(evaluate(model, batches, groups))
    finally:
        model.n_loop = trained
    per_batch = [model.readout_losses(x, y) for x, y in batches]  # (batches, N + 1)
    readout = np.mean(per_batch, axis=0).tolist()
    sweep = dict(trained=trained, n_loop=n_loops, val_loss=[s[0] for s in scores], readout=readout,
                 gates=model.gate_means(), gates_sd=model.gates.detach().std(dim=1).tolist())
    if groups is not None:
        sweep.update(accuracy=[s[1] for s in scores], accuracy_by=[s[2] for s in scores])
    return sweep


# -----------------------------------------------------------------------------
# the grid, end to end


def run_grid(cfg):
    """Train every (run, seed), sweep every LoopGPT, write and print the results."""
    runs, comparisons = make_grid(cfg)
    if cfg['threads'] > 0:
        torch.set_num_threads(cfg['threads'])  # for the sweeps in this process
    data = load_data(cfg)
    runs_path = cfg['runs_dir'] or os.path.join(cfg['out_dir'], 'runs')
    seeds = [cfg['seed'] + i for i in range(cfg['n_seeds'])]
    tokens = cfg['max_iters'] * cfg['batch_size'] * cfg['block_size']
    print(f"{len(runs)} runs x {len(seeds)} seeds, {tokens:,} tokens each"
          f"{' (x the budget)' if cfg['budgets'] else ''}, {cfg['jobs']} at a time, into {runs_path}", flush=True)
    t0, load0 = time.time(), _loadavg()

    def run_dir(run, s):
        return os.path.join(runs_path, f'{run.name}-s{s}')

    todo = [(r, s) for r in runs for s in seeds]
    # the longest runs first, so that no core idles while the last long run finishes
    trained = train_all(cfg, sorted(todo, key=lambda rs: -rs[0].depth * rs[0].budget), run_dir)
    results, sweeps = {}, {}
    for run, s in todo:  # evaluate in table order
        model = model_from_checkpoint(load_checkpoint(run_dir(run, s), 'last'))
        res = summarize(run_dir(run, s), s, model, data)
        results.setdefault(run.name, []).append(res)
        if run.model_type == 'loop':
            sweeps.setdefault(run.name, []).append(loop_sweep(model, data['val'], data['groups'], cfg['sweep_to']))
        acc = f", accuracy {res['accuracy']:.3f}" if 'accuracy' in res else ''
        print(f"{run.label:<20} seed {s}: val loss {res['val_loss']:.4f}{acc}")
    walls = [wall for wall, _ in trained.values()]
    reused = sum(r for _, r in trained.values())
    info = dict(command=' '.join(['python experiments.py'] + [shlex.quote(a) for a in sys.argv[1:]]),
                machine=_machine(cfg), wall_s=time.time() - t0, load_start=load0, load_end=_loadavg(),
                seeds=seeds, tokens=tokens, eval_tokens=len(data['val']) * cfg['batch_size'] * cfg['block_size'],
                runs_wall_s=sum(walls), reused=reused, n_trained=len(todo))
    os.makedirs(cfg['out_dir'], exist_ok=True)
    with open(os.path.join(cfg['out_dir'], 'results.json'), 'w') as f:
        json.dump(dict(info=info, config=cfg, runs=[r.__dict__ for r in runs], results=results, sweeps=sweeps), f)
    table = results_markdown(cfg, info, runs, comparisons, results, sweeps)
    with open(os.path.join(cfg['out_dir'], 'results.md'), 'w') as f:
        f.write(table)
    print('\n' + table)
    plot_all(cfg['out_dir'], runs, results, sweeps)
    return results, sweeps


def _loadavg():
    return round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None


def _machine(cfg):
    device = default_device()
    gpu = f", {torch.cuda.get_device_name()}" if device == 'cuda' else ''
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}){gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s) per run, {cfg['jobs']} run(s) at a time")


# -----------------------------------------------------------------------------
# the tables


def si(x, digits=3):
    """1234567 -> '1.23M'."""
    for div, unit in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{unit}"
    return f"{x:.{digits}g}"


def mean_spread(xs):
    """'mean ± half the range' over seeds; just the value for one seed."""
    m = float(np.mean(xs))
    return f"{m:.3f}" if len(xs) == 1 else f"{m:.3f} ± {(max(xs) - min(xs)) / 2:.3f}"


def results_markdown(cfg, info, runs, comparisons, results, sweeps):
    """results.md: how it was run, then the tables."""
    parts = [header(cfg, info), runs_table(runs, results)]
    if cfg['budgets']:
        parts.append(budget_table(runs, results))
    if cfg.get('loop_counts'):
        parts += [loop_count_table(cfg, results), gates_table(runs, results, sweeps)]
    if any('accuracy' in res[0] for res in results.values()):
        parts.append(accuracy_table(runs, results))
    parts.append(comparisons_table(comparisons, results))
    if sweeps:
        parts.append(sweep_table(runs, sweeps))
        if any('accuracy' in s[0] for s in sweeps.values()):
            parts.append(sweep_table(runs, sweeps, key='accuracy'))
    return "\n\n".join(parts) + "\n"


def header(cfg, info):
    seeds = info['seeds']
    spread = f"mean ± half the range over {len(seeds)} seeds ({', '.join(map(str, seeds))})" \
        if len(seeds) > 1 else f"seed {seeds[0]}"
    reused = (f" ({info['reused']} of {info['n_trained']} runs reused from an earlier call; all "
              f"{info['n_trained']} took {info['runs_wall_s'] / 60:.1f} min to train)") if info['reused'] else ""
    budget = (f"{cfg['max_iters']} iterations = {info['tokens']:,} tokens" if not cfg['budgets'] else
              f"×b {cfg['max_iters']} iterations = ×b {info['tokens']:,} tokens, b in {cfg['budgets']}")
    what = " (answer positions only)" if cfg['dataset'] == 'hops' else ""
    return (f"Command: `{info['command']}`  \n"
            f"Machine: {info['machine']}; load average {info['load_start']} at the start, "
            f"{info['load_end']} at the end; total wall time {info['wall_s'] / 60:.1f} min{reused}.  \n"
            f"Every run: n_embd {cfg['n_embd']}, {cfg['n_head']} heads, block_size {cfg['block_size']}, "
            f"batch {cfg['batch_size']}, {budget} of {cfg['dataset']}, lr {cfg['learning_rate']:g} cosine to "
            f"{cfg['min_lr']:g}; the same data order for every model. Losses{what}: the final model (last.pt) "
            f"on the same {info['eval_tokens']:,} tokens of each split for every run and seed, {spread}.")


def runs_table(runs, results):
    lines = ["| run | model | blocks | depth | params | FLOPs/token | total FLOPs | train time | train loss | val loss |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        res = results[r.name]
        lines.append(f"| {r.label} | {r.name} | {r.blocks} | {r.depth} | {si(res[0]['params'])} | "
                     f"{si(res[0]['flops_per_token'])} | {si(np.mean([x['flops'] for x in res]))} | "
                     f"{np.mean([x['time_s'] for x in res]):.0f} s | "
                     f"{mean_spread([x['train_loss'] for x in res])} | {mean_spread([x['val_loss'] for x in res])} |")
    lines += ["", "blocks: blocks with their own weights; depth: blocks a token passes through (for sampled loop "
              "counts: at the mean count); params: without position embeddings; FLOPs/token: at the trained "
              "n_loop; total FLOPs: as trained (drawn loop counts included); train time: train.py's wall time, "
              "evaluations included. The loss curves in the plots are train.py's evaluations (a few batches "
              "drawn from the seed), so their last points differ a little from these losses."]
    return "\n".join(lines)


def budget_table(runs, results):
    """Val loss of each architecture (rows) at each budget (columns)."""
    budgets = list(dict.fromkeys(r.budget for r in runs))
    base = list(dict.fromkeys(r.name.rsplit('-x', 1)[0] for r in runs))
    cell = {(r.name.rsplit('-x', 1)[0], r.budget): r for r in runs}
    tokens = {b: results[cell[base[0], b].name][0]['tokens'] for b in budgets}
    lines = ["Val loss by token budget:", "",
             "| run | " + " | ".join(f"×{b} ({si(tokens[b])} tokens)" for b in budgets) + " |",
             "|---|" + "--:|" * len(budgets)]
    for name in base:
        label = cell[name, budgets[0]].label.rsplit(' ×', 1)[0]
        lines.append(f"| {label} | " + " | ".join(
            mean_spread([x['val_loss'] for x in results[cell[name, b].name]]) for b in budgets) + " |")
    return "\n".join(lines)


def accuracy_table(runs, results):
    """Answer accuracy per group (for hops: per hop count) and overall."""
    names = list(results[runs[0].name][0]['accuracy_by'])
    lines = ["Val answer accuracy (the most likely token is the answer), per group and overall:", "",
             "| run | blocks | depth | params | " + " | ".join(names) + " | all |",
             "|---|--:|--:|--:|" + "--:|" * (len(names) + 1)]
    for r in runs:
        res = results[r.name]
        cells = [mean_spread([x['accuracy_by'][n] for x in res]) for n in names]
        lines.append(f"| {r.label} | {r.blocks} | {r.depth} | {si(res[0]['params'])} | " + " | ".join(cells) +
                     f" | {mean_spread([x['accuracy'] for x in res])} |")
    return "\n".join(lines)


# looped-lm-scaling (arXiv 2604.21106, 116 runs): fitting L = E + A (N_once + r^φ N_rec)^-α + B D^-β, looping
# a block r times is worth r^φ unique copies of it, φ = 0.46 (0.38 with truncated backprop)
PHI_LOOPED_LM_SCALING = 0.46


def effective_blocks(loss, unique):
    """How many unique blocks a loss is worth: unique {n: loss of n⊗1}, interpolated linearly
    in log n (the power law's shape); None outside the measured range."""
    ns = sorted(unique)
    for a, b in zip(ns, ns[1:]):
        if unique[b] <= loss <= unique[a]:
            t = (unique[a] - loss) / (unique[a] - unique[b])
            return float(np.exp(np.log(a) + t * (np.log(b) - np.log(a))))
    return None


def loop_count_table(cfg, results):
    """One block looped n times, per seed, against 1⊗1 (the same parameters) and n⊗1 (the same
    depth): Δ, the fraction of the unique-depth gain the loop recovers, and the φ it implies."""
    counts = parse_counts(cfg['loop_counts'], 'loop_counts')
    unique = {n: results[f'gpt{n}'] for n in range(1, max(counts) + 1) if f'gpt{n}' in results}
    base = unique[1]
    lines = ["The loop count at fixed parameters: 1⊗n is one block looped n times (learned gates), n⊗1 its twin "
             "with n blocks of its own (the same depth and FLOPs/token). Recovered = (L(1⊗1) − L(1⊗n)) / (L(1⊗1) − "
             "L(n⊗1)), the share of the unique blocks' gain that looping one block buys, per seed. φ: the n_eff "
             "unique blocks that 1⊗n is worth (its loss on the n⊗1 curve, interpolated in log n) as n_eff = n^φ, "
             f"looped-lm-scaling's measure (its fit: φ = {PHI_LOOPED_LM_SCALING}); – where 1⊗n lies outside the "
             "measured n⊗1 curve.", "",
             "| n | 1⊗n val loss | Δ vs 1⊗1, per seed | n⊗1 val loss | recovered, per seed | φ, per seed |",
             "|--:|--:|---|--:|---|---|"]
    for n in counts:
        res = results['gpt1' if n == 1 else f'loop1x{n}']
        loss = [x['val_loss'] for x in res]
        if n == 1:
            lines.append(f"| 1 | {mean_spread(loss)} | – | {mean_spread(loss)} | – | – |")
            continue
        cells = [str(n), mean_spread(loss)]
        deltas = [l - b['val_loss'] for l, b in zip(loss, base)]
        cells.append(f"{np.mean(deltas):+.3f} ({', '.join(f'{d:+.3f}' for d in deltas)})")
        if n in unique:
            twin = [x['val_loss'] for x in unique[n]]
            rec = [(b['val_loss'] - l) / (b['val_loss'] - t) for l, b, t in zip(loss, base, twin)]
            cells += [mean_spread(twin), f"{mean_spread(rec)} ({', '.join(f'{r:.2f}' for r in rec)})"]
        else:
            cells += ['–', '–']
        phis = []
        for i, l in enumerate(loss):
            n_eff = effective_blocks(l, {m: unique[m][i]['val_loss'] for m in unique})
            phis.append(None if n_eff is None else np.log(n_eff) / np.log(n))
        cells.append(', '.join('–' if p is None else f'{p:.2f}' for p in phis))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def gates_table(runs, results, sweeps):
    """Learned gates against gates frozen at 1 (same seeds, same data), and the learned gates'
    final values: mean |a_n| and their spread (sd) across the C channels, mean over seeds."""
    lines = []
    if any(not r.learn_gates for r in runs):
        lines = ["Do the learned gates matter? Δ = val loss with gates frozen at 1 − with learned gates, same seed "
                 "and data order (positive: learning them helps). A difference counts only if every seed agrees in "
                 "sign; the half-range of the per-seed Δ is about the smallest effect these seeds could have shown.",
                 "", "| loop | learned gates | gates = 1 | Δ | per seed | every seed agrees |",
                 "|---|--:|--:|--:|---|---|"]
    for r in runs:
        if r.learn_gates or r.name.removesuffix('-frozen') not in results:
            continue
        learned = results[r.name.removesuffix('-frozen')]
        frozen = results[r.name]
        deltas = [f['val_loss'] - x['val_loss'] for f, x in zip(frozen, learned)]
        agree = 'yes' if all(d > 0 for d in deltas) or all(d < 0 for d in deltas) else 'no'
        lines.append(f"| {r.label.split(' ')[0]} | {mean_spread([x['val_loss'] for x in learned])} | "
                     f"{mean_spread([x['val_loss'] for x in frozen])} | {mean_spread(deltas)} | "
                     f"{', '.join(f'{d:+.3f}' for d in deltas)} | {agree} |")
    width = max((len(s[0]['gates']) for name, s in sweeps.items() if 'gates_sd' in s[0]), default=0)
    lines += ([""] if lines else []) + ["The learned gates at the end of training: mean |a_n| (sd of a_n across the channels), mean over "
              "seeds; a_0 scales the embeddings, a_n iteration n's update.", "",
              "| run | " + " | ".join(f"a_{n}" for n in range(width)) + " |", "|---|" + "--:|" * width]
    for r in runs:
        s = sweeps.get(r.name)
        if not s or not r.learn_gates or 'gates_sd' not in s[0]:
            continue
        means, sds = np.mean([x['gates'] for x in s], axis=0), np.mean([x['gates_sd'] for x in s], axis=0)
        cells = [f"{m:.2f} ({d:.2f})" for m, d in zip(means, sds)] + [''] * (width - len(means))
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return '\n'.join(lines)


def comparisons_table(comparisons, results):
    lines = ["Δ val loss = first run − second run, same seed (negative: the first run is better).", "",
             "| run | vs | same | Δ val loss | per seed |", "|---|---|---|--:|---|"]
    for a, b, same in comparisons:
        deltas = [x['val_loss'] - y['val_loss'] for x, y in zip(results[a.name], results[b.name])]
        lines.append(f"| {a.label} | {b.label} | {same} | {np.mean(deltas):+.3f} | "
                     f"{', '.join(f'{d:+.3f}' for d in deltas)} |")
    return "\n".join(lines)


def sweep_table(runs, sweeps, key='val_loss'):
    width = max(s[0]['n_loop'][-1] for s in sweeps.values())
    if key == 'val_loss':
        lines = ["Test-time loop sweep: val loss (the same val tokens) when a trained LoopGPT runs n iterations "
                 "(* = the trained count N; past it the last gate is reused; for n <= N this is also the loss of "
                 "reading out after iteration n), the loss of reading out h_0 (no iteration), and mean |a_n| of "
                 "the gates a_0 .. a_N. Mean over seeds.", "",
                 "| run | h_0 | " + " | ".join(f"n={n}" for n in range(1, width + 1)) + " | mean abs gate |",
                 "|---|--:|" + "--:|" * width + "---|"]
    else:
        lines = ["Test-time loop sweep: val answer accuracy when a trained LoopGPT runs n iterations "
                 "(* = the trained count). Mean over seeds.", "",
                 "| run | " + " | ".join(f"n={n}" for n in range(1, width + 1)) + " |", "|---|" + "--:|" * width]
    for r in runs:
        if r.name not in sweeps:
            continue
        s = sweeps[r.name]
        values = np.mean([x[key] for x in s], axis=0)
        cells = [f"{v:.3f}" + ('*' if n == r.n_loop else '') for n, v in zip(s[0]['n_loop'], values)]
        cells += [''] * (width - len(cells))
        if key != 'val_loss':
            lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
            continue
        h0 = np.mean([x['readout'][0] for x in s])
        gates = ", ".join(f"{g:.2f}" for g in np.mean([x['gates'] for x in s], axis=0))
        lines.append(f"| {r.label} | {h0:.3f} | " + " | ".join(cells) + f" | {gates} |")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# the plots (matplotlib is optional: without it the tables are still written)


def plot_all(out_dir, runs, results, sweeps):
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install matplotlib)")
        return
    style = run_styles(runs)
    for x_key, xlabel in (('tokens', 'training tokens'), ('flops', 'training FLOPs')):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in runs:
            curves = results[r.name]
            x = np.array(curves[0]['curve'][x_key][1:], dtype=float)  # from the 2nd eval: iter 0 is ln(vocab) for all
            ys = np.array([c['curve']['val_loss'][1:] for c in curves])
            ax.plot(x, ys.mean(0), label=r.label, **style[r.name])
            if len(ys) > 1:
                ax.fill_between(x, ys.min(0), ys.max(0), color=style[r.name]['color'], alpha=0.2, lw=0)
        # train.py's evaluations: eval_iters batches drawn from the seed, not the table's fixed tokens
        ax.set(xlabel=xlabel, ylabel="val loss (train.py's evaluations)",
               title=f'val loss vs {xlabel} (band: seed range)')
        save_plot(fig, ax, os.path.join(out_dir, f'val_loss_vs_{x_key}.png'))
    if sweeps:
        plot_sweeps(plt, os.path.join(out_dir, 'loop_sweep.png'), runs, sweeps, style)
    if len({r.budget for r in runs}) > 1:
        plot_budgets(plt, os.path.join(out_dir, 'budget.png'), runs, results, style)
    if any('accuracy' in res[0] for res in results.values()):
        plot_accuracy(plt, os.path.join(out_dir, 'accuracy_by_hops.png'), runs, results, style)
    if any(r.n_layer == 1 and r.n_loop > 2 for r in runs) and 'gpt1' in results:
        plot_loop_counts(plt, os.path.join(out_dir, 'loop_counts.png'), runs, results)


def save_plot(fig, axes, path):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    for ax in np.atleast_1d(axes):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if ax.get_xscale() == 'linear':
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweeps(plt, path, runs, sweeps, style):
    """Val loss (and accuracy, where there are answers) against test-time loop count; the gates."""
    accuracy = any('accuracy' in s[0] for s in sweeps.values())
    fig, axes = plt.subplots(1, 3 if accuracy else 2, figsize=(15 if accuracy else 10, 4))
    for r in runs:
        if r.name not in sweeps:
            continue
        s, st = sweeps[r.name], style[r.name]
        n = s[0]['n_loop']
        axes[0].plot(n, np.mean([x['val_loss'] for x in s], axis=0), marker='o', ms=4, label=r.label, **st)
        # h_0's read-out (embeddings only) is far above the rest: it is in the table, not here
        axes[0].plot(range(1, r.n_loop + 1), np.mean([x['readout'][1:] for x in s], axis=0), 'x',
                     color=st['color'], ms=8)
        axes[0].plot([r.n_loop], [np.mean([x['val_loss'][r.n_loop - 1] for x in s])], '*', color=st['color'], ms=14)
        if r.learn_gates:
            axes[1].plot(range(len(s[0]['gates'])), np.mean([x['gates'] for x in s], axis=0), marker='o',
                         label=r.label, **st)
        if accuracy:
            axes[2].plot(n, np.mean([x['accuracy'] for x in s], axis=0), marker='o', ms=4, label=r.label, **st)
    axes[0].set(xlabel='loop iterations n', ylabel='val loss',
                title='test-time n_loop (o), read-out after n (x), trained n (*)')
    axes[1].set(xlabel='gate n', ylabel='mean |a_n|', title='learned gates')
    if accuracy:
        axes[2].set(xlabel='loop iterations n', ylabel='val answer accuracy', title='accuracy vs test-time n_loop')
    save_plot(fig, axes, path)


def plot_budgets(plt, path, runs, results, style):
    """Final val loss against the token budget and the FLOPs spent, one line per architecture."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for base in dict.fromkeys(r.name.rsplit('-x', 1)[0] for r in runs):
        rs = [r for r in runs if r.name.rsplit('-x', 1)[0] == base]
        label, st = rs[0].label.rsplit(' ×', 1)[0], style[rs[0].name]
        for ax, key in zip(axes, ('tokens', 'flops')):
            x = [np.mean([res[key] for res in results[r.name]]) for r in rs]
            y = np.array([[res['val_loss'] for res in results[r.name]] for r in rs])  # (budgets, seeds)
            ax.errorbar(x, y.mean(1), yerr=[y.mean(1) - y.min(1), y.max(1) - y.mean(1)], marker='o', ms=4,
                        capsize=3, label=label, **st)
            ax.set_xscale('log')
    axes[0].set(xlabel='training tokens', ylabel='final val loss', title='val loss vs token budget (bars: seed range)')
    axes[1].set(xlabel='training FLOPs', ylabel='final val loss', title='val loss vs training FLOPs')
    save_plot(fig, axes, path)


def plot_accuracy(plt, path, runs, results, style):
    """Val answer accuracy per answer group (for hops: per hop count), one line per run."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    names = list(results[runs[0].name][0]['accuracy_by'])
    for r in runs:
        acc = np.array([[res['accuracy_by'][n] for n in names] for res in results[r.name]])  # (seeds, groups)
        x = np.arange(1, len(names) + 1)
        ax.plot(x, acc.mean(0), marker='o', label=f'{r.label} (depth {r.depth})', **style[r.name])
        if len(acc) > 1:
            ax.fill_between(x, acc.min(0), acc.max(0), color=style[r.name]['color'], alpha=0.2, lw=0)
    ax.set(xticks=np.arange(1, len(names) + 1), xticklabels=names, ylabel='val answer accuracy', ylim=(0, 1.02),
           title='accuracy by question (band: seed range)')
    save_plot(fig, ax, path)


def plot_loop_counts(plt, path, runs, results):
    """Final val loss against the loop count (or depth): one block looped n times, n unique
    blocks, gates frozen at 1 and drawn counts, each point the seed mean with the seed range."""
    series = {'1 block looped n times (learned gates)': [(1, 'gpt1')],
              'n unique blocks (n⊗1, the same depth)': [], 'gates frozen at 1': [],
              'drawn counts + x0 + loop_norm (mean n)': []}
    keys = list(series)
    for r in runs:
        if r.model_type == 'gpt':
            series[keys[1]].append((r.n_layer, r.name))
        elif (r.n_layer, r.n_prelude, r.n_coda) != (1, 0, 0):
            continue
        elif not r.learn_gates:
            series[keys[2]].append((r.n_loop, r.name))
        elif r.loop_sampling != 'fixed':
            series[keys[3]].append((r.n_loop, r.name))
        elif not r.loop_norm and r.budget == 1:
            series[keys[0]].append((r.n_loop, r.name))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = (dict(ls='--', marker='o'), dict(ls='-', marker='s'), dict(ls='none', marker='v', ms=8),
              dict(ls='none', marker='D', ms=7))
    for i, (label, points) in enumerate(series.items()):
        if not points:
            continue
        points.sort()
        y = np.array([[x['val_loss'] for x in results[name]] for _, name in points])  # (points, seeds)
        ax.errorbar([n for n, _ in points], y.mean(1), yerr=[y.mean(1) - y.min(1), y.max(1) - y.mean(1)],
                    capsize=3, color=f'C{i}', label=label, **styles[i])
    ax.set(xlabel='loop iterations n (for n⊗1: blocks)', ylabel='final val loss',
           title='val loss vs loop count at fixed parameters (bars: seed range)')
    save_plot(fig, ax, path)


def run_styles(runs):
    """A colour per run; solid lines for GPTs, dashed for loops, dotted for frozen gates."""
    colors = [f'C{i % 10}' for i in range(len(runs))]
    return {r.name: dict(color=c, ls='-' if r.model_type == 'gpt' else '--' if r.learn_gates else ':')
            for r, c in zip(runs, colors)}


# -----------------------------------------------------------------------------

if __name__ == '__main__':
    argv = [f'{a}=True' if a in ('--quick', '--ablations') else a for a in sys.argv[1:]]
    try:
        config = configure(config_keys(globals()), argv, derived=presets)
        run_grid(config)
    except (ConfigError, CheckpointError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
