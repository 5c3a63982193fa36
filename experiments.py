"""
The paper's comparison at small scale, on your own machine, in one command.

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
a test-time loop sweep: its val loss when run with n_loop = 1 .. 2L, the loss of
reading out (coda, ln_f, lm_head) after each iteration, and its mean gates |a_n|.

    python prepare.py stdlib
    python experiments.py                 # the default grid: ~20-25 min on a 2-core CPU
    python experiments.py --quick         # a smaller grid: a few minutes
    python experiments.py --pairs=2x3 --n_seeds=3 --train_args="--device=cuda --dtype=bfloat16"

Each run is a separate `python train.py --key=value ...` into runs_dir/NAME-sSEED/
(train.py's output: log.jsonl, last.pt; and train.out, its console output). A run
that already finished with the same settings is reused, so re-running the command
after an interruption, or to redraw the plots, only trains what is missing.
Written to out_dir and printed: results.md (tables); also results.json (every number)
and, if matplotlib is installed, val_loss_vs_tokens.png, val_loss_vs_flops.png and
loop_sweep.png.
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
from dataclasses import dataclass

import numpy as np
import torch

from checkpoint import CheckpointError, default_device, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, config_keys, configure

# -----------------------------------------------------------------------------
# settings: python experiments.py [--quick] [--key=value ...]
out_dir = 'experiments-out'    # results.md, results.json and the plots
runs_dir = ''                  # one train.py out_dir per run; '' = out_dir/runs
rerun = False                  # True: train again runs that already finished with these settings
dataset = 'stdlib'             # any dataset prepare.py made in data_dir
data_dir = 'data'
# the grid
pairs = '1x2,2x2'              # (k, L) pairs 'kxL': each trains k⊗L and its twins k⊗1 and kL⊗1
ablate_gates = '2x2'           # 'kxL': train k⊗L again with its gates frozen at 1 ('' = skip)
prelude_coda = '1+1x2+1'       # 'P+kxL+C': P unshared blocks, k looped L times, C unshared ('' = skip)
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
threads = 1                    # CPU threads per run (OMP_NUM_THREADS), 0 = torch's default (all cores).
                               # On an idle 2-core machine 2 threads train ~1.7x faster, but on a busy one
                               # two thread pools fighting over the cores run 2-10x slower than 1 thread
# -----------------------------------------------------------------------------

# --quick: a smaller grid that still has every kind of run, in a few minutes on 2 CPU cores
QUICK = dict(out_dir='experiments-out-quick', pairs='1x2', ablate_gates='1x2', prelude_coda='1+1x2+1',
             n_seeds=1, max_iters=300, eval_interval=50)

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


def parse_pair(text, key):
    m = re.fullmatch(r'\s*(\d+)\s*[xX×]\s*(\d+)\s*', text)
    if not m or int(m[1]) < 1 or int(m[2]) < 2:
        raise ConfigError(f"{key}='{text}' is not a pair kxL with k >= 1 and L >= 2: write it like '2x3'.")
    return int(m[1]), int(m[2])


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
    for text in cfg['pairs'].split(','):
        k, L = parse_pair(text, 'pairs')
        runs += [gpt(k), loop(k, L), gpt(k * L)]
        comparisons += [(loop(k, L), gpt(k), 'parameters'),
                        (loop(k, L), gpt(k * L), 'depth (FLOPs/token)')]
    if cfg['ablate_gates']:
        k, L = parse_pair(cfg['ablate_gates'], 'ablate_gates')
        runs += [loop(k, L), loop(k, L, learn_gates=False)]
        comparisons.append((loop(k, L, learn_gates=False), loop(k, L), 'everything but learned gates'))
    if cfg['prelude_coda']:
        P, k, L, C = parse_prelude_coda(cfg['prelude_coda'])
        pc = Run(f'loop{P}+{k}x{L}+{C}', f'{P}+{k}⊗{L}+{C}', k, L, n_prelude=P, n_coda=C)
        runs.append(pc)
        # compare with every learned-gate run of the same depth: looping a subset vs all or none
        comparisons += [(pc, r, 'depth (FLOPs/token)') for r in dict.fromkeys(runs)
                        if r != pc and r.depth == pc.depth and r.learn_gates]
    runs = list(dict.fromkeys(runs))
    if cfg['n_seeds'] < 1:
        raise ConfigError(f"n_seeds={cfg['n_seeds']}: train each run at least once (n_seeds >= 1).")
    return runs, comparisons


# -----------------------------------------------------------------------------
# training: one train.py subprocess per (run, seed)


def train_command(cfg, run, seed, run_dir):
    args = dict(
        out_dir=run_dir, init_from='scratch', dataset=cfg['dataset'], data_dir=cfg['data_dir'],
        model_type=run.model_type, n_layer=run.n_layer, n_loop=run.n_loop, n_prelude=run.n_prelude,
        n_coda=run.n_coda, learn_gates=run.learn_gates, n_head=cfg['n_head'], n_embd=cfg['n_embd'],
        block_size=cfg['block_size'], dropout=0.0, batch_size=cfg['batch_size'], gradient_accumulation_steps=1,
        max_iters=cfg['max_iters'], lr_decay_iters=cfg['max_iters'], learning_rate=cfg['learning_rate'],
        min_lr=cfg['min_lr'], warmup_iters=cfg['warmup_iters'], weight_decay=cfg['weight_decay'],
        eval_interval=cfg['eval_interval'], eval_iters=cfg['eval_iters'], log_interval=cfg['eval_interval'],
        seed=seed, compile=False, wandb_log=False,  # compiling would cost more than these short runs
    )
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


def summarize(run_dir, seed, model, batches):
    """The numbers the table and the curves need, from one finished run. The final losses
    are last.pt's on the fixed batches, the same for every run and seed, so the spread over
    seeds is the spread of training; train.py's own evaluations (the curves) draw their
    batches from the seed and sample only a little of each split."""
    evals = read_evals(run_dir)
    last = evals[-1]
    return dict(seed=seed, params=model.get_num_params(), flops_per_token=model.flops_per_token(),
                tokens=last['tokens'], flops=last['flops'], time_s=last['time_s'],
                train_loss=evaluate(model, batches['train']), val_loss=evaluate(model, batches['val']),
                curve={k: [r[k] for r in evals] for k in ('iter', 'tokens', 'flops', 'val_loss')})


def fixed_batches(data_dir, dataset, split, n_tokens, batch_size, block_size):
    """(x, y) batches of (batch_size, block_size) token ids, y = x shifted by one: windows
    spread evenly over the split, about n_tokens in all (or the whole split if smaller).
    No randomness: every run and seed is evaluated on the same tokens."""
    path = os.path.join(data_dir, dataset)
    with open(os.path.join(path, 'meta.json')) as f:
        meta = json.load(f)
    data = np.memmap(os.path.join(path, f'{split}.bin'), dtype=meta['dtype'], mode='r')
    n_windows = max(min(n_tokens, len(data) - 1) // block_size // batch_size, 1) * batch_size
    starts = np.linspace(0, len(data) - block_size - 1, n_windows).astype(np.int64)
    windows = np.stack([data[i:i + block_size + 1] for i in starts]).astype(np.int64)
    windows = torch.from_numpy(windows).view(-1, batch_size, block_size + 1)
    return [(w[:, :-1].contiguous(), w[:, 1:].contiguous()) for w in windows]


@torch.no_grad()
def evaluate(model, batches):
    """Mean loss over the batches (all the same size: the mean over their tokens)."""
    model.eval()
    return sum(model(x, y)[1].item() for x, y in batches) / len(batches)


# -----------------------------------------------------------------------------
# test-time loop sweep


@torch.no_grad()
def loop_sweep(model, batches):
    """For a trained LoopGPT with N = model.n_loop iterations: val loss when run with
    n_loop = 1 .. 2N, read-out loss after iterations 0 .. N, and the mean gates |a_n|.
    Reading out after iteration n <= N is the same computation as running n iterations,
    so the two agree there; the sweep goes on past N, where the last gate is reused."""
    model.eval()
    trained = model.n_loop
    n_loops = list(range(1, 2 * trained + 1))
    losses = []
    try:
        for n in n_loops:
            model.n_loop = n
            losses.append(evaluate(model, batches))
    finally:
        model.n_loop = trained
    per_batch = [model.readout_losses(x, y) for x, y in batches]  # (batches, N + 1)
    readout = np.mean(per_batch, axis=0).tolist()
    return dict(trained=trained, n_loop=n_loops, val_loss=losses, readout=readout, gates=model.gate_means())


# -----------------------------------------------------------------------------
# the grid, end to end


def run_grid(cfg):
    """Train every (run, seed), sweep every LoopGPT, write and print the results."""
    runs, comparisons = make_grid(cfg)
    if cfg['threads'] > 0:
        torch.set_num_threads(cfg['threads'])  # for the sweeps in this process
    data_path = os.path.join(cfg['data_dir'], cfg['dataset'])
    if not all(os.path.exists(os.path.join(data_path, f)) for f in ('train.bin', 'val.bin', 'meta.json')):
        raise ConfigError(f"no prepared dataset in {data_path}: run python prepare.py {cfg['dataset']} first "
                          f"(or point --data_dir/--dataset at one).")
    runs_path = cfg['runs_dir'] or os.path.join(cfg['out_dir'], 'runs')
    seeds = [cfg['seed'] + i for i in range(cfg['n_seeds'])]
    tokens = cfg['max_iters'] * cfg['batch_size'] * cfg['block_size']
    print(f"{len(runs)} runs x {len(seeds)} seeds, {tokens:,} tokens each, into {runs_path}")
    t0, load0 = time.time(), _loadavg()
    batches = {split: fixed_batches(cfg['data_dir'], cfg['dataset'], split, cfg['eval_tokens'],
                                    cfg['batch_size'], cfg['block_size']) for split in ('train', 'val')}
    results, sweeps, todo = {}, {}, [(r, s) for r in runs for s in seeds]
    walls, reused = [], 0
    for i, (run, s) in enumerate(todo, 1):
        run_dir = os.path.join(runs_path, f'{run.name}-s{s}')
        wall, was_reused = train(cfg, run, s, run_dir)
        walls.append(wall)
        reused += was_reused
        model = model_from_checkpoint(load_checkpoint(run_dir, 'last'))
        res = summarize(run_dir, s, model, batches)
        results.setdefault(run.name, []).append(res)
        if run.model_type == 'loop':
            sweeps.setdefault(run.name, []).append(loop_sweep(model, batches['val']))
        took = 'reused (--rerun=True trains it again)' if was_reused else f'{wall:.0f} s'
        print(f"[{i}/{len(todo)}] {run.label:<14} seed {s}: val loss {res['val_loss']:.4f}  {took}")
    info = dict(command=' '.join(['python experiments.py'] + [shlex.quote(a) for a in sys.argv[1:]]),
                machine=_machine(), wall_s=time.time() - t0, load_start=load0, load_end=_loadavg(),
                seeds=seeds, tokens=tokens, eval_tokens=len(batches['val']) * cfg['batch_size'] * cfg['block_size'],
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


def _machine():
    device = default_device()
    gpu = f", {torch.cuda.get_device_name()}" if device == 'cuda' else ''
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}){gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s) per run")


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
    parts = [header(cfg, info), runs_table(runs, results), comparisons_table(comparisons, results)]
    if sweeps:
        parts.append(sweep_table(runs, sweeps))
    return "\n\n".join(parts) + "\n"


def header(cfg, info):
    seeds = info['seeds']
    spread = f"mean ± half the range over {len(seeds)} seeds ({', '.join(map(str, seeds))})" \
        if len(seeds) > 1 else f"seed {seeds[0]}"
    reused = (f" ({info['reused']} of {info['n_trained']} runs reused from an earlier call; all "
              f"{info['n_trained']} took {info['runs_wall_s'] / 60:.1f} min to train)") if info['reused'] else ""
    return (f"Command: `{info['command']}`  \n"
            f"Machine: {info['machine']}; load average {info['load_start']} at the start, "
            f"{info['load_end']} at the end; total wall time {info['wall_s'] / 60:.1f} min{reused}.  \n"
            f"Every run: n_embd {cfg['n_embd']}, {cfg['n_head']} heads, block_size {cfg['block_size']}, "
            f"batch {cfg['batch_size']}, {cfg['max_iters']} iterations = {info['tokens']:,} tokens of "
            f"{cfg['dataset']}, lr {cfg['learning_rate']:g} cosine to {cfg['min_lr']:g}; the same data order "
            f"for every model. Losses: the final model (last.pt) on the same {info['eval_tokens']:,} tokens "
            f"of each split for every run and seed, {spread}.")


def runs_table(runs, results):
    lines = ["| run | model | blocks | depth | params | FLOPs/token | total FLOPs | train time | train loss | val loss |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in runs:
        res = results[r.name]
        lines.append(f"| {r.label} | {r.name} | {r.blocks} | {r.depth} | {si(res[0]['params'])} | "
                     f"{si(res[0]['flops_per_token'])} | {si(res[0]['flops'])} | "
                     f"{np.mean([x['time_s'] for x in res]):.0f} s | "
                     f"{mean_spread([x['train_loss'] for x in res])} | {mean_spread([x['val_loss'] for x in res])} |")
    lines += ["", "blocks: blocks with their own weights; depth: blocks a token passes through; params: "
              "without position embeddings; train time: train.py's wall time, evaluations included. "
              "The loss curves in the plots are train.py's evaluations (a few batches drawn from the seed), "
              "so their last points differ a little from these losses."]
    return "\n".join(lines)


def comparisons_table(comparisons, results):
    lines = ["Δ val loss = first run − second run, same seed (negative: the first run is better).", "",
             "| run | vs | same | Δ val loss | per seed |", "|---|---|---|--:|---|"]
    for a, b, same in comparisons:
        deltas = [x['val_loss'] - y['val_loss'] for x, y in zip(results[a.name], results[b.name])]
        lines.append(f"| {a.label} | {b.label} | {same} | {np.mean(deltas):+.3f} | "
                     f"{', '.join(f'{d:+.3f}' for d in deltas)} |")
    return "\n".join(lines)


def sweep_table(runs, sweeps):
    width = max(s[0]['n_loop'][-1] for s in sweeps.values())
    lines = ["Test-time loop sweep: val loss (the same val tokens) when a trained LoopGPT runs n iterations "
             "(* = the trained count N; past it the last gate is reused; for n <= N this is also the loss of "
             "reading out after iteration n), the loss of reading out h_0 (no iteration), and mean |a_n| of "
             "the gates a_0 .. a_N. Mean over seeds.", "",
             "| run | h_0 | " + " | ".join(f"n={n}" for n in range(1, width + 1)) + " | mean abs gate |",
             "|---|--:|" + "--:|" * width + "---|"]
    for r in runs:
        if r.name not in sweeps:
            continue
        s = sweeps[r.name]
        loss = np.mean([x['val_loss'] for x in s], axis=0)
        cells = [f"{v:.3f}" + ('*' if n == r.n_loop else '') for n, v in zip(s[0]['n_loop'], loss)]
        cells += [''] * (width - len(cells))
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
        from matplotlib.ticker import MaxNLocator
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
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f'val_loss_vs_{x_key}.png'), dpi=100)
        plt.close(fig)
    if sweeps:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for r in runs:
            if r.name not in sweeps:
                continue
            s, st = sweeps[r.name], style[r.name]
            n = s[0]['n_loop']
            ax1.plot(n, np.mean([x['val_loss'] for x in s], axis=0), marker='o', ms=4, label=f'{r.label}', **st)
            # h_0's read-out (embeddings only) is far above the rest: it is in the table, not here
            ax1.plot(range(1, r.n_loop + 1), np.mean([x['readout'][1:] for x in s], axis=0), 'x',
                     color=st['color'], ms=8)
            ax1.plot([r.n_loop], [np.mean([x['val_loss'][r.n_loop - 1] for x in s])], '*', color=st['color'], ms=14)
            if r.learn_gates:
                ax2.plot(range(len(s[0]['gates'])), np.mean([x['gates'] for x in s], axis=0), marker='o',
                         label=r.label, **st)
        ax1.set(xlabel='loop iterations n', ylabel='val loss',
                title='test-time n_loop (o), read-out after n (x), trained n (*)')
        ax2.set(xlabel='gate n', ylabel='mean |a_n|', title='learned gates')
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, 'loop_sweep.png'), dpi=100)
        plt.close(fig)


def run_styles(runs):
    """A colour per run; solid lines for GPTs, dashed for loops, dotted for frozen gates."""
    colors = [f'C{i % 10}' for i in range(len(runs))]
    return {r.name: dict(color=c, ls='-' if r.model_type == 'gpt' else '--' if r.learn_gates else ':')
            for r, c in zip(runs, colors)}


# -----------------------------------------------------------------------------

if __name__ == '__main__':
    defaults = config_keys(globals())
    argv = sys.argv[1:]
    if '--quick' in argv:
        argv.remove('--quick')
        defaults.update(QUICK)  # explicit --key=value still win
    try:
        config = configure(defaults, argv)
        run_grid(config)
    except (ConfigError, CheckpointError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
