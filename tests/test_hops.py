"""hops.py: the multi-hop task's examples, its train/val split, its answer layout and its tokenizer."""

import os
import pathlib

import numpy as np
import pytest

import prepare
from dataformat import SPLITS, DataError, answer_groups, load_meta
from tasks import hops
from tokenizer import HopsTokenizer


def follow(edges, start, n_hops):
    node = start
    for _ in range(n_hops):
        node = edges[node]
    return node


@pytest.mark.parametrize("split", SPLITS)
def test_examples_are_cycles_with_the_right_answers(split):
    K, H, Q = 6, 3, 5
    tok = HopsTokenizer(K, H)
    assert tok.name == "hops-6-3" and tok.vocab_size == K + H + K * K
    examples = hops.examples(tok, 300, Q, 0.1, seed=2357, split=split)
    assert examples.shape == (300, K + 3 * Q) and examples.max() < tok.vocab_size
    for ex in examples:
        words = tok.decode(ex).split()
        assert tok.encode(" ".join(words)) == ex.tolist()  # the tokenizer round trip
        edges = dict(tuple(map(int, w.split(">"))) for w in words[:K])
        assert sorted(edges) == list(range(K)) and follow(edges, 0, K) == 0  # one cycle through all K nodes
        assert all(follow(edges, 0, n) != 0 for n in range(1, K))
        starts = set()
        for j in range(Q):
            hop, a, answer = words[K + 3 * j:K + 3 * j + 3]
            assert hop == f"{1 + j % H}h" and int(answer) == follow(edges, int(a), 1 + j % H)
            starts.add(a)
        assert len(starts) == Q  # every query starts at a different node
    # seeded by (seed, split): the same call gives the same examples, another seed others
    assert np.array_equal(hops.examples(tok, 300, Q, 0.1, 2357, split), examples)
    assert not np.array_equal(hops.examples(tok, 300, Q, 0.1, 7, split), examples)


def test_train_and_val_cycles_are_disjoint_over_all_of_them():
    """With 5 nodes there are only 24 cycles: every one of them lands in exactly one split."""
    tok = HopsTokenizer(5, 2)
    seen = {s: {tuple(sorted(ex[:5].tolist())) for ex in hops.examples(tok, {"train": 2000, "val": 300}[s], 2,
                                                                        0.3, 2357, s)}  # the edge tokens
            for s in SPLITS}
    assert not seen["train"] & seen["val"] and len(seen["train"] | seen["val"]) == 24
    assert 3 <= len(seen["val"]) <= 15


def test_prepare_hops_writes_the_answer_layout_and_the_same_bytes(tmp_path):
    argv = ["hops", "--nodes", "6", "--hops", "3", "--queries", "5", "--train_examples", "3000",
            "--val_examples", "500", "--data_dir", str(tmp_path)]
    meta = prepare.run(argv)
    out = tmp_path / "hops"
    assert load_meta(out) == meta and meta["tokenizer"] == "hops-6-3" and meta["vocab_size"] == 6 + 3 + 36
    assert meta["answers"] == hops.answers(6, 3, 5) == {
        "example_len": 21, "groups": {"1 hop": [7, 16], "2 hops": [10, 19], "3 hops": [13]}}
    tok = HopsTokenizer(6, 3)
    for split, n in (("train", 3000), ("val", 500)):  # the file is the generator's examples, in order
        written = np.fromfile(out / f"{split}.bin", dtype=np.uint16).reshape(-1, 21)
        assert np.array_equal(written, hops.examples(tok, n, 5, 0.1, prepare.SEED, split))
    # the answer groups mark exactly the positions whose target is an answer
    groups, names = answer_groups(meta, 42)
    assert names == ["1 hop", "2 hops", "3 hops"] and len(groups) == 42
    assert [int(p) for p in np.flatnonzero(groups >= 0)] == [7, 10, 13, 16, 19, 28, 31, 34, 37, 40]
    with pytest.raises(DataError, match="block_size=20 is not a multiple"):
        answer_groups(meta, 20)
    # the same command writes the same bytes; another seed, other examples
    prepare.run(argv + ["--out_name", "again"])
    files = sorted(os.listdir(out))
    assert [pathlib.Path(tmp_path, "again", f).read_bytes() for f in files] == [(out / f).read_bytes() for f in files]
    prepare.run(argv + ["--seed", "7", "--out_name", "other"])
    assert (tmp_path / "other" / "val.bin").read_bytes() != (out / "val.bin").read_bytes()


def test_tokenizer_names_the_words_it_takes():
    tok = HopsTokenizer(8, 4)
    assert tok.encode("1>2 2h 3") == [tok.edge(1, 2), tok.hop(2), 3] and tok.decode([tok.edge(7, 0)]) == "7>0"
    for bad in ("9>1", "5h", "8", "x"):
        with pytest.raises(ValueError, match="not a hops token: write edges as x>y, hop counts as 1h..4h"):
            tok.encode(f"1>2 {bad}")
