"""
What the studies share: RunError, and for the inference studies (experiments/exit.py,
experiments/kv_budget.py) the trained runs they measure and the measurement itself. Their models
come from one `python -m experiments.depth` command each; its runs land in
runs_root/DIR-runs/NAME-sSEED/last.pt, DIR as below (the folders of the committed results/ of
the same commands). train_study runs the command in a subprocess, which trains only what is
missing; load_run and eval_windows read the results; generation_scores measures a model on
val windows along the path generation takes. provenance is what every study's results.json
records of where it came from.
"""

import os
import platform
import re
import shlex
import subprocess
import sys

import torch
from torch.nn import functional as F

from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, config_keys, configure
from dataformat import DataError, answer_groups, fixed_windows, load_meta
from device import default_device
from engine import KVCache, teacher_forced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository

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


def command_line(module, argv=None):
    """The command that started a study, as typed: `python -m MODULE` and its arguments
    (sys.argv[1:] unless argv is given), each quoted as a shell needs it."""
    args = sys.argv[1:] if argv is None else argv
    return ' '.join([f'python -m {module}'] + [shlex.quote(a) for a in args])


def provenance(command, threads, root=ROOT):
    """Where a results.json came from, written into it: the commit of the code (None outside a git
    checkout), whether tracked files differed from that commit (dirty; untracked files are not
    counted, and a study asks before it writes, as its out_dir may hold committed results), the
    torch and Python versions, the device, the CPU threads of each training run or measurement,
    and the command. train.py's batches depend only on the seed and the iteration,
    so the same commit, torch, machine type and threads train the same numbers bit for bit."""
    def git(*args):
        try:
            p = subprocess.run(['git', '-C', root, *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    commit = git('rev-parse', 'HEAD')
    status = git('status', '--porcelain', '--untracked-files=no') if commit else None
    return dict(commit=commit, dirty=None if status is None else bool(status), torch=torch.__version__,
                python=platform.python_version(), device=device_name(), threads=threads, command=command)


def device_name():
    """'cpu: 2 CPU cores (x86_64, Intel(R) Xeon(R) ...)', with the GPU's name first on CUDA."""
    device = default_device()
    cpu = platform.processor()
    try:
        with open('/proc/cpuinfo') as f:  # Linux: the CPU model, which platform.processor() leaves out
            cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
    except OSError:
        pass
    gpu = f"{torch.cuda.get_device_name()}; " if device == 'cuda' else ''
    return f"{device}: {gpu}{os.cpu_count()} CPU cores ({', '.join(filter(None, (platform.machine(), cpu)))})"


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


def run_study(main, namespace):
    """A study script's command line: its config keys (those of namespace, the script's globals)
    with the files and --key=value of sys.argv, then main(config). A mistake the user can cause
    ends in one line, exit code 1."""
    try:
        main(configure(config_keys(namespace), sys.argv[1:]))
    except (ConfigError, CheckpointError, DataError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


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
