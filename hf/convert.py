"""
Our models as Hugging Face folders, and back: what export.py writes and what
checkpoint.load_model reads (`--init_from=DIR`).

    write_loop(model, dir, extra)   a LoopGPT: remote code (this folder's modeling and
                                    configuration files, copied), config.json with auto_map
    write_gpt(model, dir, extra)    a GPT: transformers' own GPT2LMHeadModel, no remote code
    write_tokenizer(tok, dir, n)    tokenizer.json and co for AutoTokenizer: bytes or a tiktoken BPE
    read_folder(dir)                (model, meta): the folder as model.py's GPT or LoopGPT

`extra` goes into config.json under "loopgpt" (the dataset's meta, the model type, where the
weights came from), which read_folder uses to pick our tokenizer again.
"""

import json
import os
import shutil

import torch

from model import GPT, GPTConfig, LoopGPT

HERE = os.path.dirname(os.path.abspath(__file__))
REMOTE_FILES = ('configuration_loopgpt.py', 'modeling_loopgpt.py')
CONV1D = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')  # HF's transposed


class ConvertError(Exception):
    """A model or tokenizer that has no Hugging Face form; the message says why."""


def special_ids(tok):
    """(bos, eos) ids for Hugging Face: end-of-text both, or for bytes (which has none) '\\n' as
    bos, the token eval.py starts documents after, and no eos."""
    if tok.eot_token is not None:
        return tok.eot_token, tok.eot_token
    return tok.encode('\n')[-1], None


def write_loop(model, out, extra, tok=None, kv_budget=0):
    from transformers import GenerationConfig
    from hf.configuration_loopgpt import LoopGPTConfig
    from hf.modeling_loopgpt import LoopGPTForCausalLM
    c = model.config
    bos, eos = special_ids(tok) if tok is not None else (None, None)
    config = LoopGPTConfig(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        bias=c.bias, n_loop=model.n_loop, n_loop_trained=c.n_loop, n_prelude=c.n_prelude, n_coda=c.n_coda,
        learn_gates=c.learn_gates, input_injection=c.input_injection, loop_norm=c.loop_norm,
        loop_sampling=c.loop_sampling, bptt_loops=c.bptt_loops, kv_budget=kv_budget, bos_token_id=bos, eos_token_id=eos,
        auto_map={'AutoConfig': 'configuration_loopgpt.LoopGPTConfig',
                  'AutoModelForCausalLM': 'modeling_loopgpt.LoopGPTForCausalLM'},
        loopgpt=extra)
    hf = LoopGPTForCausalLM(config)
    hf.load_state_dict(model.state_dict())  # the same names, one to one
    hf.generation_config = GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=eos)
    hf.save_pretrained(out)
    for name in REMOTE_FILES:  # the folder travels alone: the code goes with it
        shutil.copy(os.path.join(HERE, name), os.path.join(out, name))


def write_gpt(model, out, extra, tok=None):
    """A GPT as transformers' GPT2LMHeadModel: Conv1D weights are our Linear weights transposed;
    a model trained without biases gets zero ones (the same function)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    c = model.config
    bos, eos = special_ids(tok) if tok is not None else (None, None)
    config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
                        n_head=c.n_head, activation_function='gelu_new', resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=bos, eos_token_id=eos,
                        pad_token_id=eos, tie_word_embeddings=True, loopgpt=extra)
    hf = GPT2LMHeadModel(config)
    ours = model.state_dict()
    with torch.no_grad():
        for k, p in hf.state_dict().items():
            if k in ours:
                p.copy_(ours[k].t() if k.endswith(CONV1D) else ours[k])
            elif k.endswith('.bias') and not k.endswith('attn.bias'):
                p.zero_()  # bias=False
    hf.generation_config.pad_token_id = eos
    hf.save_pretrained(out)


def write_tokenizer(tok, out, max_len):
    """Our tokenizer as a Hugging Face fast tokenizer with the same ids: bytes as a byte-level BPE
    without merges (id = byte), a tiktoken encoding through transformers' own converter."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    if tok.name == 'bytes':
        u = bytes_to_unicode()  # GPT-2's printable stand-ins for the 256 bytes
        core = Tokenizer(models.BPE(vocab={u[b]: b for b in range(256)}, merges=[], fuse_unk=False))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        specials = dict(bos_token=u[10], eos_token=u[10])  # byte 10, '\n', as the vocab spells it
    elif hasattr(tok, 'enc'):
        import base64
        import tempfile
        from transformers.convert_slow_tokenizer import TikTokenConverter
        # transformers' converter reads tiktoken's ranks file: base64 token, rank, a line each (written
        # here, as tiktoken's own dump_tiktoken_bpe needs the blobfile package)
        with tempfile.TemporaryDirectory() as tmp:
            ranks = os.path.join(tmp, 'ranks.tiktoken')
            with open(ranks, 'w') as f:
                f.writelines(f"{base64.b64encode(t).decode()} {r}\n" for t, r in tok.enc._mergeable_ranks.items())
            core = TikTokenConverter(vocab_file=ranks, pattern=tok.enc._pat_str,
                                     extra_special_tokens=tok.enc._special_tokens).converted()
        eot = tok.enc.decode([tok.eot_token])
        specials = dict(bos_token=eot, eos_token=eot, pad_token=eot)
    else:
        raise ConvertError(f"the {tok.name} tokenizer has no Hugging Face equivalent (its words are not "
                           f"text a BPE splits): export a model trained with the bytes or gpt2 tokenizer.")
    fast = PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=max_len,
                                   clean_up_tokenization_spaces=False, **specials)
    fast.save_pretrained(out)


# -----------------------------------------------------------------------------
# the way back


def read_folder(path):
    """An exported folder (or any GPT-2 save_pretrained folder) as (model, meta) of model.py.
    A LoopGPT folder is read without transformers: config.json and model.safetensors."""
    with open(os.path.join(path, 'config.json')) as f:
        cfg = json.load(f)
    meta = (cfg.get('loopgpt') or {}).get('meta') or {'tokenizer': 'gpt2'}
    if cfg.get('model_type') != 'loopgpt':
        return GPT.from_pretrained(path, dict(dropout=0.0)), meta
    from safetensors.torch import load_file
    names = ('n_layer', 'n_head', 'n_embd', 'bias', 'n_prelude', 'n_coda', 'learn_gates', 'input_injection',
             'loop_norm', 'loop_sampling', 'bptt_loops', 'vocab_size')
    config = GPTConfig(block_size=cfg['n_positions'], n_loop=cfg['n_loop_trained'], **{k: cfg[k] for k in names})
    model = LoopGPT(config)
    state = load_file(os.path.join(path, 'model.safetensors'))
    state.setdefault('lm_head.weight', state.get('transformer.wte.weight'))  # tied: stored once
    state.setdefault('transformer.wte.weight', state['lm_head.weight'])
    model.load_state_dict(state)
    model.n_loop = cfg.get('n_loop') or config.n_loop
    return model, meta
