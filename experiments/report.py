"""
Tables and plots of the studies' numbers: results.md and the figures of a grid study
(results_markdown, plot_all; the numbers come from experiments/runs.py), the shared
formatting (si, mean_spread), and the per-study panels of the inference studies
(experiments/exit.py, experiments/kv_budget.py: by_study, plot_studies). Nothing here trains
or measures. matplotlib is optional: without it the tables are still written.
"""

import os

import numpy as np

from experiments.common import parse_counts

# -----------------------------------------------------------------------------
# the tables


def si(x, digits=3):
    """1234567 -> '1.23M'."""
    for div, unit in ((1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(x) >= div:
            return f"{x / div:.{digits}g}{unit}"
    return f"{x:.{digits}g}"


def mean_spread(xs, digits=3):
    """'mean ± half the range' over seeds; just the value for one seed."""
    m = float(np.mean(xs))
    return f"{m:.{digits}f}" if len(xs) == 1 else f"{m:.{digits}f} ± {(max(xs) - min(xs)) / 2:.{digits}f}"


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
# the inference studies: one panel per study


def by_study(results):
    """{study: [its runs]} of results ({name: {'study', 'run', ...}}), in their order."""
    out = {}
    for r in results.values():
        out.setdefault(r['study'], [])
        if r['run'] not in out[r['study']]:
            out[r['study']].append(r['run'])
    return out


def plot_studies(path, results, draw):
    """A figure with one panel per study of results, drawn by draw(ax, study, its runs), saved to
    path; skipped, saying so, without matplotlib (which only the plots need)."""
    try:
        import matplotlib
        matplotlib.use('Agg')  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"{os.path.basename(path)} skipped: matplotlib is not installed (pip install matplotlib)")
        return
    studies = by_study(results)
    fig, axes = plt.subplots(1, len(studies), figsize=(5.5 * len(studies), 4.2), squeeze=False)
    for ax, (study, runs) in zip(axes[0], studies.items()):
        draw(ax, study, runs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
