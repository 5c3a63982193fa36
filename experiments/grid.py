"""
The paper's comparison at small scale: a loop model k⊗L (k transformer blocks applied L
times, with learned gates) trained next to its two twins,

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
    python -m experiments.grid            # the paper's grid on stdlib: ~15-25 min on a 2-core CPU (results/grid)
    python -m experiments.grid --quick    # a smaller grid: a few minutes
    python -m experiments.grid --pairs=2x3 --n_seeds=3 --jobs=2 --train_args="--device=cuda --dtype=bfloat16"

The other grid studies run this grid with their own defaults (the runs, the model size and
budget, the out_dir), which --key=value still overrides, and take the same keys:
experiments.hops (a task that needs depth), experiments.budget (token budgets),
experiments.depth (recurrent depth) and experiments.ablations (gates and loop counts).
--quick makes a smaller version of any of them. --jobs runs that many trainings at once
(default: 2 on a machine with 2 or more cores, each with threads=1).

Each run is a separate `python train.py --key=value ...` into runs_dir/NAME-sSEED/
(train.py's output: log.jsonl, last.pt; and train.out, its console output). A run
that already finished with the same settings is reused, so re-running the command
after an interruption, or to redraw the plots, only trains what is missing.
Written to out_dir and printed: results.md (tables, experiments/report.py); also
results.json (every number) and, if matplotlib is installed, val_loss_vs_tokens.png,
val_loss_vs_flops.png, loop_sweep.png, and for the studies budget.png,
accuracy_by_hops.png or loop_counts.png.
"""

from experiments import runs

if __name__ == '__main__':
    runs.main(__file__)
