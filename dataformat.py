"""
A prepared dataset on disk, and how to read it: what train.py, sample.py, eval.py
and the studies (experiments/) need. prepare.py writes it; nothing here writes.

    data/NAME/train.bin   flat token ids, uint16 when the vocabulary fits, else uint32
    data/NAME/val.bin     the same, for validation
    data/NAME/meta.json   tokenizer, vocab_size, eot_token, dtype, train_tokens, val_tokens,
                          source, split, documents, settings; for a dataset of examples
                          with answers (tasks/hops.py) also "answers": {"example_len": L,
                          "groups": {name: [positions in an example whose target is an answer]}}

meta.json is written last, after both .bin files are complete, so a directory that has it
is finished; load_meta also checks the .bin sizes against it.
"""

import json
import os

import numpy as np

SPLITS = ("train", "val")
DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")  # prepare.py's default
NAMED = ("stdlib", "openwebtext", "hops")  # datasets prepare.py makes from their name alone


class DataError(Exception):
    """A problem with a dataset the user can fix (not prepared, bad input, ...); the message says how."""


def rerun_hint(dataset_dir):
    """The prepare.py command that writes dataset_dir."""
    name = os.path.basename(os.path.normpath(dataset_dir))
    parent = os.path.dirname(os.path.abspath(os.path.normpath(dataset_dir)))
    cmd = f"python prepare.py {name}" if name in NAMED else \
        "python prepare.py text --input FILE ..." + ("" if name == "text" else f" --out_name {name}")
    return cmd + ("" if parent == DATA_DIR else f" --data_dir {parent}")


def incomplete(dataset_dir, meta):
    """Why dataset_dir does not match its meta.json, or None if it does."""
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            path = os.path.join(dataset_dir, f"{split}.bin")
            if not os.path.exists(path):
                return f"{split}.bin is missing"
            if os.path.getsize(path) != meta[f"{split}_tokens"] * itemsize:
                return f"{split}.bin has {os.path.getsize(path)} bytes, meta.json says " \
                       f"{meta[f'{split}_tokens']} tokens of {meta['dtype']}"
    except (KeyError, TypeError) as e:
        return f"meta.json is malformed: {type(e).__name__} {e}"
    return None


def load_meta(dataset_dir):
    """meta.json of a prepared dataset, after checking that the .bin files match it."""
    path = os.path.join(dataset_dir, "meta.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{dataset_dir} is not prepared (no meta.json): "
                        f"run `{rerun_hint(dataset_dir)}` first") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({e}): rerun `{rerun_hint(dataset_dir)} --force`") from None
    problem = incomplete(dataset_dir, meta)
    if problem:
        raise DataError(f"{dataset_dir} is incomplete ({problem}): rerun `{rerun_hint(dataset_dir)} --force`")
    return meta


# -----------------------------------------------------------------------------
# datasets of examples with answers (hops): the loss and the accuracy count the answers only


def answer_groups(meta, block_size):
    """For a dataset of examples with answers (hops): the answer group of every target
    position of a block_size window, as an int64 array (block_size,) (-1: not an answer,
    so no loss there), and the group names. (None, None) for plain text, where every
    target counts. A window holds whole examples: block_size must be a multiple of the
    example length, and windows start on example boundaries."""
    answers = meta.get("answers")
    if not answers:
        return None, None
    length = answers["example_len"]
    if block_size % length:
        raise DataError(f"block_size={block_size} is not a multiple of this dataset's example length "
                        f"{length}: set block_size={length} (or a multiple of it)")
    groups = np.full(length, -1, dtype=np.int64)
    for g, positions in enumerate(answers["groups"].values()):
        groups[positions] = g
    return np.tile(groups, block_size // length), list(answers["groups"])


def answer_hits(predictions, targets, groups):
    """Scores a batch of a dataset with answers: predictions and targets (B, block_size) token
    ids (numpy; targets -1 off the answers), groups from answer_groups. Returns (hits,
    answers): correct and total answers per group, int arrays (n_groups,)."""
    on = groups >= 0
    correct = (predictions[:, on] == targets[:, on]).sum(axis=0)
    n = int(groups.max()) + 1
    hits = np.bincount(groups[on], weights=correct, minlength=n).astype(np.int64)
    return hits, np.bincount(groups[on], minlength=n) * len(targets)


# -----------------------------------------------------------------------------
# fixed evaluation windows: the same tokens for every run, seed and setting


def fixed_windows(dataset_dir, split, n_tokens, batch_size, block_size):
    """(x, y) batches, each (batch_size, block_size) int64 numpy arrays, y = x shifted by one:
    windows spread evenly over the split, about n_tokens in all (or the whole split if
    smaller). No randomness: every run and seed is evaluated on the same tokens. On a
    dataset with answers (hops), windows start on example boundaries and y is -1 off the
    answers, as in train.py."""
    meta = load_meta(dataset_dir)
    groups, _ = answer_groups(meta, block_size)
    data = np.memmap(os.path.join(dataset_dir, f"{split}.bin"), dtype=meta["dtype"], mode="r")
    n_windows = max(min(n_tokens, len(data) - 1) // block_size // batch_size, 1) * batch_size
    if groups is None:
        starts = np.linspace(0, len(data) - block_size - 1, n_windows).astype(np.int64)
    else:
        length = meta["answers"]["example_len"]
        n_examples = (len(data) - block_size - 1) // length + 1  # those a window can start at
        starts = np.linspace(0, n_examples - 1, min(n_windows, n_examples // batch_size * batch_size))
        starts = starts.astype(np.int64) * length
    windows = np.stack([data[i:i + block_size + 1] for i in starts]).astype(np.int64)
    windows = windows.reshape(-1, batch_size, block_size + 1)
    batches = [(w[:, :-1].copy(), w[:, 1:].copy()) for w in windows]
    if groups is not None:
        for _, y in batches:
            y[:, groups < 0] = -1
    return batches
