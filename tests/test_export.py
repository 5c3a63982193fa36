"""
export.py and hf/: an exported folder, loaded by transformers (remote code for a LoopGPT,
GPT2LMHeadModel for a GPT), computes what model.py and engine.py compute: logits, loss,
greedy generation through the loop's KV cache (full and bounded, at a test-time n_loop),
batched with left padding; the tokenizer gives our ids; checkpoint.load_model reads the
folder back; lm-eval's own `hf` backend scores it as eval.py scores the checkpoint.
"""

import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing here may reach the network
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
transformers = pytest.importorskip('transformers')
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from checkpoint import load_model, save_checkpoint  # noqa: E402
from engine import generate  # noqa: E402
from hf.convert import write_gpt, write_loop, write_tokenizer  # noqa: E402
from model import GPT, GPTConfig, LoopGPT  # noqa: E402
from tokenizer import ByteTokenizer, TiktokenTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BYTES = ByteTokenizer()
# every variant model.py trains: gates learned or frozen, prelude and coda, injection + loop_norm + drawn depth
VARIANTS = {
    'paper': dict(n_loop=2),
    'frozen': dict(n_loop=3, learn_gates=False),
    'prelude_coda': dict(n_loop=2, n_prelude=1, n_coda=1),
    'recurrent': dict(n_loop=3, input_injection=True, loop_norm=True, loop_sampling='poisson', bptt_loops=2),
}
ARGS = dict(block_size=112, vocab_size=256, n_layer=1, n_head=2, n_embd=16)  # room for a prompt + 100 tokens


def tiny(cls=LoopGPT, **kw):
    """A byte-level model with weights off their init (iterations differ, greedy choices are clear)."""
    torch.manual_seed(0)
    model = cls(GPTConfig(**ARGS, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if name == 'gates' else 0.5))
    return model.eval()


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    """{name: (our model, its folder, transformers' model)} for each variant and a GPT."""
    out = {}
    for name, kw in list(VARIANTS.items()) + [('gpt', None)]:
        model = tiny(GPT) if kw is None else tiny(**kw)
        path = str(tmp_path_factory.mktemp(name))
        extra = dict(meta=dict(tokenizer='bytes', vocab_size=256), model_type='gpt' if kw is None else 'loop')
        (write_gpt if kw is None else write_loop)(model, path, extra, BYTES)
        write_tokenizer(BYTES, path, ARGS['block_size'])
        hf = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        out[name] = (model, path, hf)
    return out


def ids(n, seed=0):
    return torch.randint(0, 256, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('name', list(VARIANTS) + ['gpt'])
def test_logits_and_loss_equal_model_pys(folders, name):
    model, _, hf = folders[name]
    x = ids(40).repeat(2, 1)
    x[1] = ids(40, seed=1)
    with torch.no_grad():
        ours, loss = model(x[:, :-1], x[:, 1:])
        theirs = hf(x)
    assert type(hf).__name__ == ('GPT2LMHeadModel' if name == 'gpt' else 'LoopGPTForCausalLM')
    torch.testing.assert_close(theirs.logits[:, :-1], ours, atol=1e-5, rtol=0)
    assert hf(x, labels=x).loss.item() == pytest.approx(loss.item(), abs=1e-5)
    if name != 'gpt':  # a test-time loop count, per call: the last trained gate beyond it
        model.n_loop = model.config.n_loop + 2
        try:
            with torch.no_grad():
                more = model(x, x)[0]
        finally:
            model.n_loop = model.config.n_loop
        torch.testing.assert_close(hf(x, n_loop=model.config.n_loop + 2).logits, more, atol=1e-5, rtol=0)


def test_fine_tuning_gets_gradients_where_model_py_does(folders):
    """labels -> a loss to backpropagate (Trainer, PEFT): every trainable weight gets a gradient,
    frozen gates none, and the cache is off while training."""
    for name in ('frozen', 'recurrent'):
        _, _, hf = folders[name]
        hf.train()
        try:
            out = hf(ids(20), labels=ids(20))
            out.loss.backward()
            grads = {n: p.grad for n, p in hf.named_parameters()}
            assert out.cache is None and (grads['gates'] is None) == (name == 'frozen')
            assert all(g is not None for n, g in grads.items() if n != 'gates')
        finally:
            hf.zero_grad(set_to_none=True)
            hf.eval()


def test_the_modeling_file_names_the_transformers_version_it_refuses(monkeypatch):
    """Under transformers 4 the file stops at import, in one sentence that names both versions."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('hf.version_check', os.path.join(ROOT, 'hf', 'modeling_loopgpt.py'))
    # (sys.modules': loading remote code can leave another transformers module object there)
    monkeypatch.setattr(sys.modules['transformers'], '__version__', '4.46.3')
    with pytest.raises(ImportError, match=r'tested with 5\.25\); this is transformers 4\.46\.3'):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


@pytest.mark.parametrize('name, kv_budget, extra_loops', [
    ('paper', 0, 0), ('paper', 2, 2), ('frozen', 1, 0), ('prelude_coda', 2, 1), ('recurrent', 0, 0),
    ('recurrent', 1, 3), ('gpt', 0, 0)])
def test_greedy_generate_gives_engine_generates_tokens(folders, name, kv_budget, extra_loops):
    """100 new tokens, the full cache or kv_budget = k (engine.KVCache's rule), at the trained
    loop count or above it (n_loop per call)."""
    model, _, hf = folders[name]
    prompt = ids(8, seed=2)
    kw = {} if name == 'gpt' else dict(kv_budget=kv_budget, n_loop=model.config.n_loop + extra_loops)
    model.n_loop = model.config.n_loop + extra_loops
    try:
        ours = generate(model, prompt, 100, temperature=0, kv_budget=kv_budget)
    finally:
        model.n_loop = model.config.n_loop
    theirs = hf.generate(prompt, max_new_tokens=100, do_sample=False, **kw)
    assert theirs.tolist() == ours.tolist()
    if kv_budget or extra_loops:  # the settings matter: the default generation differs
        assert hf.generate(prompt, max_new_tokens=100, do_sample=False).tolist() != ours.tolist()


@pytest.mark.parametrize('name, kv_budget', [('prelude_coda', 0), ('recurrent', 1), ('gpt', 0)])
def test_batched_left_padded_generation_equals_row_by_row(folders, name, kv_budget):
    """How lm-eval's hf backend batches: prompts of different lengths, padded on the left, with
    an attention_mask; positions start at each row's first real token."""
    _, _, hf = folders[name]
    prompts = [ids(n, seed=n)[0].tolist() for n in (3, 9, 6)]
    width = max(map(len, prompts))
    x = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kw = {} if name == 'gpt' else dict(kv_budget=kv_budget)
    batch = hf.generate(x, attention_mask=mask, max_new_tokens=20, do_sample=False, pad_token_id=0, **kw)
    for row, p in zip(batch.tolist(), prompts):
        alone = hf.generate(torch.tensor([p]), max_new_tokens=20, do_sample=False, **kw)[0].tolist()
        assert row[width - len(p):] == alone


def test_sampling_follows_the_seed(folders):
    _, _, hf = folders['recurrent']
    runs = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        runs.append(hf.generate(ids(5), max_new_tokens=30, do_sample=True, top_k=50, kv_budget=1).tolist())
    assert runs[0] == runs[1] != runs[2] and len(runs[0][0]) == 35


@pytest.mark.parametrize('name', list(VARIANTS) + ['gpt'])
def test_load_model_reads_the_folder_back(folders, name):
    """checkpoint.load_model (sample.py and eval.py --init_from=DIR): model.py's own class, the
    same logits, the tokenizer named in config.json."""
    model, path, _ = folders[name]
    back, meta, where = load_model(path, out_dir='unused')
    assert type(back) is type(model) and meta['tokenizer'] == 'bytes' and path in where
    x = ids(30)
    with torch.no_grad():
        torch.testing.assert_close(back(x, x)[0], model(x, x)[0], atol=1e-6, rtol=0)


def test_sample_py_samples_from_the_folder(folders, capsys):
    import sample
    _, path, _ = folders['prelude_coda']
    sample.main([f'--init_from={path}', '--num_samples=1', '--max_new_tokens=10', '--temperature=0',
                 '--device=cpu', '--start=def ', '--kv_budget=1'])
    out, err = capsys.readouterr()
    assert out.startswith('def ') and 'LoopGPT' in err and 'Hugging Face folder' in err


TEXTS = ['plain ascii', 'héllo wörld ∑ 🙂', 'def f(x):\n\treturn  x\n\n', '<|endoftext|> is text here',
         "it's the thing they're doing", '   spaces   ', '']


def test_the_tokenizer_gives_our_ids(tmp_path, enc):
    """Bytes (ids = bytes) and a GPT-2-style BPE (conftest's tiktoken Encoding): AutoTokenizer's ids
    are ours on every string, decoding gives the text back, and the special ids are ours."""
    for name, tok in (('bytes', BYTES), ('bpe', TiktokenTokenizer(enc))):
        path = tmp_path / name
        path.mkdir()
        write_tokenizer(tok, str(path), 64)
        hf = AutoTokenizer.from_pretrained(str(path))
        for text in TEXTS:
            got = hf(text, split_special_tokens=True)['input_ids']
            assert got == tok.encode(text), (name, text)
            assert hf.decode(got) == text
        if tok.eot_token is not None:  # <|endoftext|> as a special token is our end of text
            assert hf.eos_token_id == tok.eot_token and hf('a<|endoftext|>')['input_ids'][-1] == tok.eot_token
        else:  # bytes: '\n' starts documents, as eval.py
            assert hf.bos_token_id == 10 and hf.decode([10]) == '\n'


# -----------------------------------------------------------------------------
# the command


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A trained-looking checkpoint (a LoopGPT with prelude, bytes), and one of the hops task."""
    root = tmp_path_factory.mktemp('runs')
    for name, tokenizer in (('loop', 'bytes'), ('hops', 'hops-4-2')):
        kw = VARIANTS['prelude_coda']
        model = tiny(**kw)
        os.makedirs(root / name)
        save_checkpoint(dict(model=model.state_dict(), model_type='loop', model_args=dict(ARGS, **kw), iter_num=50,
                             tokens=1234, best_val_loss=2.5, config=dict(dataset='stdlib', n_loop=2),
                             meta=dict(tokenizer=tokenizer, vocab_size=256)), str(root / name / 'best.pt'))
    return root


def export_cli(capsys, *args):
    """export.py as a command, in this process (runpy: no module imports the script)."""
    argv = sys.argv
    sys.argv = ['export.py', *args]
    try:
        runpy.run_path(os.path.join(ROOT, 'export.py'), run_name='__main__')
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


def test_export_writes_a_folder_a_fresh_python_loads_and_samples_from(run, capsys):
    to = run / 'hf'
    code, err = export_cli(capsys, f'--out_dir={run / "loop"}', f'--to={to}', '--kv_budget=1')
    assert code == 0, err
    files = set(os.listdir(to))
    assert {'config.json', 'model.safetensors', 'generation_config.json', 'tokenizer.json', 'README.md',
            'modeling_loopgpt.py', 'configuration_loopgpt.py'} <= files
    cfg = json.loads((to / 'config.json').read_text())
    assert cfg['auto_map']['AutoModelForCausalLM'] == 'modeling_loopgpt.LoopGPTForCausalLM'
    assert cfg['n_loop_trained'] == 2 and cfg['kv_budget'] == 1 and cfg['tie_word_embeddings']
    card = (to / 'README.md').read_text()
    assert 'trust_remote_code=True' in card and 'kv_budget' in card and '1234 tokens' in card
    code = ("from transformers import AutoModelForCausalLM, AutoTokenizer; import sys; d = sys.argv[1]; "
            "m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True, n_loop=4); "
            "t = AutoTokenizer.from_pretrained(d); ids = t('def ', return_tensors='pt').input_ids; "
            "print(m.config.n_loop, repr(t.decode(m.generate(ids, max_new_tokens=12, do_sample=True)[0])))")
    p = subprocess.run([sys.executable, '-c', code, str(to)], capture_output=True, text=True, timeout=120,
                       cwd=str(run), env=dict(os.environ, HF_HUB_OFFLINE='1'), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    # (AutoTokenizer reads config.json, whose code it offers to run: without a terminal it goes on without)
    assert "4 'def " in p.stdout.splitlines()[-1], p.stdout


@pytest.mark.parametrize('args, message', [
    (['--out_dir={run}/nothing', '--to={run}/x'], 'no checkpoint at'),
    (['--out_dir={run}/loop', '--to={run}/loop'], 'exists and is not empty: choose a new folder, or pass --overwrite'),
    (['--out_dir={run}/hops', '--to={run}/h'], 'has no Hugging Face equivalent'),
    (['--out_dir={run}/loop'], 'say where to write'),
])
def test_user_errors_are_one_line(run, capsys, args, message):
    code, err = export_cli(capsys, *[a.format(run=run) for a in args])
    assert code == 1 and err.startswith('error: ') and err.count('\n') == 1 and message in err, err


# -----------------------------------------------------------------------------
# lm-eval's own hf backend on the folder, against eval.py on the model


def write_task(path, name, docs, output_type, lines):
    with open(os.path.join(path, f'{name}.jsonl'), 'w') as f:
        f.writelines(json.dumps(d) + '\n' for d in docs)
    with open(os.path.join(path, f'{name}.yaml'), 'w') as f:
        f.write(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {json.dumps(os.path.join(path, name + '.jsonl'))}\ntest_split: test\n"
                f"output_type: {output_type}\n" + '\n'.join(lines) + '\n')


def test_lm_evals_hf_backend_scores_the_folder_as_eval_py_scores_the_model(folders, tmp_path):
    """Multiple choice, rolling perplexity (disjoint windows: eval.py's rolling_stride = block_size,
    as the hf backend rolls) and generation until a newline: the same numbers, the same text."""
    lm_eval = pytest.importorskip('lm_eval')
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    import eval as eval_py
    from test_eval import MC_DOCS, write_mc_task
    model, path, _ = folders['recurrent']
    write_mc_task(str(tmp_path), MC_DOCS[:3])
    long_doc = 'def rolling(window):\n    return sum(window) / len(window)\n' * 4  # > 2 windows of 112
    write_task(str(tmp_path), 'ppl', [dict(text=long_doc), dict(text='short one')], 'loglikelihood_rolling',
               ['doc_to_text: ""', 'doc_to_target: "{{text}}"', 'metric_list:', '  - metric: word_perplexity'])
    write_task(str(tmp_path), 'gen', [dict(q='def f(x'), dict(q='import o')], 'generate_until',
               ['doc_to_text: "{{q}}"', 'doc_to_target: ""', 'generation_kwargs:', '  until: ["\\n"]',
                '  max_gen_toks: 16', '  do_sample: false', 'metric_list:', '  - metric: exact_match'])
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    ours = eval_py.LoopLM(model, BYTES, batch_size=2, rolling_stride=ARGS['block_size'])
    theirs = HFLM(pretrained=path, trust_remote_code=True, device='cpu', batch_size=2)
    results = [lm_eval.simple_evaluate(model=lm, tasks=['mc', 'ppl', 'gen'], task_manager=manager, log_samples=True)
               for lm in (ours, theirs)]
    for task in ('mc', 'ppl'):
        a, b = ([s['filtered_resps'] for s in r['samples'][task]] for r in results)
        flat = [np.ravel(np.array(x, dtype=object)[..., 0] if task == 'mc' else x).astype(float) for x in (a, b)]
        assert len(a) == len(b) > 0 and np.allclose(*flat, atol=1e-3, rtol=0), (task, a, b)
    a, b = ([s['filtered_resps'] for s in r['samples']['gen']] for r in results)
    assert a == b and any(x[0] for x in a), (a, b)
    assert results[0]['results']['mc']['acc,none'] == results[1]['results']['mc']['acc,none']
