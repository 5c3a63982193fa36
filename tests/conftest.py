# Tests use tiny models, for which one thread is fastest; two busy OpenMP pools on a
# 2-core machine (pytest plus a training subprocess, or two DDP ranks) can slow each
# other down a hundredfold. Set before torch is imported so subprocesses inherit it.
import json
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# GPT-2's pre-tokenisation regex and a few merges: a small BPE built in the tests, since
# the real GPT-2 files need a download (tiktoken.get_encoding('gpt2'))
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MERGES = [b"th", b"he", b"the", b" the", b"in", b"ing", b" t", b"  ", b"    ", b"\n\n", b"er", b"\xc3\xa9"]


@pytest.fixture(scope='session')
def enc():
    """A tiktoken.Encoding with GPT-2's regex, 268 tokens and <|endoftext|> as the last id."""
    import tiktoken
    ranks = {bytes([i]): i for i in range(256)}
    for m in MERGES:
        ranks[m] = len(ranks)
    return tiktoken.Encoding(name="test", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


def write_dataset(root, ids, name='tiny', **extra):
    """A byte-level dataset of the given token ids (90% train), laid out as prepare.py writes it."""
    ids = np.asarray(ids, dtype=np.uint16)
    split = int(len(ids) * 0.9)
    path = os.path.join(root, name)
    os.makedirs(path)
    ids[:split].tofile(os.path.join(path, 'train.bin'))
    ids[split:].tofile(os.path.join(path, 'val.bin'))
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(dict(tokenizer='bytes', vocab_size=256, eot_token=None, dtype='uint16', train_tokens=split,
                       val_tokens=len(ids) - split, source='test', **extra), f)
    return path


def tiny_loop(noise=0.2, **kw):
    """A LoopGPT of one block looped twice (vocab 32, block_size 12), its weights moved off their
    init by N(0, noise) so that its loop iterations differ, in eval mode."""
    import torch
    from model import GPTConfig, LoopGPT
    torch.manual_seed(0)
    model = LoopGPT(GPTConfig(block_size=12, vocab_size=32, n_layer=1, n_head=2, n_embd=16, n_loop=2, **kw))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * noise)
    return model.eval()
