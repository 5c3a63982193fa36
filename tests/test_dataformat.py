"""dataformat.py: reading a prepared dataset, answer groups and scoring, fixed evaluation windows."""

import os

import numpy as np
import pytest

from conftest import write_dataset
from dataformat import DataError, answer_groups, answer_hits, fixed_windows, load_meta


def test_load_meta_names_the_command(tmp_path):
    with pytest.raises(DataError, match=r"run `python prepare.py stdlib --data_dir "):
        load_meta(tmp_path / "stdlib")
    with pytest.raises(DataError, match=r"python prepare.py text --input FILE \.\.\. --out_name mine"):
        load_meta(tmp_path / "mine")


def test_load_meta_refuses_a_split_that_does_not_match(tmp_path):
    path = write_dataset(tmp_path, np.arange(1000) % 256)
    assert load_meta(path)["train_tokens"] == 900
    with open(os.path.join(path, "val.bin"), "ab") as f:
        f.write(b"\0\0")  # one token more than meta.json says
    with pytest.raises(DataError, match=r"incomplete \(val.bin has 202 bytes, meta.json says 100 tokens.*--force"):
        load_meta(path)


def test_answer_hits_counts_only_answers():
    groups = np.array([-1, 0, -1, 1, 1, -1])
    targets = np.array([[-1, 4, -1, 2, 3, -1], [-1, 5, -1, 2, 2, -1]])
    predictions = np.array([[9, 4, 9, 2, 0, 9], [-1, 1, -1, 2, 2, -1]])  # off the answers: anything
    hits, answers = answer_hits(predictions, targets, groups)
    assert hits.tolist() == [1, 3] and answers.tolist() == [2, 4]


def test_plain_text_has_no_answer_groups():
    assert answer_groups({"tokenizer": "bytes"}, 128) == (None, None)


def test_fixed_windows_spread_over_the_split(tmp_path):
    ids = (np.arange(4000) * 7) % 256
    path = write_dataset(tmp_path, ids)
    val = ids[3600:]
    batches = fixed_windows(path, "val", n_tokens=200, batch_size=4, block_size=16)
    assert len(batches) == 3  # 200 tokens = 12 windows of 16 (whole batches of 4)
    x = np.concatenate([x for x, _ in batches])
    y = np.concatenate([y for _, y in batches])
    assert x.shape == y.shape == (12, 16) and x.dtype == np.int64 and np.array_equal(x[:, 1:], y[:, :-1])
    assert np.array_equal(x[0], val[:16]) and np.array_equal(y[-1], val[-16:])  # from the first token to the last
    everything = fixed_windows(path, "val", 10**9, 4, 16)
    assert len(everything) == (len(val) - 1) // 16 // 4  # capped at the split's size


def test_fixed_windows_of_examples_start_on_boundaries_and_mask_off_the_answers(tmp_path):
    L = 7  # an example: 6 tokens, then its answer (the target of position 5)
    examples = np.array([[e, 1, 2, 3, 4, 5, 100 + e] for e in range(100)])
    path = write_dataset(tmp_path, examples.ravel(), answers={"example_len": L, "groups": {"a": [5]}})
    batches = fixed_windows(path, "val", n_tokens=10**6, batch_size=2, block_size=2 * L)
    val = examples.ravel()[630:].reshape(-1, L)  # the 10 val examples (90% of 700 tokens are train)
    for x, y in batches:
        for row_x, row_y in zip(x, y):
            first = int(np.flatnonzero(val[:, 0] == row_x[0])[0])  # the window starts at an example
            assert np.array_equal(row_x, val[first:first + 2].ravel())
            assert row_y.tolist() == [-1] * 5 + [100 + val[first, 0]] + [-1] * 6 + [100 + val[first + 1, 0]] + [-1]
    assert len(batches) == 2  # the whole split: 69 targets make 4 windows of 14
