"""
Token budgets: does looping pay once a model has seen enough tokens? The smallest loop 1⊗2 and
its twins 1⊗1 and 2⊗1, each trained at every multiple of max_iters in `budgets`, on stdlib.
Every key of the grid (experiments/runs.py) still applies.

    python prepare.py stdlib
    python -m experiments.budget                  # 1x, 4x, 8x: about an hour on a 2-core CPU (results/budget)
    python -m experiments.budget --quick          # 1 seed, a few minutes
"""

from experiments import runs

if __name__ == '__main__':
    runs.main(__file__, budgets='1,4,8')
