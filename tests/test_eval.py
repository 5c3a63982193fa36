"""
eval.py: our models through lm-evaluation-harness, offline. Each request type against an
independent computation (log-softmax of the model's own logits, a sliding window rolled by
hand, engine.generate cut at the stop string); the whole protocol against lm-eval's own
Hugging Face backend on the same GPT-2-shaped weights; the command on a local task.
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')  # nothing here may reach the network
os.environ.setdefault('HF_HUB_OFFLINE', '1')
lm_eval = pytest.importorskip('lm_eval')
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import eval as eval_py  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from engine import ExitRule, generate  # noqa: E402
from model import GPT, GPTConfig, LoopGPT  # noqa: E402
from tasks import nextline  # noqa: E402
from tokenizer import ByteTokenizer, TiktokenTokenizer  # noqa: E402

LoopLM = eval_py.LoopLM
BYTES = ByteTokenizer()


def tiny(cls=LoopGPT, block_size=16, **kw):
    """A byte-level model with weights away from their init, so that every choice is clear-cut."""
    torch.manual_seed(0)
    model = cls(GPTConfig(block_size=block_size, vocab_size=256, n_layer=2, n_head=2, n_embd=32, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if name == 'gates' else 0.1))
        model.lm_head.weight.mul_(3)
    return model.eval()


def request(kind, *args, task='t'):
    return Instance(kind, {}, args, 0, (task, 0, 1))


def logits_of(model, ids):
    """The model's own logits for every position of ids (a list): (T, V)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        return model(x, torch.zeros_like(x))[0][0]


# -----------------------------------------------------------------------------
# each request type against an independent computation


PAIRS = [('def f(x):\n    return', ' x + 1'), ('import os ', 'import sys'), ('', 'pass'),
         ('a long context, longer than the sixteen bytes of block_size: ', 'cut')]


@pytest.mark.parametrize('cls', [GPT, LoopGPT])
def test_loglikelihood_is_the_log_softmax_of_the_models_logits(cls):
    """Each continuation's log-probability: the log-softmax of model(context + continuation)
    at the continuation's positions, summed; the context's trailing spaces belong to the
    continuation (lm-eval's rule), an empty context is the prefix token ('\\n' for bytes),
    and a context too long for block_size is cut from the left."""
    model = tiny(cls, **({} if cls is GPT else dict(n_loop=3)))
    lm = LoopLM(model, BYTES, batch_size=3)  # two batches of different lengths: padding is exercised
    got = lm.loglikelihood([request('loglikelihood', c, x) for c, x in PAIRS])
    for (context, continuation), (logp, greedy) in zip(PAIRS, got):
        n_spaces = len(context) - len(context.rstrip())
        context, continuation = context[:len(context) - n_spaces], context[len(context) - n_spaces:] + continuation
        ids = (list(context.encode()) or [ord('\n')]) + list(continuation.encode())
        ids = ids[-(model.config.block_size + 1):]
        n = len(continuation.encode())
        logp_all = F.log_softmax(logits_of(model, ids[:-1]), dim=-1)[-n:]  # (n, V)
        target = torch.tensor(ids[-n:])
        assert logp == pytest.approx(logp_all.gather(1, target[:, None]).sum().item(), abs=1e-4)
        assert greedy == bool((logp_all.argmax(-1) == target).all())
    assert len({round(lp, 3) for lp, _ in got}) == len(PAIRS)


@pytest.mark.parametrize('stride', [5, 16])
def test_rolling_perplexity_scores_every_token_once_with_a_sliding_window(stride):
    """A document 3x block_size long, against a sliding window rolled here: the first window
    predicts the first block_size tokens after the prefix, each later one the next `stride`
    from the block_size tokens before the last of them."""
    model, L = tiny(n_loop=2), 16
    doc = 'def rolling(window):\n    return sum(window) / len(window)  # ' + 'x' * 5
    assert len(doc) > 3 * L
    lm = LoopLM(model, BYTES, batch_size=4, rolling_stride=stride)
    (got,) = lm.loglikelihood_rolling([request('loglikelihood_rolling', doc)])
    tokens = [ord('\n')] + list(doc.encode())
    scored, total, end = [], 0.0, 0
    while end < len(tokens) - 1:
        new_end = min(L if end == 0 else end + stride, len(tokens) - 1)  # the last token predicted
        start = max(0, new_end - L)  # inputs tokens[start:new_end]
        logp = F.log_softmax(logits_of(model, tokens[start:new_end]), dim=-1)
        for i in range(end + 1, new_end + 1):  # token i is predicted at input position i - 1 - start
            total += logp[i - 1 - start, tokens[i]].item()
            scored.append(i)
        end = new_end
    assert scored == list(range(1, len(tokens)))  # every token once, in order
    assert got == pytest.approx(total, abs=1e-4)
    if stride < L:  # more context than disjoint windows: a different (here, any) sum
        (disjoint,) = LoopLM(model, BYTES, rolling_stride=L).loglikelihood_rolling([request('loglikelihood_rolling', doc)])
        assert abs(disjoint - got) > 1e-3


def test_greedy_generation_is_engine_generate_cut_at_the_stop_string():
    model = tiny(n_loop=2)
    head = torch.nn.Linear(32, 256)  # a head that writes printable ASCII only, so that text is text
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.fill_(-1e4)[32:127] = 0
    model.lm_head = head
    lm = LoopLM(model, BYTES, batch_size=2)
    # a context is cut to block_size - max_gen_toks = 4 tokens (lm-eval's rule): these fit
    prompts, n = ['for(', 'if x'], 12
    texts = [BYTES.decode(generate(model, torch.tensor([list(p.encode())]), n, temperature=0)[0, 4:].tolist())
             for p in prompts]
    stop = texts[0][5]  # a stop string in the middle of what generate makes
    expected = [t[:t.index(stop)] if stop in t else t for t in texts]
    got = lm.generate_until([request('generate_until', p, {'until': [stop], 'max_gen_toks': n}) for p in prompts])
    assert got == expected and len(expected[0]) <= 5 and texts[0] != texts[1]
    # without a stop string in sight: max_gen_toks tokens
    assert lm.generate_until([request('generate_until', prompts[0], {'until': ['never'], 'max_gen_toks': 7})]) == \
        [texts[0][:7]]


def test_n_loop_changes_a_loopgpts_scores():
    """A LoopGPT run for more iterations is another model: other scores (a GPT refuses --n_loop,
    test_user_errors_are_one_line)."""
    model = tiny(n_loop=2)
    reqs = [request('loglikelihood', c, x) for c, x in PAIRS]
    trained = LoopLM(model, BYTES).loglikelihood(reqs)
    model.n_loop = 4
    more = LoopLM(model, BYTES).loglikelihood(reqs)
    assert all(abs(a - b) > 1e-3 for (a, _), (b, _) in zip(trained, more))


def test_exit_follows_the_generation_path():
    """Under exit, scores come from engine.teacher_forced: with a threshold of 0 nothing stops
    early and the scores are the parallel forward's; a threshold that stops tokens early
    changes them and the table's mean iterations say how many ran."""
    model = tiny(n_loop=3)
    reqs = [request('loglikelihood', c, x) for c, x in PAIRS]
    plain = LoopLM(model, BYTES).loglikelihood(reqs)
    never = LoopLM(model, BYTES, exit=ExitRule(0.0))
    assert [lp for lp, _ in never.loglikelihood(reqs)] == pytest.approx([lp for lp, _ in plain], abs=1e-4)
    assert set(never.iterations['t']) == {3}
    early = LoopLM(model, BYTES, exit=ExitRule(1e9))  # every token after one iteration
    scores = early.loglikelihood(reqs)
    assert set(early.iterations['t']) == {1}
    model.n_loop = 1
    assert [lp for lp, _ in scores] == pytest.approx([lp for lp, _ in LoopLM(model, BYTES).loglikelihood(reqs)],
                                                     abs=1e-4)


# -----------------------------------------------------------------------------
# the protocol, against lm-eval's own Hugging Face backend


def byte_to_unicode():
    """GPT-2's printable stand-ins for the 256 bytes (how its vocab.json spells tokens)."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + list(range(ord('®'), ord('ÿ') + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def hf_tokenizer_files(enc, path):
    """vocab.json and merges.txt of a Hugging Face GPT-2 tokenizer equal to the tiktoken Encoding
    `enc`: each merged token split as byte-pair encoding would build it from lower ranks."""
    ranks = enc._mergeable_ranks
    u = byte_to_unicode()
    spell = {b: ''.join(u[c] for c in b) for b in ranks}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([c]) for c in token]
        while len(parts) > 2:  # merge the lowest-ranked pair below this token's rank
            pairs = [(ranks.get(a + b, 1 << 30), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            _, i = min(pairs)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append(f"{spell[parts[0]]} {spell[parts[1]]}")
    vocab = {spell[b]: r for b, r in ranks.items()} | {'<|endoftext|>': enc.eot_token}
    with open(os.path.join(path, 'vocab.json'), 'w') as f:
        json.dump(vocab, f)
    with open(os.path.join(path, 'merges.txt'), 'w') as f:
        f.write('#version: 0.2\n' + '\n'.join(merges) + '\n')


def write_mc_task(path, docs, name='mc'):
    with open(os.path.join(path, f'{name}.jsonl'), 'w') as f:
        f.writelines(json.dumps(d) + '\n' for d in docs)
    with open(os.path.join(path, f'{name}.yaml'), 'w') as f:
        f.write(f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {json.dumps(os.path.join(path, name + '.jsonl'))}\ntest_split: test\n"
                f"output_type: multiple_choice\ndoc_to_text: \"{{{{q}}}}\"\ndoc_to_choice: \"{{{{choices}}}}\"\n"
                f"doc_to_target: \"{{{{label}}}}\"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")


MC_DOCS = [dict(q='The capital of France is', choices=['Paris', 'the the', 'thing'], label=0),
           dict(q='Question: what is in the box? Answer: ', choices=['nothing', 'the thing', 'é'], label=1),
           dict(q='', choices=['in', 'then', 'there there'], label=2),
           dict(q='A context that is far longer than the thirty-two tokens of this model, so that lm-eval '
                  'must cut it from the left before it reaches the model:', choices=['yes', 'no'], label=0),
           dict(q='the\n\nthe', choices=[' thing', 'ing'], label=1)]


def hf_gpt2(path, enc=None):
    """A GPT-2-shaped model of block_size 32 saved with transformers in `path`, with a Hugging Face
    tokenizer equal to ours: `enc`'s byte-pair encoding, or (enc None) bytes, one token each, with
    <|endoftext|> as id 256. Returns our tokenizer and lm-eval's `hf` backend on that folder."""
    transformers = pytest.importorskip('transformers')
    from lm_eval.models.huggingface import HFLM
    torch.manual_seed(0)
    path.mkdir()
    n_vocab, eot = (enc.n_vocab, enc.eot_token) if enc else (257, 256)
    config = transformers.GPT2Config(n_positions=32, n_embd=32, n_layer=2, n_head=2, vocab_size=n_vocab,
                                     bos_token_id=eot, eos_token_id=eot)
    hf = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        hf.lm_head.weight.mul_(20)  # tied to wte: clear preferences between the choices
    hf.save_pretrained(path)
    if enc:
        hf_tokenizer_files(enc, path)
    else:  # no merges: every byte is its own token, its id the byte's value
        u = byte_to_unicode()
        (path / 'vocab.json').write_text(json.dumps({u[b]: b for b in range(256)} | {'<|endoftext|>': eot}))
        (path / 'merges.txt').write_text('#version: 0.2\n')
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(path)  # EOS: <|endoftext|>, GPT-2's default
    tokenizer.save_pretrained(path)
    ours_tok = TiktokenTokenizer(enc) if enc else BYTES
    for text in ('Question: what is in the box? Answer: the thing', 'the\n\nthe thing é   x'):
        assert tokenizer(text)['input_ids'] == ours_tok.encode(text)  # the premise: one tokenizer twice
    # the prefix token of a document: <|endoftext|> for BPE; for bytes, '\n' (LoopLM.eot_token_id).
    # logits_cache off: in lm-eval 0.4.13 at batch_size > 1 it changed DOCS[0]'s rolling sum by 7.9
    # nats (-2958.64 against -2966.51 with it off, with batch_size=1, and summed here by hand)
    theirs = HFLM(pretrained=str(path), tokenizer=str(path), device='cpu', batch_size=4, logits_cache=False,
                  prefix_token_id=None if enc else ord('\n'))
    return ours_tok, theirs


def test_our_class_and_lm_evals_hf_backend_agree_on_the_same_weights(tmp_path, enc):
    """A GPT-2-shaped model saved with transformers, evaluated through LoopLM (after
    GPT.from_pretrained) and through lm-eval's `hf` model: the same loglikelihood for every
    request, the same accuracies. Prefix spaces, the target delimiter, an empty context and
    a context cut from the left all take part."""
    hf_dir = tmp_path / 'hf'
    ours_tok, theirs = hf_gpt2(hf_dir, enc)
    task_dir = tmp_path / 'tasks'
    task_dir.mkdir()
    write_mc_task(str(task_dir), MC_DOCS)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    ours = LoopLM(GPT.from_pretrained(str(hf_dir)).eval(), ours_tok, batch_size=4)
    results = [lm_eval.simple_evaluate(model=lm, tasks=['mc'], task_manager=manager, log_samples=True)
               for lm in (ours, theirs)]
    a, b = ([s['filtered_resps'] for s in r['samples']['mc']] for r in results)
    assert len(a) == len(b) == len(MC_DOCS)
    for x, y in zip(a, b):
        assert np.allclose([lp for lp, _ in x], [lp for lp, _ in y], atol=1e-4, rtol=0), (x, y)
        assert [g for _, g in x] == [g for _, g in y]
    for metric in ('acc,none', 'acc_norm,none'):
        assert results[0]['results']['mc'][metric] == results[1]['results']['mc'][metric]


DOCS = ["def rolling(window):\n    return sum(window) / len(window)  # the mean of the window's values\n" * 3,
        'The thing in the box is the thing, then there is é and ' * 4 + 'the end.']


@pytest.mark.parametrize('tokenizer', ['bpe', 'bytes'])
def test_default_perplexity_is_lm_evals_hf_backend_on_the_same_weights(tmp_path, enc, tokenizer):
    """Perplexity by default over lm-eval's disjoint windows: each document's log-likelihood
    (several times block_size long) equals what lm-eval's `hf` backend computes on the same
    weights, for a BPE and a byte tokenizer; an overlapping stride gives another number."""
    ours_tok, theirs = hf_gpt2(tmp_path / 'hf', enc if tokenizer == 'bpe' else None)
    assert all(len(ours_tok.encode(d)) > 4 * 32 for d in DOCS)
    reqs = [request('loglikelihood_rolling', d) for d in DOCS]
    model = GPT.from_pretrained(str(tmp_path / 'hf')).eval()
    ours = LoopLM(model, ours_tok, batch_size=3).loglikelihood_rolling(reqs)
    expected = theirs.loglikelihood_rolling(reqs)
    assert ours == pytest.approx(expected, rel=1e-6, abs=0), (ours, expected)
    overlapping = LoopLM(model, ours_tok, rolling_stride=16).loglikelihood_rolling(reqs)
    assert all(abs(a - b) > 1e-2 for a, b in zip(overlapping, expected))


def test_generation_without_room_for_a_context_is_refused_as_lm_evals_hf_backend_does(tmp_path):
    """max_gen_toks >= block_size would leave the context no token (it once kept one, silently):
    refused in one sentence that names the fix, where lm-eval's `hf` backend refuses it too; one
    token less still generates, from the one context token both keep."""
    ours_tok, theirs = hf_gpt2(tmp_path / 'hf')
    lm = LoopLM(GPT.from_pretrained(str(tmp_path / 'hf')).eval(), ours_tok)
    for max_gen in (32, 40):
        req = [request('generate_until', 'some context', {'until': ['\n\n'], 'max_gen_toks': max_gen})]
        with pytest.raises(eval_py.EvalError, match=r"generates up to \d+ tokens, .* --gen_kwargs=max_gen_toks=N "
                                                    r"with N < 32, or a model with a larger block_size\.$"):
            lm.generate_until(req)
        with pytest.raises(AssertionError, match='must be less than'):
            theirs.generate_until(req)
    req = [request('generate_until', 'some context', {'until': ['never'], 'max_gen_toks': 31})]
    assert len(lm.generate_until(req)[0].encode()) == 31


# -----------------------------------------------------------------------------
# the command


@pytest.fixture
def runs(tmp_path):
    """A LoopGPT and a GPT checkpoint of the demo's kind (byte-level, trained on stdlib), and the
    stdlib_next_line task written as prepare.py writes it, from a little Python source."""
    source = open(nextline.__file__).read() + open(eval_py.__file__).read()
    nextline.write_task(str(tmp_path / 'data' / 'stdlib' / 'tasks'), [source[:4000], source[4000:9000]])
    meta = dict(tokenizer='bytes', vocab_size=256, eot_token=None, settings=dict(dataset='stdlib'))
    for name, cls, kw in (('loop', LoopGPT, dict(n_loop=2)), ('gpt', GPT, {})):
        model = tiny(cls, block_size=64, **kw)
        args = dict(block_size=64, vocab_size=256, n_layer=2, n_head=2, n_embd=32, **kw)
        os.makedirs(tmp_path / name)
        save_checkpoint(dict(model=model.state_dict(), model_type='loop' if cls is LoopGPT else 'gpt', model_args=args,
                             meta=meta, iter_num=0), str(tmp_path / name / 'best.pt'))
    return tmp_path


def run_eval(capsys, runs, *args):
    limit = [] if any(a.startswith('--limit=') for a in args) else ['--limit=40']
    code = eval_py.main([f'--data_dir={runs / "data"}', '--tasks=stdlib_next_line', *limit, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_local_task_prints_the_table_and_writes_the_results(runs, capsys):
    code, out, err = run_eval(capsys, runs, f'--out_dir={runs / "loop"}', '--n_loop=1,2')
    assert code == 0, err
    assert out.count('|stdlib_next_line|') == 2 and '|acc     |' in out and 'n_loop 1' in out and 'n_loop 2' in out
    assert '| stdlib_next_line | acc | ' in out  # the sweep's summary
    assert out.count('perplexity over disjoint windows of 64 tokens (rolling_stride 64') == 2  # the default
    files = sorted(os.listdir(runs / 'loop'))
    assert [re.sub(r'-[0-9a-f]{8}\.json$', '-HASH', f) for f in files if f.startswith('eval-')] == \
        ['eval-stdlib_next_line-best-n1-HASH', 'eval-stdlib_next_line-best-n2-HASH']
    with open(runs / 'loop' / files[-1]) as f:
        saved = json.load(f)['settings']
    assert saved['n_loop'] == 2 and saved['config']['limit'] == 40
    assert saved['scored'] == dict(init_from='resume', checkpoint='best.pt (iter 0)', n_loop=2, exit=None,
                                   kv_budget=0, rolling_stride=64, num_fewshot=None, limit=40, seed=1234,
                                   gen_kwargs='', dtype='float32')
    # an overlapping stride is named as such (and has a file of its own: test_results_files_differ_...)
    lm = LoopLM(tiny(block_size=64, n_loop=2), BYTES, rolling_stride=16)
    assert eval_py.windows(lm).startswith('over overlapping windows (rolling_stride 16 of block_size 64: NOT comparable')
    # with exit the table gives the mean iterations per scored token
    code, out, err = run_eval(capsys, runs, f'--out_dir={runs / "loop"}', '--exit_threshold=1e9')
    assert code == 0, err
    # every token after one iteration (the table rounds a column to its values' decimals: 1.0, 1.000, ...)
    assert re.search(r'\|none\|0\|iterations\|\|1\.0*\|', out.replace(' ', '')), out


def test_results_files_differ_in_every_setting_that_changes_a_score():
    """eval.py's result files once overwrote each other (a default run and a --rolling_stride=64 run
    both wrote eval-...-best.json): each setting that changes a score changes the name."""
    c = {**eval_py.config_keys(vars(eval_py)), 'dtype': 'float32'}
    changes = [('init_from', 'gpt2'), ('exit_threshold', 0.01), ('kv_budget', 2), ('num_fewshot', 5),
               ('limit', 40), ('limit', 0.5), ('seed', 1), ('gen_kwargs', 'max_gen_toks=8'), ('dtype', 'bfloat16')]
    exit_changes = [('exit_min_loops', 2), ('exit_criterion', 'entropy')]  # these count only with exit on

    def path(c, checkpoint='best.pt (iter 100)', n_loop=2, stride=64):
        return eval_py.results_path(c, ['t'], n_loop, eval_py.score_settings(c, checkpoint, n_loop, stride))
    paths = [path(c), path(c, checkpoint='best.pt (iter 200)'), path(c, checkpoint='last.pt (iter 100)'),
             path(c, n_loop=3), path(c, stride=32)] + [path({**c, k: v}) for k, v in changes]
    with_exit = {**c, 'exit_threshold': 0.01}
    paths += [path({**with_exit, k: v}) for k, v in exit_changes]
    assert len(set(paths)) == len(paths), paths
    assert all(re.fullmatch(r'out/eval-t-(best|gpt2)-n[23]-[0-9a-f]{8}\.json', p) for p in paths), paths
    assert path(c) == path(dict(c)) and path({**c, 'batch_size': 3}) == path(c)  # stable; batching scores alike


@pytest.mark.parametrize('args, message', [
    (['--out_dir={runs}/empty/nothing'], 'no checkpoint at'),
    (['--out_dir={runs}/gpt', '--exit_threshold=0.1'], 'plain GPT, which does not loop'),
    (['--out_dir={runs}/gpt', '--n_loop=2'], 'plain GPT'),
    (['--out_dir={runs}/loop', '--n_loop=two'], 'n_loop must be'),
    (['--out_dir={runs}/loop', '--tasks='], 'no tasks'),
    (['--out_dir={runs}/loop', '--limit=abc'], 'limit must be a count of examples of at least 1'),
    (['--out_dir={runs}/loop', '--limit=0'], 'limit must be'),
    (['--out_dir={runs}/loop', '--limit=1.5'], 'or a fraction between 0 and 1'),
    (['--out_dir={runs}/loop', '--gen_kwargs=64'], "gen_kwargs must be KEY=VALUE pairs"),
    (['--out_dir={runs}/loop', '--tasks=hub_task', '--include_path={runs}/hub'], "task 'hub_task' needs its data"),
])
def test_user_errors_are_one_line(runs, capsys, args, message):
    os.makedirs(runs / 'hub', exist_ok=True)  # a task whose data is on the hub, which is offline here
    (runs / 'hub' / 'hub_task.yaml').write_text('task: hub_task\ndataset_path: some-org/some-dataset-not-cached\n'
                                                'output_type: multiple_choice\ntest_split: test\ndoc_to_text: q\n'
                                                'doc_to_choice: ["a"]\ndoc_to_target: 0\n')
    code, out, err = run_eval(capsys, runs, *[a.format(runs=runs) for a in args])
    assert code == 1 and err.startswith('error: ') and err.count('\n') == 1 and message in err, err


def test_a_generation_task_without_room_for_its_context_ends_in_one_line(runs, capsys):
    """max_gen_toks (here from --gen_kwargs) >= block_size: the one-line error that names the fix,
    once the task's requests reach the model; no traceback."""
    os.makedirs(runs / 'gen')
    (runs / 'gen' / 'gen.jsonl').write_text('{"q": "def f(x):", "a": " return x"}\n')
    (runs / 'gen' / 'gen_task.yaml').write_text(
        f"task: gen_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {runs / 'gen' / 'gen.jsonl'}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n"
        "generation_kwargs:\n  until: ['\\n']\nmetric_list:\n  - metric: exact_match\n    aggregation: mean\n"
        "    higher_is_better: true\n")
    code, _, err = run_eval(capsys, runs, f'--out_dir={runs / "loop"}', '--tasks=gen_task',
                            f'--include_path={runs / "gen"}', '--gen_kwargs=max_gen_toks=64')
    assert code == 1 and 'Traceback' not in err, err
    assert err.splitlines()[-1] == ("error: task 'gen_task' generates up to 64 tokens, which leaves no room for its "
                                    "context in this model's block_size of 64: give --gen_kwargs=max_gen_toks=N with "
                                    "N < 64, or a model with a larger block_size."), err


def test_an_unknown_task_names_the_closest(runs, capsys):
    code, _, err = run_eval(capsys, runs, f'--out_dir={runs / "loop"}', '--tasks=hellaswagg')
    assert code == 1 and err.count('\n') == 1 and "'hellaswagg': did you mean hellaswag" in err, err


def test_without_lm_eval_it_says_what_to_install(runs, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'lm_eval', None)  # import lm_eval raises ImportError
    code, _, err = run_eval(capsys, runs, f'--out_dir={runs / "loop"}')
    assert code == 1 and err == 'error: eval.py needs EleutherAI\'s lm-evaluation-harness: pip install lm-eval\n'


def test_without_lm_eval_it_imports_and_answers_help():
    """lm-eval is needed only to evaluate: eval.py imports without it (LoopLM is defined, on
    object) and --help answers, in a fresh interpreter where `import lm_eval` fails."""
    code = ("import runpy, sys; sys.modules['lm_eval'] = None; import eval; print(eval.LoopLM.__mro__[1]); "
            "sys.argv = ['eval.py', '--help']; runpy.run_path('eval.py', run_name='__main__')")
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.abspath(eval_py.__file__)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("<class 'object'>\nEvaluate a trained model") and 'exit_threshold' in p.stdout
