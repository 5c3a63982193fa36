"""
A task that needs depth: the grid on the hops task (multi-hop pointer chasing, tasks/hops.py),
1⊗1, 1⊗2, 1⊗4 next to 2⊗1 and 4⊗1, with the answer accuracy per hop count. The hops task's
model and budget are the defaults (experiments/runs.py's HOPS: n_embd 64, 5000 iterations of 64 examples,
lr 3e-3); every key of the grid (experiments/runs.py) still overrides them.

    python prepare.py hops
    python -m experiments.hops                    # 23 min on a 2-core CPU (results/hops)
    python -m experiments.hops --quick            # 1 seed, 1500 iterations: ~4 min
    python -m experiments.hops --pairs=1x2 --n_embd=32 --max_iters=3000 --out_dir=results/hops-c32
"""

from experiments import runs

if __name__ == '__main__':
    runs.main(__file__, dataset='hops')
