"""
The grid studies' machinery (experiments/grid.py, hops.py, budget.py, depth.py, ablations.py
each run it with their own defaults): the keys they share, which architectures a grid trains
(make_grid), training each one as a `python train.py` subprocess that a later call reuses
(train, train_all), the numbers read off a finished run (summarize, evaluate, loop_sweep),
and run_grid, which does it all and hands the numbers to experiments/report.py for the
tables and plots.
"""


import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import numpy as np
import torch

from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, answer_help, config_keys, configure
from dataformat import DataError, answer_groups, answer_hits, fixed_windows, load_meta
from device import default_device
from experiments.common import RunError, command_line, parse_counts, parse_pair, parse_prelude_coda, provenance
from experiments.report import plot_all, results_markdown

# -----------------------------------------------------------------------------
# settings: python -m experiments.grid [--quick] [--key=value ...] (and the studies that use this grid)
out_dir = ''                   # results.md, results.json and the plots; '' = experiments-out[-hops][-budget][-depth][-ablations][-quick]
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

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'train.py')


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


def run_grid(cfg, study='grid'):
    """Train every (run, seed), sweep every LoopGPT, write and print the results. study: the
    module that asked (experiments/STUDY.py), for the command recorded in results.json."""
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
    command = command_line(f'experiments.{study}')
    origin = provenance(command, cfg['threads'] or torch.get_num_threads())  # before out_dir's files change

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
    info = dict(command=command, machine=_machine(cfg), wall_s=time.time() - t0, load_start=load0, load_end=_loadavg(),
                seeds=seeds, tokens=tokens, eval_tokens=len(data['val']) * cfg['batch_size'] * cfg['block_size'],
                runs_wall_s=sum(walls), reused=reused, n_trained=len(todo))
    os.makedirs(cfg['out_dir'], exist_ok=True)
    with open(os.path.join(cfg['out_dir'], 'results.json'), 'w') as f:
        json.dump(dict(info=info, provenance=origin, config=cfg, runs=[r.__dict__ for r in runs], results=results,
                       sweeps=sweeps), f)
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


def main(script, **study_defaults):
    """The command line of a grid study: script is the study's module (its docstring is the
    --help), study_defaults the keys it sets before config files and --key=value."""
    argv = [f'{a}=True' if a in ('--quick', '--ablations') else a for a in sys.argv[1:]]
    answer_help(script, argv, keys_from=__file__)
    study = os.path.splitext(os.path.basename(script))[0]
    try:
        config = configure({**config_keys(globals()), **study_defaults}, argv, derived=presets)
        run_grid(config, study)
    except (ConfigError, CheckpointError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
