# Tests use tiny models, for which one thread is fastest; two busy OpenMP pools on a
# 2-core machine (pytest plus a training subprocess, or two DDP ranks) can slow each
# other down a hundredfold. Set before torch is imported so subprocesses inherit it.
import os

os.environ.setdefault('OMP_NUM_THREADS', '1')

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
