"""
Tests for generation (KV cache, sampling filters, test-time loops) and sample.py.
CPU, fp32, offline; tiny models. The end-to-end tests train a LoopGPT with train.py
for a few seconds on a repeated phrase, then run sample.py on it.
"""

import contextlib
import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

import engine
import sample
from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from engine import ExitRule, KVCache, generate, sample_next
from model import GPT, GPTConfig, LoopGPT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
PHRASE = "hello world! "

# -----------------------------------------------------------------------------
# KV cache: the same tokens and logits as recomputing everything


def make_model(cls, **kw):
    """A small model with sharper logits than the 0.02 init and gates away from 1, so that
    greedy choices are clear-cut and the gates take part."""
    torch.manual_seed(0)
    model = cls(GPTConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if name == 'gates' else 0.1))
    return model.eval()


def generate_recording(model, idx, max_new_tokens, use_cache):
    """generate(), greedy, also returning the logits each step sampled from (steps, B, vocab)
    and the (input length, cache used) of every forward call."""
    logits, calls = [], []

    def record(step_logits, *args):
        logits.append(step_logits.clone())
        return sample_next(step_logits, *args)

    engine.sample_next = record  # generate looks it up in engine's namespace
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((args[0].size(1), kwargs.get('kv_cache') is not None)),
        with_kwargs=True)
    try:
        out = generate(model, idx, max_new_tokens, temperature=0, use_cache=use_cache)
    finally:
        engine.sample_next = sample_next
        hook.remove()
    return out, torch.stack(logits), calls


MODELS = {
    'gpt': (GPT, {}),
    'loop1': (LoopGPT, dict(n_loop=1)),
    'loop3': (LoopGPT, dict(n_loop=3)),
    'loop3-prelude-coda': (LoopGPT, dict(n_loop=3, n_prelude=1, n_coda=1)),
    'loop3-inject': (LoopGPT, dict(n_loop=3, input_injection=True)),  # x_0 enters every iteration
}


@pytest.mark.parametrize('name', MODELS)
def test_cache_gives_the_same_tokens_and_logits(name):
    cls, kw = MODELS[name]
    model = make_model(cls, **kw)
    idx = torch.randint(64, (2, 5), generator=torch.Generator().manual_seed(1))
    # 5 + 30 tokens: 11 steps past block_size 16
    plain, plain_logits, plain_calls = generate_recording(model, idx, 30, use_cache=False)
    cached, cached_logits, cached_calls = generate_recording(model, idx, 30, use_cache=True)
    assert torch.equal(cached, plain)
    torch.testing.assert_close(cached_logits, plain_logits, atol=1e-5, rtol=0)
    # the cache was really used: the prompt once, then one token per step until the
    # sequence fills block_size, then the sliding window is recomputed
    assert cached_calls == [(5, True)] + [(1, True)] * 11 + [(16, False)] * 18
    assert plain_calls == [(min(t, 16), False) for t in range(5, 35)]
    assert len(set(plain[0].tolist())) > 3  # not a degenerate repeat-one-token model


@pytest.mark.parametrize('name', ['gpt', 'loop3-prelude-coda', 'loop3-inject'])
def test_cache_in_chunks_matches_one_forward(name):
    """Prompt, then a chunk of several tokens, then single tokens: every position's logits
    as one forward over the whole sequence (exercises the chunk attention mask)."""
    cls, kw = MODELS[name]
    model = make_model(cls, **kw)
    idx = torch.randint(64, (2, 16), generator=torch.Generator().manual_seed(2))
    def all_logits(x, kv_cache=None):  # with targets, forward returns the logits of every position
        return model(x, torch.zeros_like(x), kv_cache=kv_cache)[0]
    cache = KVCache(model, 2, 16)
    parts = [all_logits(idx[:, a:b], cache) for a, b in [(0, 5), (5, 9), (9, 10), (10, 11), (11, 16)]]
    full = all_logits(idx)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)
    assert cache.pos == 16


# -----------------------------------------------------------------------------
# sampling filters


def allowed_top_p(probs, p):
    """The smallest set of likeliest tokens whose probabilities reach p."""
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs  # probability of the likelier tokens
    assert (before - p).abs().min() > 1e-3, "p too close to a boundary for a clear test"
    return set(order[before < p].tolist())


def test_top_k_and_top_p_never_sample_outside_the_allowed_set():
    torch.manual_seed(0)
    logits = torch.randn(64) * 2
    rows = logits.expand(4000, -1)  # 4000 draws from the same distribution
    top5 = set(logits.topk(5).indices.tolist())

    def drawn(**kw):
        return set(sample_next(rows, **kw).flatten().tolist())

    # every allowed token is drawn, none other (the allowed ones are not too unlikely to be hit)
    assert drawn(top_k=5) == top5
    assert drawn(top_p=0.6) == allowed_top_p(logits.softmax(-1), 0.6)
    # temperature reshapes the distribution before top_p measures it
    assert drawn(top_p=0.6, temperature=2.0) == allowed_top_p((logits / 2).softmax(-1), 0.6)
    assert len(allowed_top_p((logits / 2).softmax(-1), 0.6)) > len(allowed_top_p(logits.softmax(-1), 0.6))
    # both: top_p over what top_k leaves
    logits5 = logits.masked_fill(~torch.isin(torch.arange(64), torch.tensor(list(top5))), float('-inf'))
    assert drawn(top_k=5, top_p=0.8) == allowed_top_p(logits5.softmax(-1), 0.8) != top5
    assert len(drawn()) > 20  # unfiltered sampling does spread out


def test_generate_top_k_1_and_tiny_top_p_are_greedy():
    model = make_model(LoopGPT, n_loop=2)
    idx = torch.randint(64, (3, 4), generator=torch.Generator().manual_seed(3))
    greedy = generate(model, idx, 20, temperature=0)
    torch.manual_seed(0)
    assert torch.equal(generate(model, idx, 20, temperature=1.0, top_k=1), greedy)
    assert torch.equal(generate(model, idx, 20, temperature=1.0, top_p=1e-6), greedy)
    assert not torch.equal(generate(model, idx, 20, temperature=1.0), greedy)


def test_generate_samples_from_fp32_logits_under_bf16_autocast():
    model = make_model(LoopGPT, n_loop=2)
    idx = torch.randint(64, (2, 4), generator=torch.Generator().manual_seed(4))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, logits, _ = generate_recording(model, idx, 5, use_cache=True)
    # computed in bf16 (the values are bf16's), handed to sample_next in fp32
    assert logits.dtype == torch.float32 and torch.equal(logits, logits.bfloat16().float())
    # why: bf16 rounds top-p's probabilities. Two tokens with p = 0.8933 and 0.1067 (float64):
    # top_p=0.894 must keep both, but bf16 rounds 0.8933 up to 0.8945 and drops the second
    row = torch.tensor([[2.125, 0.0]], dtype=torch.bfloat16)
    assert row.double().softmax(-1)[0, 0].item() < 0.894 < row.softmax(-1)[0, 0].item()
    drawn = {dtype: set(sample_next(row.to(dtype).expand(2000, -1), top_p=0.894).flatten().tolist())
             for dtype in (torch.float32, torch.bfloat16)}
    assert drawn == {torch.float32: {0, 1}, torch.bfloat16: {0}}


# -----------------------------------------------------------------------------
# sample.py end to end, on a LoopGPT trained by train.py


@pytest.fixture(scope='module')
def loop_run(tmp_path_factory):
    """out_dir of a LoopGPT (1 layer looped 2 times) trained by train.py on PHRASE repeated,
    in bytes; it learns to continue the phrase."""
    tmp = tmp_path_factory.mktemp('loop_run')
    data = tmp / 'data' / 'hello'
    data.mkdir(parents=True)
    ids = np.frombuffer((PHRASE * 400).encode(), dtype=np.uint8).astype(np.uint16)
    ids[:4000].tofile(data / 'train.bin')
    ids[4000:].tofile(data / 'val.bin')
    (data / 'meta.json').write_text(json.dumps(
        {"tokenizer": "bytes", "vocab_size": 256, "eot_token": None, "dtype": "uint16",
         "train_tokens": 4000, "val_tokens": len(ids) - 4000, "source": "test"}))
    out = tmp / 'out'
    args = ['--data_dir=' + str(tmp / 'data'), '--dataset=hello', '--out_dir=' + str(out),
            '--device=cpu', '--dtype=float32', '--compile=False', '--n_layer=1', '--n_loop=2',
            '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=8',
            '--gradient_accumulation_steps=1', '--learning_rate=1e-2', '--max_iters=150',
            '--warmup_iters=0', '--lr_decay_iters=150', '--min_lr=1e-3', '--eval_interval=75',
            '--eval_iters=2', '--log_interval=50', '--seed=0']
    r = subprocess.run([sys.executable, 'train.py', *args], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return str(out)


@pytest.fixture(scope='module')
def gpt_run(tmp_path_factory):
    """out_dir with an untrained GPT's last.pt only (no best.pt), saved as train.py does."""
    out = tmp_path_factory.mktemp('gpt_run')
    torch.manual_seed(0)
    args = dict(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=True,
                n_loop=1, n_prelude=0, n_coda=0, learn_gates=True)
    model = GPT(GPTConfig(**args))
    save_checkpoint({'model': model.state_dict(), 'optimizer': None, 'scaler': None, 'model_type': 'gpt',
                     'model_args': args, 'iter_num': 0, 'best_val_loss': float('inf'), 'config': {},
                     'meta': {'tokenizer': 'bytes', 'vocab_size': 256}, 'rng': None},
                    str(out / 'last.pt'))
    return str(out)


def run_sample(*args):
    """python sample.py ARGS, as a user runs it."""
    return subprocess.run([sys.executable, 'sample.py', '--device=cpu', '--dtype=float32', *args],
                          cwd=ROOT, capture_output=True, text=True)


def run_main(capsys, *args):
    """sample.py's main() in this process, quicker than a subprocess: (exit code, stdout, stderr)."""
    try:
        sample.main(['--device=cpu', '--dtype=float32', *args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def samples(stdout):
    """The samples sample.py printed (each followed by a line of dashes)."""
    parts = stdout.split('\n---------------\n')
    assert parts[-1] == ''
    return parts[:-1]


def test_sample_prints_text_decoded_with_the_run_tokenizer(loop_run):
    r = run_sample(f'--out_dir={loop_run}', '--start=hello', '--temperature=0', '--num_samples=2',
                   '--max_new_tokens=40')
    assert r.returncode == 0, r.stderr
    # greedy continuation of the phrase the model was trained on, bytes decoded as UTF-8
    assert samples(r.stdout) == [(PHRASE * 4)[:45]] * 2
    assert 'best.pt' in r.stderr and 'tokenizer bytes' in r.stderr


def test_sample_reads_the_prompt_from_a_file_and_uses_the_cache_or_not(loop_run, tmp_path, capsys):
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('hello wor')
    common = [f'--out_dir={loop_run}', f'--start=FILE:{prompt}', '--temperature=0', '--num_samples=1',
              '--max_new_tokens=60', '--ckpt=last']  # 69 tokens: past block_size 32
    cached, plain = run_main(capsys, *common), run_main(capsys, *common, '--use_cache=False')
    assert cached[0] == plain[0] == 0, cached[2] + plain[2]
    assert samples(cached[1]) == samples(plain[1]) == [(PHRASE * 6)[:69]]
    assert 'last.pt' in cached[2] and 'KV cache on' in cached[2] and 'KV cache off' in plain[2]


def test_fixed_seed_gives_the_same_text_twice(loop_run, capsys):
    common = [f'--out_dir={loop_run}', '--start=hello', '--temperature=2.0', '--top_k=None',
              '--num_samples=3', '--max_new_tokens=30']
    first, again, other = (run_main(capsys, *common, f'--seed={s}') for s in (7, 7, 8))
    assert first[0] == 0, first[2]
    assert first[1] == again[1]
    assert first[1] != other[1]  # the seed matters: temperature 2 makes the text random
    assert len(set(samples(first[1]))) == 3  # and the samples of one batch differ


def test_n_loop_changes_the_logits_only_when_it_differs_from_training(loop_run):
    model, meta, _ = sample.load_model('resume', loop_run, 'best')
    idx = torch.tensor([list(b'hello wo')])
    trained_logits, _ = model(idx)
    assert sample.set_n_loop(model, None) == 2 and model.n_loop == 2
    sample.set_n_loop(model, 2)
    assert torch.equal(model(idx)[0], trained_logits)
    sample.set_n_loop(model, 5)  # 3 iterations more than trained: a_2 reused for n = 3, 4, 5
    more_logits, _ = model(idx)
    assert torch.isfinite(more_logits).all()
    assert (more_logits - trained_logits).abs().max() > 1e-2
    # the cache still holds one entry per (iteration, layer): same tokens as without it
    cached = generate(model, idx, 30, temperature=0, use_cache=True)
    assert torch.equal(cached, generate(model, idx, 30, temperature=0, use_cache=False))
    sample.set_n_loop(model, 2)
    assert torch.equal(model(idx)[0], trained_logits)


def test_n_loop_on_the_command_line(loop_run, capsys):
    common = [f'--out_dir={loop_run}', '--start=hello', '--temperature=0', '--num_samples=1',
              '--max_new_tokens=30']
    default, same = run_main(capsys, *common), run_main(capsys, *common, '--n_loop=2')
    more = run_main(capsys, *common, '--n_loop=6')
    assert default[0] == same[0] == more[0] == 0, more[2]
    assert same[1] == default[1] == (PHRASE * 3)[:35] + '\n---------------\n'
    assert 'n_loop 6 (trained with 2)' in more[2]
    # what the model run for 6 iterations generates (greedy, without the cache); not the trained text
    model = model_from_checkpoint(load_checkpoint(loop_run, 'best')).eval()
    model.n_loop = 6
    tokens = generate(model, torch.tensor([list(b'hello')]), 30, temperature=0, use_cache=False)[0]
    assert samples(more[1]) == [bytes(tokens.tolist()).decode('utf-8', errors='replace')] != samples(default[1])


def test_compiled_sampling_gives_the_eager_text(loop_run, capsys):
    """--compile=True: dynamo captures the forward (the prompt, then one token a step with the
    cache) and the text is the eager text. Captured with the 'eager' backend: inductor's C++
    build of these graphs takes minutes on a CPU, and test_compile.py covers inductor."""
    from torch._dynamo.utils import counters  # dynamo's own tally of the graphs it captured
    common = [f'--out_dir={loop_run}', '--start=hello', '--temperature=0', '--num_samples=1',
              '--max_new_tokens=10']
    eager = run_main(capsys, *common)
    counters.clear()
    try:
        with mock.patch.object(torch, 'compile', functools.partial(torch.compile, backend='eager')):
            compiled = run_main(capsys, *common, '--compile=True')
        assert compiled[0] == 0, compiled[2]
        assert counters['stats']['unique_graphs'] >= 2  # the prefill and the one-token step
    finally:
        torch._dynamo.reset()  # forget the graphs of this test's model
    assert compiled[1] == eager[1] == (PHRASE * 2)[:15] + '\n---------------\n'


def test_exit_on_the_command_line(loop_run, capsys):
    """--exit_threshold=0 is off (today's output exactly); a threshold so large that every token
    stops after exit_min_loops=1 iterations gives the text of --n_loop=1, and says so. (A
    one-token prompt: a longer one's last token runs apart from the rest, which can flip the
    near-ties of a one-iteration model's degenerate text.)"""
    common = [f'--out_dir={loop_run}', '--start=h', '--temperature=0', '--num_samples=2', '--max_new_tokens=30']
    default, off = run_main(capsys, *common), run_main(capsys, *common, '--exit_threshold=0')
    one, earliest = run_main(capsys, *common, '--n_loop=1'), run_main(capsys, *common, '--exit_threshold=1e9')
    assert default[0] == off[0] == one[0] == earliest[0] == 0, earliest[2]
    assert off[1] == default[1] and 'iterations per generated token' not in off[2]
    assert earliest[1] == one[1] != default[1]  # one iteration is not the trained model's two
    assert '1.00 iterations per generated token on average, of 2 at most' in earliest[2]


def test_checkpoint_without_meta_reads_its_dataset_meta(loop_run, tmp_path):
    checkpoint = torch.load(os.path.join(loop_run, 'best.pt'), weights_only=False)
    del checkpoint['meta']  # the tokenizer is then found through config data_dir/dataset
    save_checkpoint(checkpoint, str(tmp_path / 'last.pt'))
    _, meta, _ = sample.load_model('resume', str(tmp_path), 'last')
    assert meta['tokenizer'] == 'bytes' and meta['source'] == 'test'
    checkpoint['config'] = {}
    save_checkpoint(checkpoint, str(tmp_path / 'last.pt'))
    with pytest.raises(CheckpointError, match='names no tokenizer'):
        sample.load_model('resume', str(tmp_path), 'last')


def test_the_checkpoint_goes_to_the_cpu_and_only_the_model_to_the_device(loop_run, monkeypatch):
    """The optimizer state (twice the weights) must never reach the GPU: 'meta' stands in for it."""
    loaded, load = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: loaded.append(load(*args, **kwargs)) or loaded[-1])
    model, _, _ = sample.load_model('resume', loop_run, 'best', device='meta')
    (checkpoint,) = loaded
    state = [t for s in checkpoint['optimizer']['state'].values() for t in s.values() if t.dim()]
    assert state and {t.device.type for t in state} == {'cpu'}
    assert {p.device.type for p in model.parameters()} == {'meta'}


def test_on_cuda_the_clock_waits_for_the_gpu(gpt_run, capsys, monkeypatch):
    """A GPU runs behind the host, so sample.py's ms per step must synchronize just before it starts
    the clock and again after generating, just before it stops it. CUDA is simulated: sample.py
    is told its device is a GPU, and the work runs on the CPU."""
    events = []
    generate = sample.generate

    def recording_generate(*args, **kwargs):
        events.append('generate')
        out = generate(*args, **kwargs)
        events.append('generated')
        return out

    monkeypatch.setattr(sample, 'generate', recording_generate)
    monkeypatch.setattr(sample, 'time', SimpleNamespace(time=lambda: events.append('clock') or 1.0))
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda device=None: events.append('synchronize'))
    args = (f'--out_dir={gpt_run}', '--ckpt=last', '--num_samples=1', '--max_new_tokens=3')
    assert run_main(capsys, *args)[0] == 0
    assert events == ['clock', 'generate', 'generated', 'clock']  # on the CPU: nothing to wait for
    events.clear()
    monkeypatch.setattr(sample, 'device_type_of', lambda device: 'cuda')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    code, _, err = run_main(capsys, *args)
    assert code == 0, err
    assert events == ['synchronize', 'clock', 'generate', 'generated', 'synchronize', 'clock']


def test_best_falls_back_to_last(gpt_run, capsys):
    code, out, err = run_main(capsys, f'--out_dir={gpt_run}', '--num_samples=1', '--max_new_tokens=5')
    assert code == 0, err
    assert 'no best.pt, using last.pt' in err and len(samples(out)) == 1


@pytest.mark.parametrize('args, message', [
    (['--n_loop=3'], 'plain GPT'),
    (['--n_loop=0'], 'n_loop must be'),
    (['--top_p=0'], 'top_p must be'),
    (['--top_k=0'], 'top_k must be'),
    (['--ckpt=middle'], "ckpt must be 'best' or 'last'"),
    (['--start=FILE:/nonexistent/prompt.txt'], 'cannot read the prompt file'),
    (['--start='], 'the prompt is empty'),
    (['--tmperature=0.5'], 'did you mean temperature'),
    (['--init_from=gpt3'], 'neither'),
    (['--exit_threshold=0.1'], 'plain GPT, which does not loop: drop --exit_threshold'),
    (['--exit_threshold=-1'], 'exit_threshold must be 0 (off) or more'),
    (['--exit_criterion=confidence'], "unknown exit_criterion 'confidence'"),
    (['--exit_threshold=0.1', '--use_cache=False'], 'needs the KV cache'),
])
def test_user_errors_are_one_line(gpt_run, capsys, args, message):
    code, out, err = run_main(capsys, f'--out_dir={gpt_run}', '--ckpt=last', *args)
    assert code == 1 and out == ''
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err


def test_missing_checkpoint_is_one_line(tmp_path):
    r = run_sample(f'--out_dir={tmp_path / "out"}')  # as a subprocess: no traceback reaches the user
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.startswith('error: no checkpoint at') and r.stderr.count('\n') == 1, r.stderr


def test_an_out_dir_without_a_checkpoint_names_the_runs_beside_it(loop_run, gpt_run, tmp_path, capsys):
    """python sample.py after make demo: out/ has no checkpoint, but out-tiny/ beside it has."""
    runs = tmp_path / 'runs'
    for run, name, files in ((loop_run, 'out-tiny', ['best.pt']), (gpt_run, 'out-old', ['last.pt'])):
        os.makedirs(runs / name)
        for f in files:
            shutil.copy(os.path.join(run, f), runs / name / f)
    os.makedirs(runs / 'broken')
    (runs / 'broken' / 'last.pt').write_bytes(b'not a checkpoint')
    written = [1e9, 1e9 - 3600, 1e9 - 7200]  # newest first, which is not their names' order
    for t, name in zip(written, ['out-tiny', 'broken', 'out-old']):
        os.utime(runs / name / os.listdir(runs / name)[0], (t, t))
    written = [time.strftime('%Y-%m-%d %H:%M', time.localtime(t)) for t in written]
    code, out, err = run_main(capsys, f'--out_dir={runs / "out"}')
    assert code == 1 and out == ''
    assert err.splitlines() == [
        f"error: no checkpoint in {runs / 'out'} (best.pt or last.pt). Training runs beside it that have one, "
        f"newest first:",
        f"  {runs / 'out-tiny' / 'best.pt'}  iter 150, written {written[0]}",
        f"  {runs / 'broken' / 'last.pt'}  iter ?, written {written[1]}",
        f"  {runs / 'out-old' / 'last.pt'}  iter 0, written {written[2]}",
        f"To sample from the newest: python sample.py --out_dir={runs / 'out-tiny'}"]
    # and that command samples
    assert run_main(capsys, f'--out_dir={runs / "out-tiny"}', '--num_samples=1', '--max_new_tokens=5')[0] == 0


# -----------------------------------------------------------------------------
# Hugging Face weights (a local directory: no network)


def test_hf_directory_loads_with_the_gpt2_tokenizer(tmp_path, monkeypatch):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_positions=32, n_embd=32, n_layer=2, n_head=2, vocab_size=50257))
    hf.save_pretrained(tmp_path)
    model, meta, where = sample.load_model(str(tmp_path), None)
    assert isinstance(model, GPT) and not model.training and meta == {'tokenizer': 'gpt2'}
    idx = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model(idx)[0][0, -1], hf.eval()(idx).logits[0, -1], atol=1e-4, rtol=0)
    with pytest.raises(CheckpointError, match='plain GPT'):
        sample.set_n_loop(model, 2)
    # offline without tiktoken's cached BPE files: say how to provide them
    import tiktoken

    def offline(name):
        raise ConnectionError('no network')
    monkeypatch.setattr(tiktoken, 'get_encoding', offline)
    with pytest.raises(CheckpointError, match='TIKTOKEN_CACHE_DIR'):
        sample.load_tokenizer(meta, model)


# -----------------------------------------------------------------------------
# bench.py: the twins it compares, and that it runs (timings are its output, not tested)


def test_bench_twins_have_the_same_params_and_the_same_flops():
    from tools import bench
    config = {**bench.config_keys(vars(bench)), 'n_layer': 2, 'n_loop': 3, 'n_prelude': 1, 'n_coda': 1,
              'n_embd': 32, 'n_head': 2, 'block_size': 32}
    (_, _, p_args, _), (label, _, l_args, _), (_, _, d_args, _) = bench.models_to_run(config)
    same_params, loop, same_depth = (bench.build_model(t, a) for t, a in
                                     [('gpt', p_args), ('loop', l_args), ('gpt', d_args)])
    assert label == 'LoopGPT 2L x3 +1/1' and isinstance(loop, LoopGPT)
    gates = loop.gates.numel()
    assert same_params.get_num_params() == loop.get_num_params() - gates
    assert same_depth.depth() == loop.depth() == 8
    assert same_depth.flops_per_token() == loop.flops_per_token() - 6 * gates


def test_bench_prints_a_table():
    r = subprocess.run([sys.executable, '-m', 'tools.bench', '--device=cpu', '--n_layer=1', '--n_loop=2', '--n_embd=32',
                        '--n_head=2', '--block_size=32', '--batch_size=2', '--warmup_iters=1', '--train_iters=1',
                        '--gen_tokens=40', '--rounds=1', '--exit_threshold=1e-3', '--gen_batch=3'], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith('| ') and not line.startswith('| ---')]
    assert len(rows) == 4 and 'cache speedup' in rows[0]
    assert [row.split(' | ')[0] for row in rows[1:]] == ['| GPT 1L (same params)', '| LoopGPT 1L x2',
                                                          '| GPT 2L (same depth)']
    assert 'LoopGPT / same-params GPT: training x' in r.stdout and 'LoopGPT / same-depth GPT' in r.stdout
    assert '40 steps outgrow block_size=32' in r.stdout
    # --exit_threshold: the LoopGPT's generation with per-token exit, at each fixed count up to
    # ceil(m) + 1, in how many rounds the exit cost no more than that count, and how often the
    # rows (a different prompt each) ran different loop counts
    m = re.search(r'LoopGPT 1L x2, generation ms/step of 3 with the KV cache, best of 1 rounds: n_loop=1 [\d.]+, '
                  r'n_loop=2 [\d.]+(, n_loop=3 [\d.]+)?; per-token exit \(kl < 0.001\) [\d.]+ at m = ([\d.]+) '
                  r'iterations per token on average; no more than the fixed ceil\(m\) \+ 1 = (\d) \([\d.]+\) in '
                  r'([01]) of 1 rounds; its 3 rows \(a different prompt each\) ran different loop counts at (\d+)% '
                  r'of steps, per-row mean iterations ([\d.]+) to ([\d.]+)\. The weights are random', r.stdout)
    assert m and 1 <= float(m[2]) <= 2 and int(m[3]) == math.ceil(float(m[2])) + 1, r.stdout
    assert (m[1] is not None) == (int(m[3]) == 3)  # the fixed counts reach ceil(m) + 1
    assert 0 <= int(m[5]) <= 100 and 1 <= float(m[6]) <= float(m[2]) <= float(m[7]) <= 2, r.stdout


def test_bench_rows_have_different_prompts_and_stop_apart():
    """The exit line's rows must differ: one prompt for all would decode alike (greedy) and every
    row would stop together. Distinct prompts, and on a tiny random LoopGPT rows that do stop apart,
    counted as the line counts them."""
    from tools import bench
    config = {**bench.config_keys(vars(bench)), 'n_layer': 1, 'n_loop': 4, 'n_embd': 32, 'n_head': 2,
              'block_size': 32, 'gen_batch': 6, 'gen_tokens': 20, 'exit_threshold': 0.1, 'device': 'cpu'}
    prompt = bench.prompts(config)
    assert prompt.shape == (6, 1) and len(set(prompt[:, 0].tolist())) == 6
    assert torch.equal(prompt, bench.prompts(config))  # seeded
    torch.manual_seed(0)
    model = LoopGPT(GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=32, n_loop=4)).eval()
    with torch.no_grad():  # weights away from their init: predictions that settle at different iterations
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model.lm_head.weight.mul_(3)
    r = bench.exit_timings(model, prompt, config, contextlib.nullcontext())
    _, loops = generate(model, prompt, 20, temperature=0, exit=ExitRule(0.1))
    apart = sum(len(set(loops[:, t].tolist())) > 1 for t in range(20)) / 20
    assert r['exit_apart'] == pytest.approx(apart) and 0.2 < apart
    assert r['exit_row_loops'] == pytest.approx(loops.float().mean(1).tolist())
    _, same = generate(model, torch.zeros_like(prompt), 20, temperature=0, exit=ExitRule(0.1))
    assert (same == same[:1]).all()  # the old prompt, one token for all: the rows never stop apart


def test_bench_trains_at_each_drawn_loop_count():
    r = subprocess.run([sys.executable, '-m', 'tools.bench', '--device=cpu', '--n_layer=1', '--n_loop=2', '--n_embd=32',
                        '--n_head=2', '--block_size=32', '--batch_size=2', '--warmup_iters=1', '--train_iters=1',
                        '--rounds=1', '--loop_counts=1,2,3', '--bptt_loops=2'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line.split(' | ') for line in r.stdout.splitlines() if line.startswith('| LoopGPT')]
    assert [row[0] for row in rows] == ['| LoopGPT 1L, 1 loops, backprop through 2',
                                        '| LoopGPT 1L, 2 loops, backprop through 2',
                                        '| LoopGPT 1L, 3 loops, backprop through 2']
    assert len(rows[0]) == 8  # no inference columns
    model = LoopGPT(GPTConfig(block_size=32, vocab_size=256, n_layer=1, n_head=2, n_embd=32, n_loop=2, bptt_loops=2))
    from tools import bench
    assert [row[2] for row in rows] == [bench.si(model.flops_per_token(n_loop=n)) for n in (1, 2, 3)]
    assert 'LoopGPT / same-params GPT' not in r.stdout  # three rows, but no twins to compare with
    # and each training step really runs that count: every forward of a row's bench_one is given it
    config = {**bench.config_keys(vars(bench)), 'n_layer': 1, 'n_loop': 2, 'n_embd': 32, 'n_head': 2,
              'block_size': 32, 'batch_size': 2, 'warmup_iters': 1, 'train_iters': 1, 'loop_counts': '3',
              'bptt_loops': 2, 'device': 'cpu', 'dtype': 'float32', 'compile': False}
    (_, model_type, model_args, loops), = bench.models_to_run(config)
    calls, forward, precision = [], LoopGPT.forward, torch.get_float32_matmul_precision()

    def recording_forward(self, *args, **kwargs):
        calls.append(kwargs.get('n_loop'))
        return forward(self, *args, **kwargs)

    with mock.patch.object(LoopGPT, 'forward', recording_forward):
        bench.bench_one(model_type, model_args, loops, config)
    torch.set_float32_matmul_precision(precision)  # bench_one sets it for the process
    assert calls == [3, 3]
