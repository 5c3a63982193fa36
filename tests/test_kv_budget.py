"""kv_budget.py: the points it measures, the anchors' rule beside ours, and the verdict."""

import numpy as np
import pytest

from configurator import ConfigError
from conftest import tiny_loop
from engine import KVCache
from experiments import kv_budget
from experiments.common import generation_scores


def windows(B=3, T=12):
    w = np.random.default_rng(0).integers(32, size=(B, T + 1))
    return [(w[:, :-1].copy(), w[:, 1:].copy())]


def test_the_two_rules_fold_iterations_into_groups():
    model = tiny_loop(noise=0.3)
    model.n_loop = 5
    ours, mod = KVCache(model, 1, 12, 2), kv_budget.ModCache(model, 1, 12, 2)
    assert [ours.group(n) for n in range(1, 6)] == [1, 2, 2, 2, 2]  # first + latest
    assert [mod.group(n) for n in range(1, 6)] == [1, 2, 1, 2, 1]   # (n - 1) mod k + 1
    assert ours.n_groups == mod.n_groups == 2


def test_points_of_a_drawn_model():
    model, data = tiny_loop(noise=0.3, loop_sampling='poisson'), windows()
    pts = kv_budget.points(model, data, None, [1, 2, 3], exit_threshold=0.5, drawn=True)
    assert model.n_loop == 2  # restored
    key = {(p['n_loop'], p['kv_budget'], p['rule'], p['exit']): p for p in pts}
    # N = 2: k = 1 only (k >= 2 is the full cache), with and without exit; 4 and 8: k = 1, 2, 3 and mod 2, 3
    assert sorted(k for k in key if k[0] == 2) == [(2, 0, 'latest', False), (2, 0, 'latest', True),
                                                     (2, 1, 'latest', False), (2, 1, 'latest', True)]
    assert sorted(k[1:3] for k in key if k[0] == 8) == [(0, 'latest'), (1, 'latest'), (2, 'latest'), (2, 'mod'),
                                                        (3, 'latest'), (3, 'mod')]
    # the full cache is generation's own path; a budget and the anchors' rule change it
    model.n_loop = 4
    assert key[4, 0, 'latest', False]['val_loss'] == pytest.approx(generation_scores(model, data)['val_loss'], abs=1e-6)
    assert abs(key[4, 2, 'latest', False]['val_loss'] - key[4, 2, 'mod', False]['val_loss']) > 1e-4
    assert key[4, 1, 'latest', False]['val_loss'] != key[4, 0, 'latest', False]['val_loss']
    # memory: groups of n_layer slots
    assert key[8, 0, 'latest', False]['groups'] == 8 and key[8, 3, 'latest', False]['groups'] == 3
    assert key[8, 0, 'latest', False]['kv_bytes'] == 8 * key[8, 1, 'latest', False]['kv_bytes'] == 8 * 2 * 2 * 12 * 8 * 2  # k and v, 2 heads of 8, 12 tokens, bf16


def result(seed, losses, N=2):
    """A result whose val loss at n_loop N is losses[k] for k in losses (0: the full cache)."""
    pts = [dict(n_loop=N, kv_budget=k, rule='latest', exit=False, groups=k or N, kv_bytes=1000 * (k or N),
                val_loss=v, mean_iterations=N) for k, v in losses.items()]
    return dict(study='stdlib', run='loop', seed=seed, trained_n_loop=N, drawn=False, groups=None, points=pts)


def test_the_verdict_is_the_smallest_budget_within_0_01_on_every_seed():
    seeds = [result(1, {0: 2.0, 1: 2.5, 2: 2.009, 3: 2.001}, N=4), result(2, {0: 2.1, 1: 2.3, 2: 2.112, 3: 2.1}, N=4)]
    assert 'k = 3, 3 loop group(s) of 4, 3.0 kB of 4.0 kB' in kv_budget.verdict(seeds, 4)  # k = 2 misses on seed 2
    seeds[1]['points'][2]['val_loss'] = 2.105
    assert 'k = 2, 2 loop group(s) of 4' in kv_budget.verdict(seeds, 4)
    seeds[0]['points'][2]['val_loss'] = seeds[0]['points'][3]['val_loss'] = 2.5
    assert 'no budget below 4 groups is within 0.01' in kv_budget.verdict(seeds, 4)
    seeds[0]['points'][2]['val_loss'], seeds[0]['points'][3]['val_loss'] = 2.009, 2.001
    info = dict(command='c', machine='m', wall_s=60, eval_tokens=10, exit_threshold=0.01)
    text = kv_budget.report(info, {f'stdlib/loop-s{s["seed"]}': s for s in seeds})
    assert '| 4* | off | latest | 2.050, 4.00, 4.0 | +0.350 (+0.500, +0.200) | +0.007 (+0.009, +0.005) |' in text
    assert '| k = 1 (1.0 kB): Δ val loss | k = 2 (2.0 kB): Δ val loss |' in text


def test_bad_settings():
    with pytest.raises(ConfigError, match='choose from stdlib, hops, deep'):
        kv_budget.main(dict(studies='cifar', budgets='1'))
    with pytest.raises(ConfigError, match="like '1,2,3'"):
        kv_budget.main(dict(studies='stdlib', budgets='0,1'))
