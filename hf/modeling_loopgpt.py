"""
LoopGPT for Hugging Face transformers: the looped, gated GPT of "Loop Neural Networks for
Parameter Sharing" (arXiv 2409.14199), as loopgpt's model.py trains it, in one file that travels
with an exported model (export.py copies it; AutoModelForCausalLM loads it with
trust_remote_code=True). It cannot import model.py: tests/test_export.py holds the two equal.

    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)       # n_loop as trained
    model(input_ids, labels=input_ids).loss                                         # fine-tuning
    model.generate(input_ids, max_new_tokens=50, n_loop=4, kv_budget=1)            # test-time loops, bounded cache

Parameter names are model.py's (GPT-2's), so the weights load one to one. generate() runs
through LoopKVCache, engine.py's cache rule, which this file manages itself (it is not a
transformers Cache: its bounded rule overwrites entries in place, which DynamicCache cannot).
Per-token exit (engine.py's ExitRule) is not in here: every token runs n_loop iterations.

Shapes in comments: B batch, T sequence length, Tk keys, C n_embd, nh heads, hs head size.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn as nn
import transformers
from torch.nn import functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput

from .configuration_loopgpt import LoopGPTConfig

TESTED = "5.25"  # the transformers version tests/test_export.py ran this file with
VERSION = tuple(int(v) for v in transformers.__version__.split(".")[:2] if v.isdigit())
if VERSION < (5, 0):  # the tied-weights and cache interfaces this file uses are transformers 5's
    raise ImportError(f"modeling_loopgpt.py needs transformers 5 (tested with {TESTED}); this is "
                      f"transformers {transformers.__version__}: pip install 'transformers>=5.25,<6'")


class LoopKVCache:
    """
    Keys and values of earlier tokens, one slot per attention call of a forward pass: the
    prelude's, the coda's, then those of loop iteration 1, 2, ... (LoopGPTForCausalLM.first_slot).
    kv_budget = k bounds the loop's: iteration n stores its keys and values in group

        g(n) = n (k = 0, the full cache),   g(n) = min(n, k) (k >= 1)

    so iterations k, k+1, ... overwrite one group in place, and a later token reads each earlier
    one through g(n): with k = 1 only every token's last keys and values. engine.KVCache is the
    same rule. Buffers grow with the tokens, up to n_positions (the most a forward can see).
    """

    is_compileable = False

    def __init__(self, config, n_loop, kv_budget=0):
        self.n_fixed, self.n_layer, self.budget = config.n_prelude + config.n_coda, config.n_layer, kv_budget
        self.n_loop, self.max_len = n_loop, config.n_positions
        self.n_groups = n_loop if kv_budget == 0 else min(kv_budget, n_loop)
        self.k = [None] * (self.n_fixed + self.n_groups * self.n_layer)  # each (B, nh, max_len, hs)
        self.v = [None] * len(self.k)
        self.pos = 0  # tokens cached, the same in every slot

    def get_seq_length(self, layer_idx=0):
        return self.pos

    def where(self, slot):
        """The storage of the model's slot: the loop's slots folded into their groups g(n)."""
        j = slot - self.n_fixed
        if j < 0:
            return slot
        n, i = j // self.n_layer + 1, j % self.n_layer  # iteration n, its layer i
        g = n if self.budget == 0 else min(n, self.budget)
        return self.n_fixed + (g - 1) * self.n_layer + i

    def update(self, slot, k, v):
        """Store k, v (B, nh, T, hs) after the cached tokens; return all keys and values so far."""
        s, end = self.where(slot), self.pos + k.size(2)
        if self.k[s] is None or self.k[s].size(2) < end:
            self.k[s], self.v[s] = self.grown(self.k[s], k, end), self.grown(self.v[s], v, end)
        self.k[s][:, :, self.pos:end] = k
        self.v[s][:, :, self.pos:end] = v
        return self.k[s][:, :, :end], self.v[s][:, :, :end]

    def grown(self, buf, new, end):
        """A buffer (B, nh, L, hs) for at least `end` tokens holding buf's cached ones: L doubles as
        generation goes (amortised copies), up to max_len, so that a scoring forward stays small."""
        old = 0 if buf is None else buf.size(2)
        out = new.new_empty((new.size(0), new.size(1), min(self.max_len, max(end, 2 * old, 64)), new.size(3)))
        if buf is not None:
            out[:, :, :self.pos] = buf[:, :, :self.pos]
        return out

    def advance(self, n):
        """Called once per forward pass, after every slot has stored its n new tokens."""
        self.pos += n

    def reorder_cache(self, beam_idx):
        """Beam search: keep the rows beam_idx (B,)."""
        self.k = [t if t is None else t.index_select(0, beam_idx.to(t.device)) for t in self.k]
        self.v = [t if t is None else t.index_select(0, beam_idx.to(t.device)) for t in self.v]


# -----------------------------------------------------------------------------
# GPT-2 blocks, as model.py


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v fused
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.dropout = config.n_head, config.dropout

    def forward(self, x, cache=None, slot=None, mask=None):
        """mask: (B, 1, T, Tk) bool, True where a query may see a key, for padded batches; None:
        the plain causal rule of model.py (T queries after Tk - T cached keys)."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(slot, k, v)  # (B, nh, Tk, hs)
        Tk, causal = k.size(2), False
        if mask is None and Tk == T:
            causal = True
        elif mask is None and T > 1:  # a chunk after cached tokens: query i sees keys up to Tk - T + i
            mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=Tk - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh')
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        eps = config.layer_norm_epsilon
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, slot=None, mask=None):
        x = x + self.attn(self.ln_1(x), cache, slot, mask)
        return x + self.mlp(self.ln_2(x))


@dataclass
class LoopGPTOutput(ModelOutput):
    """loss, logits (B, T, V) and the cache, under both names transformers has used for it."""
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    cache: object = None
    past_key_values: object = None


# -----------------------------------------------------------------------------
# LoopGPT


class LoopGPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = LoopGPTConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        C = config.n_embd
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, C),
            wpe=nn.Embedding(config.n_positions, C),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(C, eps=config.layer_norm_epsilon, bias=config.bias),
            prelude=nn.ModuleList([Block(config) for _ in range(config.n_prelude)]),
            coda=nn.ModuleList([Block(config) for _ in range(config.n_coda)]),
        ))
        if config.input_injection:  # W = [W_h W_x]: (C, 2C)
            self.transformer.inject = nn.Linear(2 * C, C, bias=False)
        if config.loop_norm:
            self.transformer.ln_loop = nn.LayerNorm(C, eps=config.layer_norm_epsilon, bias=config.bias)
        # gates a_0 .. a_N of the trained count N, one vector in R^C each
        self.gates = nn.Parameter(torch.ones(config.n_loop_trained + 1, C), requires_grad=config.learn_gates)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as GPT-2
        self.post_init()

    def _init_weights(self, module):
        """GPT-2's init, for a model built from a config alone (from_pretrained loads the weights)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, (nn.Linear, nn.LayerNorm)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # generate() must not make a DynamicCache: forward makes a LoopKVCache

    # --- the loop ---

    def gate(self, n):
        gates = self.gates if self.config.learn_gates else self.gates.detach()  # frozen, whatever the loader did
        return gates[min(n, gates.size(0) - 1)]  # beyond the trained count: the last gate

    def first_slot(self, n):
        """The cache slot of iteration n's first block: the prelude's and coda's slots come first."""
        return self.config.n_prelude + self.config.n_coda + (n - 1) * self.config.n_layer

    def loop(self, x, N, cache=None, mask=None):
        """model.py's LoopGPT.loop, x (B, T, C) -> h_N (B, T, C):

            h_0 = a_0 ⊙ x_0
            h_n = h_{n-1} + a_n ⊙ f(h_{n-1}),   f(h) = B(u) - h,   n = 1 .. N

        u = h_{n-1}, or W [h_{n-1}; x_0] with input_injection; loop_norm: h_n = LN(...)."""
        cfg, h = self.config, self.gate(0) * x
        for n in range(1, N + 1):
            k = cfg.bptt_loops  # training: no gradient through iterations before the last k
            no_grad = k and n <= N - k and torch.is_grad_enabled()
            with torch.no_grad() if no_grad else nullcontext():
                u = self.transformer.inject(torch.cat((h, x), dim=-1)) if cfg.input_injection else h
                b = self.run_blocks(self.transformer.h, u, cache, self.first_slot(n), mask)  # B(u)
                h = h + self.gate(n) * (b - h)
                if cfg.loop_norm:
                    h = self.transformer.ln_loop(h)
        return h

    @staticmethod
    def run_blocks(blocks, x, cache, first_slot, mask):
        for i, block in enumerate(blocks):
            x = block(x, cache, first_slot + i, mask)
        return x

    # --- forward ---

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, past_key_values=None,
                labels=None, use_cache=None, n_loop=None, kv_budget=None, logits_to_keep=0, return_dict=None,
                **kwargs):
        """input_ids (B, T) -> logits (B, T, V); labels (B, T): the mean cross entropy of predicting
        labels[:, 1:] from positions :-1 (-100 ignored), as every transformers causal LM.
        attention_mask (B, Tk), 0 at padding (left padding for generation), over cached + new tokens.
        n_loop, kv_budget: this call's loop count and cache budget (default: the config's)."""
        cache = cache if cache is not None else past_key_values
        N = n_loop or self.config.n_loop
        B, T = input_ids.shape
        if use_cache is None:
            use_cache = self.config.use_cache and labels is None and not self.training
        if cache is None and use_cache:
            cache = LoopKVCache(self.config, N, self.config.kv_budget if kv_budget is None else kv_budget)
        if cache is not None and N != cache.n_loop:
            raise ValueError(f"this cache was made for n_loop={cache.n_loop}, not {N}: start a new generation")
        past = cache.pos if cache is not None else 0
        if past + T > self.config.n_positions:
            raise ValueError(f"cannot forward position {past + T - 1}: n_positions (block size) is only "
                             f"{self.config.n_positions}")
        pos, mask = self.positions_and_mask(attention_mask, position_ids, B, T, past, input_ids.device)
        x = self.transformer.drop(self.transformer.wte(input_ids) + self.transformer.wpe(pos))
        x = self.run_blocks(self.transformer.prelude, x, cache, 0, mask)
        h = self.loop(x, N, cache, mask)
        h = self.run_blocks(self.transformer.coda, h, cache, self.config.n_prelude, mask)
        if cache is not None:
            cache.advance(T)
        h = self.transformer.ln_f(h)
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = self.causal_loss(logits, labels, kwargs.get('num_items_in_batch'))
        return LoopGPTOutput(loss=loss, logits=logits, cache=cache, past_key_values=cache)

    def positions_and_mask(self, attention_mask, position_ids, B, T, past, device):
        """Positions (B or 1, T) and the attention mask (B, 1, T, past + T) or None. Without padding,
        positions past .. past + T - 1 and model.py's causal rule; with it (zeros in attention_mask),
        each row counts positions from its first real token, and no query sees a padding key."""
        padded = attention_mask is not None and not bool(attention_mask.all())
        if position_ids is None:
            if padded:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=device)[None]
        if not padded:
            return position_ids[:, -T:], None
        Tk = past + T
        keys = attention_mask[:, :Tk].bool()[:, None, None, :]                             # (B, 1, 1, Tk)
        causal = torch.ones(T, Tk, dtype=torch.bool, device=device).tril(diagonal=past)  # (T, Tk)
        diag = torch.zeros_like(causal)
        diag[torch.arange(T), torch.arange(past, Tk)] = True  # a padding query sees itself: no empty rows
        return position_ids[:, -T:], (causal & keys) | diag

    @staticmethod
    def causal_loss(logits, labels, num_items_in_batch=None):
        logits, labels = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                               reduction='sum' if num_items_in_batch else 'mean')
        return loss / num_items_in_batch if num_items_in_batch else loss

    # --- generation ---

    def prepare_inputs_for_generation(self, input_ids, cache=None, past_key_values=None, attention_mask=None,
                                      position_ids=None, **kwargs):
        """The tokens the cache has not seen (the prompt, then one per step), their positions and
        the mask; generate() passes the cache back from the last output under either name."""
        cache = cache if cache is not None else past_key_values
        past = cache.pos if isinstance(cache, LoopKVCache) else 0
        new = input_ids[:, past:]
        keep = {k: kwargs[k] for k in ('use_cache', 'n_loop', 'kv_budget', 'logits_to_keep') if k in kwargs}
        return dict(input_ids=new, cache=cache if isinstance(cache, LoopKVCache) else None,
                    attention_mask=attention_mask,
                    position_ids=None if position_ids is None else position_ids[:, -new.size(1):], **keep)

    def generate(self, *args, **kwargs):
        """GenerationMixin.generate, with the transformers version named if its interface has moved."""
        try:
            return super().generate(*args, **kwargs)
        except (TypeError, AttributeError, KeyError) as e:
            raise RuntimeError(f"LoopGPT generate() failed under transformers {transformers.__version__} "
                               f"(modeling_loopgpt.py is tested with {TESTED}): {type(e).__name__}: {e}") from e


__all__ = ["LoopGPTForCausalLM", "LoopKVCache"]
