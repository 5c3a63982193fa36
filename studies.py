"""
The trained runs that the inference studies (adaptive_depth.py, kv_budget.py) measure, and the
measurement they share. A study is one experiments.py command; its runs land in
runs_root/DIR-runs/NAME-sSEED/last.pt, DIR as below (the folders of the committed results/ of
the same commands). train_study runs the command in a subprocess, which trains only what is
missing; load_run and eval_windows read the results; generation_scores measures a model on
val windows along the path generation takes.
"""

import os
import shlex
import subprocess
import sys

import torch
from torch.nn import functional as F

from checkpoint import load_checkpoint, model_from_checkpoint
from dataformat import answer_groups, fixed_windows, load_meta
from engine import KVCache, teacher_forced

# name: (DIR under runs_root, experiments.py arguments, dataset)
STUDIES = {
    'stdlib': ('depth', ['--recurrent=2x2'], 'stdlib'),
    'hops': ('depth-hops', ['--recurrent=1x2', '--dataset=hops'], 'hops'),
    'deep': ('depth-norm', ['--recurrent=2x6', '--bptt_loops=3', '--loop_norm=True'], 'stdlib'),
    'deep-hops': ('depth-norm-hops', ['--recurrent=1x6', '--dataset=hops', '--bptt_loops=3', '--loop_norm=True'],
                  'hops'),
}
SEEDS = (1337, 1338)  # experiments.py's two seeds
HERE = os.path.dirname(os.path.abspath(__file__))


class RunError(Exception):
    """experiments.py failed; the message says where to look."""


def train_study(name, runs_root, data_dir, experiment_args='', run=True):
    """Run experiments.py for a study (it reuses finished runs), unless run=False; returns the
    directory of its runs."""
    folder, args, _ = STUDIES[name]
    runs_dir = os.path.join(runs_root, f'{folder}-runs')
    cmd = [sys.executable, os.path.join(HERE, 'experiments.py'), *args, f"--data_dir={data_dir}",
           f"--out_dir={os.path.join(runs_root, folder)}", f'--runs_dir={runs_dir}', *shlex.split(experiment_args)]
    if not run:
        return runs_dir
    print('$ ' + ' '.join(shlex.quote(a) for a in cmd[1:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise RunError(f"experiments.py failed for the {name} study (its error is above): fix it and run this again.")
    return runs_dir


def load_run(runs_dir, run, seed):
    """A run's final model (last.pt), in eval mode."""
    return model_from_checkpoint(load_checkpoint(os.path.join(runs_dir, f'{run}-s{seed}'), 'last')).eval()


def eval_windows(data_dir, dataset, n_tokens, batch_size, block_size):
    """(batches, groups, names): the same val windows for every model (dataformat.fixed_windows),
    and the dataset's answer groups and their names (None, None without answers)."""
    path = os.path.join(data_dir, dataset)
    groups, names = answer_groups(load_meta(path), block_size)
    return fixed_windows(path, 'val', n_tokens, batch_size, block_size), groups, names


@torch.no_grad()
def generation_scores(model, batches, groups=None, exit=None, kv_budget=0, cache_class=KVCache):
    """Every target of the windows predicted as generation predicts it (engine.teacher_forced):
    one token at a time through the KV cache (a cache_class with kv_budget), running
    model.n_loop iterations, or with exit (an ExitRule) each token as many as the rule gives it.
    batches: (x, y) int64 numpy (B, T), y = -1 where there is no loss (off the answers). Returns
    the val loss and the mean iterations per scored target (and per token of any kind), and with
    answer groups (hops: by hop count) the accuracy and mean iterations of each group."""
    steps = {'loss': [], 'loops': [], 'correct': [], 'target': []}
    for x, y in batches:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        cache = cache_class(model, x.size(0), x.size(1), kv_budget)
        logits, loops = teacher_forced(model, x, exit=exit, kv_cache=cache)  # (B, T, V), (B, T)
        steps['loss'].append(F.cross_entropy(logits.flatten(0, 1), y.clamp_min(0).flatten(), reduction='none'))
        steps['loops'].append(loops.flatten())
        steps['correct'].append((logits.argmax(-1) == y).flatten())
        steps['target'].append(y.flatten())
    loss, loops, correct, target = (torch.cat(v) for v in steps.values())  # (tokens,), window by window
    scored = target >= 0
    out = dict(val_loss=loss[scored].mean().item(), mean_iterations=loops[scored].float().mean().item(),
               mean_iterations_all=loops.float().mean().item())
    if groups is not None:  # each entry's position in its window, and so its answer group
        group = torch.from_numpy(groups).repeat(len(loss) // len(groups))
        ids = range(int(groups.max()) + 1)
        out['accuracy'] = correct[scored].float().mean().item()
        out['accuracy_by'] = [correct[group == g].float().mean().item() for g in ids]
        out['iterations_by'] = [loops[group == g].float().mean().item() for g in ids]
    return out


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
