"""
Tokenizers by the name meta.json gives them: get_tokenizer(meta["tokenizer"]).

    bytes     UTF-8 bytes are the tokens: vocab 256, no end-of-text token, nothing to download
    gpt2      GPT-2's BPE through tiktoken (50257 tokens, EOT 50256); downloaded once by tiktoken
    hops-K-H  the hops task's words (tasks/hops.py writes the task)

Each has .name, .vocab_size, .eot_token (None if there is none), .encode(text) -> ids and
.decode(ids) -> text.
"""

import re

import numpy as np

from dataformat import DataError


class ByteTokenizer:
    """UTF-8 bytes are the tokens: vocab 256, no end-of-text token, nothing to download."""
    name = "bytes"
    vocab_size = 256
    eot_token = None

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError("byte token ids must be in 0..255")
        # a sample can stop in the middle of a multi-byte character: replace, don't crash
        return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


class TiktokenTokenizer:
    """A tiktoken encoding (GPT-2 BPE, or a small one built by a test); EOT follows each document."""

    def __init__(self, enc, name=None):
        self.enc = enc
        self.name = name or enc.name
        self.vocab_size = enc.n_vocab
        self.eot_token = enc._special_tokens.get("<|endoftext|>")

    def encode(self, text):
        # ordinary: a literal "<|endoftext|>" inside a document is text, not a separator
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(np.asarray(ids).tolist())


class HopsTokenizer:
    """The tokens of the hops dataset, written as words: "3>5" is the edge 3 -> 5, "2h" asks
    for 2 hops, "3" is node 3. Ids: nodes 0..K-1, hop counts K..K+H-1, then the K*K edges."""
    eot_token = None

    def __init__(self, nodes, hops):
        self.nodes, self.hops = nodes, hops
        self.name = f"hops-{nodes}-{hops}"
        self.vocab_size = nodes + hops + nodes * nodes

    def hop(self, h):
        return self.nodes + h - 1

    def edge(self, x, y):
        return self.nodes + self.hops + x * self.nodes + y

    def encode(self, text):
        ids = []
        for word in text.split():
            try:
                if ">" in word:
                    x, y = (int(v) for v in word.split(">"))
                    assert 0 <= x < self.nodes and 0 <= y < self.nodes
                    ids.append(self.edge(x, y))
                elif word.endswith("h"):
                    assert 1 <= int(word[:-1]) <= self.hops
                    ids.append(self.hop(int(word[:-1])))
                else:
                    assert 0 <= int(word) < self.nodes
                    ids.append(int(word))
            except (ValueError, AssertionError):
                raise ValueError(f"{word!r} is not a hops token: write edges as x>y, hop counts as 1h..{self.hops}h "
                                 f"and nodes as 0..{self.nodes - 1}") from None
        return ids

    def decode(self, ids):
        K, H = self.nodes, self.hops
        words = []
        for i in np.asarray(ids).tolist():
            if i < K:
                words.append(str(i))
            elif i < K + H:
                words.append(f"{i - K + 1}h")
            else:
                x, y = divmod(i - K - H, K)
                words.append(f"{x}>{y}")
        return " ".join(words)


def get_tokenizer(name):
    """The tokenizer called `name` ("bytes", "gpt2" or "hops-K-H"); DataError if it cannot be had."""
    if name == "bytes":
        return ByteTokenizer()
    if isinstance(name, str) and re.fullmatch(r"hops-\d+-\d+", name):
        return HopsTokenizer(*(int(v) for v in name.split("-")[1:]))
    if name != "gpt2":
        raise DataError(f"unknown tokenizer {name!r}: choose bytes or gpt2 (or hops-K-H)")
    try:
        import tiktoken
    except ImportError:
        raise DataError("the gpt2 tokenizer needs tiktoken: pip install tiktoken") from None
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests/urllib errors, hash mismatch, unwritable cache...
        raise DataError(
            f"could not load the GPT-2 BPE files ({type(e).__name__}), which tiktoken downloads once "
            "from openaipublic.blob.core.windows.net: run once with network access, or copy a tiktoken "
            "cache from another machine and point TIKTOKEN_CACHE_DIR at it (or use --tokenizer bytes)") from e
    return TiktokenTokenizer(enc, name="gpt2")
