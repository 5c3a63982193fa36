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
from torch.utils._python_dispatch import TorchDispatchMode

import engine
from engine import ExitRule, KVCache, generate, sample_next, step_with_exit, teacher_forced
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
        for criterion in ('kl', 'entropy', 'state'):
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
    for (kw, prompt), criterion in zip((({}, PROMPT), (dict(n_prelude=1, n_coda=1, loop_norm=True), PROMPT[:, :1])) * 2,
                                       ('kl', 'kl', 'state', 'state')):
        model = make_model(**kw)
        (out, loops), logits = generate_recording(model, prompt, 18, exit=ExitRule(1e9, min_loops=k, criterion=criterion))
        assert (loops == k).all()
        model.n_loop = k
        short, short_logits = generate_recording(model, prompt, 18)
        assert torch.equal(out, short)
        torch.testing.assert_close(logits, short_logits, atol=1e-5, rtol=0)
        assert len(set(out[0].tolist())) > 3  # not a degenerate repeat-one-token model


@pytest.mark.parametrize('min_loops', [1, 2])
def test_state_criterion_exits_where_the_hand_computed_change_says(min_loops):
    """The state criterion against the loop's own states: rows of one token each (nothing cached
    before them), model.loop(states=...) gives h_0 .. h_N of each; δ_n = ‖h_n − h_(n-1)‖ / ‖h_n‖,
    its sums of squares written out, gives each row's exit, the first n >= min_loops with
    δ_n < t (N if none), and the row's logits are the model's forward at n_loop = that exit.
    Every row is read out (lm_head) once: the criterion's point at a large vocabulary."""
    model = make_model(n_loop=4, loop_norm=False)
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(4))[:16, None]  # 16 different tokens
    states = []
    with torch.no_grad():
        model.loop(model.embed(idx), states=states)
    hs = torch.cat(states, dim=1).double()  # (B, N + 1, C): h_0 .. h_N of each row
    delta = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(h[n].tolist(), h[n - 1].tolist())))
              / math.sqrt(sum(a ** 2 for a in h[n].tolist())) for n in range(1, 5)] for h in hs]  # δ_1 .. δ_N
    seen = set()
    for n_split in range(min_loops, 4):  # a threshold that splits the rows at iteration n_split
        column = sorted(row[n_split - 1] for row in delta)
        threshold = (column[7] + column[8]) / 2  # halfway between two rows' δ: no decision on rounding
        expect = [next((n for n in range(min_loops, 4) if row[n - 1] < threshold), 4) for row in delta]
        read = []  # the rows of every read-out: each row's one, at its stop
        hook = model.lm_head.register_forward_hook(lambda m, args, out: read.append(out.size(0)))
        with torch.no_grad():
            logits, loops = step_with_exit(model, idx, KVCache(model, 16, 24), ExitRule(threshold, min_loops, 'state'))
            hook.remove()
            assert loops.tolist() == expect and sum(read) == 16
            for b, n in enumerate(expect):
                torch.testing.assert_close(logits[b], model(idx[b:b + 1], n_loop=n)[0][0], atol=1e-5, rtol=0)
        seen |= set(expect)
    assert seen == set(range(min_loops, 5)), seen  # rows stopped at every n from min_loops to N
    # the relative change is not the absolute one: ‖h_n‖ is far from 1, so that a rule
    # without the division would stop elsewhere
    assert all(abs(h.norm(dim=-1).log()).min() > 0.5 for h in hs[:, 1:])


# -----------------------------------------------------------------------------
# the slow reference


def reference_generate(model, prompt, n_new, rule, kv_budget=0, n_prefill=None):
    """Greedy generation from one row's prompt (a list of ids) with per-token exit, one position
    at a time, attention written out by hand. kv[key][s] holds position s's keys and values
    (nh, hs) for key ('pre', l), ('loop', n, l) or ('coda', l) of every iteration n it ran;
    exit_at[s] is the iteration s stopped at. The first n_prefill positions (default: the prompt
    but its last token) are the prompt's forward pass: they run all N iterations and read each
    other at the same iteration n. A later position t reads s < t at iteration n through
    ('loop', r, l), the budget's rule (engine.KVCache):

        r = exit_at[s]            if kv_budget = k > 0 and n >= k
        r = min(n, exit_at[s])    otherwise (Huginn's "latest" rule)

    Returns the new tokens, their logits (n_new, vocab) and the iterations that predicted them."""
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
        h = model.gate(0) * x
        logp = read_out(h, t).log_softmax(-1) if rule.criterion != 'state' else None

        def r(n, s):
            return exit_at[s] if kv_budget and n >= kv_budget and not full else min(n, exit_at[s])

        for n in range(1, N + 1):
            h_prev = h
            u = tr.inject(torch.cat((h, x))) if cfg.input_injection else h
            for i, b in enumerate(tr.h):
                u = block(b, u, ('loop', n, i), t, lambda s, n=n, i=i: kv[('loop', r(n, s), i)][s])
            h = h + model.gate(n) * (u - h)
            if cfg.loop_norm:
                h = tr.ln_loop(h)
            if rule.criterion == 'state':  # no read-out until the stop
                d = math.sqrt(sum((a - b).item() ** 2 for a, b in zip(h, h_prev))) / math.sqrt(sum(a.item() ** 2 for a in h))
            else:
                logp_n = read_out(h, t).log_softmax(-1)
                p = logp_n.exp()
                d = (p * (logp_n - logp)).sum() if rule.criterion == 'kl' else -(p * logp_n).sum()
                logp = logp_n
            if n == N or (not full and n >= rule.min_loops and d < rule.threshold):
                exit_at[t] = n
                return read_out(h, t), n

    tokens, new_logits, loops = list(prompt), [], []
    n_prefill = len(prompt) - 1 if n_prefill is None else n_prefill
    for t in range(len(prompt) - 1 + n_new):
        logits, n = position(t, tokens[t], full=t < n_prefill)
        if t < len(prompt) - 1:
            continue
        tokens.append(int(logits.argmax()))
        new_logits.append(logits)
        loops.append(n)
    return tokens[len(prompt):], torch.stack(new_logits), loops


@pytest.mark.parametrize('kw,rule', [
    (WRAPPED, ExitRule(0.06, min_loops=1, criterion='kl')),
    (dict(n_loop=4, sharpen=6.0), ExitRule(0.5, min_loops=2, criterion='entropy')),
    (WRAPPED, ExitRule(0.7, min_loops=1, criterion='state')),
    (dict(n_loop=4), ExitRule(0.3, min_loops=2, criterion='state')),
], ids=['kl-prelude-coda-injection-norm', 'entropy-min2', 'state-prelude-coda-injection-norm', 'state-min2'])
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


# -----------------------------------------------------------------------------
# the bounded cache (kv_budget), teacher forcing, and the read-out's precision


def same(a, b):
    """generate_recording's outputs, (idx or (idx, loops), logits), equal bit for bit."""
    (out_a, logits_a), (out_b, logits_b) = a, b
    out_a, out_b = (out_a, out_b) if isinstance(out_a, tuple) else ((out_a,), (out_b,))
    return all(torch.equal(x, y) for x, y in zip(out_a, out_b)) and torch.equal(logits_a, logits_b)


@pytest.mark.parametrize('exit', [None, ExitRule(0.06)], ids=['no-exit', 'exit'])
def test_budget_0_or_at_least_the_loop_count_is_the_full_cache(exit):
    """kv_budget = 0 (the default) and any budget >= the iterations run keep a group per
    iteration: the same tokens, logits and exits bit for bit; a smaller budget changes them."""
    model = make_model(**WRAPPED)
    full = generate_recording(model, PROMPT, 12, exit=exit)
    assert same(generate_recording(model, PROMPT, 12, exit=exit, kv_budget=0), full)
    for k in (3, 7):
        assert same(generate_recording(model, PROMPT, 12, exit=exit, kv_budget=k), full)
    assert not same(generate_recording(model, PROMPT, 12, exit=exit, kv_budget=1), full)


def test_budget_bounds_the_cache():
    model = make_model(**WRAPPED)  # 1 prelude + 1 coda slot, 2 layers per iteration, N = 3
    for k, groups in ((0, 3), (1, 1), (2, 2), (3, 3), (9, 3)):
        cache = KVCache(model, 5, 24, k)
        assert cache.shape == (2 + 2 * groups, 5, 2, 24, 16)
        assert cache.nbytes(torch.bfloat16) == 2 * 2 * math.prod(cache.shape)
    model.n_loop = 6  # a test-time count adds groups only to the full cache
    assert KVCache(model, 5, 24, 0).shape[0] == 2 + 2 * 6 and KVCache(model, 5, 24, 2).shape[0] == 2 + 2 * 2


BUDGET_CASES = {  # model settings, test-time n_loop, exit rule (None: no exit)
    'kl-prelude-coda-injection-norm': (WRAPPED, 3, ExitRule(0.06, min_loops=1, criterion='kl')),
    'no-exit-5-of-3-loops': ({}, 5, None),
    'entropy-min2-5-of-3-loops': (dict(sharpen=6.0), 5, ExitRule(0.5, min_loops=2, criterion='entropy')),
    'state-prelude-coda-injection-norm': (WRAPPED, 3, ExitRule(0.6, criterion='state')),
}


@pytest.mark.parametrize('k', [1, 2])
@pytest.mark.parametrize('case', BUDGET_CASES)
def test_budget_matches_a_slow_reference(case, k):
    """kv_budget = k against the reference's explicit per-token, per-iteration keys and values,
    read by the budget's rule: rows that exit at different iterations, a test-time n_loop above
    the trained count, a prompt of several tokens (its forward pass keeps the full rule inside)."""
    kw, n_loop, rule = BUDGET_CASES[case]
    model = make_model(torch.float64, **kw)
    model.n_loop = n_loop
    prompt = torch.randint(64, (4, 4), generator=torch.Generator().manual_seed(2))
    n_new = 12
    with torch.no_grad():
        out, logits = generate_recording(model, prompt, n_new, exit=rule, kv_budget=k)
        out, loops = out if rule else (out, torch.full((4, n_new), n_loop))
        for b in range(len(prompt)):
            ref_rule, n_prefill = (rule, None) if rule else (ExitRule(float('-inf')), len(prompt[b]))
            tokens, ref_logits, ref_loops = reference_generate(model, prompt[b].tolist(), n_new, ref_rule, k, n_prefill)
            assert out[b, 4:].tolist() == tokens, b
            assert loops[b].tolist() == ref_loops, b
            torch.testing.assert_close(logits[:, b], ref_logits.float(), atol=1e-6, rtol=0)
            # the budget's rule is not the full cache's: the reference tells them apart
            if b == 0:
                _, full_logits, _ = reference_generate(model, prompt[b].tolist(), n_new, ref_rule, 0, n_prefill)
                assert (full_logits - ref_logits).abs().max() > 1e-3
    if rule:
        assert len(loops.unique()) >= 2 and not all(torch.equal(loops[0], r) for r in loops)
        # one row alone: every stop is the whole batch's, which carry_latest copies in one slice
        out, logits = generate_recording(model, prompt[:1], n_new, exit=rule, kv_budget=k)
        tokens, ref_logits, ref_loops = reference_generate(model, prompt[0].tolist(), n_new, rule, k)
        assert out[0][0, 4:].tolist() == tokens and out[1][0].tolist() == ref_loops
        torch.testing.assert_close(logits[:, 0], ref_logits.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize('k', [0, 1])
def test_teacher_forcing_follows_the_generation_path(k):
    """teacher_forced on a sequence generate made predicts what generate predicted at each step,
    with the iterations it spent: the prompt as one forward pass, every later token alone."""
    model = make_model(**WRAPPED)
    rule = ExitRule(0.06)
    (out, loops), logits = generate_recording(model, PROMPT, 10, exit=rule, kv_budget=k)
    forced, forced_loops = teacher_forced(model, out[:, :-1], n_prompt=PROMPT.size(1) - 1, exit=rule, kv_budget=k)
    assert torch.equal(forced_loops, loops) and len(loops.unique()) >= 2
    torch.testing.assert_close(forced, logits.transpose(0, 1), atol=1e-6, rtol=0)
    # without exit: every position's prediction, the first alone included, as the model's forward
    forced, forced_loops = teacher_forced(model, out)
    assert (forced_loops == model.n_loop).all()
    torch.testing.assert_close(forced, model(out, torch.zeros_like(out))[0], atol=1e-5, rtol=0)


def test_exit_decides_on_fp32_read_outs_under_bf16_autocast():
    """Under bf16 autocast the blocks run in bf16, but the read-out behind the exit rule (ln_f,
    lm_head, the criterion) runs in fp32: one bf16 step of a logit near 10 is alone a KL of
    ~5e-4. Recorded states h_n of a run that never stops, read out in fp32 and in bf16, give
    each token's exit under a threshold: the engine's exits are the fp32 ones, on a case where
    the bf16 read-out would exit elsewhere. One row per call, so that no stopped row changes
    the batch and with it the rounding of the states."""
    torch.manual_seed(0)
    model = make_model(sharpen=30.0, vocab_size=512, n_loop=4)
    states = []
    hook = model.transformer.ln_f.register_forward_pre_hook(lambda m, args: states.append(args[0].detach()))
    prompts = torch.randint(512, (24, 3), generator=torch.Generator().manual_seed(3))

    def run(prompt, threshold):
        states.clear()
        cache = KVCache(model, 1, 24)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            model(prompt[None, :-1], kv_cache=cache)
            return step_with_exit(model, prompt[None, -1:], cache, ExitRule(threshold))

    def exits(kls, threshold):  # the first n whose KL(p_n || p_n-1) is below the threshold, else N
        return next((n for n, d in enumerate(kls, 1) if d < threshold), len(kls))

    kl = {}  # precision -> (prompts, N) KL between successive read-outs of the recorded states
    for prompt in prompts:
        run(prompt, threshold=0.0)  # never stops: h_0 .. h_N, all recorded (the states of the 2nd call on)
        hs = torch.cat(states[-(model.n_loop + 1):])  # (N + 1, 1, C), read outs of h_0 .. h_N
        for name, ctx in (('fp32', torch.autocast('cpu', enabled=False)), ('bf16', torch.autocast('cpu', dtype=torch.bfloat16))):
            with torch.no_grad(), ctx:
                logp = model.lm_head(model.transformer.ln_f(hs.float() if name == 'fp32' else hs)).float().log_softmax(-1)
            kl.setdefault(name, []).append((logp[1:].exp() * (logp[1:] - logp[:-1])).sum(-1).view(-1).clamp_min(0))
    kl = {name: torch.stack(v) for name, v in kl.items()}
    # a threshold at which the two precisions exit some token at different iterations
    candidates = sorted(((a + b) / 2).item() for a, b in zip(kl['fp32'].flatten(), kl['bf16'].flatten()))
    threshold, rows = max(((t, [i for i in range(len(prompts)) if exits(kl['fp32'][i], t) != exits(kl['bf16'][i], t)])
                           for t in candidates), key=lambda tr: len(tr[1]))
    assert rows, "no token whose exit the read-out's precision decides: the case shows nothing"
    for i, prompt in enumerate(prompts):
        logits, loops = run(prompt, threshold)
        assert loops.item() == exits(kl['fp32'][i], threshold), i
        assert logits.dtype == torch.float32
    hook.remove()


class HostSyncs(TorchDispatchMode):
    """Counts the ops that make the host wait for the device: reading a value (.item(), bool()),
    nonzero, and indexing with a boolean mask (whose result's size is data)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aten = torch.ops.aten
        masked = func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default) and any(
            i is not None and i.dtype == torch.bool for i in args[1])
        if masked or func in (aten.nonzero.default, aten._local_scalar_dense.default, aten.masked_select.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('rule', [ExitRule(0.06), ExitRule(0.7, criterion='state')], ids=['kl', 'state'])
@pytest.mark.parametrize('k', [0, 1])
def test_the_exit_loop_waits_for_the_device_once_per_iteration(k, rule):
    """At most one host sync per iteration (the nonzero that says which rows still run), so that
    on a GPU the exit saves time as well as iterations."""
    model = make_model(**WRAPPED)
    prompt = torch.randint(64, (6, 3), generator=torch.Generator().manual_seed(5))
    cache = KVCache(model, 6, 24, k)
    with torch.no_grad():
        model(prompt[:, :-1], kv_cache=cache)
        with HostSyncs() as syncs:
            _, loops = step_with_exit(model, prompt[:, -1:], cache, rule)
    assert len(loops.unique()) >= 2  # rows stop at different iterations
    assert 1 <= syncs.count <= loops.max().item()
