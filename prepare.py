"""
Prepare a dataset for loopgpt: tokenise text and write the token ids that
train.py reads with np.memmap.

    python prepare.py stdlib                      # offline: this Python's stdlib sources, byte-level
    python prepare.py text --input a.txt b.txt    # your own text files (GPT-2 BPE, or --tokenizer bytes)
    python prepare.py openwebtext                 # the paper's data: Hugging Face datasets + GPT-2 BPE
    python prepare.py hops --nodes 8 --hops 4     # offline, synthetic: multi-hop pointer chasing
    python prepare.py bench --num_proc 1 2        # tokenisation throughput; writes nothing

Each dataset ends up in data/NAME/ (NAME = the dataset, or --out_name):
    train.bin, val.bin   flat token ids, uint16 when the vocabulary fits, else uint32
    meta.json            tokenizer, vocab_size, eot_token, dtype, token counts, source; for a
                         dataset of question/answer examples (hops) also "answers": the example
                         length and where in an example the answers are (train.py's loss uses only these)
The .bin files are written under temporary names, fsynced and renamed, and
meta.json is written last: if meta.json is there, the set is complete.
"""

import argparse
import codecs
import hashlib
import inspect
import json
import os
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import time

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
SPLITS = ("train", "val")
DATASETS = ("stdlib", "text", "openwebtext", "hops")
OWT_REPO = "Skylion007/openwebtext"
SEED = 2357             # nanoGPT's seed for the OpenWebText split; reused for the stdlib split
PIECE_CHARS = 1 << 16   # text files are tokenised in pieces of about this many characters
READ_BYTES = 1 << 24    # files are read in blocks of this size, so memory stays bounded


class PrepareError(Exception):
    """A problem the user can fix (bad input, no network, ...). main() prints it as one line."""


# -----------------------------------------------------------------------------
# tokenizers: train.py and sample.py use get_tokenizer(meta["tokenizer"])

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
    """The tokenizer called `name` ("bytes", "gpt2" or "hops-K-H"): .encode, .decode, .vocab_size, .eot_token."""
    if name == "bytes":
        return ByteTokenizer()
    if isinstance(name, str) and re.fullmatch(r"hops-\d+-\d+", name):
        return HopsTokenizer(*(int(v) for v in name.split("-")[1:]))
    if name != "gpt2":
        raise PrepareError(f"unknown tokenizer {name!r}: choose bytes or gpt2 (or hops-K-H)")
    try:
        import tiktoken
    except ImportError:
        raise PrepareError("the gpt2 tokenizer needs tiktoken: pip install tiktoken") from None
    try:
        enc = tiktoken.get_encoding("gpt2")
    except Exception as e:  # requests/urllib errors, hash mismatch, unwritable cache...
        raise PrepareError(
            f"could not load the GPT-2 BPE files ({type(e).__name__}), which tiktoken downloads once "
            "from openaipublic.blob.core.windows.net: run once with network access, or copy a tiktoken "
            "cache from another machine and point TIKTOKEN_CACHE_DIR at it (or use --tokenizer bytes)") from e
    return TiktokenTokenizer(enc, name="gpt2")


def _as_tokenizer(tok):
    """Accept a tokenizer object, or a bare tiktoken.Encoding (what the tests build)."""
    return tok if hasattr(tok, "eot_token") and hasattr(tok, "vocab_size") else TiktokenTokenizer(tok)


# -----------------------------------------------------------------------------
# reading prepared data: train.py and sample.py call load_meta(data/NAME)

def _rerun_hint(dataset_dir):
    name = os.path.basename(os.path.normpath(dataset_dir))
    parent = os.path.dirname(os.path.abspath(os.path.normpath(dataset_dir)))
    cmd = f"python prepare.py {name}" if name in ("stdlib", "openwebtext", "hops") else \
        "python prepare.py text --input FILE ..." + ("" if name == "text" else f" --out_name {name}")
    return cmd + ("" if parent == DATA_DIR else f" --data_dir {parent}")


def _incomplete(dataset_dir, meta):
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
        raise PrepareError(f"{dataset_dir} is not prepared (no meta.json): "
                           f"run `{_rerun_hint(dataset_dir)}` first") from None
    except (OSError, ValueError) as e:
        raise PrepareError(f"cannot read {path} ({e}): rerun `{_rerun_hint(dataset_dir)} --force`") from None
    problem = _incomplete(dataset_dir, meta)
    if problem:
        raise PrepareError(f"{dataset_dir} is incomplete ({problem}): rerun `{_rerun_hint(dataset_dir)} --force`")
    return meta


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
        raise PrepareError(f"block_size={block_size} is not a multiple of this dataset's example length "
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
# documents from files (stdlib, text, bench)

def stdlib_files():
    """The .py files of the running Python's standard library, sorted; no tests, no installed packages."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "test", "tests", "__pycache__"}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        found += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    if not found:
        raise PrepareError(f"found no .py files under {root}: is the standard library installed?")
    return root, sorted(found)


def split_files(files, val_fraction, seed):
    """Split a list of files into (train, val), both in the original order; val gets at least 1 file."""
    if len(files) < 2:
        raise PrepareError(f"need at least 2 files to split into train and val, got {len(files)}")
    n_val = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
    val = set(random.Random(seed).sample(range(len(files)), n_val))
    return ([f for i, f in enumerate(files) if i not in val],
            [f for i, f in enumerate(files) if i in val])


def _check_inputs(paths, utf8):
    """Fail early, before anything is written, on a missing, unreadable or (for BPE) non-UTF-8 file."""
    for path in paths:
        if os.path.isdir(path):
            raise PrepareError(f"{path} is a directory: pass the files inside it, e.g. {path}/*.txt")
        try:
            with open(path, "rb") as f:
                if utf8:
                    _check_utf8(path, f)
        except FileNotFoundError:
            raise PrepareError(f"input file not found: {path}") from None
        except OSError as e:
            raise PrepareError(f"cannot read {path}: {e.strerror or e}") from None


def _check_utf8(path, f):
    # incremental, so a character cut by a block boundary is fine and memory stays bounded
    decoder = codecs.getincrementaldecoder("utf-8")()
    pos = 0
    for block in iter(lambda: f.read(READ_BYTES), b""):
        pending = len(decoder.getstate()[0])  # bytes of a cut character carried over from the last block
        try:
            decoder.decode(block)
        except UnicodeDecodeError as e:
            raise PrepareError(f"{path} is not UTF-8 text (bad byte at offset {pos - pending + e.start}): "
                               "convert it, or use --tokenizer bytes") from None
        pos += len(block)
    if decoder.getstate()[0]:
        raise PrepareError(f"{path} is not UTF-8 text (it ends in the middle of a character): "
                           "convert it, or use --tokenizer bytes")


def _read_blocks(path):
    """The raw bytes of a file, as uint8 arrays of at most READ_BYTES."""
    try:
        with open(path, "rb") as f:
            while block := f.read(READ_BYTES):
                yield np.frombuffer(block, dtype=np.uint8)
    except OSError as e:
        raise PrepareError(f"cannot read {path}: {e.strerror or e}") from None


# Long files are cut into pieces so no single tokenizer call (or worker) holds a
# whole file's tokens. We cut just before a "\n" that is followed by a non-space
# character: GPT-2's pre-tokenisation regex always ends a pre-token there, and the
# whitespace before the cut stays one pre-token, so the BPE tokens are exactly the
# same as for the uncut file (and do not depend on PIECE_CHARS or --num_proc).
_CUT = re.compile(r"\n(?=\S)")


def _pieces(text, piece_chars):
    start = 0
    while len(text) - start > piece_chars:
        cut = _CUT.search(text, start + piece_chars)
        if cut is None:
            break
        yield text[start:cut.start()]
        start = cut.start()
    yield text[start:]


def _file_pieces(paths, piece_chars):
    """datasets generator: rows {"text", "eot"}; eot is True on the last piece of each file."""
    for path in paths:
        with open(path, "rb") as f:
            pieces = list(_pieces(f.read().decode("utf-8"), piece_chars))
        for i, piece in enumerate(pieces):
            yield {"text": piece, "eot": i == len(pieces) - 1}


# -----------------------------------------------------------------------------
# tokenisation with Hugging Face datasets: parallel over --num_proc processes,
# results cached on disk as arrow, so memory stays bounded

def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise PrepareError("this needs the Hugging Face datasets package: pip install datasets") from None
    return datasets


def _files_dataset(paths, cache_dir):
    datasets = _import_datasets()
    features = datasets.Features({"text": datasets.Value("string"), "eot": datasets.Value("bool")})
    # an explicit fingerprint spares datasets from hashing the generator (slow, noisy when run as a script)
    stamp = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in paths]
    extra = {}
    if "fingerprint" in inspect.signature(datasets.Dataset.from_generator).parameters:  # datasets >= 4.3
        extra["fingerprint"] = hashlib.sha1(repr((stamp, PIECE_CHARS)).encode()).hexdigest()
    return datasets.Dataset.from_generator(
        _file_pieces, features=features, cache_dir=cache_dir,
        gen_kwargs={"paths": list(paths), "piece_chars": PIECE_CHARS}, **extra)


def _encode_batch(batch, tok):
    eots = batch["eot"] if "eot" in batch else [True] * len(batch["text"])  # documents from datasets: all True
    ids = []
    for text, eot in zip(batch["text"], eots):
        x = tok.encode(text or "")
        if eot and tok.eot_token is not None:
            x = x + [tok.eot_token]
        ids.append(np.array(x, dtype=np.uint32))  # arrow takes numpy arrays ~1.5x faster than lists
    return {"ids": ids, "len": [len(x) for x in ids]}


def _tokenize(ds, tok, num_proc, **kwargs):
    """Map a dataset with a "text" column to rows {"ids", "len"}, in order, whatever num_proc is."""
    datasets = _import_datasets()
    num_proc = min(num_proc, max(1, len(ds)))  # datasets warns about idle workers otherwise
    seq = getattr(datasets, "List", datasets.Sequence)
    features = datasets.Features({"ids": seq(datasets.Value("uint32")), "len": datasets.Value("int64")})
    return ds.map(_encode_batch, batched=True, batch_size=64, fn_kwargs={"tok": tok},
                  remove_columns=ds.column_names, features=features,
                  num_proc=num_proc if num_proc > 1 else None, desc=f"tokenising ({num_proc} proc)", **kwargs)


def _total(ds):
    import pyarrow.compute as pc
    return int(pc.sum(ds.with_format("arrow")["len"]).as_py() or 0)


def _arrow_chunks(ds, rows=256):
    """The token ids of a tokenised dataset, in row order, as numpy arrays of a few rows each."""
    import pyarrow.compute as pc
    for table in ds.with_format("arrow").iter(batch_size=rows):
        yield pc.list_flatten(table["ids"]).to_numpy()


def _tokenize_files(paths, tok, num_proc, tmp):
    """(make_chunks, total) for the files in order; make_chunks() can be iterated more than once."""
    if isinstance(tok, ByteTokenizer):  # the raw bytes are the tokens: no decoding, no datasets
        return (lambda: (c for p in paths for c in _read_blocks(p))), sum(os.path.getsize(p) for p in paths)
    ds = _tokenize(_files_dataset(paths, tmp), tok, num_proc)
    return (lambda: _arrow_chunks(ds)), _total(ds)


def _take(chunks, start, stop):
    """Tokens [start, stop) of a stream of arrays."""
    pos = 0
    for c in chunks:
        lo, hi = max(start - pos, 0), min(stop - pos, len(c))
        if lo < hi:
            yield c[lo:hi]
        pos += len(c)
        if pos >= stop:
            break


# -----------------------------------------------------------------------------
# writing: temporary names, fsync, rename, meta.json last

def _progress(total, desc):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with datasets; stdlib works without either
        class tqdm:
            def __init__(self, **kwargs): pass
            def __enter__(self): return self
            def __exit__(self, *exc): pass
            def update(self, n): pass
    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True)


def _append(f, ids):
    f.write(ids.tobytes())


def _write_tokens(path, chunks, dtype, vocab_size, total, desc):
    """Write a stream of token-id arrays to path as dtype, checking each id; return the count."""
    n = 0
    with open(path, "wb") as f, _progress(total, desc) as bar:
        for ids in chunks:
            ids = np.asarray(ids)
            if ids.size == 0:
                continue
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= vocab_size:
                raise PrepareError(f"token id {lo if lo < 0 else hi} does not fit: the tokenizer's vocab_size is "
                                   f"{vocab_size} and ids are stored as {np.dtype(dtype).name}")
            _append(f, ids.astype(dtype, copy=False))
            n += ids.size
            bar.update(ids.size)
        f.flush()
        os.fsync(f.fileno())
    return n


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the renames are still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _remove_leftovers(out_dir):
    """Temporary files of a run that was killed too hard to clean up after itself (kill -9, power loss)."""
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if name.startswith(".tokenise-") and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name in ("train.bin.tmp", "val.bin.tmp", "meta.json.tmp"):
            _remove(path)


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _build(out_dir, tok, splits, source, info):
    """Write splits = {split: (chunks, expected_count)}; returns meta. All or nothing."""
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    tmp = {s: os.path.join(out_dir, f"{s}.bin.tmp") for s in SPLITS}
    try:
        counts = {}
        for s in SPLITS:
            chunks, expected = splits[s]
            counts[s] = _write_tokens(tmp[s], chunks, dtype, tok.vocab_size, expected, f"writing {s}.bin")
            if counts[s] != expected:
                raise PrepareError(f"expected {expected} {s} tokens but got {counts[s]}: "
                                   "did the input change while it was being prepared?")
            if counts[s] == 0:
                raise PrepareError(f"the {s} split has no tokens: the input is (nearly) empty")
        meta = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "eot_token": tok.eot_token,
                "dtype": np.dtype(dtype).name, "train_tokens": counts["train"], "val_tokens": counts["val"],
                "source": source, **info}
        # Both splits are on disk. Drop the old meta.json first, so that between the
        # renames nothing looks complete; an old set stays valid until this point.
        _remove(os.path.join(out_dir, "meta.json"))
        for s in SPLITS:
            os.replace(tmp[s], os.path.join(out_dir, f"{s}.bin"))
        _write_json(os.path.join(out_dir, "meta.json"), meta)
        _fsync_dir(out_dir)
        return meta
    except BaseException:  # also KeyboardInterrupt: no half-written file may survive
        for path in list(tmp.values()) + [os.path.join(out_dir, "meta.json.tmp")]:
            _remove(path)
        raise


# -----------------------------------------------------------------------------
# the datasets

# Each prepare_* returns (splits, source, info) for _build: splits maps "train"/"val"
# to (stream of token-id arrays, expected count); tmp is scratch space for datasets.

def prepare_stdlib(args, tok, tmp):
    root, files = stdlib_files()
    train, val = split_files(files, args.val_fraction, args.seed)
    splits = {}
    for s, paths in zip(SPLITS, (train, val)):
        make, total = _tokenize_files(paths, tok, args.num_proc, os.path.join(tmp, s))
        splits[s] = (make(), total)
    source = f"stdlib: {len(files)} .py files under {root} (Python {sys.version.split()[0]})"
    return splits, source, {"split": f"by file: {len(val)} random files (seed {args.seed}) are val",
                            "documents": {"train": len(train), "val": len(val)}}


def _tail_split(total, val_fraction):
    n_val = max(1, round(total * val_fraction))
    if total - n_val < 1:
        raise PrepareError(f"not enough input to split into train and val: {total} tokens")
    return total - n_val, n_val


def prepare_text(args, tok, tmp):
    # the inputs were checked (missing, unreadable, not UTF-8, empty) in run(), before the skip check
    make, total = _tokenize_files(args.input, tok, args.num_proc, tmp)
    n_train, n_val = _tail_split(total, args.val_fraction)
    splits = {"train": (_take(make(), 0, n_train), n_train), "val": (_take(make(), n_train, total), n_val)}
    return splits, "text: " + ", ".join(args.input), {
        "split": f"the last {args.val_fraction:g} of the tokens are val", "documents": len(args.input)}


_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text"}


def _builder_for(data_files):
    """The datasets builder for --data_files, from their extension."""
    kinds = set()
    for f in data_files:
        name = f.lower()
        for c in _COMPRESSION:
            name = name[:-len(c)] if name.endswith(c) else name
        ext = os.path.splitext(name)[1]
        if ext not in _BUILDERS:
            raise PrepareError(f"--data_files {f}: unknown type {ext or '(no extension)'}; "
                               "use .parquet, .jsonl/.json or .txt files (optionally compressed)")
        if "://" not in f and not any(ch in f for ch in "*?[") and not os.path.exists(f):
            raise PrepareError(f"data file not found: {f}")
        kinds.add(_BUILDERS[ext])
    if len(kinds) > 1:
        raise PrepareError(f"--data_files mixes file types ({', '.join(sorted(kinds))}): use one type")
    return kinds.pop()


def _load_owt(args):
    """The documents as a datasets.Dataset with one "text" column."""
    datasets = _import_datasets()
    num_proc = args.num_proc if args.num_proc > 1 else None
    try:
        if args.data_files:
            builder = _builder_for(args.data_files)
            what = "--data_files " + " ".join(args.data_files)
            extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document
            ds = datasets.load_dataset(builder, data_files=args.data_files, split="train",
                                       cache_dir=args.cache_dir, num_proc=num_proc, **extra)
        else:
            what = f"{args.repo} (revision {args.revision or 'main'}) from the Hugging Face hub"
            ds = datasets.load_dataset(args.repo, revision=args.revision, split="train",
                                       cache_dir=args.cache_dir, num_proc=num_proc)
    except PrepareError:
        raise
    except Exception as e:  # hub, network, cache and file-format errors all end up here
        lines = str(e).strip().splitlines()
        cause = f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__
        if "Dataset scripts are no longer supported" in str(e):
            hint = ("that revision only has a loading script, which datasets>=4 will not run: pass "
                    "--revision refs/convert/parquet (the hub's parquet conversion) or --data_files")
        elif args.data_files:
            hint = "check that the files are readable parquet/jsonl/txt with a text column"
        else:
            hint = "check the network (and that HF_HUB_OFFLINE is unset), or pass " + (
                "" if args.revision == "refs/convert/parquet" else "--revision refs/convert/parquet or ") + \
                "--data_files with local or remote parquet/jsonl/txt shards"
        raise PrepareError(f"could not load {what} ({cause}): {hint}") from e
    if args.text_column not in ds.column_names:
        raise PrepareError(f"{what} has no column {args.text_column!r} (columns: {', '.join(ds.column_names)}): "
                           "pass --text_column")
    ds = ds.select_columns([args.text_column])
    return ds if args.text_column == "text" else ds.rename_column(args.text_column, "text")


def prepare_openwebtext(args, tok, tmp):
    ds = _load_owt(args)
    if len(ds) < 2:
        raise PrepareError(f"need at least 2 documents to split into train and val, got {len(ds)}")
    # nanoGPT's split: a random 0.05% of the documents (at least one) with seed 2357
    parts = ds.train_test_split(test_size=args.val_fraction, seed=args.seed, shuffle=True)
    parts = {"train": parts["train"], "val": parts["test"]}
    splits = {}
    for s in SPLITS:
        tokens = _tokenize(parts[s], tok, args.num_proc)
        splits[s] = (_arrow_chunks(tokens), _total(tokens))
    source = "openwebtext: " + (" ".join(args.data_files) if args.data_files else
                                f"hf://datasets/{args.repo}@{args.revision or 'main'}")
    return splits, source, {"split": f"by document: a random {args.val_fraction:g} (seed {args.seed}) are val",
                            "documents": {s: len(parts[s]) for s in SPLITS}}


# hops: multi-hop pointer chasing, a task that needs depth. One example (K nodes, Q queries):
#
#   x1>π(x1) x2>π(x2) ... xK>π(xK)   h1 a1 π^h1(a1)   h2 a2 π^h2(a2)   ...   hQ aQ π^hQ(aQ)
#
# π is a random cycle through all K nodes (a linked list), its K edges in random order;
# query j asks for h_j = 1 + (j mod H) hops from a start node a_j (all different). h hops
# land h places further round the cycle, never back on a (H < K), so no answer can be
# guessed from the question, and each hop is a lookup that needs the one before: a model
# needs about h layers (or loop iterations) for h hops. Train and val use disjoint cycles.

def _perm_hash(perms, seed):
    """A well-mixed uint64 per permutation (row of perms), for the train/val split (splitmix64 of
    the permutation read as a base-K number)."""
    K = perms.shape[1]
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as a hash should
        z = perms.astype(np.uint64) @ (np.uint64(K) ** np.arange(K, dtype=np.uint64)) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hops_examples(tok, n, queries, val_fraction, seed, split):
    """n examples of the split, (n, K + 3 * queries) token ids, from a generator seeded by (seed, split)."""
    K, H = tok.nodes, tok.hops
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    # a cycle is val's when its hash falls in the first val_fraction of the range
    perms = np.empty((0, K), dtype=np.int64)
    while len(perms) < n:
        order = rng.random((2 * n, K)).argsort(axis=1)  # the cycle order[0] -> order[1] -> ... -> order[0]
        p = np.empty_like(order)
        np.put_along_axis(p, order, np.roll(order, -1, axis=1), axis=1)  # p[order[i]] = order[i + 1]
        is_val = _perm_hash(p, seed) < np.uint64(val_fraction * 2.0 ** 64)
        perms = np.concatenate([perms, p[is_val == (split == "val")]])
    perms, rows = perms[:n], np.arange(n)[:, None]
    sources = rng.random((n, K)).argsort(axis=1)             # the edges in random order
    edges = tok.edge(sources, perms[rows, sources])
    starts = rng.random((n, K)).argsort(axis=1)[:, :queries]  # distinct start nodes
    cols = [edges]
    for j in range(queries):
        h, a = 1 + j % H, starts[:, j]
        answer = a
        for _ in range(h):
            answer = perms[np.arange(n), answer]
        cols += [np.full((n, 1), tok.hop(h)), a[:, None], answer[:, None]]
    return np.concatenate(cols, axis=1)


def prepare_hops(args, tok, tmp):
    if args.queries > args.nodes:
        raise PrepareError(f"--queries {args.queries} is more than --nodes {args.nodes}: queries start at "
                           f"different nodes, so use at most {args.nodes}")
    n = {"train": args.train_examples, "val": args.val_examples}
    splits = {s: ((x for x in [hops_examples(tok, n[s], args.queries, args.val_fraction, args.seed, s).ravel()]),
                  n[s] * (args.nodes + 3 * args.queries)) for s in SPLITS}
    length = args.nodes + 3 * args.queries
    # the target at position t is token t + 1: query j's answer is the target of position K + 3j + 1
    groups = {f"{h} hop{'s' if h > 1 else ''}": [args.nodes + 3 * j + 1 for j in range(args.queries)
                                               if 1 + j % args.hops == h] for h in range(1, args.hops + 1)}
    source = (f"hops: {args.nodes} nodes, {args.queries} queries of 1..{args.hops} hops per example, "
              f"seed {args.seed}")
    return splits, source, {"split": f"by cycle: {args.val_fraction:g} of all cycles are val",
                            "documents": n, "answers": {"example_len": length, "groups": groups}}


PREPARE = {"stdlib": prepare_stdlib, "text": prepare_text, "openwebtext": prepare_openwebtext,
           "hops": prepare_hops}


def bench(args, tok):
    """Tokenisation throughput (tokens/s) through the same datasets.map path, per num_proc."""
    paths = args.input or stdlib_files()[1]
    _check_inputs(paths, utf8=True)
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    corpus = "stdlib .py files" if not args.input else "files"
    print(f"bench: {len(paths)} {corpus}, {mb:.1f} MB, tokenizer {tok.name}")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="loopgpt-bench-") as tmp:
        ds = _files_dataset(paths, tmp)
        for p in args.num_proc:
            t0, cpu0 = time.perf_counter(), sum(os.times()[:4])
            out = _tokenize(ds, tok, p, load_from_cache_file=False,
                            cache_file_name=os.path.join(tmp, f"bench-{p}.arrow"))
            # CPU seconds (this process + its workers) stay comparable on a busy machine; wall time does not
            dt, cpu = time.perf_counter() - t0, sum(os.times()[:4]) - cpu0
            n = _total(out)
            rates[p] = n / dt
            print(f"num_proc {p}: {n:,} tokens in {dt:.2f} s = {n / dt / 1e6:.2f}M tokens/s "
                  f"({mb / dt:.1f} MB/s, {cpu:.2f} CPU-s)")
    return rates


# -----------------------------------------------------------------------------
# command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through main(), not argparse's usage + exit 2
        raise PrepareError(f"{message} (see python prepare.py {self.prog.split()[-1]} --help)"
                           if " " in self.prog else message)


def _default_num_proc():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _common(p, tokenizer, val_fraction, what):
    p.add_argument("--tokenizer", default=tokenizer, choices=["bytes", "gpt2"],
                   help=f"bytes: vocab 256, no download; gpt2: tiktoken BPE + EOT (default {tokenizer})")
    p.add_argument("--val_fraction", type=float, default=val_fraction, help=f"{what} (default {val_fraction})")
    p.add_argument("--data_dir", default=DATA_DIR, help="where NAME/ goes (default: data/ next to prepare.py)")
    p.add_argument("--out_name", default=None, help="output directory name (default: the dataset name)")
    p.add_argument("--num_proc", type=int, default=_default_num_proc(),
                   help="tokenisation processes (default: CPU count; raw bytes need no tokenising)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is already complete")


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        raise PrepareError("which dataset? python prepare.py stdlib|text|openwebtext|hops|bench (add --help for options)")
    if argv and not argv[0].startswith("-") and argv[0] not in DATASETS + ("bench",):
        raise PrepareError(f"unknown dataset {argv[0]!r}: choose stdlib, text, openwebtext or hops "
                           "(your own files: python prepare.py text --input FILE ...)")
    parser = _Parser(prog="prepare.py", description=__doc__.strip(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    p = sub.add_parser("stdlib", help="offline: this Python's standard library sources")
    _common(p, "bytes", 0.01, "fraction of files for val")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the file split")
    p = sub.add_parser("text", help="your own text files")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files, one document each")
    _common(p, "gpt2", 0.1, "fraction of the tokens, at the end, for val")
    p = sub.add_parser("openwebtext", help="OpenWebText via Hugging Face datasets")
    _common(p, "gpt2", 0.0005, "fraction of documents for val")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the document split")
    p.add_argument("--repo", default=OWT_REPO, help="hub dataset repo id")
    p.add_argument("--revision", default=None, help="hub revision, e.g. refs/convert/parquet")
    p.add_argument("--data_files", nargs="+", default=None, metavar="FILE",
                   help="local or remote .parquet/.jsonl/.txt shards instead of the hub repo (globs ok)")
    p.add_argument("--text_column", default="text")
    p.add_argument("--cache_dir", default=None, help="datasets cache (default: ~/.cache/huggingface/datasets)")
    p = sub.add_parser("hops", help="offline, synthetic: multi-hop pointer chasing (a task that needs depth)")
    p.add_argument("--nodes", type=int, default=8, help="K, nodes of each permutation (default 8)")
    p.add_argument("--hops", type=int, default=4, help="H: queries ask for 1..H hops (default 4)")
    p.add_argument("--queries", type=int, default=8, help="queries per example, at most K (default 8)")
    p.add_argument("--train_examples", type=int, default=200_000)
    p.add_argument("--val_examples", type=int, default=4096)
    p.add_argument("--val_fraction", type=float, default=0.1, help="fraction of the cycles for val")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--data_dir", default=DATA_DIR, help="where NAME/ goes (default: data/ next to prepare.py)")
    p.add_argument("--out_name", default=None, help="output directory name (default: hops)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is already complete")
    p = sub.add_parser("bench", help="tokenisation throughput; writes nothing")
    p.add_argument("--input", nargs="+", default=None, metavar="PATH", help="corpus (default: stdlib .py files)")
    p.add_argument("--tokenizer", default="gpt2", choices=["bytes", "gpt2"])
    p.add_argument("--num_proc", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    num_proc = getattr(args, "num_proc", 1)  # hops has no tokenising to spread out
    for n in num_proc if isinstance(num_proc, list) else [num_proc]:
        if n < 1:
            raise PrepareError(f"--num_proc must be at least 1, got {n}")
    if args.dataset == "hops":
        for key, low in (("nodes", 2), ("hops", 1), ("queries", 1), ("train_examples", 1), ("val_examples", 1)):
            if getattr(args, key) < low:
                raise PrepareError(f"--{key} must be at least {low}, got {getattr(args, key)}")
        if args.hops >= args.nodes:
            raise PrepareError(f"--hops {args.hops} would go round the cycle of {args.nodes} nodes back to the "
                               f"start: use --hops below --nodes")
        if args.nodes * args.nodes + args.nodes + args.hops > 1 << 16:
            raise PrepareError(f"--nodes {args.nodes} makes more than 65536 tokens: use at most 250 nodes")
    if args.dataset != "bench" and not 0 < args.val_fraction < 1:
        raise PrepareError(f"--val_fraction must be between 0 and 1, got {args.val_fraction}")
    return args


def _settings(args, tok_name):
    """What defines the output; a finished output with other settings is not silently reused."""
    s = {"dataset": args.dataset, "tokenizer": tok_name, "val_fraction": args.val_fraction}
    if args.dataset == "stdlib":
        s.update(seed=args.seed, root=sysconfig.get_paths()["stdlib"])
    elif args.dataset == "text":
        s.update(input=[os.path.abspath(p) for p in args.input])
    elif args.dataset == "hops":
        s.update({k: getattr(args, k) for k in ("nodes", "hops", "queries", "train_examples", "val_examples",
                                                 "seed")})
    else:
        s.update(seed=args.seed, text_column=args.text_column, **(
            {"data_files": args.data_files} if args.data_files else {"repo": args.repo, "revision": args.revision}))
    return s


def _existing(out_dir, settings):
    """The meta of a complete output made with these settings (so there is nothing to do), else None."""
    try:
        with open(os.path.join(out_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if _incomplete(out_dir, meta):
        print(f"{out_dir} is incomplete ({_incomplete(out_dir, meta)}): rebuilding")
        return None
    old = meta.get("settings", {})
    if old != settings:
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                         for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
        raise PrepareError(f"{out_dir} already holds data prepared differently ({diff}): "
                           "pass --force to replace it, or --out_name to write elsewhere")
    return meta


def run(argv=None, tokenizer=None):
    """Parse argv and prepare the dataset; returns meta. `tokenizer` overrides --tokenizer (tests pass a
    small tiktoken.Encoding). Raises PrepareError for anything the user can fix."""
    args = parse_args(argv)
    tok = _as_tokenizer(tokenizer) if tokenizer is not None else None
    if args.dataset == "bench":
        return bench(args, tok or get_tokenizer(args.tokenizer))
    if args.dataset == "hops":
        tok = HopsTokenizer(args.nodes, args.hops)
    tok_name = tok.name if tok else args.tokenizer
    # check the inputs before anything slow happens (loading the BPE, the skip check)
    if args.dataset == "text":
        _check_inputs(args.input, utf8=tok_name != "bytes")
        if sum(os.path.getsize(p) for p in args.input) == 0:
            raise PrepareError("the input is empty: " + ", ".join(args.input))
    if args.dataset == "openwebtext" and args.data_files:
        _builder_for(args.data_files)
    out_dir = os.path.join(args.data_dir, args.out_name or args.dataset)
    settings = json.loads(json.dumps(_settings(args, tok_name)))
    meta = None if args.force else _existing(out_dir, settings)
    if meta is not None:
        print(f"{out_dir} is already prepared ({meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens); "
              "pass --force to rebuild")
        return meta
    tok = tok or get_tokenizer(args.tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    _remove_leftovers(out_dir)
    t0 = time.perf_counter()
    # scratch space for datasets next to the output (same disk), removed whatever happens
    with tempfile.TemporaryDirectory(prefix=".tokenise-", dir=out_dir) as tmp:
        splits, source, info = PREPARE[args.dataset](args, tok, tmp)
        meta = _build(out_dir, tok, splits, source, {**info, "settings": settings})
    dt = time.perf_counter() - t0
    n = meta["train_tokens"] + meta["val_tokens"]
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['tokenizer']}, {meta['dtype']}) in {dt:.1f} s, {n / dt / 1e6:.2f}M tokens/s end to end")
    return meta


def main(argv=None):
    try:
        run(argv)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was left, rerun the same command to finish", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
