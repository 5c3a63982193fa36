"""
The bounded KV cache: what keeping k groups of a loop's keys and values costs, instead of one
group per iteration (engine.KVCache, kv_budget = k: iterations 1 .. k-1 keep their own group,
iterations k, k+1, ... share the last). Measured through the path generation takes (teacher-
forced, one token at a time through the cache, as experiments.exit measures), on the models of
the recurrent-depth studies (experiments/common.py trains what is missing with experiments.depth):

    stdlib   2⊗2 on stdlib: loop counts fixed, drawn (mean 2), drawn + input injection
    hops     1⊗2 on the hops task, the same three, with answer accuracy
    deep     2⊗6 with loop_norm on stdlib: fixed, and drawn + injection (mean 6, bptt 3)

For every run and seed: the val loss (and answer accuracy) at k = 1, 2, 3 and with the full
cache, at the trained count N and at 2N (a drawn model also at 4N), without exit and, at N,
with per-token exit (kl < exit_threshold); next to each, the cache's memory. The anchors' rule,
iteration n in group (n - 1) mod k + 1 (looped-lm-scaling's kv_budget), is measured beside
ours at the same k (without exit).

    python -m experiments.kv_budget                               # trains what is missing (long on a CPU), then measures
    python -m experiments.kv_budget --out_dir=results/kv_budget   # what is committed

Writes out_dir/results.json (every point of every run and seed), results.md and kv_budget.png
(with matplotlib).
"""

import json
import os
import sys
import time

import numpy as np
import torch

from configurator import ConfigError, answer_help
from engine import ExitRule, KVCache
from experiments.common import (SEEDS, STUDIES, command_line, eval_windows, generation_scores, load_run, provenance,
                                run_study, train_study)
from experiments.report import by_study, plot_studies

if __name__ == '__main__':  # --help: the docstring and the keys below
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
studies = 'stdlib,hops,deep'             # which of RUNS to measure, in this order
out_dir = 'experiments-out/kv_budget'    # results.json, results.md, kv_budget.png
runs_root = 'experiments-out'            # experiments.depth writes DIR/ (its results) and DIR-runs/ (the runs)
data_dir = 'data'
budgets = '1,2,3'                        # the k to measure, next to the full cache
exit_threshold = 0.01                    # per-token exit at N: kl < this (0: measure without exit only)
eval_tokens = 8192                       # val tokens per point (the same windows for every model)
batch_size = 64                          # windows evaluated together
experiment_args = ''                     # more --key=value for every experiments.depth call, e.g. '--jobs=1'
run_experiments = True                   # False: measure the runs already in runs_root, without experiments.depth
threads = 0                              # torch threads; 0: torch's default
# -----------------------------------------------------------------------------

# the runs of each study (studies.STUDIES) to measure: drawn ones are also measured at 4N
RUNS = {
    'stdlib': ['loop2x2', 'loop2x2-poisson', 'loop2x2-poisson-inject'],
    'hops': ['loop1x2', 'loop1x2-poisson', 'loop1x2-poisson-inject'],
    'deep': ['loop2x6-norm', 'loop2x6-poisson-inject-bptt3-norm'],
}
WITHIN = 0.01  # the cost a budget may have: val loss within this of the full cache's, on every seed


class ModCache(KVCache):
    """The anchors' rule, for comparison: iteration n stores in group (n - 1) mod k + 1, so iteration
    1 shares with k + 1, 2k + 1, ... (without exit only: the latest rule is ours)."""

    def group(self, n):
        return (n - 1) % self.budget + 1


# -----------------------------------------------------------------------------
# the measurement


def points(model, batches, groups, budgets, exit_threshold, drawn):
    """Every point of one model: [dict(n_loop, kv_budget (0: full), rule, exit, scores, kv_bytes)]."""
    N, out = model.n_loop, []
    for n in (N, 2 * N, 4 * N) if drawn else (N, 2 * N):
        model.n_loop = n
        ks = [0] + [k for k in budgets if k < n]  # k >= n keeps a group per iteration: the full cache
        cases = [(k, 'latest', None) for k in ks] + [(k, 'mod', None) for k in ks if k >= 2]
        if n == N and exit_threshold:
            cases += [(k, 'latest', ExitRule(exit_threshold)) for k in ks]
        for k, rule, exit in cases:
            cache_class = ModCache if rule == 'mod' else KVCache
            scores = generation_scores(model, batches, groups, exit, k, cache_class)
            kv = KVCache(model, 1, model.config.block_size, k)  # one sequence of block_size tokens, bf16
            out.append(dict(n_loop=n, kv_budget=k, rule=rule, exit=exit is not None, groups=kv.n_groups,
                            kv_bytes=kv.nbytes(torch.bfloat16), **scores))
    model.n_loop = N
    return out


def measure(name, runs_dir, c):
    """{study/run-sSEED: its points} for every run and seed of a study."""
    dataset, results = STUDIES[name][2], {}
    budgets = [int(k) for k in c['budgets'].split(',')]
    for run in RUNS[name]:
        for seed in SEEDS:
            model = load_run(runs_dir, run, seed)
            batches, groups, names = eval_windows(c['data_dir'], dataset, c['eval_tokens'], c['batch_size'],
                                                  model.config.block_size)
            t0 = time.time()
            drawn = model.config.loop_sampling != 'fixed'
            results[f'{name}/{run}-s{seed}'] = dict(
                study=name, run=run, seed=seed, trained_n_loop=model.n_loop, drawn=drawn, groups=names,
                points=points(model, batches, groups, budgets, c['exit_threshold'], drawn))
            print(f"{name}/{run}-s{seed}: measured in {time.time() - t0:.0f} s", flush=True)
    return results


# -----------------------------------------------------------------------------
# the tables and the plot


def seeds_of(results, study, run):
    return [r for r in results.values() if r['study'] == study and r['run'] == run]


def find(res, n_loop, kv_budget, rule='latest', exit=False):
    return next(p for p in res['points'] if (p['n_loop'], p['kv_budget'], p['rule'], p['exit']) ==
                (n_loop, kv_budget, rule, exit))


def cell(seeds, p_of, key='val_loss'):
    """'Δ (per seed)' of a point against the full cache at the same n_loop and exit, per seed."""
    deltas = [p_of(s)[key] - find(s, p_of(s)['n_loop'], 0, 'latest', p_of(s)['exit'])[key] for s in seeds]
    return f"{np.mean(deltas):+.3f} ({', '.join(f'{d:+.3f}' for d in deltas)})"


def run_table(results, study, run, exit_threshold):
    seeds = seeds_of(results, study, run)
    first, N = seeds[0], seeds[0]['trained_n_loop']
    budgets = sorted({p['kv_budget'] for p in first['points'] if p['kv_budget']})
    hops = first['groups'] is not None
    head = ['n_loop', 'exit', 'rule', 'full cache: val loss' + (', accuracy' if hops else '') + ', iterations, kB']
    kb = {k: next(p['kv_bytes'] for p in first['points'] if p['kv_budget'] == k) / 1e3 for k in budgets}
    head += [f'k = {k} ({kb[k]:.1f} kB): Δ val loss' + (', Δ accuracy' if hops else '') for k in budgets]
    lines = [f"### {study}: {run} (trained N = {N}{', drawn counts' if first['drawn'] else ''}; "
             f"seeds {', '.join(str(s['seed']) for s in seeds)})", "",
             '| ' + ' | '.join(head) + ' |', '|---|---|---|--:|' + '---|' * len(budgets)]
    for n, rule, exit in dict.fromkeys((p['n_loop'], p['rule'], p['exit']) for p in first['points']):
        full = [find(s, n, 0, 'latest', exit) for s in seeds]
        base = f"{np.mean([p['val_loss'] for p in full]):.3f}"
        if hops:
            base += f", {np.mean([p['accuracy'] for p in full]):.3f}"
        base += f", {np.mean([p['mean_iterations'] for p in full]):.2f}, {full[0]['kv_bytes'] / 1e3:.1f}"
        cells = []
        for k in budgets:
            if not any((p['n_loop'], p['kv_budget'], p['rule'], p['exit']) == (n, k, rule, exit)
                       for p in first['points']):
                cells.append('' if k < n else '= full')
                continue
            text = cell(seeds, lambda s: find(s, n, k, rule, exit))
            if hops:
                text += ', ' + cell(seeds, lambda s: find(s, n, k, rule, exit), 'accuracy').split(' ')[0]
            cells.append(text)
        lines.append(f"| {n}{'*' if n == N else ''} | {f'kl < {exit_threshold:g}' if exit else 'off'} | "
                     f"{rule} | {base} | " + ' | '.join(cells) + ' |')
    lines += [""] + [verdict(seeds, n) for n in sorted({p['n_loop'] for p in first['points']})]
    return '\n'.join(lines)


def verdict(seeds, n):
    """The smallest k (our rule, no exit) whose val loss is within WITHIN of the full cache's at
    n_loop = n on every seed, and the share of the loop's memory it keeps."""
    ks = sorted(p['kv_budget'] for p in seeds[0]['points'] if p['kv_budget'] and p['n_loop'] == n and
                p['rule'] == 'latest' and not p['exit'])
    ok = [k for k in ks if all(find(s, n, k)['val_loss'] - find(s, n, 0)['val_loss'] <= WITHIN for s in seeds)]
    full = find(seeds[0], n, 0)
    if not ok:
        return (f"At n_loop = {n}, no budget below {full['groups']} groups is within {WITHIN} of the full cache "
                f"on every seed: it needs the full cache, {full['kv_bytes'] / 1e3:.1f} kB per sequence.")
    kept = find(seeds[0], n, ok[0])
    return (f"At n_loop = {n}, the smallest budget within {WITHIN} of the full cache on every seed: k = {ok[0]}, "
            f"{kept['groups']} loop group(s) of {full['groups']}, {kept['kv_bytes'] / 1e3:.1f} kB of "
            f"{full['kv_bytes'] / 1e3:.1f} kB per sequence of block_size tokens in bf16.")


def report(info, results):
    parts = [f"Command: `{info['command']}` ({info['machine']}; {info['wall_s'] / 60:.1f} min)  \n"
             f"Every point: the val loss of predicting each of the same {info['eval_tokens']:,} val tokens (answer "
             f"positions only on hops) one at a time through the KV cache, as generation predicts them. Full cache: "
             f"a group of keys and values per iteration. k: the cache keeps k groups; rule 'latest' (ours, "
             f"engine.KVCache): iteration n uses group min(n, k), so iterations from k on read each earlier token's "
             f"last keys and values; rule 'mod' (the anchors'): group (n − 1) mod k + 1. Δ: the val loss (and "
             f"accuracy) minus the full cache's at the same n_loop and exit, per seed in brackets. Exit: each token "
             f"stops once KL(p_n ‖ p_(n-1)) < the threshold (at most n_loop iterations). * = the trained count N. "
             f"kB: the keys and values of one sequence of block_size tokens in bf16: loop groups × n_layer slots "
             f"(plus the prelude's and coda's)."]
    for study, runs in by_study(results).items():
        parts.append(f"## {study} (experiments.depth {' '.join(STUDIES[study][1])})")
        parts += [run_table(results, study, run, info['exit_threshold']) for run in runs]
    return '\n\n'.join(parts) + '\n'


def plot(path, results):
    """Δ val loss against the loop groups kept, at N and at the larger counts, one panel per study."""
    def draw(ax, study, runs):
        for i, run in enumerate(runs):
            seeds = seeds_of(results, study, run)
            N = seeds[0]['trained_n_loop']
            for j, n in enumerate(sorted({p['n_loop'] for p in seeds[0]['points']})):
                for rule, style in (('latest', '-'), ('mod', ':')):
                    ks = sorted({p['kv_budget'] for p in seeds[0]['points'] if p['n_loop'] == n and p['rule'] == rule
                                 and not p['exit']} | {0}, key=lambda k: k or n)
                    if rule == 'mod' and len(ks) < 3:
                        continue
                    x = [find(seeds[0], n, k, 'latest' if k == 0 else rule)['groups'] for k in ks]
                    y = [np.mean([find(s, n, k, 'latest' if k == 0 else rule)['val_loss'] - find(s, n, 0)['val_loss']
                                  for s in seeds]) for k in ks]
                    ax.plot(x, y, style, marker='os^'[j % 3], color=f'C{i}', ms=4,
                            label=f"{run}, n={n}{'*' if n == N else ''}" + (' (mod)' if rule == 'mod' else ''))
        ax.axhline(WITHIN, color='gray', lw=0.8, ls='--')
        ax.set_yscale('symlog', linthresh=WITHIN)  # the costs span 0.001 to 5: linear up to 0.01, log above
        ax.set(xscale='log', xlabel='loop groups kept (the full cache: n)', ylabel='Δ val loss vs the full cache',
               title=study)
        ticks = sorted({p['groups'] for run in runs for s in seeds_of(results, study, run) for p in s['points']})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()

    plot_studies(path, results, draw)


def main(c):
    names = [s.strip() for s in c['studies'].split(',') if s.strip()]
    if not names or any(s not in RUNS for s in names):
        raise ConfigError(f"studies='{c['studies']}': choose from {', '.join(RUNS)}, comma-separated.")
    try:
        budgets = [int(k) for k in c['budgets'].split(',')]
    except ValueError:
        budgets = [0]
    if min(budgets) < 1:
        raise ConfigError(f"budgets='{c['budgets']}': give loop group counts of 1 or more, like '1,2,3'.")
    if c['threads']:
        torch.set_num_threads(c['threads'])
    t0, results = time.time(), {}
    origin = provenance(command_line('experiments.kv_budget'), torch.get_num_threads())  # before out_dir changes
    for name in names:
        runs_dir = train_study(name, c['runs_root'], c['data_dir'], c['experiment_args'], c['run_experiments'])
        results.update(measure(name, runs_dir, c))
    info = dict(command=origin['command'],
                machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
                wall_s=time.time() - t0, eval_tokens=c['eval_tokens'], exit_threshold=c['exit_threshold'])
    os.makedirs(c['out_dir'], exist_ok=True)
    with open(os.path.join(c['out_dir'], 'results.json'), 'w') as f:
        json.dump(dict(info=info, provenance=origin, config=c, runs=results), f)
    text = report(info, results)
    with open(os.path.join(c['out_dir'], 'results.md'), 'w') as f:
        f.write(text)
    print('\n' + text)
    plot(os.path.join(c['out_dir'], 'kv_budget.png'), results)


if __name__ == '__main__':
    run_study(main, globals())
