"""Properties of model.py that must hold exactly (fp32, CPU, random weights and inputs)."""

import copy
import math
import os
import runpy

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from model import GPT, GPTConfig, LoopGPT, build_model

SMALL = dict(block_size=16, vocab_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')


def make(cls, seed=0, **overrides):
    torch.manual_seed(seed)
    model = cls(GPTConfig(**{**SMALL, **overrides}))
    return model.eval()


def random_idx(B=3, T=16, vocab=SMALL['vocab_size'], seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (B, T), generator=g)


def all_logits(model, idx):
    """Logits at every position, (B, T, vocab): pass dummy targets to get them all."""
    return model(idx, targets=torch.zeros_like(idx))[0]


def randomize_gates(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.gates.copy_(torch.rand(model.gates.shape, generator=g) * 2 - 0.5)


# 1. n_loop=1 with initial gates is the GPT with the same weights
@pytest.mark.parametrize('bias', [True, False])
def test_loop1_equals_gpt(bias):
    gpt = make(GPT, bias=bias)
    loop = make(LoopGPT, seed=7, bias=bias, n_loop=1)
    missing, unexpected = loop.load_state_dict(gpt.state_dict(), strict=False)
    assert missing == ['gates'] and unexpected == []
    idx = random_idx()
    torch.testing.assert_close(all_logits(loop, idx), all_logits(gpt, idx), atol=1e-5, rtol=0)


# 2. k layers looped L times with initial gates == GPT of k*L blocks, the shared ones repeated
@pytest.mark.parametrize('k,L', [(1, 3), (2, 2), (3, 2)])
def test_loop_equals_unrolled_gpt(k, L):
    loop = make(LoopGPT, n_layer=k, n_loop=L)
    deep = make(GPT, seed=3, n_layer=k * L)
    deep.load_state_dict({n: p for n, p in loop.state_dict().items() if n != 'gates'}, strict=False)
    deep.transformer.h = torch.nn.ModuleList([loop.transformer.h[i % k] for i in range(k * L)])
    idx = random_idx()
    torch.testing.assert_close(all_logits(loop, idx), all_logits(deep, idx), atol=1e-5, rtol=0)


# 3. random gates: h_N == a_0 x_0 + sum_n a_n f(h_{n-1}), computed here independently
def test_random_gates_follow_unrolled_series():
    k, L = 2, 3
    model = make(LoopGPT, n_layer=k, n_loop=L)
    randomize_gates(model)
    idx = random_idx()
    x0 = model.embed(idx)
    a = model.gates.detach()

    def B(h):  # the shared stack, applied once
        for block in model.transformer.h:
            h = block(h)
        return h

    hs = [a[0] * x0]
    for n in range(1, L + 1):
        hs.append(hs[-1] + a[n] * (B(hs[-1]) - hs[-1]))
    series = a[0] * x0 + sum(a[n] * (B(hs[n - 1]) - hs[n - 1]) for n in range(1, L + 1))

    h_N = model.loop(x0)
    torch.testing.assert_close(h_N, series, atol=1e-5, rtol=0)
    # and it is what the logits are made of
    expected = model.lm_head(model.transformer.ln_f(series))
    torch.testing.assert_close(all_logits(model, idx), expected, atol=1e-5, rtol=0)
    # the gates matter: with all ones the result differs
    ungated = copy.deepcopy(model)
    torch.nn.init.ones_(ungated.gates)
    assert (h_N - ungated.loop(x0)).abs().max() > 1e-3


# 4. parameters, gradients and weight decay of the gates
@pytest.mark.parametrize('n_loop', [1, 2, 4])
def test_gate_params_grads_and_no_decay(n_loop):
    gpt, loop = make(GPT), make(LoopGPT, n_loop=n_loop)
    assert loop.get_num_params() - gpt.get_num_params() == (n_loop + 1) * SMALL['n_embd']
    assert loop.get_num_params(non_embedding=False) - gpt.get_num_params(non_embedding=False) \
        == (n_loop + 1) * SMALL['n_embd']

    loop.train()
    randomize_gates(loop)  # at all-ones some gate gradients could be tiny by symmetry; avoid that
    idx = random_idx()
    _, loss = loop(idx, targets=torch.roll(idx, -1, dims=1))
    loss.backward()
    assert loop.gates.grad is not None
    assert (loop.gates.grad.abs().sum(dim=1) > 0).all(), "every gate a_0..a_N must get a gradient"

    opt = loop.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95), device_type='cpu')
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    assert any(p is loop.gates for p in no_decay['params'])
    assert not any(p is loop.gates for p in decay['params'])
    # decay holds exactly the weight matrices; every trainable parameter is in one group
    named = dict(loop.named_parameters())
    assert {id(p) for p in decay['params']} == {id(p) for n, p in named.items() if p.dim() == 2 and n != 'gates'}
    assert len(decay['params']) + len(no_decay['params']) == len(named)


def test_frozen_gates_are_not_trained():
    model = make(LoopGPT, n_loop=2, learn_gates=False)
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu')
    assert not any(p is model.gates for g in opt.param_groups for p in g['params'])
    assert not model.gates.requires_grad


# 5. loss at init ~ ln(vocab); a tiny model overfits one batch
@pytest.mark.parametrize('cls,kw', [(GPT, {}), (LoopGPT, {'n_loop': 3})])
def test_init_loss_and_overfit(cls, kw):
    model = make(cls, **kw)
    idx = random_idx(B=4)
    targets = torch.roll(idx, -1, dims=1)
    _, loss0 = model(idx, targets)
    assert abs(loss0.item() - math.log(SMALL['vocab_size'])) < 0.1

    model.train()
    opt = model.configure_optimizers(0.0, 3e-3, (0.9, 0.95), 'cpu')
    for _ in range(40):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * loss0.item()


# 6. causality: token t only affects logits at positions >= t
@pytest.mark.parametrize('cls,kw', [(GPT, {}), (LoopGPT, {'n_loop': 3, 'n_prelude': 1, 'n_coda': 1})])
def test_causality(cls, kw):
    model = make(cls, **kw)
    if cls is LoopGPT:
        randomize_gates(model)
    idx = random_idx(B=1)
    base = all_logits(model, idx)
    for t in [0, 5, 15]:
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % SMALL['vocab_size']
        out = all_logits(model, changed)
        assert torch.equal(out[:, :t], base[:, :t])
        assert (out[:, t] - base[:, t]).abs().max() > 0


# prelude / coda: zero-length is the old model; non-zero runs unshared blocks around the loop
def test_empty_prelude_and_coda_change_nothing():
    plain = make(LoopGPT, n_loop=2)
    explicit = make(LoopGPT, seed=9, n_loop=2, n_prelude=0, n_coda=0)
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    explicit.load_state_dict(plain.state_dict())
    idx = random_idx()
    assert torch.equal(all_logits(plain, idx), all_logits(explicit, idx))


def test_prelude_and_coda_wrap_the_loop():
    model = make(LoopGPT, n_layer=2, n_loop=2, n_prelude=1, n_coda=1)
    randomize_gates(model)
    idx = random_idx()
    x = model.transformer.prelude[0](model.embed(idx))
    h = model.transformer.coda[0](model.loop(x))
    torch.testing.assert_close(all_logits(model, idx), model.lm_head(model.transformer.ln_f(h)), atol=1e-6, rtol=0)
    # each extra block adds the parameters of one block
    base = make(LoopGPT, n_layer=2, n_loop=2)
    block = sum(p.numel() for p in base.transformer.h[0].parameters())
    assert model.get_num_params() - base.get_num_params() == 2 * block
    assert model.config.effective_depth == model.depth() == 1 + 2 * 2 + 1


def test_init_scales_residual_projections_by_the_depth_run():
    """GPT-2's init, with depth counting the loops: c_proj ~ N(0, 0.02 / sqrt(2 * 8)) for a
    prelude block, 2 blocks looped 3 times and a coda block; other matrices N(0, 0.02)."""
    model = make(LoopGPT, n_layer=2, n_loop=3, n_prelude=1, n_coda=1)
    named = dict(model.named_parameters())
    c_proj = torch.cat([p.flatten() for n, p in named.items() if n.endswith('c_proj.weight')])
    other = torch.cat([p.flatten() for n, p in named.items() if p.dim() == 2 and n != 'gates'
                       and not n.endswith('c_proj.weight')])
    assert c_proj.numel() == 4 * 5 * SMALL['n_embd'] ** 2  # attn (C x C) and mlp (C x 4C) of 4 blocks
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05)
    assert other.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(not p.any() for n, p in named.items() if n.endswith('.bias'))
    assert all((p == 1).all() for n, p in named.items() if n.endswith(('ln_1.weight', 'ln_2.weight', 'ln_f.weight')) or n == 'gates')


def test_gpt_refuses_loop_settings():
    with pytest.raises(ValueError, match='LoopGPT'):
        GPT(GPTConfig(**{**SMALL, 'n_loop': 2}))


def test_readout_after_last_iteration_is_the_model_loss():
    model = make(LoopGPT, n_layer=1, n_loop=3, n_prelude=1, n_coda=1)
    randomize_gates(model)
    idx = random_idx()
    targets = torch.roll(idx, -1, dims=1)
    losses = model.readout_losses(idx, targets)
    assert len(losses) == 4
    assert losses[-1] == pytest.approx(model(idx, targets)[1].item(), abs=1e-6)


@pytest.mark.parametrize('kw', [{}, dict(input_injection=True, loop_norm=True)])
def test_iterating_one_step_at_a_time_is_the_loop(kw):
    """iterate, with which engine.py's per-token exit steps through the loop, resumes loop() at
    iteration n: one iteration at a time gives loop's states h_1 .. h_N exactly, past the
    trained count too."""
    model = make(LoopGPT, n_loop=3, **kw)
    randomize_gates(model)
    if 'inject' in model.transformer:  # away from [I 0], so that x_0 takes part
        with torch.no_grad():
            model.transformer.inject.weight.add_(torch.randn_like(model.transformer.inject.weight) * 0.1)
    x0 = model.embed(random_idx())
    states = []
    with torch.no_grad():
        model.loop(x0, n_loop=5, states=states)
        h = model.gate(0) * x0
        assert torch.equal(h, states[0])
        for n in range(1, 6):
            h = model.iterate(h, x0, n)
            assert torch.equal(h, states[n]), n


def test_test_time_n_loop():
    model = make(LoopGPT, n_loop=2)
    randomize_gates(model)
    idx = random_idx()
    trained = all_logits(model, idx)
    model.n_loop = 4  # gates a_3, a_4 reuse a_2
    more = all_logits(model, idx)
    assert (more - trained).abs().max() > 1e-4
    assert model.depth() == 4 * SMALL['n_layer']
    # independently: a model trained with 4 loops whose gates a_3, a_4 are copies of a_2
    four = make(LoopGPT, n_loop=4)
    a = model.gates.detach()
    four.load_state_dict({**model.state_dict(), 'gates': torch.cat((a, a[2:], a[2:]))})
    torch.testing.assert_close(more, all_logits(four, idx), atol=1e-6, rtol=0)
    model.n_loop = 2
    assert torch.equal(all_logits(model, idx), trained)


def test_flops_per_token_by_hand():
    """PaLM's count, written out: 6 FLOPs per weight used (2 forward, 4 backward) and
    12 * C * T per block for attention (4 forward, 8 backward), with the parameters
    counted by hand (GPT-2 blocks hold 12 C^2 + 13 C; wpe is not counted, as nanoGPT)."""
    V, C, T = SMALL['vocab_size'], SMALL['n_embd'], SMALL['block_size']
    block = 12 * C * C + 13 * C
    once = V * C + 2 * C  # wte (= lm_head) and ln_f
    gpt = make(GPT, n_layer=3)
    assert gpt.flops_per_token() == 6 * (once + 3 * block) + 12 * 3 * C * T
    assert gpt.flops_per_token(seq_len=4) == 6 * (once + 3 * block) + 12 * 3 * C * 4
    # LoopGPT: the k looped blocks (and the injection map, 2 C^2) count once per iteration run,
    # the prelude, coda, embeddings and the N + 1 gates once; with bptt_loops = b only the
    # last b iterations have a backward pass
    k, N, P, Q, b = 2, 3, 1, 1, 2
    loop = make(LoopGPT, n_layer=k, n_loop=N, n_prelude=P, n_coda=Q, input_injection=True, bptt_loops=b)
    looped, unshared = k * block + 2 * C * C, once + (P + Q) * block + (N + 1) * C
    for r in (1, 3, 5):
        g = min(b, r)
        forward = 2 * (unshared + r * looped) + 4 * C * T * (P + Q + r * k)
        backward = 4 * (unshared + g * looped) + 8 * C * T * (P + Q + g * k)
        assert loop.flops_per_token(n_loop=r) == forward + backward, r
    assert loop.flops_per_token() == loop.flops_per_token(n_loop=N)


def test_flops_count_loops():
    gpt = make(GPT, n_layer=4)
    loop = make(LoopGPT, n_layer=2, n_loop=2)
    # same depth: attention FLOPs equal; weight FLOPs equal up to the gates and the shared weights
    assert loop.flops_per_token() - gpt.flops_per_token() == 6 * loop.gates.numel()


# 7. recurrent-depth training: input injection, truncated backprop, drawn loop counts

def shared_stack(model):
    def B(h):  # the shared stack, applied once
        for block in model.transformer.h:
            h = block(h)
        return h
    return B


def test_input_injection_starts_as_the_paper_loop_and_follows_its_equation():
    plain = make(LoopGPT, n_loop=3)
    model = make(LoopGPT, n_loop=3, input_injection=True)
    randomize_gates(plain)
    C = SMALL['n_embd']
    assert torch.equal(model.transformer.inject.weight, torch.eye(C, 2 * C))  # W = [I 0]
    assert model.get_num_params() - plain.get_num_params() == 2 * C * C
    model.load_state_dict({**plain.state_dict(), 'transformer.inject.weight': model.transformer.inject.weight})
    idx = random_idx()
    torch.testing.assert_close(all_logits(model, idx), all_logits(plain, idx), atol=1e-6, rtol=0)

    with torch.no_grad():  # any W: h_n = h_{n-1} + a_n ⊙ (B(W_h h_{n-1} + W_x x_0) - h_{n-1})
        model.transformer.inject.weight.normal_(0, 0.5)
    W_h, W_x = model.transformer.inject.weight.detach().split(C, dim=1)
    a, B = model.gates.detach(), shared_stack(model)
    x0 = model.embed(idx)
    h = a[0] * x0
    for n in range(1, 4):
        h = h + a[n] * (B(h @ W_h.T + x0 @ W_x.T) - h)
    torch.testing.assert_close(model.loop(x0), h, atol=1e-5, rtol=0)
    torch.testing.assert_close(all_logits(model, idx), model.lm_head(model.transformer.ln_f(h)), atol=1e-5, rtol=0)
    # the map is not weight-decayed (it starts at [I 0]: decay would pull the state to 0)
    decay = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups[0]['params']
    assert not any(p is model.transformer.inject.weight for p in decay)


@pytest.mark.parametrize('inject', [False, True])
def test_loop_norm_follows_its_equation(inject):
    """h_n = LN(h_{n-1} + a_n ⊙ (B(u) - h_{n-1})), u = h_{n-1} or W [h_{n-1}; x_0], one LayerNorm for
    every iteration, h_0 = a_0 ⊙ x_0 left as it is; computed here with F.layer_norm."""
    model = make(LoopGPT, n_loop=3, loop_norm=True, input_injection=inject)
    plain = make(LoopGPT, n_loop=3, input_injection=inject)
    C = SMALL['n_embd']
    assert model.get_num_params() - plain.get_num_params() == 2 * C  # the norm's gain and bias
    assert make(LoopGPT, n_loop=3, loop_norm=True, bias=False).get_num_params() - \
        make(LoopGPT, n_loop=3, bias=False).get_num_params() == C
    randomize_gates(model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a gain and bias away from (1, 0), and an injection map away from [I 0]
        model.transformer.ln_loop.weight.copy_(torch.rand(C, generator=g) + 0.5)
        model.transformer.ln_loop.bias.copy_(torch.randn(C, generator=g) * 0.3)
        if inject:
            model.transformer.inject.weight.add_(torch.randn(C, 2 * C, generator=g) * 0.1)
    ln = model.transformer.ln_loop
    a, B = model.gates.detach(), shared_stack(model)
    idx = random_idx()
    x0 = model.embed(idx)
    h = a[0] * x0
    for n in range(1, 4):
        u = model.transformer.inject(torch.cat((h, x0), dim=-1)) if inject else h
        h = F.layer_norm(h + a[n] * (B(u) - h), (C,), ln.weight, ln.bias, eps=1e-5)
    torch.testing.assert_close(model.loop(x0), h, atol=1e-5, rtol=0)
    torch.testing.assert_close(all_logits(model, idx), model.lm_head(model.transformer.ln_f(h)), atol=1e-5, rtol=0)
    # the norm is a 1-D parameter: not weight-decayed
    decay = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 'cpu').param_groups[0]['params']
    assert not any(p is ln.weight or p is ln.bias for p in decay)


def test_loop_norm_off_adds_nothing():
    """loop_norm=False is the model without the option: the same parameters, the same outputs."""
    default, off = make(LoopGPT, n_loop=3), make(LoopGPT, n_loop=3, loop_norm=False)
    assert 'transformer.ln_loop.weight' not in dict(default.named_parameters())
    assert all(torch.equal(p, q) for p, q in zip(default.state_dict().values(), off.state_dict().values()))
    idx = random_idx()
    assert torch.equal(all_logits(default, idx), all_logits(off, idx))


@pytest.mark.parametrize('inject', [False, True])
def test_bptt_gradients_are_those_of_the_last_k_iterations(inject):
    N, k = 4, 2
    model = make(LoopGPT, n_loop=N, bptt_loops=k, input_injection=inject, n_coda=1).train()
    randomize_gates(model)
    if inject:  # away from [I 0], where W_x = 0 lets no gradient reach x_0
        with torch.no_grad():
            model.transformer.inject.weight.add_(torch.randn_like(model.transformer.inject.weight) * 0.1)
    idx = random_idx()
    targets = torch.roll(idx, -1, dims=1)
    model(idx, targets)[1].backward()
    got = {n: p.grad for n, p in model.named_parameters()}

    # independently: the same forward, with the state entering iteration N-k+1 detached
    ref = copy.deepcopy(model)
    ref.zero_grad(set_to_none=True)
    a, B = ref.gates, shared_stack(ref)
    x0 = ref.embed(idx)
    W = ref.transformer.inject if inject else (lambda hx: hx[..., :SMALL['n_embd']])
    h = a[0] * x0
    for n in range(1, N + 1):
        if n == N - k + 1:
            h = h.detach()
        h = h + a[n] * (B(W(torch.cat((h, x0), dim=-1))) - h)
    loss = ref.head(ref.transformer.coda[0](h), targets)[1]
    assert loss.item() == pytest.approx(model(idx, targets)[1].item(), abs=1e-6)
    loss.backward()
    for name, p in ref.named_parameters():  # no gradient at all is a gradient of zeros
        zero = torch.zeros_like(p)
        torch.testing.assert_close(got[name] if got[name] is not None else zero,
                                   p.grad if p.grad is not None else zero, atol=1e-6, rtol=1e-5, msg=name)
    # what only the early iterations used gets no gradient: the gates a_0 .. a_{N-k}, and
    # without injection the position embeddings (x_0 enters only h_0)
    assert not got['gates'][:N - k + 1].any() and got['gates'][N - k + 1:].abs().sum(dim=1).gt(0).all()
    assert (got['transformer.wpe.weight'] is not None and got['transformer.wpe.weight'].any()) == inject
    # eval and no_grad: all iterations, as without bptt_loops
    full = make(LoopGPT, n_loop=N, input_injection=inject, n_coda=1)
    full.load_state_dict(model.state_dict())
    assert torch.equal(all_logits(model.eval(), idx), all_logits(full, idx))


def test_bptt_through_every_iteration_changes_nothing():
    model = make(LoopGPT, n_loop=3).train()
    same = make(LoopGPT, n_loop=3, bptt_loops=3).train()  # k >= N: nothing to truncate
    same.load_state_dict(model.state_dict())
    idx = random_idx()
    for m in (model, same):
        m(idx, torch.roll(idx, -1, dims=1))[1].backward()
    for (name, p), q in zip(model.named_parameters(), same.parameters()):
        assert torch.equal(p.grad, q.grad), name


def test_drawn_loop_counts():
    fixed = make(LoopGPT, n_loop=3)
    assert fixed.draw_n_loop(np.random.default_rng(0)) == 3
    model = make(LoopGPT, n_loop=3, loop_sampling='poisson')
    draws = [model.draw_n_loop(np.random.default_rng([1, 2, it])) for it in range(4000)]
    assert draws == [model.draw_n_loop(np.random.default_rng([1, 2, it])) for it in range(4000)]  # (seed, it) only
    assert min(draws) == 1 and max(draws) <= 12 and len(set(draws)) >= 6
    assert np.mean(draws) == pytest.approx(3, abs=0.1)  # mean n_loop
    idx = random_idx()
    # a call's n_loop is the same as setting the attribute (whose gates past N test_test_time_n_loop checks)
    randomize_gates(model)
    for n in (1, 5):
        by_call = model(idx, torch.zeros_like(idx), n_loop=n)[0]
        model.n_loop = n
        assert torch.equal(by_call, all_logits(model, idx))
        model.n_loop = 3


def test_flops_count_the_iterations_run():
    model = make(LoopGPT, n_layer=2, n_loop=2)
    step = make(LoopGPT, n_layer=2, n_loop=3).flops_per_token() - make(LoopGPT, n_layer=2, n_loop=2).flops_per_token()
    gate = 6 * SMALL['n_embd']  # the 3-loop model has one more gate
    assert model.flops_per_token(n_loop=3) - model.flops_per_token() == step - gate
    # bptt_loops = 1 of 3: two iterations forward only, i.e. a third of the cost of a full one
    truncated = make(LoopGPT, n_layer=2, n_loop=2, bptt_loops=1)
    assert truncated.flops_per_token(n_loop=3) == model.flops_per_token(n_loop=3) - 2 * (step - gate) * 2 // 3


# 8. from_pretrained matches Hugging Face's GPT-2 on a locally saved random model
def test_from_pretrained_matches_huggingface(tmp_path):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(n_positions=32, n_embd=48, n_layer=2, n_head=4, vocab_size=101,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # HF zero-inits biases and LayerNorm; randomise all to test every mapping
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    hf.save_pretrained(tmp_path)

    model = GPT.from_pretrained(str(tmp_path)).eval()
    assert model.config.vocab_size == 101 and model.config.block_size == 32
    idx = random_idx(B=2, T=32, vocab=101)
    with torch.no_grad():
        expected = hf(idx).logits
    torch.testing.assert_close(all_logits(model, idx), expected, atol=1e-5, rtol=1e-5)


# the paper configs
PAPER_PARAMS = {'gpt2': 123.7, 'loop6': 81.2, 'loop4': 67.0, 'loop1': 45.7, 'gpt6': 81.2, 'gpt4': 67.0, 'gpt1': 45.7}


@pytest.mark.parametrize('name', sorted(PAPER_PARAMS))
def test_paper_config_param_counts(name):
    cfg = runpy.run_path(os.path.join(CONFIGS_DIR, f'{name}.py'))
    args = {k: cfg[k] for k in ('n_layer', 'n_head', 'n_embd', 'n_loop', 'bias', 'block_size', 'dropout')}
    model_type = 'loop' if cfg['n_loop'] > 1 else 'gpt'
    with torch.device('meta'):  # no memory, no init cost: only shapes are needed
        model = build_model(model_type, dict(args, vocab_size=50304))
    assert round(model.get_num_params() / 1e6, 1) == PAPER_PARAMS[name]
    assert cfg['block_size'] == 1024 and cfg['dataset'] == 'openwebtext'
    assert cfg['batch_size'] * cfg['block_size'] * cfg['gradient_accumulation_steps'] == 491520
    if name in ('loop6', 'loop4', 'gpt2'):
        assert model.depth() == 12
