"""exit_study.py and studies.py: the teacher-forced generation path, its per-group bookkeeping, the report."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from configurator import ConfigError
from conftest import tiny_loop
from engine import ExitRule
from experiments import exit as exit_study
from experiments.common import generation_scores


def batches(seed=0, n=2, B=3, T=12, mask=None):
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = g.integers(32, size=(B, T + 1))
        x, y = w[:, :-1].copy(), w[:, 1:].copy()
        if mask is not None:
            y[:, mask] = -1
        out.append((x, y))
    return out


def test_fixed_counts_are_the_parallel_forward():
    """One token at a time through the cache is the usual forward: the same loss, at every count."""
    model, data = tiny_loop(n_prelude=1, n_coda=1), batches()
    for n in (1, 2, 3):
        model.n_loop = n
        with torch.no_grad():
            parallel = np.mean([model(torch.from_numpy(x), torch.from_numpy(y))[1].item() for x, y in data])
        res = generation_scores(model, data)
        assert res['val_loss'] == pytest.approx(parallel, abs=1e-5)
        assert res['mean_iterations'] == res['mean_iterations_all'] == n


def test_groups_count_answers_only():
    """On a dataset with answers: the loss, accuracy and iterations of the answer positions, by
    group, against the parallel forward's argmax at those positions."""
    model = tiny_loop()
    groups = np.full(12, -1)
    groups[[3, 7]], groups[10] = 0, 1
    data = batches(mask=groups < 0)
    res = generation_scores(model, data, groups)
    hits, terms = {0: [], 1: []}, []
    with torch.no_grad():
        for x, y in data:
            logits = model(torch.from_numpy(x), torch.zeros_like(torch.from_numpy(x)))[0]
            for t in np.flatnonzero(groups >= 0):
                target = torch.from_numpy(y[:, t])
                terms.append(F.cross_entropy(logits[:, t], target, reduction='none'))
                hits[groups[t]] += (logits[:, t].argmax(-1) == target).tolist()
    assert res['val_loss'] == pytest.approx(torch.cat(terms).mean().item(), abs=1e-5)
    assert res['accuracy_by'] == [pytest.approx(np.mean(hits[0])), pytest.approx(np.mean(hits[1]))]
    assert res['accuracy'] == pytest.approx(np.mean(hits[0] + hits[1]))
    assert res['iterations_by'] == [2, 2] and res['mean_iterations'] == 2
    # with exit, stopping everything after one iteration: the loss of the one-iteration loop
    early = generation_scores(model, data, groups, ExitRule(1e9))
    model.n_loop = 1
    assert early['val_loss'] == pytest.approx(generation_scores(model, data, groups)['val_loss'], abs=1e-6)
    assert early['iterations_by'] == [1, 1] and early['mean_iterations_all'] == 1


def test_frontier_and_report():
    model, data = tiny_loop(), batches(n=1)
    c = dict(kl_thresholds='1e-3,1e9', entropy_thresholds='10', state_thresholds='1e9')
    res = exit_study.frontier(model, data, None, c)
    assert res['trained_n_loop'] == 2 and model.n_loop == 2  # restored
    assert [p['n_loop'] for p in res['fixed']] == [1, 2, 3, 4]
    assert [(p['criterion'], p['threshold']) for p in res['adaptive']] == [('kl', 1e-3), ('kl', 1e9), ('entropy', 10),
                                                                          ('state', 1e9)]
    for p in (res['adaptive'][1], res['adaptive'][3]):  # everything stops at its first iteration
        assert p['mean_iterations'] == 1 and p['val_loss'] == pytest.approx(res['fixed'][0]['val_loss'], abs=1e-6)
    assert [p['criterion'] for p in exit_study.frontier(model, data, None, dict(kl_thresholds='1'))['adaptive']] == ['kl']
    # the report's verdict: the cheapest exit point within 0.01 of fixed N on every seed
    results = {f'stdlib/loop-s{s}': dict(study='stdlib', run='loop', seed=s, **res) for s in (1, 2)}
    info = dict(commands=[dict(command='c', studies=['stdlib'], machine='m', wall_s=60)], eval_tokens=36)
    text = exit_study.report(info, results)
    close = [p for p in res['adaptive'] if p['val_loss'] - res['fixed'][1]['val_loss'] <= 0.01]
    best = min(close, key=lambda p: p['mean_iterations'])
    assert f"on every seed: {best['criterion']} < {best['threshold']:g}, at {best['mean_iterations']:.2f}" in text
    assert '| fixed n=2* | 2.00 ± 0.00 |' in text


def test_bad_settings():
    with pytest.raises(ConfigError, match="choose from stdlib, hops, deep"):
        exit_study.main(dict(studies='cifar', kl_thresholds='1', entropy_thresholds='1'))
    with pytest.raises(ConfigError, match="give positive numbers"):
        exit_study.thresholds('1e-3,zero')


def test_other_studies_results_are_kept(tmp_path):
    """Measuring one study again keeps the others' results from out_dir, if on the same tokens."""
    import json
    runs = {'stdlib/a-s1': dict(study='stdlib'), 'hops/b-s1': dict(study='hops')}
    info = dict(commands=[dict(command='x', studies=['stdlib', 'hops'])], eval_tokens=100)
    (tmp_path / 'results.json').write_text(json.dumps(dict(info=info, runs=runs)))
    c = dict(out_dir=str(tmp_path), eval_tokens=100)
    kept, info = exit_study.earlier(c, ['hops'])
    assert kept == {'stdlib/a-s1': dict(study='stdlib')} and [x['command'] for x in info['commands']] == ['x']
    assert exit_study.earlier(c, ['stdlib', 'hops'])[0] == {}
    assert exit_study.earlier(dict(c, eval_tokens=200), ['hops'])[0] == {}  # other tokens: nothing kept
