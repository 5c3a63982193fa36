"""
The paper's open checks: one block looped 1, 2, 4 and 6 times at the parameters of one block,
learned against frozen gates, the unique-block twins, and the drawn + x0 + norm recipe at four
loops; 3 seeds, n_embd 64 (experiments/runs.py's ABLATIONS). Every key of the grid applies.

    python prepare.py stdlib
    python -m experiments.ablations           # 90 min on a 2-core CPU (results/ablations)
    python -m experiments.ablations --quick   # its 1-seed pilot: does 1⊗2 beat 1⊗1 at this budget?
"""

from experiments import runs

if __name__ == '__main__':
    runs.main(__file__, ablations=True)
