"""
Inference for the models of model.py: the KV cache and its loop rule, generation with
sampling, per-token exit, and teacher-forced scoring along the path generation takes.
model.py computes; this file decides what to keep and when to stop (nanochat's split
between gpt.py and engine.py).

    from engine import ExitRule, generate
    idx = generate(model, idx, max_new_tokens=100, temperature=0.8, top_k=200)
    idx, loops = generate(model, idx, 100, exit=ExitRule(5e-4), kv_budget=1)
    for tokens, loops in stream(model, idx, 100): ...       # the same, one step at a time

Shapes in comments: B batch, T sequence length, C n_embd, nh heads, hs head size, V vocab.
"""

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from model import LoopGPT


# -----------------------------------------------------------------------------
# KV cache


class KVCache:
    """
    Keys and values of earlier tokens, for fast generation: one slot per attention call of a
    forward pass, as model.py numbers them (LoopGPT.first_slot): the prelude's, the coda's,
    then those of loop iteration 1, 2, ... A looped block sees a new state in every iteration
    and so makes new keys and values, which is why a full cache grows with the loop count.

    kv_budget = k bounds it: iteration n stores its keys and values in group g(n) of n_layer
    slots, of G groups in all,

        g(n) = n,             G = N              k = 0: one group per iteration (the full cache)
        g(n) = min(n, k),     G = min(k, N)      k >= 1: iterations 1 .. k-1 keep their own
                                                 groups, iterations k, k+1, ... share the last

    so a later token, at iteration n, reads each earlier token s through group g(n): its keys
    and values of iteration n while n < k, and from iteration k on those of the last iteration
    s ran (N_s: the loop count, or its exit). k = 1 keeps only each token's final keys and
    values, the anchors' last-iteration cache; k = 2 is "first + latest": iteration 1, which
    reads keys made from the embeddings h_0 = a_0 ⊙ x_0, keeps its own. A test-time n_loop
    above the trained count adds no group. The prelude and coda keep a slot each.

    Per-token exit ("latest", Huginn's rule): a token that stopped at m < N shows later tokens
    its keys and values of iteration m in every group above g(m) (carry_latest), so a token at
    iteration n reads it at iteration min(n, m) while n < k, and at m from k on.

    A prompt runs in one forward pass: within it, tokens read each other at the same
    iteration, the model's own forward exactly; what stays for later tokens is what g keeps.
    """

    def __init__(self, model, batch_size, max_len, kv_budget=0):
        cfg = model.config
        N = model.n_loop  # the iterations a forward runs now (a GPT: one pass of its n_layer blocks)
        self.n_fixed = cfg.n_prelude + cfg.n_coda  # slots outside the loop
        self.n_layer, self.budget = cfg.n_layer, kv_budget
        self.n_groups = N if kv_budget == 0 else min(kv_budget, N)
        self.shape = (self.n_fixed + self.n_groups * cfg.n_layer, batch_size, cfg.n_head, max_len,
                      cfg.n_embd // cfg.n_head)
        self.kv = None  # keys and values, (2, *shape): allocated at the first update, in the dtype attention runs in
        self.pos = 0  # tokens already cached (the same in every slot)
        self.rows = slice(None)  # the batch rows this object reads and writes: all (see select)

    def group(self, n):
        """g(n), 1-based, for an int or a tensor of iteration counts."""
        if self.budget == 0:
            return n
        return min(n, self.budget) if isinstance(n, int) else n.clamp(max=self.budget)

    def where(self, slot):
        """The storage of the model's slot: the loop's slots folded into their groups."""
        j = slot - self.n_fixed
        if j < 0:
            return slot
        n, i = j // self.n_layer + 1, j % self.n_layer  # iteration n, its layer i
        g = self.group(n)
        assert g <= self.n_groups, f"iteration {n} runs past the {self.n_groups} iterations this cache was made for"
        return self.n_fixed + (g - 1) * self.n_layer + i

    def update(self, slot, k, v):
        """Store k, v (B, nh, T, hs) after the cached tokens; return all keys and values so far."""
        if self.kv is None:
            self.kv = torch.zeros((2,) + self.shape, device=k.device, dtype=k.dtype)
            self.groups = torch.arange(1, self.n_groups + 1, device=k.device)  # for carry_latest
        s, end = self.where(slot), self.pos + k.size(2)
        self.kv[0, s, self.rows, :, self.pos:end] = k
        self.kv[1, s, self.rows, :, self.pos:end] = v
        return self.kv[0, s, self.rows, :, :end], self.kv[1, s, self.rows, :, :end]

    def advance(self, n):
        """Called once per forward pass, after every slot has stored its n new tokens."""
        self.pos += n

    def select(self, rows):
        """This cache as the batch rows `rows` (int64 indices, on the device) see it, for a forward
        pass of those rows alone: the same buffers, read and written only at their rows."""
        view = object.__new__(KVCache)
        view.__dict__.update(self.__dict__, rows=rows)
        return view

    def carry_latest(self, loops, m=None):
        """The latest rule at the newest token: in each row that stopped at m = loops[row] (B,),
        the loop groups above g(m) take group g(m)'s keys and values. m: the iteration every row
        stopped at, if they all stopped together (one slice copy instead of a gather)."""
        G, L = self.n_groups, self.n_layer
        kv = self.kv[:, self.n_fixed:].unflatten(1, (G, L))[..., self.pos, :]  # (2, G, L, B, nh, hs), a view
        if m is not None:
            g = self.group(m)
            kv[:, g:] = kv[:, g - 1:g]
            return
        src = torch.minimum(self.groups[:, None], self.group(loops)[None]) - 1  # (G, B): the group to show
        kv.copy_(kv.gather(1, src[None, :, None, :, None, None].expand_as(kv)))

    def nbytes(self, dtype=torch.bfloat16):
        """Memory of keys and values in `dtype` (they are stored in the dtype attention runs in)."""
        return 2 * math.prod(self.shape) * torch.empty((), dtype=dtype).element_size()


# -----------------------------------------------------------------------------
# per-token exit


EXIT_CRITERIA = ('kl', 'entropy', 'state')  # ExitRule.criterion: step_with_exit has their equations


@dataclass
class ExitRule:
    """When a generated token stops iterating (step_with_exit has the rule)."""
    threshold: float       # a token stops once its criterion is below this (nats for kl and entropy; a ratio for state)
    min_loops: int = 1     # but not before this many iterations
    criterion: str = 'kl'  # 'kl': KL(p_n ‖ p_{n-1}), Huginn's rule; 'entropy': H(p_n); 'state': ‖h_n − h_{n-1}‖ / ‖h_n‖


def exit_measure(criterion, h_prev, h, logp_prev, logp):
    """d_n of each row (R,), the number step_with_exit compares with the threshold after iteration
    n: h_prev, h (R, 1, C) the loop states h_{n-1}, h_n; logp_prev, logp (R, 1, V) log p_{n-1},
    log p_n (None for 'state', which reads out nothing)."""
    if criterion == 'state':  # δ_n = ‖h_n − h_{n-1}‖ / ‖h_n‖, the norms over the token's C channels, in fp32
        h_prev, h = h_prev.float(), h.float()
        return ((h - h_prev).norm(dim=-1) / h.norm(dim=-1)).view(-1)
    if criterion == 'kl':  # Σ_v p_n(v) (log p_n(v) − log p_{n-1}(v))
        return F.kl_div(logp_prev, logp, reduction='none', log_target=True).sum(-1).view(-1)
    return -(logp.exp() * logp).sum(-1).view(-1)  # H(p_n) = −Σ_v p_n(v) log p_n(v)


def read_out(model, h, kv_cache):
    """The logits (B, 1, V) of a loop state h (B, 1, C): the coda (through the cache), then ln_f
    and lm_head outside autocast, in the weights' precision (fp32 under bf16 autocast): the exit
    rule compares these, and a bf16 ulp of a logit near 10 (0.0625) is alone a KL of ~5e-4."""
    z = model.run_blocks(model.transformer.coda, h, kv_cache, model.config.n_prelude)
    if not torch.is_autocast_enabled(h.device.type):
        return model.lm_head(model.transformer.ln_f(z))
    with torch.autocast(h.device.type, enabled=False):
        return model.lm_head(model.transformer.ln_f(z.to(model.lm_head.weight.dtype)))


@torch.no_grad()
def step_with_exit(model, idx, kv_cache, exit):
    """One new token per row, idx (B, 1), through the KV cache, each row iterating until its
    prediction has settled. Returns the logits (B, 1, V) and the iterations each row ran (B,).
    p_n = softmax(read_out(h_n)) is the prediction after iteration n (p_0: of h_0, before any
    iteration). After iteration n >= exit.min_loops a row stops when

        kl:       KL(p_n ‖ p_{n-1}) = Σ_v p_n(v) (log p_n(v) − log p_{n-1}(v)) < threshold
        entropy:  H(p_n) = −Σ_v p_n(v) log p_n(v) < threshold
        state:    δ_n = ‖h_n − h_{n-1}‖ / ‖h_n‖ < threshold      (norms over the C channels)

    and it stops at N = model.n_loop in any case. KL is Huginn's rule (its model card uses
    5e-4): stop once an iteration no longer changes the prediction. At n = 1 it compares p_1
    with the read-out of h_0, the embeddings (after the prelude, if any): a real prediction,
    if a poor one, so the rule needs no special case. Entropy needs only p_n: it can stop a
    token after one iteration even where p_0 says nothing. kl and entropy read out (coda,
    ln_f, lm_head: C x V) after every iteration; state, Huginn's latent-diff, reads the loop
    state alone and reads out once, when the row stops (or at N): at a large vocabulary the
    read-out costs as much as an iteration, and only state saves it.

    A stopped row leaves the batch of the later iterations (its coda slots keep what h_m gave,
    its later loop groups get carry_latest's copies), and nothing it holds changes what the
    other rows compute. The loop runs on the device: the one host sync per iteration is
    nonzero(), which gives the rows still running and says whether any is."""
    assert idx.size(1) == 1 and exit.min_loops >= 1 and exit.criterion in EXIT_CRITERIA
    B, N = idx.size(0), model.n_loop
    every = exit.criterion != 'state'  # a read-out after every iteration, or only at a row's stop
    x = model.run_blocks(model.transformer.prelude, model.embed(idx, pos0=kv_cache.pos), kv_cache, 0)
    h = model.gate(0) * x                                   # h_0 = a_0 ⊙ x_0 (LoopGPT.loop), (B, 1, C)
    logp = read_out(model, h, kv_cache).log_softmax(-1) if exit.criterion == 'kl' else None
    rows, cache = None, kv_cache    # the rows still iterating (None: all B) and the cache as they see it
    logits = loops = None           # (B, 1, V) and (B,): each row's answer and iterations, once one stops
    early = False                   # did a row stop below the last loop group (see carry_latest)?
    together = None                 # the iteration all rows stopped at, if they stopped at once
    for n in range(1, N + 1):
        h_prev, h = h, model.iterate(h, x, n, cache)        # the loop rule, h_{n-1} -> h_n
        z = read_out(model, h, cache) if every or n == N else None  # (R, 1, V)
        if rows is not None and z is not None:
            logits[rows], loops[rows] = z, n                # a row's last write is its answer
        if n == N:
            break
        logp_n = z.log_softmax(-1) if every else None
        if n >= exit.min_loops and exit.threshold > 0:     # else no row may stop yet
            stop = exit_measure(exit.criterion, h_prev, h, logp, logp_n) < exit.threshold
            keep = (~stop).nonzero().view(-1)               # the host sync
            if len(keep) < len(h):                          # some rows stop at n
                early |= kv_cache.group(n) < kv_cache.n_groups
                if not every:                               # state: the stopping rows' one read-out
                    logits, loops = read_out_stopped(model, h, kv_cache, rows, stop, len(keep), n, logits, loops)
                if rows is None:                            # the first to stop
                    together = n if len(keep) == 0 else None
                    if every:                               # z holds every row's answer
                        logits, loops = z, torch.full((B,), n, device=idx.device)
                    rows = keep
                else:
                    rows = rows[keep]
                if len(keep) == 0:
                    break
                h, x = h[keep], x[keep]
                logp_n = logp_n[keep] if every else None
                cache = kv_cache.select(rows)
        logp = logp_n
    if rows is None:  # no row stopped early: all ran N iterations
        logits, loops = z, torch.full((B,), N, device=idx.device)
    if early:
        kv_cache.carry_latest(loops, together)
    kv_cache.advance(1)
    return logits, loops


def read_out_stopped(model, h, kv_cache, rows, stop, n_keep, n, logits, loops):
    """For the state criterion: read out the rows that stop at iteration n (stop (R,), of the rows
    `rows` of the batch, None: all; n_keep of them go on) and write their answers into logits
    (B, 1, V) and loops (B,), made here at the first stop (loops N where no row has stopped yet).
    A stable sort puts the stopping rows last, in order, without another host sync."""
    done = torch.argsort(stop.to(torch.uint8), stable=True)[n_keep:]
    where = done if rows is None else rows[done]            # their rows of the batch
    z = read_out(model, h[done], kv_cache.select(where))    # (D, 1, V): the coda's slots see these rows alone
    if logits is None:
        B = h.size(0)  # rows is None at the first stop: h has every row
        logits = z.new_empty((B,) + z.shape[1:])
        loops = torch.full((B,), model.n_loop, device=h.device)
    logits[where], loops[where] = z, n
    return logits, loops


# -----------------------------------------------------------------------------
# generation


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """logits (B, V) -> next token ids (B, 1)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        assert top_k >= 1, "top_k must be at least 1"
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], float('-inf'))
    if top_p is not None and top_p < 1.0:  # 1.0 keeps all (fp32 cumsums can reach 1 early)
        assert top_p > 0, "top_p must be in (0, 1]"
        # keep the smallest set of most likely tokens whose probability reaches top_p
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the likelier tokens already reach top_p
        sorted_logits = sorted_logits.masked_fill(drop, float('-inf'))
        logits = torch.full_like(logits, float('-inf')).scatter(1, sorted_idx, sorted_logits)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)


def check_exit(model, exit, use_cache=True):
    if exit is not None and not isinstance(model, LoopGPT):
        raise ValueError("per-token exit stops a LoopGPT's loop early; a GPT does not loop")
    if exit is not None and not use_cache:
        raise ValueError("per-token exit reads stopped tokens' keys and values from the KV cache: use_cache=True")


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, exit=None,
             kv_budget=0):
    """Extend idx (B, T) by max_new_tokens tokens, feeding each prediction back in.
    temperature=0 is greedy. use_cache=False recomputes the whole window every step;
    with the cache the prompt is run once and then one token per step. Both give the
    same tokens (with kv_budget = 0): once the sequence outgrows block_size the window
    slides, every position changes, and the cached path re-runs the cropped window as
    the plain path does.

    kv_budget: loop groups the cache keeps (KVCache); 0 keeps one per iteration.
    exit (an ExitRule; a LoopGPT with the cache): every predicted token stops iterating
    on its own (step_with_exit). The prompt but its last token runs all n_loop iterations.
    Returns (idx, loops) then: loops (B, max_new_tokens) the iterations that predicted
    each new token (all n_loop of them where the sliding window is re-run)."""
    steps = list(stream(model, idx, max_new_tokens, temperature, top_k, top_p, use_cache, exit, kv_budget))
    idx = torch.cat([idx] + [t for t, _ in steps], dim=1)
    return idx if exit is None else (idx, torch.stack([n for _, n in steps], dim=1))


@torch.no_grad()
def stream(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True, exit=None,
           kv_budget=0):
    """generate, one step at a time: yields (the new tokens (B, 1), the iterations that predicted
    them (B,), or None without exit: model.n_loop each), so that a caller can stop early (eval.py
    stops at a task's stop strings)."""
    check_exit(model, exit, use_cache)
    block_size = model.config.block_size
    cache = None
    for _ in range(max_new_tokens):
        loops = None
        if not use_cache or idx.size(1) > block_size:
            logits, _ = model(idx[:, -block_size:])
        else:
            if cache is None:
                cache = KVCache(model, idx.size(0), block_size, kv_budget)
            new = idx[:, cache.pos:]  # what the cache has not seen: the prompt, then the last token
            if exit is None:
                logits, _ = model(new, kv_cache=cache)
            else:
                if new.size(1) > 1:
                    model(new[:, :-1], kv_cache=cache)
                logits, loops = step_with_exit(model, new[:, -1:], cache, exit)
        if exit is not None and loops is None:  # the sliding window ran every iteration
            loops = torch.full((idx.size(0),), model.n_loop, device=idx.device)
        # in fp32: under autocast the logits are bf16, too coarse for top-p's sums and argmax's ties
        idx_next = sample_next(logits[:, -1, :].float(), temperature, top_k, top_p)
        idx = torch.cat((idx, idx_next), dim=1)
        yield idx_next, loops


@torch.no_grad()
def teacher_forced(model, idx, n_prompt=0, exit=None, kv_budget=0, kv_cache=None):
    """The predictions generation would make after each token of idx (B, T), T <= block_size,
    were idx what it generated: idx[:, :n_prompt] runs as a prompt (one forward pass through
    the cache), every later token one at a time through the cache, with the exit rule if
    given. Returns the logits (B, T - n_prompt, V) in fp32, the predictions after tokens
    n_prompt .. T-1, and the iterations each ran (B, T - n_prompt). kv_cache: an empty cache
    to use instead of KVCache(model, B, T, kv_budget)."""
    check_exit(model, exit)
    B, T = idx.shape
    cache = kv_cache if kv_cache is not None else KVCache(model, B, T, kv_budget)
    if n_prompt:
        model(idx[:, :n_prompt], kv_cache=cache)
    logits, loops = [], []
    for t in range(n_prompt, T):
        if exit is None:
            z, _ = model(idx[:, t:t + 1], kv_cache=cache)
        else:
            z, used = step_with_exit(model, idx[:, t:t + 1], cache, exit)
            loops.append(used)
        logits.append(z[:, 0].float())
    loops = torch.stack(loops, dim=1) if exit is not None else \
        torch.full((B, T - n_prompt), model.n_loop, device=idx.device)
    return torch.stack(logits, dim=1), loops
