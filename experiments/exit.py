"""
Adaptive depth: how many loop iterations can a token skip? For each trained LoopGPT, val
loss against the mean iterations spent per token, for fixed counts 1 .. 2N and for per-token
exit (engine.step_with_exit) over a sweep of thresholds, all measured through the path
generation uses: teacher-forced, one token at a time, with the KV cache and, for exit, the
exit rule and its KV rule for stopped tokens.

    python -m experiments.exit                        # every study below; trains what is missing (long on a CPU)
    python -m experiments.exit --studies=stdlib,hops  # some of them
    python -m experiments.exit --out_dir=results/exit # what is committed

The studies train their models with experiments.depth (one subprocess each, reusing finished
runs; its results.md, with the loop sweep, goes to runs_root/DIR, DIR as in experiments/common.py),
then evaluate:

    stdlib      experiments.depth --recurrent=2x2: 2⊗2 on stdlib, loop counts drawn in training
                (mean 2) and fixed
    hops        experiments.depth --recurrent=1x2 --dataset=hops: the same for 1⊗2 on hops, with
                accuracy and mean iterations per answer by hop count
    deep        experiments.depth --recurrent=2x6 --bptt_loops=3 --loop_norm=True: deep recurrence
                (mean 6) with the state normalised after every iteration
    deep-hops   experiments.depth --recurrent=1x6 --dataset=hops --bptt_loops=3 --loop_norm=True

With --studies, the other studies' results already in out_dir are kept (measured on the
same eval_tokens), so one study can be added or measured again alone. --run_experiments=False measures
the runs already in runs_root without calling experiments.depth (whose grid evaluation and
loop sweep it would otherwise redo).

Writes out_dir/results.json ({"runs": {NAME: {"trained_n_loop", "fixed": [...], "adaptive":
[...]}}}), results.md and frontier.png (with matplotlib).
"""

import json
import os
import sys
import time

import numpy as np
import torch

from configurator import ConfigError, answer_help
from engine import EXIT_CRITERIA as CRITERIA
from engine import ExitRule
from experiments.common import (SEEDS, STUDIES, command_line, eval_windows, generation_scores, load_run, provenance,
                                run_study, train_study)
from experiments.report import by_study, mean_spread, plot_studies

if __name__ == '__main__':  # --help: the docstring and the keys below
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
studies = 'stdlib,hops,deep,deep-hops'   # which of STUDIES to run, in this order
out_dir = 'experiments-out/exit'         # results.json, results.md, frontier.png
runs_root = 'experiments-out'            # experiments.depth writes DIR/ (its results) and DIR-runs/ (the runs)
data_dir = 'data'
kl_thresholds = '1e-4,5e-4,3e-3,0.01,0.05,0.2,1,3,10'  # KL(p_n || p_{n-1}) < t; 5e-4 is Huginn's; '' = skip
entropy_thresholds = '0.25,0.5,1,1.5,2,2.1,2.2,2.3,2.5,3'  # H(p_n) < t, in nats; '' = skip
state_thresholds = '0.2,0.4,0.6,0.8,0.9,0.94,0.96,0.97,0.98,0.99,1,1.02'  # |h_n - h_{n-1}| / |h_n| < t, no read-out; '' = skip
eval_tokens = 16384                      # val tokens per evaluation (the same windows for every model)
batch_size = 64                          # windows evaluated together
experiment_args = ''                     # more --key=value for every experiments.depth call, e.g. '--jobs=1'
run_experiments = True                   # False: measure the runs already in runs_root, without experiments.depth
threads = 0                              # torch threads for the evaluation; 0: torch's default
# -----------------------------------------------------------------------------

# the runs of each study (studies.STUDIES) to evaluate
RUNS = {
    'stdlib': ['loop2x2-poisson', 'loop2x2'],
    'hops': ['loop1x2-poisson', 'loop1x2'],
    'deep': ['loop2x6-poisson-inject-bptt3-norm', 'loop2x6-norm'],
    'deep-hops': ['loop1x6-poisson-inject-bptt3-norm', 'loop1x6-norm'],
}


# -----------------------------------------------------------------------------
# the measurement: generation's path, teacher-forced


def frontier(model, batches, groups, c):
    """Fixed counts 1 .. 2N (N: the trained count) and exit at every threshold of every criterion
    (CRITERIA: c['kl_thresholds'], ...; one left out or '' is skipped), at most N iterations."""
    N = model.n_loop
    fixed = []
    for n in range(1, 2 * N + 1):
        model.n_loop = n
        fixed.append(dict(n_loop=n, **generation_scores(model, batches, groups)))
    model.n_loop = N
    adaptive = [dict(criterion=criterion, threshold=t,
                     **generation_scores(model, batches, groups, ExitRule(t, min_loops=1, criterion=criterion)))
                for criterion in CRITERIA for t in thresholds(c.get(f'{criterion}_thresholds', ''))]
    return dict(trained_n_loop=N, fixed=fixed, adaptive=adaptive)


def thresholds(text):
    """The numbers of a comma-separated list ('' is none: the criterion is skipped)."""
    if not text.strip():
        return []
    try:
        values = [float(t) for t in text.split(',')]
    except ValueError:
        values = [0.0]
    if not values or min(values) <= 0:
        raise ConfigError(f"thresholds '{text}': give positive numbers, comma-separated, like '1e-4,1e-3'.")
    return values


# -----------------------------------------------------------------------------
# the studies: train (experiments.depth), then measure


def measure(name, runs_dir, c):
    """{NAME: frontier} for every run and seed of a study."""
    dataset = STUDIES[name][2]
    results = {}
    for run in RUNS[name]:
        for seed in SEEDS:
            model = load_run(runs_dir, run, seed)
            batches, groups, names = eval_windows(c['data_dir'], dataset, c['eval_tokens'], c['batch_size'],
                                                  model.config.block_size)
            t0 = time.time()
            res = dict(study=name, dataset=dataset, run=run, seed=seed, **frontier(model, batches, groups, c))
            if names:
                res['groups'] = names
            results[f'{name}/{run}-s{seed}'] = res
            print(f"{name}/{run}-s{seed}: measured in {time.time() - t0:.0f} s", flush=True)
    return results


def main(c):
    names = [s.strip() for s in c['studies'].split(',') if s.strip()]
    unknown = [s for s in names if s not in STUDIES]
    if unknown or not names:
        raise ConfigError(f"studies='{c['studies']}': choose from {', '.join(STUDIES)}, comma-separated.")
    for criterion in CRITERIA:
        thresholds(c[f'{criterion}_thresholds'])
    if c['threads']:
        torch.set_num_threads(c['threads'])
    t0 = time.time()
    command = command_line('experiments.exit')
    origin = provenance(command, torch.get_num_threads())  # before out_dir's files change
    results, info = earlier(c, names)
    for name in names:
        runs_dir = train_study(name, c['runs_root'], c['data_dir'], c['experiment_args'], c['run_experiments'])
        results.update(measure(name, runs_dir, c))
    info['commands'].append(dict(command=command, studies=names, wall_s=time.time() - t0,
                                 machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
                                         f"{torch.get_num_threads()} threads",
                                 provenance=origin))  # each call's own
    os.makedirs(c['out_dir'], exist_ok=True)
    with open(os.path.join(c['out_dir'], 'results.json'), 'w') as f:
        json.dump(dict(info=info, provenance=info['commands'][-1]['provenance'], config=c, runs=results), f)
    text = report(info, results)
    with open(os.path.join(c['out_dir'], 'results.md'), 'w') as f:
        f.write(text)
    print('\n' + text)
    plot(os.path.join(c['out_dir'], 'frontier.png'), results)


# -----------------------------------------------------------------------------
# the tables and the plot


def points(results, study, run):
    """[(label, [the point of each seed])] of one run: the fixed counts, then exit at each threshold."""
    seeds = [r for r in results.values() if r['study'] == study and r['run'] == run]
    out = [(f"fixed n={p['n_loop']}" + ('*' if p['n_loop'] == seeds[0]['trained_n_loop'] else ''),
            [s['fixed'][i] for s in seeds]) for i, p in enumerate(seeds[0]['fixed'])]
    out += [(f"{p['criterion']} < {p['threshold']:g}", [s['adaptive'][i] for s in seeds])
            for i, p in enumerate(seeds[0]['adaptive'])]
    return out, seeds


def run_table(results, study, run):
    rows, seeds = points(results, study, run)
    N = seeds[0]['trained_n_loop']
    at_N = [s['fixed'][N - 1]['val_loss'] for s in seeds]
    groups = seeds[0].get('groups')
    head = ['point', 'iterations per token', 'val loss', 'Δ vs fixed N, per seed'] + (
        ['accuracy'] + [f'{g}: accuracy, iterations' for g in groups] if groups else [])
    lines = [f"### {study}: {run} (trained N = {N}; seeds {', '.join(str(s['seed']) for s in seeds)})", "",
             '| ' + ' | '.join(head) + ' |', '|---|' + '--:|' * (len(head) - 1)]
    for label, ps in rows:
        deltas = ', '.join(f"{p['val_loss'] - a:+.3f}" for p, a in zip(ps, at_N))
        cells = [label, mean_spread([p['mean_iterations'] for p in ps], 2), mean_spread([p['val_loss'] for p in ps]),
                 deltas]
        if groups:
            cells.append(mean_spread([p['accuracy'] for p in ps]))
            cells += [f"{np.mean([p['accuracy_by'][g] for p in ps]):.3f}, {np.mean([p['iterations_by'][g] for p in ps]):.2f}"
                      for g in range(len(groups))]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ["", cheapest(rows, at_N, N)]
    return '\n'.join(lines)


def cheapest(rows, at_N, N, within=0.01):
    """The exit point with the fewest iterations whose loss is within `within` of fixed N on every
    seed, of all criteria, then of each."""
    ok = [(np.mean([p['mean_iterations'] for p in ps]), label) for label, ps in rows if not label.startswith('fixed')
          and all(p['val_loss'] - a <= within for p, a in zip(ps, at_N))]
    if not ok:
        return f"No exit point is within {within} of fixed N's val loss on every seed."
    m, label = min(ok)
    each = [min((p for p in ok if p[1].startswith(f'{c} <')), default=None) for c in CRITERIA]
    each = '; '.join(f"{label} at {m:.2f}" for m, label in filter(None, each))
    return (f"The cheapest exit point within {within} of fixed N's val loss on every seed: {label}, at {m:.2f} "
            f"iterations per token ({m / N:.2f} N). By criterion: {each}.")


def earlier(c, names):
    """(results, info) of out_dir/results.json for the studies not measured now, so that one study
    can be measured again (or added) without redoing the others; empty if there is none."""
    info = dict(commands=[], eval_tokens=c['eval_tokens'])
    try:
        with open(os.path.join(c['out_dir'], 'results.json')) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return {}, info
    if old['info'].get('eval_tokens') != c['eval_tokens']:
        return {}, info  # measured on other tokens: not comparable
    kept = {k: r for k, r in old['runs'].items() if r['study'] not in names}
    info['commands'] = [x for x in old['info']['commands'] if set(x['studies']) - set(names)]
    return kept, info


def report(info, results):
    commands = ''.join(f"Command: `{x['command']}` ({', '.join(x['studies'])}; {x['machine']}; "
                       f"{x['wall_s'] / 60:.1f} min)  \n" for x in info['commands'])
    parts = [f"{commands}"
             f"Every point: the val loss of predicting each of the same {info['eval_tokens']:,} val tokens (answer "
             f"positions only on hops) one at a time through the KV cache, as sample.py generates: fixed n runs n "
             f"iterations; 'kl < t', 'entropy < t' and 'state < t' stop each token once KL(p_n ‖ p_(n-1)), H(p_n) or "
             f"‖h_n − h_(n-1)‖ / ‖h_n‖ < t (at most N iterations; stopped tokens show later ones their last keys and "
             f"values; 'state' reads out once, at the stop). Iterations per token: per scored target. * = the trained "
             f"count N. ± is half the range over the seeds."]
    for study, runs in by_study(results).items():
        parts.append(f"## {study} (experiments.depth {' '.join(STUDIES[study][1])})")
        parts += [run_table(results, study, run) for run in runs]
    return '\n\n'.join(parts) + '\n'


def plot(path, results):
    """Val loss against the mean iterations per token, fixed counts and exit, one panel per study."""
    def draw(ax, study, runs):
        for i, run in enumerate(runs):
            rows, _ = points(results, study, run)
            for kind, style in (('fixed', 'o-'), ('kl', '^--'), ('entropy', 's:'), ('state', 'D-.')):
                ps = [ps for label, ps in rows if label.startswith(kind)]
                if not ps:  # a criterion this measurement skipped
                    continue
                x = [np.mean([p['mean_iterations'] for p in q]) for q in ps]
                y = [np.mean([p['val_loss'] for p in q]) for q in ps]
                ax.plot(x, y, style, color=f'C{i}', ms=4, label=f'{run}: {kind}')
        ax.set(xlabel='loop iterations per token (mean)', ylabel='val loss (generation path)', title=study)

    plot_studies(path, results, draw)


if __name__ == '__main__':
    run_study(main, globals())
