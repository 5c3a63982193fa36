"""
Per-token exit at inference (engine.step_with_exit, generate(exit=...)): off, it is today's
generation bit for bit; at its earliest it is a shorter loop; in between it matches a slow
reference that recomputes every token from scratch and keeps each token's exit iteration and
each iteration's keys and values in explicit tables (float64, so that no threshold decision
hangs on rounding).
"""

import math

import pytest
import torch

import engine
from engine import ExitRule, generate, sample_next
from model import GPTConfig, LoopGPT


def make_model(dtype=torch.float32, sharpen=1.0, **kw):
    """A small LoopGPT with sharper logits than the 0.02 init (lm_head times `sharpen` more),
    and gates and norms away from their init, so that every part of the rule takes part."""
    torch.manual_seed(0)
    model = LoopGPT(GPTConfig(**{**dict(block_size=24, vocab_size=64, n_layer=2, n_head=2, n_embd=32, n_loop=3),
                                 **kw}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.5 if name == 'gates' else 0.1))
        model.lm_head.weight.mul_(sharpen)
    return model.to(dtype).eval()


def generate_recording(model, idx, max_new_tokens, **kw):
    """generate(), greedy, also returning the logits each step sampled from, (steps, B, vocab)."""
    logits = []

    def record(step_logits, *args):
        logits.append(step_logits.clone())
        return sample_next(step_logits, *args)

    engine.sample_next = record  # generate looks it up in engine's namespace
    try:
        out = generate(model, idx, max_new_tokens, temperature=0, **kw)
    finally:
        engine.sample_next = sample_next
    return out, torch.stack(logits)


PROMPT = torch.randint(64, (3, 5), generator=torch.Generator().manual_seed(1))
WRAPPED = dict(n_prelude=1, n_coda=1, input_injection=True, loop_norm=True)


@pytest.mark.parametrize('kw', [{}, WRAPPED], ids=['plain', 'prelude-coda-injection-norm'])
def test_threshold_0_is_todays_generation(kw):
    """A threshold of 0 stops no token early: every row runs all n_loop iterations. From a
    one-token prompt the tokens and logits are those of the usual cached generation, bit for
    bit (the same operations in the same order; the read-outs in between change no state).
    From a longer prompt its last token runs apart from the others, so the logits agree to
    rounding. (sample.py's exit_threshold=0 turns the rule off: today's path itself.)"""
    model = make_model(**kw)
    for prompt, exact in ((PROMPT[:, :1], True), (PROMPT, False)):
        plain, plain_logits = generate_recording(model, prompt, 15)
        for criterion in ('kl', 'entropy'):
            (out, loops), logits = generate_recording(model, prompt, 15, exit=ExitRule(0.0, criterion=criterion))
            assert torch.equal(out, plain) and loops.shape == (3, 15) and (loops == 3).all()
            if exact:
                assert torch.equal(logits, plain_logits)
            else:
                torch.testing.assert_close(logits, plain_logits, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match='use_cache=True'):
        generate(model, PROMPT, 2, exit=ExitRule(0.0), use_cache=False)


@pytest.mark.parametrize('k', [1, 2])
def test_stopping_everywhere_at_k_is_a_loop_of_k(k):
    """A threshold so large that every token stops at its earliest, min_loops = k, gives the
    tokens of n_loop = k. The prompt runs all iterations, so its keys and values beyond k
    differ, but no token of a k-iteration loop reads them; with a coda the prompt's coda keys
    come from h_N, so there the prompt is one token (which goes through the exit path)."""
    for kw, prompt in (({}, PROMPT), (dict(n_prelude=1, n_coda=1, loop_norm=True), PROMPT[:, :1])):
        model = make_model(**kw)
        (out, loops), logits = generate_recording(model, prompt, 18, exit=ExitRule(1e9, min_loops=k))
        assert (loops == k).all()
        model.n_loop = k
        short, short_logits = generate_recording(model, prompt, 18)
        assert torch.equal(out, short)
        torch.testing.assert_close(logits, short_logits, atol=1e-5, rtol=0)
        assert len(set(out[0].tolist())) > 3  # not a degenerate repeat-one-token model


# -----------------------------------------------------------------------------
# the slow reference


def reference_generate(model, prompt, n_new, rule):
    """Greedy generation from one row's prompt (a list of ids) with per-token exit, one position
    at a time, attention written out by hand. kv[key][s] holds position s's keys and values
    (nh, hs) for key ('pre', l), ('loop', n, l) or ('coda', l); exit_at[s] is the iteration s
    stopped at. At iteration n, position t reads s < t through ('loop', min(n, exit_at[s]), l):
    Huginn's "latest" rule. Prompt tokens but the last run all N iterations. Returns the new
    tokens, their logits (n_new, vocab) and the iterations that predicted them."""
    cfg, N = model.config, model.n_loop
    C, nh = cfg.n_embd, cfg.n_head
    hs = C // nh
    tr = model.transformer
    kv, exit_at = {}, {}

    def block(b, z, key, t, visible):
        qkv = b.attn.c_attn(b.ln_1(z)).view(3, nh, hs)
        kv.setdefault(key, {})[t] = (qkv[1], qkv[2])
        ks = torch.stack([visible(s)[0] for s in range(t)] + [qkv[1]], dim=1)  # (nh, t + 1, hs)
        vs = torch.stack([visible(s)[1] for s in range(t)] + [qkv[2]], dim=1)
        weights = ((qkv[0][:, None, :] * ks).sum(-1) / math.sqrt(hs)).softmax(-1)  # (nh, t + 1)
        z = z + b.attn.c_proj((weights[..., None] * vs).sum(1).reshape(C))
        return z + b.mlp(b.ln_2(z))

    def read_out(h, t):
        for i, b in enumerate(tr.coda):
            h = block(b, h, ('coda', i), t, lambda s, i=i: kv[('coda', i)][s])
        return model.lm_head(tr.ln_f(h))

    def position(t, token, full):
        x = tr.wte.weight[token] + tr.wpe.weight[t]
        for i, b in enumerate(tr.prelude):
            x = block(b, x, ('pre', i), t, lambda s, i=i: kv[('pre', i)][s])
        a = model.gates
        h = a[0] * x
        logp = read_out(h, t).log_softmax(-1)
        for n in range(1, N + 1):
            u = tr.inject(torch.cat((h, x))) if cfg.input_injection else h
            for i, b in enumerate(tr.h):
                u = block(b, u, ('loop', n, i), t, lambda s, n=n, i=i: kv[('loop', min(n, exit_at[s]), i)][s])
            h = h + a[n] * (u - h)
            if cfg.loop_norm:
                h = tr.ln_loop(h)
            logits = read_out(h, t)
            logp_n = logits.log_softmax(-1)
            p = logp_n.exp()
            d = (p * (logp_n - logp)).sum() if rule.criterion == 'kl' else -(p * logp_n).sum()
            if n == N or (not full and n >= rule.min_loops and d < rule.threshold):
                exit_at[t] = n
                return logits, n
            logp = logp_n

    tokens, new_logits, loops = list(prompt), [], []
    for t in range(len(prompt) - 1):
        position(t, tokens[t], full=True)
    for t in range(len(prompt) - 1, len(prompt) - 1 + n_new):
        logits, n = position(t, tokens[t], full=False)
        tokens.append(int(logits.argmax()))
        new_logits.append(logits)
        loops.append(n)
    return tokens[len(prompt):], torch.stack(new_logits), loops


@pytest.mark.parametrize('kw,rule', [
    (WRAPPED, ExitRule(0.06, min_loops=1, criterion='kl')),
    (dict(n_loop=4, sharpen=6.0), ExitRule(0.5, min_loops=2, criterion='entropy')),
], ids=['kl-prelude-coda-injection-norm', 'entropy-min2'])
def test_exit_matches_a_slow_reference(kw, rule):
    """Rows that stop at different iterations, in one batch, against the reference run on each
    row alone: the same tokens, the same iterations per token, the same logits."""
    model = make_model(torch.float64, **kw)
    prompt = torch.randint(64, (4, 4), generator=torch.Generator().manual_seed(2))
    n_new = 12
    with torch.no_grad():
        (out, loops), logits = generate_recording(model, prompt, n_new, exit=rule)
        for b in range(len(prompt)):
            tokens, ref_logits, ref_loops = reference_generate(model, prompt[b].tolist(), n_new, rule)
            assert out[b, 4:].tolist() == tokens, b
            assert loops[b].tolist() == ref_loops, b
            torch.testing.assert_close(logits[:, b], ref_logits.float(), atol=1e-6, rtol=0)  # generate samples in fp32
    # the case is not degenerate: tokens stop at several iterations, the rows differently
    assert len(loops.unique()) >= 2 and not all(torch.equal(loops[0], r) for r in loops)
    assert loops.min() >= rule.min_loops and loops.max() <= model.n_loop
