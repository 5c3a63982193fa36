"""tokenizer.py: the tokenizers meta.json names, round trips and errors."""

import numpy as np
import pytest

from dataformat import DataError
from tokenizer import TiktokenTokenizer, get_tokenizer

TEXTS = ["the cat sat on the mat\n", "", "héllo wörld, 日本語, 🙂 and a literal <|endoftext|> that is just text\n",
         "line one\nline two\n\n    indented\r\nwindows line\n", "numbers 12345 and the thing's 'quotes'"]


def test_byte_tokenizer_round_trip():
    tok = get_tokenizer("bytes")
    text = "héllo 日本語 🙂\r\n"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and (tok.vocab_size, tok.eot_token) == (256, None)
    assert tok.decode(np.array(ids, dtype=np.uint16)) == text
    assert tok.decode(ids[:-3] + ids[-2:]) != text  # a cut character decodes to U+FFFD instead of raising
    assert tok.decode(list(text.encode("utf-8")[:2])) == "h\ufffd"


def test_tiktoken_tokenizer_round_trip(enc):
    tok = TiktokenTokenizer(enc)
    for text in TEXTS:
        assert tok.decode(np.array(tok.encode(text), dtype=np.uint16)) == text
    assert tok.eot_token == enc.n_vocab - 1 and tok.vocab_size == enc.n_vocab
    assert tok.eot_token not in tok.encode("<|endoftext|>")  # ordinary text, never the separator


def test_names():
    hops = get_tokenizer("hops-8-4")
    assert (hops.name, hops.vocab_size, hops.eot_token) == ("hops-8-4", 8 + 4 + 64, None)
    with pytest.raises(DataError, match="bytes or gpt2"):
        get_tokenizer("sentencepiece")
