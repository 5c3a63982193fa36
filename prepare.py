"""
Prepare a dataset for loopgpt: tokenise text and write the token ids that train.py reads
with np.memmap (the format: dataformat.py).

    python prepare.py openwebtext                 # the paper's data: Hugging Face datasets + GPT-2 BPE
    python prepare.py stdlib                      # offline: this Python's stdlib sources, byte-level
    python prepare.py text --input a.txt b.txt    # your own text files (GPT-2 BPE, or --tokenizer bytes)
    python prepare.py hops --nodes 8 --hops 4     # offline, synthetic: multi-hop pointer chasing (tasks/hops.py)

Each dataset ends up in data/NAME/ (NAME = the dataset, or --out_name): train.bin, val.bin
and meta.json. Read from the top, this file is the OpenWebText path, as nanoGPT's
data/openwebtext/prepare.py: load the documents, split them, tokenise them in parallel,
write the splits. Then come the other datasets, and the machinery: writing that a crash
cannot leave half done (temporary names, fsync, rename, meta.json last), input checks,
and the command line, which skips a dataset already prepared with the same settings.
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
from typing import NamedTuple

import numpy as np

from dataformat import DATA_DIR, SPLITS, DataError, incomplete
from tasks import hops, nextline
from tokenizer import ByteTokenizer, HopsTokenizer, TiktokenTokenizer, get_tokenizer

DATASETS = ("stdlib", "text", "openwebtext", "hops")
OWT_REPO = "Skylion007/openwebtext"
SEED = 2357             # nanoGPT's seed for the OpenWebText split; reused for the stdlib split
PIECE_CHARS = 1 << 16   # text files are tokenised in pieces of about this many characters
READ_BYTES = 1 << 24    # files are read in blocks of this size, so memory stays bounded


class Output(NamedTuple):
    """Where a dataset goes."""
    dir: str        # data/NAME
    scratch: str    # datasets' cache for this run, on the same disk as dir; removed at the end
    settings: dict  # what defines the output, saved in meta.json: the same command again skips


# -----------------------------------------------------------------------------
# OpenWebText, the paper's data: load -> split -> tokenise -> write

def prepare_openwebtext(args, tok, out):
    ds = load_documents(args)  # a datasets.Dataset with one "text" column, one row per document
    if len(ds) < 2:
        raise DataError(f"need at least 2 documents to split into train and val, got {len(ds)}")
    # nanoGPT's split: a random 0.05% of the documents (at least one) with seed 2357
    parts = ds.train_test_split(test_size=args.val_fraction, seed=args.seed, shuffle=True)
    parts = {"train": parts["train"], "val": parts["test"]}
    splits = {}
    for s in SPLITS:  # GPT-2 BPE + EOT per document, in num_proc processes, cached on disk as arrow
        ids = tokenize(parts[s], tok, args.num_proc)
        splits[s] = (arrow_chunks(ids), count(ids))
    source = "openwebtext: " + (" ".join(args.data_files) if args.data_files else
                                f"hf://datasets/{args.repo}@{args.revision or 'main'}")
    return write(out, tok, splits, source, split=f"by document: a random {args.val_fraction:g} (seed {args.seed}) "
                 f"are val", documents={s: len(parts[s]) for s in SPLITS})


def load_documents(args):
    """The documents of --repo at --revision on the Hugging Face hub, or of --data_files, as a
    datasets.Dataset with one "text" column (renamed from --text_column)."""
    datasets = _import_datasets()
    num_proc = args.num_proc if args.num_proc > 1 else None
    try:
        if args.data_files:
            builder = builder_for(args.data_files)
            what = "--data_files " + " ".join(args.data_files)
            extra = {"sample_by": "document"} if builder == "text" else {}  # a .txt file is one document
            ds = datasets.load_dataset(builder, data_files=args.data_files, split="train",
                                       cache_dir=args.cache_dir, num_proc=num_proc, **extra)
        else:
            what = f"{args.repo} (revision {args.revision or 'main'}) from the Hugging Face hub"
            ds = datasets.load_dataset(args.repo, revision=args.revision, split="train",
                                       cache_dir=args.cache_dir, num_proc=num_proc)
    except DataError:
        raise
    except Exception as e:  # hub, network, cache and file-format errors all end up here
        raise DataError(f"could not load {what} ({_first_line(e)}): {_load_hint(e, args)}") from e
    if args.text_column not in ds.column_names:
        raise DataError(f"{what} has no column {args.text_column!r} (columns: {', '.join(ds.column_names)}): "
                        "pass --text_column")
    ds = ds.select_columns([args.text_column])
    return ds if args.text_column == "text" else ds.rename_column(args.text_column, "text")


def _first_line(e):
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _load_hint(e, args):
    if "Dataset scripts are no longer supported" in str(e):
        return ("that revision only has a loading script, which datasets>=4 will not run: pass "
                "--revision refs/convert/parquet (the hub's parquet conversion) or --data_files")
    if args.data_files:
        return "check that the files are readable parquet/jsonl/txt with a text column"
    return "check the network (and that HF_HUB_OFFLINE is unset), or pass " + (
        "" if args.revision == "refs/convert/parquet" else "--revision refs/convert/parquet or ") + \
        "--data_files with local or remote parquet/jsonl/txt shards"


# -----------------------------------------------------------------------------
# tokenising with Hugging Face datasets: parallel over num_proc processes, results
# cached on disk as arrow, so memory stays bounded however large the corpus

def tokenize(ds, tok, num_proc, **kwargs):
    """Map a dataset with a "text" column to rows {"ids", "len"}, in order, whatever num_proc is."""
    datasets = _import_datasets()
    num_proc = min(num_proc, max(1, len(ds)))  # datasets warns about idle workers otherwise
    seq = getattr(datasets, "List", datasets.Sequence)
    features = datasets.Features({"ids": seq(datasets.Value("uint32")), "len": datasets.Value("int64")})
    return ds.map(_encode_batch, batched=True, batch_size=64, fn_kwargs={"tok": tok},
                  remove_columns=ds.column_names, features=features,
                  num_proc=num_proc if num_proc > 1 else None, desc=f"tokenising ({num_proc} proc)", **kwargs)


def _encode_batch(batch, tok):
    eots = batch["eot"] if "eot" in batch else [True] * len(batch["text"])  # documents from datasets: all True
    ids = []
    for text, eot in zip(batch["text"], eots):
        x = tok.encode(text or "")
        if eot and tok.eot_token is not None:
            x = x + [tok.eot_token]
        ids.append(np.array(x, dtype=np.uint32))  # arrow takes numpy arrays ~1.5x faster than lists
    return {"ids": ids, "len": [len(x) for x in ids]}


def count(ds):
    """Tokens in a tokenised dataset."""
    import pyarrow.compute as pc
    return int(pc.sum(ds.with_format("arrow")["len"]).as_py() or 0)


def arrow_chunks(ds, rows=256):
    """The token ids of a tokenised dataset, in row order, as numpy arrays of a few rows each."""
    import pyarrow.compute as pc
    for table in ds.with_format("arrow").iter(batch_size=rows):
        yield pc.list_flatten(table["ids"]).to_numpy()


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError("this needs the Hugging Face datasets package: pip install datasets") from None
    return datasets


# -----------------------------------------------------------------------------
# writing: temporary names, fsync, rename, meta.json last. All or nothing.

def write(out, tok, splits, source, **info):
    """Write splits = {split: (stream of token-id arrays, expected count)} to out.dir; returns meta."""
    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    tmp = {s: os.path.join(out.dir, f"{s}.bin.tmp") for s in SPLITS}
    try:
        counts = {}
        for s in SPLITS:
            chunks, expected = splits[s]
            counts[s] = _write_tokens(tmp[s], chunks, dtype, tok.vocab_size, expected, f"writing {s}.bin")
            if counts[s] != expected:
                raise DataError(f"expected {expected} {s} tokens but got {counts[s]}: "
                                "did the input change while it was being prepared?")
            if counts[s] == 0:
                raise DataError(f"the {s} split has no tokens: the input is (nearly) empty")
        meta = {"tokenizer": tok.name, "vocab_size": tok.vocab_size, "eot_token": tok.eot_token,
                "dtype": np.dtype(dtype).name, "train_tokens": counts["train"], "val_tokens": counts["val"],
                "source": source, **info, "settings": out.settings}
        # Both splits are on disk. Drop the old meta.json first, so that between the
        # renames nothing looks complete; an old set stays valid until this point.
        _remove(os.path.join(out.dir, "meta.json"))
        for s in SPLITS:
            os.replace(tmp[s], os.path.join(out.dir, f"{s}.bin"))
        _write_json(os.path.join(out.dir, "meta.json"), meta)
        _fsync_dir(out.dir)
        return meta
    except BaseException:  # also KeyboardInterrupt: no half-written file may survive
        for path in list(tmp.values()) + [os.path.join(out.dir, "meta.json.tmp")]:
            _remove(path)
        raise


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
                raise DataError(f"token id {lo if lo < 0 else hi} does not fit: the tokenizer's vocab_size is "
                                f"{vocab_size} and ids are stored as {np.dtype(dtype).name}")
            _append(f, ids.astype(dtype, copy=False))
            n += ids.size
            bar.update(ids.size)
        f.flush()
        os.fsync(f.fileno())
    return n


def _append(f, ids):
    f.write(ids.tobytes())


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


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


# -----------------------------------------------------------------------------
# the other datasets: the stdlib's sources, your own text files, the hops task

def prepare_stdlib(args, tok, out):
    root, files = stdlib_files()
    train, val = split_files(files, args.val_fraction, args.seed)
    splits = {}
    for s, paths in zip(SPLITS, (train, val)):
        make, total = _tokenize_files(paths, tok, args.num_proc, os.path.join(out.scratch, s))
        splits[s] = (make(), total)
    source = f"stdlib: {len(files)} .py files under {root} (Python {sys.version.split()[0]})"
    return write(out, tok, splits, source, split=f"by file: {len(val)} random files (seed {args.seed}) are val",
                 documents={"train": len(train), "val": len(val)})


def prepare_text(args, tok, out):
    # the inputs were checked (missing, unreadable, not UTF-8, empty) in run(), before the skip check
    make, total = _tokenize_files(args.input, tok, args.num_proc, out.scratch)
    n_val = max(1, round(total * args.val_fraction))
    if total - n_val < 1:
        raise DataError(f"not enough input to split into train and val: {total} tokens")
    n_train = total - n_val
    splits = {"train": (_take(make(), 0, n_train), n_train), "val": (_take(make(), n_train, total), n_val)}
    return write(out, tok, splits, "text: " + ", ".join(args.input),
                 split=f"the last {args.val_fraction:g} of the tokens are val", documents=len(args.input))


def prepare_hops(args, tok, out):
    n = {"train": args.train_examples, "val": args.val_examples}
    length = args.nodes + 3 * args.queries
    splits = {s: ([hops.examples(tok, n[s], args.queries, args.val_fraction, args.seed, s).ravel()], n[s] * length)
              for s in SPLITS}
    source = (f"hops: {args.nodes} nodes, {args.queries} queries of 1..{args.hops} hops per example, "
              f"seed {args.seed}")
    return write(out, tok, splits, source, split=f"by cycle: {args.val_fraction:g} of all cycles are val",
                 documents=n, answers=hops.answers(args.nodes, args.hops, args.queries))


PREPARE = {"stdlib": prepare_stdlib, "text": prepare_text, "openwebtext": prepare_openwebtext,
           "hops": prepare_hops}


def write_stdlib_task(args, out_dir):
    """eval.py's offline benchmark (tasks/nextline.py), from the val files, into out_dir/tasks/."""
    _, val = split_files(stdlib_files()[1], args.val_fraction, args.seed)
    texts = []
    for path in val:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    n = nextline.write_task(os.path.join(out_dir, "tasks"), texts)
    print(f"wrote {out_dir}/tasks/{nextline.TASK}.yaml: {n} questions from the {len(val)} val files, "
          f"for python eval.py --tasks={nextline.TASK}")


def stdlib_files():
    """The .py files of the running Python's standard library, sorted; no tests, no installed packages."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "dist-packages", "test", "tests", "__pycache__"}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        found += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    if not found:
        raise DataError(f"found no .py files under {root}: is the standard library installed?")
    return root, sorted(found)


def split_files(files, val_fraction, seed):
    """Split a list of files into (train, val), both in the original order; val gets at least 1 file."""
    if len(files) < 2:
        raise DataError(f"need at least 2 files to split into train and val, got {len(files)}")
    n_val = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
    val = set(random.Random(seed).sample(range(len(files)), n_val))
    return ([f for i, f in enumerate(files) if i not in val],
            [f for i, f in enumerate(files) if i in val])


def _tokenize_files(paths, tok, num_proc, scratch):
    """(make_chunks, total) for the files in order; make_chunks() can be iterated more than once."""
    if isinstance(tok, ByteTokenizer):  # the raw bytes are the tokens: no decoding, no datasets
        return (lambda: (c for p in paths for c in _read_blocks(p))), sum(os.path.getsize(p) for p in paths)
    ds = tokenize(_files_dataset(paths, scratch), tok, num_proc)
    return (lambda: arrow_chunks(ds)), count(ds)


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


def _file_pieces(paths, piece_chars):
    """datasets generator: rows {"text", "eot"}; eot is True on the last piece of each file."""
    for path in paths:
        with open(path, "rb") as f:
            pieces = list(_pieces(f.read().decode("utf-8"), piece_chars))
        for i, piece in enumerate(pieces):
            yield {"text": piece, "eot": i == len(pieces) - 1}


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


def _read_blocks(path):
    """The raw bytes of a file, as uint8 arrays of at most READ_BYTES."""
    try:
        with open(path, "rb") as f:
            while block := f.read(READ_BYTES):
                yield np.frombuffer(block, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


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
# input checks: fail early, before anything is written

def check_inputs(paths, utf8):
    """A missing, unreadable or (for BPE) non-UTF-8 file is an error."""
    for path in paths:
        if os.path.isdir(path):
            raise DataError(f"{path} is a directory: pass the files inside it, e.g. {path}/*.txt")
        try:
            with open(path, "rb") as f:
                if utf8:
                    _check_utf8(path, f)
        except FileNotFoundError:
            raise DataError(f"input file not found: {path}") from None
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def _check_utf8(path, f):
    # incremental, so a character cut by a block boundary is fine and memory stays bounded
    decoder = codecs.getincrementaldecoder("utf-8")()
    pos = 0
    for block in iter(lambda: f.read(READ_BYTES), b""):
        pending = len(decoder.getstate()[0])  # bytes of a cut character carried over from the last block
        try:
            decoder.decode(block)
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text (bad byte at offset {pos - pending + e.start}): "
                            "convert it, or use --tokenizer bytes") from None
        pos += len(block)
    if decoder.getstate()[0]:
        raise DataError(f"{path} is not UTF-8 text (it ends in the middle of a character): "
                        "convert it, or use --tokenizer bytes")


_COMPRESSION = (".gz", ".bz2", ".xz", ".zst", ".lz4")
_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text"}


def builder_for(data_files):
    """The datasets builder for --data_files, from their extension."""
    kinds = set()
    for f in data_files:
        name = f.lower()
        for c in _COMPRESSION:
            name = name[:-len(c)] if name.endswith(c) else name
        ext = os.path.splitext(name)[1]
        if ext not in _BUILDERS:
            raise DataError(f"--data_files {f}: unknown type {ext or '(no extension)'}; "
                            "use .parquet, .jsonl/.json or .txt files (optionally compressed)")
        if "://" not in f and not any(ch in f for ch in "*?[") and not os.path.exists(f):
            raise DataError(f"data file not found: {f}")
        kinds.add(_BUILDERS[ext])
    if len(kinds) > 1:
        raise DataError(f"--data_files mixes file types ({', '.join(sorted(kinds))}): use one type")
    return kinds.pop()


# -----------------------------------------------------------------------------
# command line

def run(argv=None, tokenizer=None):
    """Parse argv and prepare the dataset; returns meta. `tokenizer` overrides --tokenizer (tests pass a
    small tiktoken.Encoding). Raises DataError for anything the user can fix."""
    args = parse_args(argv)
    tok = _as_tokenizer(tokenizer) if tokenizer is not None else None
    if args.dataset == "hops":
        tok = HopsTokenizer(args.nodes, args.hops)
    tok_name = tok.name if tok else args.tokenizer
    # check the inputs before anything slow happens (loading the BPE, the skip check)
    if args.dataset == "text":
        check_inputs(args.input, utf8=tok_name != "bytes")
        if sum(os.path.getsize(p) for p in args.input) == 0:
            raise DataError("the input is empty: " + ", ".join(args.input))
    if args.dataset == "openwebtext" and args.data_files:
        builder_for(args.data_files)
    out_dir = os.path.join(args.data_dir, args.out_name or args.dataset)
    settings = json.loads(json.dumps(_settings(args, tok_name)))
    meta = None if args.force else _existing(out_dir, settings)
    if meta is not None:
        print(f"{out_dir} is already prepared ({meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens); "
              "pass --force to rebuild")
        if args.dataset == "stdlib":
            write_stdlib_task(args, out_dir)
        return meta
    tok = tok or get_tokenizer(args.tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    _remove_leftovers(out_dir)
    t0 = time.perf_counter()
    # scratch space for datasets next to the output (same disk), removed whatever happens
    with tempfile.TemporaryDirectory(prefix=".tokenise-", dir=out_dir) as scratch:
        meta = PREPARE[args.dataset](args, tok, Output(out_dir, scratch, settings))
    dt = time.perf_counter() - t0
    n = meta["train_tokens"] + meta["val_tokens"]
    print(f"wrote {out_dir}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['tokenizer']}, {meta['dtype']}) in {dt:.1f} s, {n / dt / 1e6:.2f}M tokens/s end to end")
    if args.dataset == "stdlib":
        write_stdlib_task(args, out_dir)
    return meta


def main(argv=None):
    try:
        run(argv)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was left, rerun the same command to finish", file=sys.stderr)
        return 130
    return 0


def _as_tokenizer(tok):
    """Accept a tokenizer object, or a bare tiktoken.Encoding (what the tests build)."""
    return tok if hasattr(tok, "eot_token") and hasattr(tok, "vocab_size") else TiktokenTokenizer(tok)


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
    if incomplete(out_dir, meta):
        print(f"{out_dir} is incomplete ({incomplete(out_dir, meta)}): rebuilding")
        return None
    old = meta.get("settings", {})
    if old != settings:
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}"
                         for k in sorted(set(old) | set(settings)) if old.get(k) != settings.get(k))
        raise DataError(f"{out_dir} already holds data prepared differently ({diff}): "
                        "pass --force to replace it, or --out_name to write elsewhere")
    return meta


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line through main(), not argparse's usage + exit 2
        raise DataError(f"{message} (see python prepare.py {self.prog.split()[-1]} --help)"
                        if " " in self.prog else message)


def _common(p, tokenizer, val_fraction, what, tokenizes=True):
    if tokenizes:
        p.add_argument("--tokenizer", default=tokenizer, choices=["bytes", "gpt2"],
                       help=f"bytes: vocab 256, no download; gpt2: tiktoken BPE + EOT (default {tokenizer})")
    p.add_argument("--val_fraction", type=float, default=val_fraction, help=f"{what} (default {val_fraction})")
    p.add_argument("--data_dir", default=DATA_DIR, help="where NAME/ goes (default: data/ next to prepare.py)")
    p.add_argument("--out_name", default=None, help="output directory name (default: the dataset name)")
    if tokenizes:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        p.add_argument("--num_proc", type=int, default=cpus,
                       help="tokenisation processes (default: CPU count; raw bytes need no tokenising)")
    p.add_argument("--force", action="store_true", help="rebuild even if the output is already complete")


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        raise DataError("which dataset? python prepare.py stdlib|text|openwebtext|hops (add --help for options)")
    if argv and not argv[0].startswith("-") and argv[0] not in DATASETS:
        raise DataError(f"unknown dataset {argv[0]!r}: choose stdlib, text, openwebtext or hops "
                        "(your own files: python prepare.py text --input FILE ...)")
    parser = _Parser(prog="prepare.py", description=__doc__.strip(),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    p = sub.add_parser("openwebtext", help="OpenWebText via Hugging Face datasets")
    _common(p, "gpt2", 0.0005, "fraction of documents for val")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the document split")
    p.add_argument("--repo", default=OWT_REPO, help="hub dataset repo id")
    p.add_argument("--revision", default=None, help="hub revision, e.g. refs/convert/parquet")
    p.add_argument("--data_files", nargs="+", default=None, metavar="FILE",
                   help="local or remote .parquet/.jsonl/.txt shards instead of the hub repo (globs ok)")
    p.add_argument("--text_column", default="text")
    p.add_argument("--cache_dir", default=None, help="datasets cache (default: ~/.cache/huggingface/datasets)")
    p = sub.add_parser("stdlib", help="offline: this Python's standard library sources")
    _common(p, "bytes", 0.01, "fraction of files for val")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the file split")
    p = sub.add_parser("text", help="your own text files")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="text files, one document each")
    _common(p, "gpt2", 0.1, "fraction of the tokens, at the end, for val")
    p = sub.add_parser("hops", help="offline, synthetic: multi-hop pointer chasing (a task that needs depth)")
    p.add_argument("--nodes", type=int, default=8, help="K, nodes of each cycle (default 8)")
    p.add_argument("--hops", type=int, default=4, help="H: queries ask for 1..H hops (default 4)")
    p.add_argument("--queries", type=int, default=8, help="queries per example, at most K (default 8)")
    p.add_argument("--train_examples", type=int, default=200_000)
    p.add_argument("--val_examples", type=int, default=4096)
    p.add_argument("--seed", type=int, default=SEED)
    _common(p, None, 0.1, "fraction of the cycles for val", tokenizes=False)
    args = parser.parse_args(argv)
    if getattr(args, "num_proc", 1) < 1:  # hops has no tokenising to spread out
        raise DataError(f"--num_proc must be at least 1, got {args.num_proc}")
    if args.dataset == "hops":
        hops.check_settings(args.nodes, args.hops, args.queries, args.train_examples, args.val_examples)
    if not 0 < args.val_fraction < 1:
        raise DataError(f"--val_fraction must be between 0 and 1, got {args.val_fraction}")
    return args


if __name__ == "__main__":
    sys.exit(main())

# What the commands write, on Python 3.11.7 (the stdlib differs between Python versions):
#   python prepare.py stdlib   799 files: 12,441,439 train + 160,786 val tokens (bytes, uint16), 8 val files
#   python prepare.py hops     200,000 + 4,096 examples of 32 tokens: 6,400,000 train + 131,072 val tokens
#   python prepare.py openwebtext   not run here (no network); nanoGPT reports 9,035,582,198 train and
#                              4,434,897 val tokens for this split of Skylion007/openwebtext (train.bin ~17 GB)
