"""
What the studies share: RunError, and for the inference studies (experiments/exit.py,
experiments/kv_budget.py) the trained runs they measure and the measurement itself. Their models
come from one `python -m experiments.depth` command each; its runs land in
runs_root/DIR-runs/NAME-sSEED/last.pt, DIR as below (the folders of the committed results/ of
the same commands). train_study runs the command in a subprocess, which trains only what is
missing; load_run and eval_windows read the results; generation_scores measures a model on
val windows along the path generation takes.
"""

import os
import re
import shlex
import subprocess
import sys

import torch
from torch.nn import functional as F

from checkpoint import load_checkpoint, model_from_checkpoint
from configurator import ConfigError
from dataformat import answer_groups, fixed_windows, load_meta
from engine import KVCache, teacher_forced

# name: (DIR under runs_root, experiments.depth arguments, dataset)
STUDIES = {
    'stdlib': ('depth', ['--recurrent=2x2'], 'stdlib'),
    'hops': ('depth-hops', ['--recurrent=1x2', '--dataset=hops'], 'hops'),
    'deep': ('depth-norm', ['--recurrent=2x6', '--bptt_loops=3', '--loop_norm=True'], 'stdlib'),
    'deep-hops': ('depth-norm-hops', ['--recurrent=1x6', '--dataset=hops', '--bptt_loops=3', '--loop_norm=True'],
                  'hops'),
}
SEEDS = (1337, 1338)  # the grid's two seeds (experiments/runs.py: seed, n_seeds)


class RunError(Exception):
    """A study's training failed or left no usable log; the message says where to look."""


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


def train_study(name, runs_root, data_dir, experiment_args='', run=True):
    """Run experiments.depth for a study (it reuses finished runs), unless run=False; returns the
    directory of its runs."""
    folder, args, _ = STUDIES[name]
    runs_dir = os.path.join(runs_root, f'{folder}-runs')
    cmd = [sys.executable, '-m', 'experiments.depth', *args, f"--data_dir={data_dir}",
           f"--out_dir={os.path.join(runs_root, folder)}", f'--runs_dir={runs_dir}', *shlex.split(experiment_args)]
    if not run:
        return runs_dir
    print('$ ' + ' '.join(shlex.quote(a) for a in cmd[1:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise RunError(f"experiments.depth failed for the {name} study (its error is above): fix it and run this again.")
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
