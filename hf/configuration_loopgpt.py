"""
The Hugging Face configuration of an exported LoopGPT (export.py writes it into the folder it
exports, beside modeling_loopgpt.py, and names both in config.json's auto_map). It stands
alone: transformers loads it with trust_remote_code=True, without this repository.

Fields are model.py's GPTConfig under GPT-2's names, plus:
    n_loop_trained   the loop count the model was trained with: there are n_loop_trained + 1 gates
    n_loop           the count a forward pass runs (default: the trained one); a test-time count
                     above it reuses the last gate. from_pretrained(DIR, n_loop=k) sets it.
    kv_budget        loop groups generate()'s KV cache keeps (0: one per iteration), as engine.py
"""

from transformers import PretrainedConfig


class LoopGPTConfig(PretrainedConfig):
    model_type = "loopgpt"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    attribute_map = {"hidden_size": "n_embd", "num_attention_heads": "n_head",
                     "num_hidden_layers": "n_layer", "max_position_embeddings": "n_positions"}

    def __init__(self, vocab_size=50304, n_positions=1024, n_embd=768, n_layer=12, n_head=12, bias=True,
                 dropout=0.0, n_loop=None, n_loop_trained=1, n_prelude=0, n_coda=0, learn_gates=True,
                 input_injection=False, loop_norm=False, loop_sampling='fixed', bptt_loops=0, kv_budget=0,
                 layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=True, **kwargs):
        self.vocab_size, self.n_positions = vocab_size, n_positions
        self.n_embd, self.n_layer, self.n_head = n_embd, n_layer, n_head
        self.bias, self.dropout, self.layer_norm_epsilon = bias, dropout, layer_norm_epsilon
        self.n_loop_trained = n_loop_trained
        self.n_loop = n_loop if n_loop is not None else n_loop_trained
        self.n_prelude, self.n_coda = n_prelude, n_coda
        self.learn_gates, self.input_injection, self.loop_norm = learn_gates, input_injection, loop_norm
        self.loop_sampling, self.bptt_loops = loop_sampling, bptt_loops
        self.kv_budget, self.use_cache = kv_budget, use_cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
