"""
Results that reproduce: train one recorded run of a grid study again from its record and
compare the numbers. A grid study's results.json (experiments/runs.py: grid, hops, budget,
depth, ablations) holds its config and its runs, from which runs.train_command rebuilds each
run's `python train.py` arguments exactly; this trains the run again into out_dir, one thread
per run unless the record says otherwise, and compares what it logs with the record: the val
loss at every evaluation of train.py (the curve) and the final train and val loss (and answer
accuracy) on the fixed windows. It prints each, the largest difference, and exits 1 if that is
above the tolerance.

    python -m experiments.reproduce        # = make reproduce: results/hops-c32's cheapest run (~1 min on 2 cores)
    python -m experiments.reproduce --record=results/grid/results.json --run=loop1x2 --seed=1338

Bit for bit (tolerance 0) is what the code promises for the same code, torch, machine type and
threads: train.py's batches depend only on the seed and the iteration. The record's provenance
(its commit, torch, Python, device, threads) says where it was made; where ours differs this
prints which, and a difference in the last digits is then no fault. results/README.md says
which committed records predate which change.
"""

import json
import sys
import time

import torch

from checkpoint import load_checkpoint, model_from_checkpoint
from configurator import ConfigError, answer_help, config_keys
from experiments import runs
from experiments.common import RunError, provenance, run_study

if __name__ == '__main__':  # --help: the docstring and the keys below
    answer_help(__file__, sys.argv[1:])

# -----------------------------------------------------------------------------
record = 'results/hops-c32/results.json'  # a grid study's results.json, with its config and runs
run = ''                                  # the run to train again, by name ('' = the cheapest: least depth)
seed = 0                                  # its seed (0 = the first recorded)
out_dir = 'experiments-out/reproduce'     # train.py's out_dir for the run trained again (replaced each time)
data_dir = ''                             # '' = the record's (prepare.py writes the dataset there)
threads = 0                               # CPU threads of the run, 0 = the record's (1 if it says none)
tolerance = 0.0                           # the largest |difference| accepted; 0 = bit for bit
# -----------------------------------------------------------------------------


def load_record(path):
    """The record's grid config (today's defaults under it: keys added since), its runs and results."""
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"record='{path}' cannot be read ({e}): give a grid study's results.json.") from None
    if not {'config', 'runs', 'results'} <= rec.keys():
        raise ConfigError(f"record='{path}' has no config, runs and results: give a grid study's results.json "
                          f"(experiments.grid, .hops, .budget, .depth or .ablations).")
    defaults = config_keys(vars(runs))
    rec['config'] = {**defaults, **{k: v for k, v in rec['config'].items() if k in defaults}}
    return rec


def choose(rec, name, seed):
    """(the Run, its recorded result) of run `name` ('' = the cheapest) at `seed` (0 = the first)."""
    fields = runs.Run.__dataclass_fields__
    recorded = {r['name']: runs.Run(**{k: v for k, v in r.items() if k in fields}) for r in rec['runs']}
    if not name:
        name = min(recorded, key=lambda n: (recorded[n].depth * recorded[n].budget, n))
    if name not in recorded or name not in rec['results']:
        raise ConfigError(f"run='{name}' is not in the record: choose from {', '.join(recorded)}.")
    results = rec['results'][name]
    res = results[0] if not seed else next((r for r in results if r['seed'] == seed), None)
    if res is None:
        raise ConfigError(f"seed={seed}: run {name} has seeds {', '.join(str(r['seed']) for r in results)} recorded.")
    return recorded[name], res


def differences(recorded, retrained):
    """[(what, recorded value, retrained value)]: the curve's val loss at each evaluation, then the
    final losses and accuracies on the fixed windows."""
    old, new = recorded['curve'], retrained['curve']
    if old['iter'] != new['iter']:
        raise RunError(f"the retrained run evaluated at iterations {new['iter']}, the record at {old['iter']}: "
                       f"its settings differ from the record's.")
    rows = [(f"val loss at iter {i}", a, b) for i, a, b in zip(old['iter'], old['val_loss'], new['val_loss'])]
    rows += [(f"final {k.replace('_', ' ')}", recorded[k], retrained[k])
             for k in ('train_loss', 'val_loss', 'accuracy') if k in recorded]
    rows += [(f"accuracy, {g}", v, retrained['accuracy_by'][g]) for g, v in recorded.get('accuracy_by', {}).items()]
    return rows


def main(c):
    rec = load_record(c['record'])
    cfg = dict(rec['config'], rerun=True)
    if c['data_dir']:
        cfg['data_dir'] = c['data_dir']
    recorded_threads = (rec.get('provenance') or {}).get('threads') or cfg.get('threads') or 1
    cfg['threads'] = c['threads'] or recorded_threads
    run, recorded = choose(rec, c['run'], c['seed'])
    seed = recorded['seed']
    ours = provenance(None, cfg['threads'])
    theirs = rec.get('provenance')
    print(f"{c['record']}: {run.name} ({run.label}) seed {seed}, recorded by `{rec['info']['command']}`")
    if theirs is None:
        print("the record has no provenance: it predates it (results/README.md says what changed since)")
    else:
        changed = [f"{k} {theirs[k]} -> {ours[k]}" for k in ('commit', 'dirty', 'torch', 'python', 'device', 'threads')
                   if theirs.get(k) != ours[k]]
        print("made with this commit, torch, Python, device and threads" if not changed else
              "here, unlike where the record was made: " + '; '.join(changed))
    torch.set_num_threads(cfg['threads'])  # the final evaluation, here
    data = runs.load_data(cfg)  # before training: a missing dataset fails at once
    t0 = time.time()
    print(f"training it again into {c['out_dir']} ({cfg['threads']} thread(s))...", flush=True)
    runs.train(cfg, run, seed, c['out_dir'])
    print(f"trained in {time.time() - t0:.0f} s")
    model = model_from_checkpoint(load_checkpoint(c['out_dir'], 'last'))
    retrained = runs.summarize(c['out_dir'], seed, model, data)
    verdict(differences(recorded, retrained), c['tolerance'], f"{run.name} seed {seed}", c['record'])


def verdict(rows, tolerance, what, record):
    """Print the rows of differences and the largest; a RunError if that is above the tolerance."""
    width = max(len(w) for w, _, _ in rows)
    print(f"\n{'':<{width}}  {'recorded':>10}  {'retrained':>10}  difference")
    for name, a, b in rows:
        print(f"{name:<{width}}  {a:>10.6f}  {b:>10.6f}  {b - a:+.2e}")
    worst = max(abs(b - a) for _, a, b in rows)
    print(f"\nlargest difference: {'bit for bit' if worst == 0 else f'{worst:.3g}'} (tolerance {tolerance:g})")
    if worst > tolerance:
        raise RunError(f"the retrained {what} differs from {record} by up to {worst:.3g}, more than the "
                       f"tolerance {tolerance:g}.")


if __name__ == '__main__':
    run_study(main, globals())
