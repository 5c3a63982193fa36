"""
GPT-2 and the looped, gated GPT of "Loop Neural Networks for Parameter Sharing"
(arXiv 2409.14199), in one file.

GPT      : GPT-2 exactly as OpenAI / Hugging Face define it (pre-LN blocks, tied
           lm_head, tanh-GELU), written in nanoGPT's style and parameter names.
LoopGPT  : the same model whose stack of blocks B is applied n_loop times, with a
           learned gate vector a_n per iteration. Everything the two share
           (embeddings, blocks, head, optimizer) lives in GPT; LoopGPT only adds the
           gates and overrides `body`, the loop.

Generation (the KV cache, sampling, per-token exit) is in engine.py:
`from engine import generate; generate(model, idx, max_new_tokens)`. The attention
here only takes a cache object and stores its keys and values where it says.

Shapes in comments: B batch, T sequence length, C n_embd, nh heads, hs head size.
"""

import inspect
import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for speed
    n_layer: int = 12        # blocks in the stack (for LoopGPT: the shared, looped blocks)
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True        # biases in Linear and LayerNorm, as GPT-2
    n_loop: int = 1          # LoopGPT: how many times the shared stack is applied
    n_prelude: int = 0       # LoopGPT: unshared blocks before the loop
    n_coda: int = 0          # LoopGPT: unshared blocks after the loop
    learn_gates: bool = True # LoopGPT: False freezes the gates at 1 (ablation)
    input_injection: bool = False  # LoopGPT: feed x_0 into every iteration (LoopGPT.loop_input)
    loop_norm: bool = False        # LoopGPT: a LayerNorm on the state after every iteration (LoopGPT.norm_state)
    loop_sampling: str = 'fixed'   # LoopGPT training: 'fixed' n_loop, or 'poisson' (LoopGPT.draw_n_loop)
    bptt_loops: int = 0            # LoopGPT training: backprop through the last k iterations only; 0: all

    @property
    def effective_depth(self):
        """Blocks a token passes through in one forward pass."""
        return self.n_prelude + self.n_layer * self.n_loop + self.n_coda


# -----------------------------------------------------------------------------
# GPT-2 building blocks


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, kv_cache=None, slot=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(slot, k, v)  # (B, nh, Tk, hs), Tk = cached + T
        Tk = k.size(2)
        if Tk == T:    # no earlier tokens: the usual causal mask
            mask, causal = None, True
        elif T == 1:   # one new token attends to everything before it
            mask, causal = None, False
        else:          # a chunk after cached tokens: query i sees keys up to Tk - T + i
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=Tk - T)
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh')  # GPT-2's "gelu_new"; exact GELU would not match its weights
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, slot=None):
        x = x + self.attn(self.ln_1(x), kv_cache, slot)
        x = x + self.mlp(self.ln_2(x))
        return x


# -----------------------------------------------------------------------------
# GPT


class GPT(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        if type(self) is GPT and (config.n_loop, config.n_prelude, config.n_coda) != (1, 0, 0):
            raise ValueError("GPT does not loop: use LoopGPT for n_loop > 1, n_prelude or n_coda.")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        self.n_loop = config.n_loop  # 1: a GPT does not loop; LoopGPT lets you change it
        self.init_weights()

    def init_weights(self):
        """GPT-2 init: N(0, 0.02), and residual projections scaled down by 1/sqrt(2 * depth)
        so the residual stream does not grow with depth. Depth counts every block a token
        passes through, loops included: that is how many times c_proj adds into the stream."""
        resid_std = 0.02 / math.sqrt(2 * self.config.effective_depth)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):
                torch.nn.init.normal_(p, mean=0.0, std=resid_std)
            elif p.dim() == 2 and name != 'gates':  # Linear and Embedding (wte is lm_head)
                torch.nn.init.normal_(p, mean=0.0, std=0.02)
            elif name.endswith('.bias'):
                torch.nn.init.zeros_(p)
            else:  # LayerNorm gains and loop gates
                torch.nn.init.ones_(p)

    def get_num_params(self, non_embedding=True):
        """Parameter count. Like nanoGPT, non_embedding=True leaves out the position
        embeddings but keeps wte, which is also the lm_head."""
        n_params = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n_params -= self.transformer.wpe.weight.numel()
        return n_params

    # --- forward: embed -> body -> head. LoopGPT overrides body only. ---

    def forward(self, idx, targets=None, kv_cache=None, n_loop=None):
        """idx (B, T) token ids -> (logits, loss). With targets, logits for every position
        (B, T, vocab) and the mean cross entropy (targets of -1 are ignored); without,
        logits of the last position only (B, 1, vocab), all that sampling needs.
        n_loop: loop iterations of this call (LoopGPT only; default self.n_loop)."""
        x = self.embed(idx, pos0=kv_cache.pos if kv_cache is not None else 0)
        x = self.body(x, kv_cache, n_loop)
        if kv_cache is not None:
            kv_cache.advance(idx.size(1))
        return self.head(x, targets)

    def embed(self, idx, pos0=0):
        """Token + position embedding: (B, T) -> (B, T, C)."""
        T = idx.size(1)
        assert pos0 + T <= self.config.block_size, \
            f"cannot forward position {pos0 + T - 1}: block_size is only {self.config.block_size}"
        pos = torch.arange(pos0, pos0 + T, dtype=torch.long, device=idx.device)
        return self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))

    def body(self, x, kv_cache=None, n_loop=None):
        assert n_loop in (None, 1), "a GPT does not loop"
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i)
        return x

    def head(self, x, targets=None):
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None  # list index keeps the time dim
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def depth(self):
        """Blocks a token passes through now (the loops of LoopGPT included): also the
        number of attention calls per forward pass, each a slot of a full KV cache."""
        cfg = self.config
        return cfg.n_prelude + self.n_loop * cfg.n_layer + cfg.n_coda

    # --- training helpers ---

    # parameters that are not weight matrices to regularise, although 2-D: the loop gates, and
    # the injection map, which starts at [I 0] (decaying it would pull the state towards 0)
    NO_DECAY = ('gates', 'transformer.inject.weight')

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """AdamW that decays the weight matrices (Linear, Embedding) only. Biases, LayerNorm
        gains and loop gates are left alone: shrinking them towards 0 has no regularising
        meaning, and a gate pulled to 0 switches its loop iteration off."""
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in params if p.dim() >= 2 and n not in self.NO_DECAY]
        no_decay = [p for n, p in params if not (p.dim() >= 2 and n not in self.NO_DECAY)]
        groups = [{'params': decay, 'weight_decay': weight_decay},
                  {'params': no_decay, 'weight_decay': 0.0}]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **({'fused': True} if fused else {}))

    def flops_per_token(self, seq_len=None, n_loop=None):
        """Training FLOPs (forward + backward) per token, PaLM appendix B style: a weight
        costs 2 FLOPs per use forward and 4 backward, attention 4 * C * T per block forward
        and 8 backward. A looped block is used once per iteration: n_loop of them (default
        self.n_loop) run forward, and with bptt_loops = k only the last k run backward."""
        cfg, T = self.config, seq_len or self.config.block_size
        r = n_loop or self.n_loop
        g = min(cfg.bptt_loops, r) if cfg.bptt_loops else r  # iterations with a backward pass
        n_looped = sum(p.numel() for n, p in self.named_parameters()
                       if n.startswith(('transformer.h.', 'transformer.inject.')))
        n_once = self.get_num_params() - n_looped                 # embeddings, prelude, coda, ln_f, gates
        blocks_once = cfg.n_prelude + cfg.n_coda
        forward = 2 * (n_once + r * n_looped) + 4 * cfg.n_embd * T * (blocks_once + r * cfg.n_layer)
        backward = 4 * (n_once + g * n_looped) + 8 * cfg.n_embd * T * (blocks_once + g * cfg.n_layer)
        return forward + backward

    def crop_block_size(self, block_size):
        """Shrink the context, e.g. to fine-tune GPT-2 (1024) on shorter sequences."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    @classmethod
    def from_pretrained(cls, name_or_path, override_args=None):
        """Hugging Face GPT-2 weights ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl' or a
        local directory saved with save_pretrained) as a GPT. Needs `transformers`."""
        try:
            from transformers import GPT2LMHeadModel
        except ImportError:
            raise ImportError("from_pretrained needs Hugging Face transformers: pip install transformers") from None
        override_args = override_args or {}
        assert set(override_args) <= {'dropout'}, "only dropout can be overridden"
        hf = GPT2LMHeadModel.from_pretrained(name_or_path)
        c = hf.config
        config = GPTConfig(block_size=c.n_positions, vocab_size=c.vocab_size, n_layer=c.n_layer,
                           n_head=c.n_head, n_embd=c.n_embd, bias=True, **override_args)
        model = GPT(config)
        sd, sd_hf = model.state_dict(), hf.state_dict()
        keys = [k for k in sd_hf if not k.endswith(('.attn.bias', '.attn.masked_bias'))]  # HF's mask buffers
        assert len(keys) == len(sd), f"mismatched keys: {len(keys)} != {len(sd)}"
        # HF stores these as Conv1D, i.e. transposed Linear weights
        transposed = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
        with torch.no_grad():
            for k in keys:
                src = sd_hf[k].t() if k.endswith(transposed) else sd_hf[k]
                assert src.shape == sd[k].shape, f"{k}: {src.shape} != {sd[k].shape}"
                sd[k].copy_(src)
        return model


# -----------------------------------------------------------------------------
# LoopGPT


class LoopGPT(GPT):
    """
    GPT whose n_layer blocks are applied n_loop times with learned gates, optionally
    between n_prelude unshared blocks before the loop and n_coda after it.

    `n_loop` is an attribute: set `model.n_loop` to run more or fewer iterations than
    the model was trained with (test-time compute). Gates are indexed by iteration:
    iteration n uses a_n up to the trained count N and a_N beyond it, whether the count
    was set at test time or drawn in training (loop_sampling).
    """

    POISSON_SIGMA = 0.5  # spread of the log-normal rate in draw_n_loop, as Huginn's

    def __init__(self, config):
        super().__init__(config)
        self.transformer.prelude = nn.ModuleList([Block(config) for _ in range(config.n_prelude)])
        self.transformer.coda = nn.ModuleList([Block(config) for _ in range(config.n_coda)])
        if config.input_injection:  # W = [W_h W_x]: (C, 2C), see loop_input()
            self.transformer.inject = nn.Linear(2 * config.n_embd, config.n_embd, bias=False)
        if config.loop_norm:  # one norm for every iteration, as the blocks are shared: see norm_state()
            self.transformer.ln_loop = nn.LayerNorm(config.n_embd, bias=config.bias)
        # gates a_0 .. a_N, one vector in R^C each, starting at 1 (an ungated residual loop)
        self.gates = nn.Parameter(torch.ones(config.n_loop + 1, config.n_embd),
                                  requires_grad=config.learn_gates)
        self.init_weights()  # once more, now that prelude, coda and injection exist

    def init_weights(self):
        super().init_weights()
        if 'inject' in self.transformer:  # [I 0]: the loop starts as the paper's, without x_0
            C = self.config.n_embd
            with torch.no_grad():
                self.transformer.inject.weight.copy_(torch.eye(C, 2 * C))

    def gate(self, n):
        return self.gates[min(n, self.gates.size(0) - 1)]

    def body(self, x, kv_cache=None, n_loop=None):
        x = self.run_blocks(self.transformer.prelude, x, kv_cache, first_slot=0)
        N = n_loop or self.n_loop
        h = self.loop(x, kv_cache, N)
        return self.run_blocks(self.transformer.coda, h, kv_cache, self.config.n_prelude)  # after the prelude's slots

    def loop(self, x, kv_cache=None, n_loop=None, states=None, h=None, start=1):
        """The loop of the paper, x (B, T, C) -> h_N (B, T, C), N = n_loop or self.n_loop:

            h_0 = a_0 ⊙ x_0
            h_n = h_{n-1} + a_n ⊙ f(h_{n-1}),   f(h) = B(h) - h,   n = 1 .. N

        B is the stack of shared blocks, a_n = gate(n) the learned gate vector of iteration n.
        Unrolled, h_N = a_0 ⊙ x_0 + Σ_n a_n ⊙ f(h_{n-1}). With every a_n = 1 this is B applied
        N times, i.e. a GPT of N * n_layer blocks. The extensions, all off by default, each
        change one step of the loop and are described with it, below: input_injection
        (loop_input: what B sees), loop_norm (norm_state), bptt_loops (grad_mode).

        If `states` is a list, h_0 .. h_N are appended to it. `h` and `start` resume the loop
        at iteration `start` from h = h_{start-1} (iterate: engine.py's per-token exit)."""
        N = n_loop or self.n_loop
        if h is None:
            h = self.gate(0) * x                                # h_0 = a_0 ⊙ x_0
            if states is not None:
                states.append(h)
        for n in range(start, N + 1):
            with self.grad_mode(n, N):                          # no gradient before the last bptt_loops
                u = self.loop_input(h, x)                       # h_{n-1}, or W [h_{n-1}; x_0]
                b = self.run_blocks(self.transformer.h, u, kv_cache, self.first_slot(n))  # B(u)
                h = h + self.gate(n) * (b - h)                  # the paper's update: h_{n-1} + a_n ⊙ f(h_{n-1})
                h = self.norm_state(h)                          # LN(h_n) with loop_norm, else h_n
            if states is not None:
                states.append(h)
        return h

    # --- the loop's extensions, each one step of loop() ---

    def loop_input(self, h, x):
        """What the blocks see, u = h_{n-1} as in the paper. input_injection=True feeds the
        input x_0 to every iteration, through a learned W = [W_h W_x] (C x 2C) that starts as
        [I 0], i.e. as the paper's rule:

            u = W_h h_{n-1} + W_x x_0,   f(h) = B(W_h h + W_x x_0) - h

        With gates at 1 this is Huginn's recurrence h_n = B(W [h_{n-1}; x_0]): the state can
        settle at a fixed point that depends on x_0, so more iterations need not drift away."""
        return self.transformer.inject(torch.cat((h, x), dim=-1)) if self.config.input_injection else h

    def norm_state(self, h):
        """loop_norm=True normalises the state after every iteration, with one LayerNorm shared
        by all of them (transformer.ln_loop, with the model's bias setting):

            h_n = LN(h_{n-1} + a_n ⊙ f(h_{n-1}))

        so however many iterations run, the state the blocks see keeps the scale of a
        LayerNorm's output instead of growing (or shrinking) with each added update. h_0 is
        left at the embeddings' scale, the input every GPT block stack starts from; the coda
        and ln_f follow h_N as for every model. LayerNorm rather than RMSNorm: it is the
        norm of every other place in GPT-2, and one kind of norm keeps the model simple."""
        return self.transformer.ln_loop(h) if self.config.loop_norm else h

    def grad_mode(self, n, N):
        """bptt_loops = k > 0 (training only): iterations 1 .. N-k run without gradient, so
        backward, and the activations it keeps, cover only the last k iterations."""
        k = self.config.bptt_loops
        return torch.no_grad() if k and n <= N - k and torch.is_grad_enabled() else nullcontext()

    def iterate(self, h, x, n, kv_cache=None):
        """Iteration n of the loop alone: h_{n-1} (B, T, C) -> h_n, for a caller that steps
        through the loop itself (engine.step_with_exit)."""
        return self.loop(x, kv_cache, n, h=h, start=n)

    def first_slot(self, n):
        """The KV cache slot of iteration n's first block. Slots number the attention calls of a
        forward pass: the prelude's, the coda's, then iteration 1's, 2's, ... (engine.KVCache
        folds the loop's into the groups it keeps)."""
        return self.config.n_prelude + self.config.n_coda + (n - 1) * self.config.n_layer

    def draw_n_loop(self, rng):
        """A loop count for one training iteration, drawn with the numpy Generator rng.
        loop_sampling='poisson' is Huginn's log-normal Poisson (Geiping et al. 2025), with
        mean N = config.n_loop and a cap that bounds a step's time and memory:

            τ ~ Normal(log(N - 1) - σ²/2, σ),   r = min(1 + Poisson(e^τ), 4N),   σ = 0.5

        Most draws are near N, a few far above it: the model learns to give its answer after
        any number of iterations, which is what lets more iterations at test time help."""
        N = self.config.n_loop
        if self.config.loop_sampling == 'fixed':
            return N
        assert self.config.loop_sampling == 'poisson' and N >= 2, "loop_sampling='poisson' needs n_loop >= 2"
        sigma = self.POISSON_SIGMA
        tau = rng.normal(math.log(N - 1) - sigma ** 2 / 2, sigma)
        return int(min(1 + rng.poisson(math.exp(tau)), 4 * N))

    @staticmethod
    def run_blocks(blocks, x, kv_cache, first_slot):
        for i, block in enumerate(blocks):
            x = block(x, kv_cache, first_slot + i)
        return x

    def readout_losses(self, idx, targets):
        """Loss of reading out after every iteration: coda, ln_f and lm_head applied to
        h_n for n = 0 .. n_loop. The last one is the model's loss. Returns a list of floats."""
        states = []
        x = self.run_blocks(self.transformer.prelude, self.embed(idx), None, 0)
        self.loop(x, states=states)
        losses = []
        for h in states:
            h = self.run_blocks(self.transformer.coda, h, None, 0)
            losses.append(self.head(h, targets)[1].item())
        return losses

    def gate_means(self):
        """Mean |a_n| for n = 0 .. N, for logging."""
        return self.gates.detach().abs().mean(dim=1).tolist()


MODEL_TYPES = {'gpt': GPT, 'loop': LoopGPT}


def build_model(model_type, model_args):
    """The model a checkpoint describes: model_type 'gpt' or 'loop', model_args GPTConfig fields."""
    return MODEL_TYPES[model_type](GPTConfig(**model_args))
