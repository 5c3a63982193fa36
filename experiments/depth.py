"""
Recurrent depth: k⊗L trained with loop counts drawn per iteration (loop_sampling='poisson',
mean L), without and with input injection, next to the fixed k⊗L, and swept at test time to
4x the trained loops. `recurrent` names k⊗L (2x2 unless set); bptt_loops and loop_norm apply
to its runs; --dataset=hops runs it on the hops task. Every key of the grid (experiments/runs.py) applies.

    python -m experiments.depth                                               # 2⊗2 on stdlib: 11 min (results/depth)
    python -m experiments.depth --recurrent=2x6 --bptt_loops=3 --loop_norm=True   # six loops: 82 min (results/depth-norm)
    python -m experiments.depth --recurrent=1x2 --dataset=hops                # on the hops task (results/depth-hops)
    python -m experiments.depth --recurrent=1x6 --bptt_loops=3 --loop_norm=True --dataset=hops   # (results/depth-norm-hops)

experiments.exit and experiments.kv_budget measure these models' inference.
"""

from experiments import runs

if __name__ == '__main__':
    runs.main(__file__, recurrent='2x2')
