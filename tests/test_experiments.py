"""experiments/grid.py: the grid end to end on a tiny budget, and the test-time loop sweep."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import prepare
from checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from configurator import ConfigError
from conftest import write_dataset
from experiments import report
from experiments import runs as grid_runs
from model import GPTConfig, LoopGPT

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
TINY = ['--n_embd=16', '--n_head=2', '--block_size=16', '--batch_size=4', '--max_iters=6',
        '--eval_interval=3', '--eval_iters=2', '--eval_tokens=512', '--warmup_iters=1']


def write_source_dataset(root):
    """A byte-level dataset (vocab 256) made of this repo's model.py."""
    with open(os.path.join(HERE, 'model.py'), 'rb') as f:
        return write_dataset(root, np.frombuffer(f.read(), dtype=np.uint8))


def train_py_val_batches(data_path, seed, eval_iters, batch_size, block_size):
    """The val batches train.py evaluates on: batch k as its get_batch('val', eval_rng('val', k))."""
    val = np.fromfile(os.path.join(data_path, 'val.bin'), dtype=np.uint16).astype(np.int64)
    batches = []
    for k in range(eval_iters):
        ix = np.random.default_rng([seed, 1, 1, k]).integers(len(val) - block_size, size=batch_size)
        x = torch.from_numpy(np.stack([val[i:i + block_size] for i in ix]))
        y = torch.from_numpy(np.stack([val[i + 1:i + 1 + block_size] for i in ix]))
        batches.append((x, y))
    return batches


def run_experiments(*args):
    return subprocess.run([sys.executable, '-m', 'experiments.grid', *args],
                          capture_output=True, text=True, timeout=300, cwd=HERE)


def test_grid_end_to_end(tmp_path):
    """--quick's grid on a tiny model and budget: every run trains, the table and plots are
    written, the sweep reproduces train.py's val loss, and a second call reuses the runs."""
    data_path = write_source_dataset(tmp_path)
    out = tmp_path / 'out'
    args = ['--quick', f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={out}', *TINY]
    p = run_experiments(*args)
    assert p.returncode == 0, p.stderr
    with open(out / 'results.json') as f:
        results = json.load(f)
    runs = [grid_runs.Run(**r) for r in results['runs']]
    assert [r.name for r in runs] == ['gpt1', 'loop1x2', 'gpt2', 'loop1x2-frozen', 'loop1+1x2+1']
    command = 'python -m experiments.grid ' + ' '.join(args)  # the argv, as typed
    assert results['provenance']['command'] == results['info']['command'] == command
    assert results['provenance']['threads'] == 1 and len(results['provenance']['commit']) == 40
    table = (out / 'results.md').read_text()
    assert table in p.stdout  # printed too
    for r in runs:
        assert f"| {r.label} | {r.name} |" in table
        (res,) = results['results'][r.name]  # --quick: one seed
        assert res['curve']['iter'] == [0, 3, 6] and res['tokens'] == 6 * 4 * 16
        assert res['flops'] == res['flops_per_token'] * res['tokens']
    for name in ('val_loss_vs_tokens.png', 'val_loss_vs_flops.png', 'loop_sweep.png'):
        assert (out / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

    # the sweep at the trained n_loop is the final val loss in the table, and on train.py's
    # eval batches it is the val loss train.py logged for the same checkpoint
    train_py_batches = train_py_val_batches(data_path, seed=1337, eval_iters=2, batch_size=4, block_size=16)
    for name in ('loop1x2', 'loop1x2-frozen', 'loop1+1x2+1'):
        (sweep,) = results['sweeps'][name]
        (res,) = results['results'][name]
        N = sweep['trained']
        assert N == 2 and sweep['n_loop'] == [1, 2, 3, 4]
        assert sweep['val_loss'][N - 1] == pytest.approx(res['val_loss'], abs=1e-6)
        # reading out after iteration n is running n iterations
        assert sweep['readout'][1:] == pytest.approx(sweep['val_loss'][:N], abs=1e-6)
        model = model_from_checkpoint(load_checkpoint(str(out / 'runs' / f'{name}-s1337'), 'last'))
        logged = res['curve']['val_loss'][-1]
        assert grid_runs.loop_sweep(model, train_py_batches)['val_loss'][N - 1] == pytest.approx(logged, abs=1e-6)
    assert results['sweeps']['loop1x2-frozen'][0]['gates'] == [1.0, 1.0, 1.0]
    assert results['sweeps']['loop1x2'][0]['gates'] != [1.0, 1.0, 1.0]

    # the same command again trains nothing and gives the same numbers
    again = run_experiments(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('reused (--rerun=True') == len(runs)
    with open(out / 'results.json') as f:
        assert json.load(f)['results'] == results['results']


def test_hops_grid_end_to_end(tmp_path):
    """--dataset=hops --quick: the hops grid (1⊗1 1⊗2 1⊗4 2⊗1 4⊗1) with answer accuracy per
    hop count in the results, the tables, the sweeps and a plot."""
    prepare.run(['hops', '--nodes', '5', '--hops', '2', '--queries', '3', '--train_examples', '1000',
                 '--val_examples', '100', '--data_dir', str(tmp_path)])
    out = tmp_path / 'out'
    p = run_experiments('--dataset=hops', '--quick', f'--data_dir={tmp_path}', f'--out_dir={out}', '--jobs=2',
                        '--n_embd=16', '--block_size=14', '--batch_size=4', '--max_iters=4', '--eval_interval=2',
                        '--eval_iters=1', '--eval_tokens=560')
    assert p.returncode == 0, p.stderr
    with open(out / 'results.json') as f:
        results = json.load(f)
    assert [r['name'] for r in results['runs']] == ['gpt1', 'loop1x2', 'gpt2', 'loop1x4', 'gpt4']
    assert results['config']['n_seeds'] == 1 and results['config']['learning_rate'] == grid_runs.HOPS['learning_rate']
    for name, (res,) in results['results'].items():
        assert set(res['accuracy_by']) == {'1 hop', '2 hops'}
        # one query of 2 hops for every two of 1 hop
        assert res['accuracy'] == pytest.approx((2 * res['accuracy_by']['1 hop'] + res['accuracy_by']['2 hops']) / 3)
        if name in results['sweeps']:
            (sweep,) = results['sweeps'][name]
            N = sweep['trained']
            assert len(sweep['accuracy']) == len(sweep['accuracy_by']) == 2 * N
            assert sweep['accuracy'][N - 1] == res['accuracy'] and sweep['val_loss'][N - 1] == res['val_loss']
    table = (out / 'results.md').read_text()
    assert '| 1⊗4 | 1 | 4 |' in table and 'Val answer accuracy' in table and 'val answer accuracy when' in table
    assert (out / 'accuracy_by_hops.png').read_bytes()[:4] == b'\x89PNG'


def test_hops_evaluation_scores_the_answers_of_whole_examples(tmp_path):
    """experiments' hops loss and accuracy, by hand: with eval_tokens covering the split,
    each of the 100 examples a window can start at is scored once, on its three answers."""
    prepare.run(['hops', '--nodes', '5', '--hops', '2', '--queries', '3', '--train_examples', '100',
                 '--val_examples', '101', '--data_dir', str(tmp_path)])
    L = 14  # 5 edges, then 3 queries "hop count, start, answer"; query j asks for 1 + j % 2 hops
    data = grid_runs.load_data(dict(data_dir=str(tmp_path), dataset='hops', block_size=L, batch_size=4,
                                      eval_tokens=10**6))
    torch.manual_seed(0)
    model = LoopGPT(GPTConfig(block_size=L, vocab_size=5 + 2 + 25, n_layer=1, n_head=2, n_embd=16, n_loop=2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for x, y in data['train'][:20]:  # a few steps, after which it hits some answers (at init it repeats its input)
        optimizer.zero_grad()
        model(x, y)[1].backward()
        optimizer.step()
    loss, accuracy, accuracy_by = grid_runs.evaluate(model, data['val'], data['groups'])

    val = torch.from_numpy(np.fromfile(tmp_path / 'hops' / 'val.bin', dtype=np.uint16).astype(np.int64))
    examples = val[:100 * L].view(100, L)
    with torch.no_grad():
        logits = model(examples, torch.zeros_like(examples))[0]
    terms, hits = [], {1: [], 2: []}
    for j in range(3):
        t = 5 + 3 * j + 1  # the start node: its target is the answer
        assert (examples[:, t - 1] == 5 + j % 2).all()  # the hop-count token before it
        terms.append(torch.nn.functional.cross_entropy(logits[:, t], examples[:, t + 1], reduction='none'))
        hits[1 + j % 2] += (logits[:, t].argmax(-1) == examples[:, t + 1]).tolist()
    assert loss == pytest.approx(torch.cat(terms).mean().item(), abs=1e-5)
    assert accuracy_by == [pytest.approx(np.mean(hits[1])), pytest.approx(np.mean(hits[2]))]
    assert accuracy == pytest.approx(np.mean(hits[1] + hits[2])) and 0 < accuracy < 1


def test_budget_and_recurrent_end_to_end(tmp_path):
    """--budgets and --recurrent: every run at each budget, loop counts drawn in training,
    the sweep to 4x the trained loops, and the budget table and plot."""
    write_source_dataset(tmp_path)
    out = tmp_path / 'out'
    p = run_experiments('--budgets=1,2', '--recurrent=1x2', f'--data_dir={tmp_path}', '--dataset=tiny',
                        f'--out_dir={out}', '--n_seeds=1', '--jobs=2', *TINY)
    assert p.returncode == 0, p.stderr
    with open(out / 'results.json') as f:
        results = json.load(f)
    names = ['loop1x2', 'loop1x2-poisson', 'loop1x2-poisson-inject']
    assert [r['name'] for r in results['runs']] == [f'{n}-x{b}' for b in (1, 2) for n in names]
    res = {name: r[0] for name, r in results['results'].items()}
    for n in names:
        assert res[f'{n}-x2']['tokens'] == 2 * res[f'{n}-x1']['tokens'] == 2 * 6 * 4 * 16
        assert res[f'{n}-x2']['curve']['iter'] == [0, 6, 12]  # the same number of evaluations
        assert results['sweeps'][f'{n}-x1'][0]['n_loop'] == list(range(1, 9))  # to 4x the trained 2 loops
    with open(out / 'runs' / 'loop1x2-poisson-inject-x1-s1337' / 'experiment.json') as f:
        argv = json.load(f)['argv']
    assert {'--loop_sampling=poisson', '--input_injection=True', '--bptt_loops=0'} <= set(argv)
    table = (out / 'results.md').read_text()
    assert 'Val loss by token budget' in table and '| 1⊗2 poisson +x0 | ' in table
    assert '| 1⊗2 poisson ×2 | 1⊗2 ×2 | parameters, mean loop count |' in table
    assert (out / 'budget.png').read_bytes()[:4] == b'\x89PNG'


def test_presets_follow_the_experiment():
    base = dict(dataset='stdlib', budgets='', recurrent='', quick=False)
    assert grid_runs.presets(base) == {'out_dir': 'experiments-out'}
    hops = grid_runs.presets(dict(base, dataset='hops', quick=True))
    assert hops['pairs'] == '1x2,1x4' and hops['n_seeds'] == 1 and hops['max_iters'] == 1500
    assert hops['out_dir'] == 'experiments-out-hops-quick'
    assert grid_runs.presets(dict(base, budgets='1,4'))['pairs'] == '1x2'
    depth = grid_runs.presets(dict(base, recurrent='2x2'))
    assert depth['pairs'] == depth['ablate_gates'] == '' and depth['sweep_to'] == 4
    for bad in (dict(budgets='1,1'), dict(budgets='x4'), dict(recurrent='2'), dict(jobs=0)):
        cfg = dict(pairs='1x2', ablate_gates='', prelude_coda='', recurrent='', budgets='', bptt_loops=0,
                   n_seeds=1, jobs=1, sweep_to=2)
        with pytest.raises(ConfigError):
            grid_runs.make_grid({**cfg, **bad})


def tiny_loop_checkpoint(out_dir):
    """A LoopGPT with prelude, coda and random gates, saved and loaded as train.py does."""
    torch.manual_seed(0)
    args = dict(block_size=16, vocab_size=256, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=True,
                n_loop=3, n_prelude=1, n_coda=1)
    model = LoopGPT(GPTConfig(**args))
    with torch.no_grad():
        model.gates.uniform_(-0.5, 1.5)
        # outputs far from uniform and looped blocks that move the residual stream a lot,
        # so that every iteration shows in the loss
        model.lm_head.weight.mul_(50)
        for block in model.transformer.h:
            block.attn.c_proj.weight.mul_(20)
            block.mlp.c_proj.weight.mul_(20)
    os.makedirs(out_dir)
    save_checkpoint(dict(model=model.state_dict(), model_type='loop', model_args=args),
                    os.path.join(out_dir, 'last.pt'))
    return model_from_checkpoint(load_checkpoint(out_dir, 'last'))


def test_sweep_and_readout_match_the_model_loss(tmp_path):
    model = tiny_loop_checkpoint(str(tmp_path / 'ckpt'))
    write_source_dataset(tmp_path)
    batches = grid_runs.fixed_batches(str(tmp_path), 'tiny', 'val', n_tokens=200, batch_size=4, block_size=16)
    loss = grid_runs.evaluate(model.eval(), batches)[0]
    sweep = grid_runs.loop_sweep(model, batches)
    assert model.n_loop == 3  # restored
    assert sweep['n_loop'] == [1, 2, 3, 4, 5, 6]
    assert sweep['val_loss'][2] == pytest.approx(loss, abs=1e-6)
    assert sweep['readout'][-1] == pytest.approx(loss, abs=1e-6)  # read-out after the last iteration
    assert len(sweep['readout']) == 4 and len(sweep['gates']) == 4
    assert sweep['readout'][1:] == pytest.approx(sweep['val_loss'][:3], abs=1e-6)
    assert abs(sweep['val_loss'][3] - loss) > 1e-4  # more iterations than trained: another model
    assert grid_runs.evaluate(model, batches)[0] == loss  # the sweep left the model as it was


def test_fixed_batches_spread_over_the_split(tmp_path):
    path = write_source_dataset(tmp_path)
    val = torch.from_numpy(np.fromfile(os.path.join(path, 'val.bin'), dtype=np.uint16).astype(np.int64))
    batches = grid_runs.fixed_batches(str(tmp_path), 'tiny', 'val', n_tokens=200, batch_size=4, block_size=16)
    assert len(batches) == 3  # 200 tokens = 12 windows of 16 (whole batches of 4)
    x = torch.cat([x for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert x.shape == y.shape == (12, 16) and torch.equal(x[:, 1:], y[:, :-1])  # y: the next tokens
    assert torch.equal(x[0], val[:16]) and torch.equal(y[-1], val[-16:])  # from the first token to the last
    everything = grid_runs.fixed_batches(str(tmp_path), 'tiny', 'val', 10**9, 4, 16)
    assert len(everything) == (len(val) - 1) // 16 // 4  # capped at the split's size


def test_grid_and_its_twins():
    cfg = dict(pairs='1x2, 2x3', ablate_gates='2x3', prelude_coda='1+2x2+1', n_seeds=2, recurrent='', budgets='',
               jobs=1, sweep_to=2)
    runs, comparisons = grid_runs.make_grid(cfg)
    assert [r.name for r in runs] == ['gpt1', 'loop1x2', 'gpt2', 'loop2x3', 'gpt6', 'loop2x3-frozen',
                                      'loop1+2x2+1']
    same = {(a.name, b.name): what for a, b, what in comparisons}
    assert len(same) == len(comparisons)
    assert same == {('loop1x2', 'gpt1'): 'parameters', ('loop1x2', 'gpt2'): 'depth (FLOPs/token)',
                    ('loop2x3', 'gpt2'): 'parameters', ('loop2x3', 'gpt6'): 'depth (FLOPs/token)',
                    ('loop2x3-frozen', 'loop2x3'): 'everything but learned gates',
                    ('loop1+2x2+1', 'loop2x3'): 'depth (FLOPs/token)',
                    ('loop1+2x2+1', 'gpt6'): 'depth (FLOPs/token)'}
    for a, b, what in comparisons:
        assert (a.blocks == b.blocks) if what == 'parameters' else (a.depth == b.depth)
    for bad in (dict(pairs='2*2'), dict(pairs='2x1'), dict(prelude_coda='0+2x2+0'), dict(n_seeds=0)):
        with pytest.raises(ConfigError):
            grid_runs.make_grid({**cfg, **bad})


def test_tables_show_the_differences_and_spreads_of_the_results():
    """Δ val loss is the first run's minus the second's, per seed and their mean; a cell over
    seeds is the mean ± half the range."""
    a, b = grid_runs.loop(1, 2), grid_runs.gpt(1)
    results = {a.name: [dict(val_loss=2.0), dict(val_loss=2.5)], b.name: [dict(val_loss=2.25), dict(val_loss=2.0)]}
    rows = report.comparisons_table([(a, b, 'parameters')], results).splitlines()
    assert rows[-1] == '| 1⊗2 | 1⊗1 | parameters | +0.125 | -0.250, +0.500 |'
    assert report.mean_spread([2.0, 2.5, 2.25]) == '2.250 ± 0.250'
    assert report.mean_spread([2.0]) == '2.000'


def test_user_errors_are_one_line(tmp_path):
    p = run_experiments('--pairs=2*2')
    assert p.returncode == 1 and p.stderr.startswith('error: ') and p.stderr.count('\n') == 1
    p = run_experiments(f'--data_dir={tmp_path}')
    assert p.returncode == 1 and 'python prepare.py stdlib' in p.stderr and p.stderr.count('\n') == 1
    # a failing train.py run stops the grid: its own error, then which run failed and where to look
    write_source_dataset(tmp_path)
    p = run_experiments('--quick', f'--data_dir={tmp_path}', '--dataset=tiny', f'--out_dir={tmp_path / "out"}',
                        '--train_args=--n_layr=2', *TINY)
    assert p.returncode == 1
    assert "unknown config key 'n_layr'" in p.stderr
    # (two runs train at once and every run fails, so any of them may be the one that stops the grid)
    assert re.match(r'error: train\.py failed on [\w+-]+ seed 1337 .* its output is in .*/train\.out',
                    p.stderr.strip().splitlines()[-1])


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # import matplotlib raises ImportError
    run = grid_runs.gpt(1)
    curve = dict(iter=[0, 1], tokens=[0, 8], flops=[0, 80], val_loss=[5.5, 5.0])
    report.plot_all(str(tmp_path), [run], {run.name: [dict(curve=curve)]}, {})
    assert 'pip install matplotlib' in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


def test_ablations_grid_and_its_tables():
    """--ablations: 1 block looped 1, 2, 4, 6 times, its unique twins, frozen gates and a drawn
    variant; the loop-count table's recovered fraction and φ, by hand on made-up losses."""
    cfg = grid_runs.configure(grid_runs.config_keys(vars(grid_runs)), ['--ablations=True'],
                                derived=grid_runs.presets)
    runs, comparisons = grid_runs.make_grid(cfg)
    assert [r.name for r in runs] == ['gpt1', 'loop1x2', 'loop1x4', 'loop1x6', 'gpt2', 'gpt4', 'loop1x2-frozen',
                                      'loop1x4-frozen', 'loop1x4-poisson-inject-norm']
    assert len(comparisons) == len(set(comparisons)) and (cfg['n_embd'], cfg['n_seeds']) == (64, 3)
    # unique blocks: 1 -> 2.0, 2 -> 1.8, 4 -> 1.6 (linear in log2 n); 1⊗2 at 1.9 is worth sqrt(2) blocks
    assert report.effective_blocks(1.9, {1: 2.0, 2: 1.8, 4: 1.6}) == pytest.approx(2 ** 0.5)
    assert report.effective_blocks(1.5, {1: 2.0, 2: 1.8, 4: 1.6}) is None  # past the curve
    results = {name: [dict(val_loss=v)] for name, v in
               dict(gpt1=2.0, gpt2=1.8, gpt4=1.6, loop1x2=1.9, loop1x4=1.74, loop1x6=1.7).items()}
    table = report.loop_count_table(dict(loop_counts='1,2,4,6'), results)
    # n = 2: recovered (2.0 - 1.9) / (2.0 - 1.8) = 0.5, φ = log2(sqrt 2) = 0.5; n = 4: 0.26 / 0.4, n_eff 2^1.3
    assert '| 2 | 1.900 | -0.100 (-0.100) | 1.800 | 0.500 (0.50) | 0.50 |' in table
    assert '| 4 | 1.740 | -0.260 (-0.260) | 1.600 | 0.650 (0.65) | 0.65 |' in table
    assert '| 6 | 1.700 | -0.300 (-0.300) | – | – | 0.58 |' in table  # n_eff 2^1.5: φ = 1.5 / log2 6
