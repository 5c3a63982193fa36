"""
Tests for prepare.py. Offline and fast: every corpus is tiny or local, every
output and datasets cache lives under tmp_path, and the BPE is a small
tiktoken.Encoding built here (the real GPT-2 files need a download).
"""

import os

# Never touch the network: this must be set before `datasets` is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import collections
import json
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest
import tiktoken

import prepare
import tokenizer
from dataformat import SPLITS, DataError, load_meta

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository root
DOCS = [
    "the cat sat on the mat\n",
    "",  # an empty document still gets its EOT
    "héllo wörld, 日本語, 🙂 and a literal <|endoftext|> that is just text\n",
    "line one\nline two\n\n    indented\r\nwindows line\n",
    "numbers 12345 and the thing's 'quotes'",
    "the cat sat on the mat\n",  # a duplicate must survive as a duplicate
] + [f"document {i}: the thing in the {'ring ' * i}\n" for i in range(14)]


def prep(tmp_path, *argv, tokenizer=None):
    return prepare.run([*argv, "--data_dir", str(tmp_path / "data")], tokenizer=tokenizer)


def tokens(out_dir, split, meta):
    return np.fromfile(os.path.join(out_dir, f"{split}.bin"), dtype=meta["dtype"])


def contents(out_dir):
    """Every file under out_dir, relative name -> bytes (to compare runs byte for byte), but the
    task YAML, which names its data file by its absolute path."""
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(pathlib.Path(out_dir).rglob("*"))
            if p.is_file() and p.suffix != ".yaml"}


def split_on(ids, eot):
    """Token ids -> documents (lists of ids); every document must end with eot."""
    assert len(ids) and ids[-1] == eot
    cuts = np.flatnonzero(ids == eot)
    return [ids[a + 1:b].tolist() for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def write_docs(path, docs, kind):
    if kind == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d, "id": len(d)}) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path)
    return str(path)


def assert_meta_matches_files(out_dir, meta):
    assert load_meta(out_dir) == meta
    assert {"tokenizer": str, "vocab_size": int, "dtype": str, "train_tokens": int, "val_tokens": int,
            "source": str}.items() <= {k: type(v) for k, v in meta.items()}.items()
    assert meta["eot_token"] is None or isinstance(meta["eot_token"], int)
    assert meta["dtype"] == ("uint16" if meta["vocab_size"] <= 65536 else "uint32")
    for split in SPLITS:
        size = os.path.getsize(os.path.join(out_dir, f"{split}.bin"))
        assert size == meta[f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize > 0
    # no tmp files, no scratch dirs; stdlib also has eval.py's task
    assert set(os.listdir(out_dir)) - {"tasks"} == {"train.bin", "val.bin", "meta.json"}
    assert ("tasks" in os.listdir(out_dir)) == (meta["settings"]["dataset"] == "stdlib")


# -----------------------------------------------------------------------------
# tokenizers and cheap import

def test_gpt2_download_failure_is_one_clear_line(monkeypatch, tmp_path, capsys):
    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR"):
        tokenizer.get_tokenizer("gpt2")
    f = tmp_path / "a.txt"
    f.write_text("hello\n")
    assert prepare.main(["text", "--input", str(f), "--data_dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: could not load the GPT-2 BPE") and err.count("\n") == 1
    assert not os.path.exists(tmp_path / "data" / "text" / "meta.json")


def test_import_is_cheap():
    code = "import sys, prepare; print([m for m in ('datasets', 'tiktoken', 'torch') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_utf8_check_across_read_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "READ_BYTES", 3)  # characters get cut by block boundaries
    f = tmp_path / "in.txt"
    f.write_bytes("aé日🙂b".encode() * 5)
    prepare.check_inputs([str(f)], utf8=True)
    for data, where in [("aé日".encode() + b"\xffx", "offset 6"), (b"abc\x80", "offset 3"),
                        ("ab🙂".encode()[:-1], "ends in the middle of a character")]:
        f.write_bytes(data)
        with pytest.raises(DataError, match=where):
            prepare.check_inputs([str(f)], utf8=True)


def test_pieces_keep_bpe_tokens(enc):
    # cutting long files into pieces must not change a single token
    rng = random.Random(0)
    alphabet = list("ab \n\t\r.'s1é日\u00a0\x1c")
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for size in (1, 5):
            pieces = list(prepare._pieces(text, size))
            assert "".join(pieces) == text
            assert [t for p in pieces for t in enc.encode_ordinary(p)] == enc.encode_ordinary(text)


# -----------------------------------------------------------------------------
# openwebtext: the real datasets loading path on local parquet / jsonl files

@pytest.mark.parametrize("kind", ["parquet", "jsonl"])
def test_openwebtext_round_trip(tmp_path, enc, kind):
    path = write_docs(tmp_path / f"docs.{kind}", DOCS, kind)
    meta = prep(tmp_path, "openwebtext", "--data_files", path, "--cache_dir", str(tmp_path / "hf"),
                "--num_proc", "1", tokenizer=enc)
    out = tmp_path / "data" / "openwebtext"
    assert_meta_matches_files(out, meta)
    assert meta["tokenizer"] == "test" and meta["vocab_size"] == enc.n_vocab and meta["dtype"] == "uint16"
    assert meta["eot_token"] == enc.eot_token and meta["source"] == f"openwebtext: {path}"
    assert meta["documents"] == {"train": len(DOCS) - 1, "val": 1}  # 0.0005 of 20 documents rounds up to 1
    got = []
    for split in SPLITS:
        docs = [enc.decode(d) for d in split_on(tokens(out, split, meta), enc.eot_token)]
        assert len(docs) == meta["documents"][split]
        got += docs
    assert collections.Counter(got) == collections.Counter(DOCS)  # none lost, none duplicated


def test_openwebtext_parallel_is_byte_identical(tmp_path, enc):
    path = write_docs(tmp_path / "docs.jsonl", DOCS, "jsonl")
    runs = {}
    for n in (1, 2):  # separate datasets caches, so num_proc 2 really tokenises
        cache = tmp_path / f"hf{n}"
        prep(tmp_path, "openwebtext", "--data_files", path, "--cache_dir", str(cache), "--num_proc", str(n),
             "--out_name", f"owt{n}", tokenizer=enc)
        runs[n] = contents(tmp_path / "data" / f"owt{n}")
    assert any("_of_00002" in f for _, _, fs in os.walk(tmp_path / "hf2") for f in fs)  # 2 workers did run
    assert runs[1] == runs[2]


def test_openwebtext_text_column_and_txt_files(tmp_path, enc):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = str(tmp_path / "docs.parquet")
    pq.write_table(pa.table({"content": DOCS[:4]}), path)
    args = ["openwebtext", "--data_files", path, "--cache_dir", str(tmp_path / "hf"), "--num_proc", "1"]
    with pytest.raises(DataError, match="no column 'text' .*content.*--text_column"):
        prep(tmp_path, *args, tokenizer=enc)
    meta = prep(tmp_path, *args, "--text_column", "content", tokenizer=enc)
    assert meta["documents"] == {"train": 3, "val": 1}
    # .txt shards: each file is one document
    txts = []
    for i, d in enumerate(["first file\nwith two lines\n", "second file\n", "third\n"]):
        (tmp_path / f"{i}.txt").write_text(d)
        txts.append(str(tmp_path / f"{i}.txt"))
    meta = prep(tmp_path, "openwebtext", "--data_files", *txts, "--cache_dir", str(tmp_path / "hf"),
                "--num_proc", "1", "--out_name", "txt", tokenizer=enc)
    out = tmp_path / "data" / "txt"
    got = [enc.decode(d) for s in SPLITS for d in split_on(tokens(out, s, meta), enc.eot_token)]
    assert sorted(got) == sorted(pathlib.Path(t).read_text() for t in txts)


def test_hub_errors_are_one_clear_line(tmp_path):
    """No network, and a revision that only has a loading script: one line each, no traceback."""
    script_repo = tmp_path / "openwebtext"
    script_repo.mkdir()
    (script_repo / "openwebtext.py").write_text("# a dataset script, which datasets>=4 refuses to run\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    common = ["--tokenizer", "bytes", "--data_dir", str(tmp_path / "data"), "--cache_dir", str(tmp_path / "hf")]
    for extra, expected in [([], "--data_files"), (["--repo", str(script_repo)], "--revision refs/convert/parquet")]:
        r = subprocess.run([sys.executable, "prepare.py", "openwebtext", *common, *extra],
                           cwd=HERE, env=env, capture_output=True, text=True, timeout=120)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert last.startswith("error: could not load") and expected in last, last
    assert not os.path.exists(tmp_path / "data" / "openwebtext" / "meta.json")


# -----------------------------------------------------------------------------
# stdlib and text

def test_stdlib_round_trip_and_deterministic(tmp_path):
    meta = prep(tmp_path, "stdlib")
    out = tmp_path / "data" / "stdlib"
    assert_meta_matches_files(out, meta)
    assert {k: meta[k] for k in ("tokenizer", "vocab_size", "eot_token", "dtype")} == \
        {"tokenizer": "bytes", "vocab_size": 256, "eot_token": None, "dtype": "uint16"}
    root, files = prepare.stdlib_files()
    assert files == sorted(files) and len(files) > 100
    assert not [f for f in files if {"test", "tests", "site-packages"} & set(os.path.relpath(f, root).split(os.sep))]
    train, val = prepare.split_files(files, 0.01, prepare.SEED)
    assert sorted(train + val) == files and not set(train) & set(val) and len(val) >= 1
    assert meta["documents"] == {"train": len(train), "val": len(val)}
    for split, paths in zip(SPLITS, (train, val)):  # exact bytes, in order, no separators
        assert tokens(out, split, meta).astype(np.uint8).tobytes() == b"".join(pathlib.Path(p).read_bytes() for p in paths)
    prep(tmp_path, "stdlib", "--out_name", "again")  # the split and the files do not change between runs
    assert contents(tmp_path / "data" / "again") == contents(out)
    # eval.py's task (nextline.py) from the val files: each question's true line follows its context there
    yaml = (out / "tasks" / "stdlib_next_line.yaml").read_text()
    assert json.dumps(str(out / "tasks" / "stdlib_next_line.jsonl")) in yaml and 'target_delimiter: ""' in yaml
    questions = [json.loads(line) for line in (out / "tasks" / "stdlib_next_line.jsonl").read_text().splitlines()]
    texts = [pathlib.Path(p).read_text(encoding="utf-8", errors="replace") for p in val]
    assert len(questions) == 400 and {q["label"] for q in questions} == {0, 1, 2, 3}
    for q in questions:
        f, i = q["source"]
        lines = texts[f].split("\n")
        true = q["choices"][q["label"]]
        assert true == lines[i] and ("\n".join(lines[:i]) + "\n").endswith(q["context"])
        assert len(set(q["choices"])) == 4 and 0 < len(q["context"]) <= 240
        indent = true[:len(true) - len(true.lstrip())]
        others = {line.strip() for g, text in enumerate(texts) if g != f for line in text.split("\n")}
        for c in q["choices"]:  # distractors: lines of the other files, indented as the true line
            assert c.startswith(indent) and (c == true or c.strip() in others)


def test_split_files_is_seeded():
    files = [f"f{i}" for i in range(50)]
    assert prepare.split_files(files, 0.1, 1) == prepare.split_files(files, 0.1, 1)
    assert prepare.split_files(files, 0.1, 1) != prepare.split_files(files, 0.1, 2)
    assert len(prepare.split_files(files[:2], 0.001, 1)[1]) == 1  # at least one val file
    with pytest.raises(DataError):
        prepare.split_files(files[:1], 0.5, 1)


def test_text_bytes_round_trip(tmp_path):
    data = [b"plain ascii\n", "ünïcödé 日本 🙂\r\nno newline at the end".encode(), b"\xff\xfe not utf-8 \x00\n"]
    paths = []
    for i, d in enumerate(data):
        (tmp_path / f"in{i}.txt").write_bytes(d)
        paths.append(str(tmp_path / f"in{i}.txt"))
    meta = prep(tmp_path, "text", "--input", *paths, "--tokenizer", "bytes")
    out = tmp_path / "data" / "text"
    assert_meta_matches_files(out, meta)
    total = sum(map(len, data))
    assert meta["val_tokens"] == round(total * 0.1) and meta["train_tokens"] + meta["val_tokens"] == total
    ids = np.concatenate([tokens(out, s, meta) for s in SPLITS])
    assert ids.astype(np.uint8).tobytes() == b"".join(data)  # exact, including the bytes that are not UTF-8
    before = contents(out)
    prep(tmp_path, "text", "--input", *paths, "--tokenizer", "bytes", "--force")
    assert contents(out) == before


def test_text_bpe_pieces_and_parallel(tmp_path, enc, monkeypatch):
    monkeypatch.setattr(prepare, "PIECE_CHARS", 40)  # many pieces per file
    texts = ["".join(DOCS) * 3, "short file\r\nwith crlf\r\n", DOCS[2]]
    paths = []
    for i, t in enumerate(texts):
        (tmp_path / f"in{i}.txt").write_bytes(t.encode())
        paths.append(str(tmp_path / f"in{i}.txt"))
    runs = {}
    for n in (1, 2):
        meta = prep(tmp_path, "text", "--input", *paths, "--num_proc", str(n), "--out_name", f"t{n}", tokenizer=enc)
        runs[n] = contents(tmp_path / "data" / f"t{n}")
    assert runs[1] == runs[2]
    out = tmp_path / "data" / "t1"
    ids = np.concatenate([tokens(out, s, meta) for s in SPLITS]).tolist()
    assert ids == [t for text in texts for t in enc.encode_ordinary(text) + [enc.eot_token]]
    assert meta["val_tokens"] == round(len(ids) * 0.1)


# -----------------------------------------------------------------------------
# failure behaviour

def assert_nothing_left(out_dir):
    left = os.listdir(out_dir) if os.path.exists(out_dir) else []
    assert not [n for n in left if n.endswith((".bin", ".tmp", ".json")) or n.startswith(".tokenise")], left


def interrupt_writing(monkeypatch, split):
    """Make the writer raise KeyboardInterrupt (a Ctrl-C) in the middle of writing `split`."""
    real = prepare._append

    def append(f, ids):
        if f.name.endswith(f"{split}.bin.tmp") and f.tell() > 0:
            raise KeyboardInterrupt
        real(f, ids)
    monkeypatch.setattr(prepare, "_append", append)


@pytest.mark.parametrize("split", ["train", "val"])
def test_interrupted_stdlib_leaves_nothing_and_rerun_is_identical(tmp_path, monkeypatch, capsys, split):
    prep(tmp_path, "stdlib", "--out_name", "reference")
    with monkeypatch.context() as m:
        interrupt_writing(m, split)
        assert prepare.main(["stdlib", "--data_dir", str(tmp_path / "data")]) == 130
    assert "interrupted" in capsys.readouterr().err
    out = tmp_path / "data" / "stdlib"
    assert_nothing_left(out)
    with pytest.raises(DataError, match="python prepare.py stdlib"):
        load_meta(out)
    prep(tmp_path, "stdlib")  # no --force needed: nothing complete was there
    assert contents(out) == contents(tmp_path / "data" / "reference")


def test_interrupted_openwebtext_rerun_is_identical(tmp_path, monkeypatch, enc):
    path = write_docs(tmp_path / "docs.jsonl", DOCS * 20, "jsonl")  # enough rows for several chunks
    args = ["openwebtext", "--data_files", path, "--cache_dir", str(tmp_path / "hf"), "--num_proc", "1"]
    prep(tmp_path, *args, "--out_name", "reference", tokenizer=enc)
    with monkeypatch.context() as m:
        interrupt_writing(m, "train")
        with pytest.raises(KeyboardInterrupt):
            prep(tmp_path, *args, tokenizer=enc)
    out = tmp_path / "data" / "openwebtext"
    assert_nothing_left(out)
    prep(tmp_path, *args, tokenizer=enc)
    ref = contents(tmp_path / "data" / "reference")
    assert contents(out) == ref


def test_leftovers_of_a_killed_run_are_removed(tmp_path):
    out = tmp_path / "data" / "stdlib"
    (out / ".tokenise-abc123" / "cache").mkdir(parents=True)  # what kill -9 leaves behind
    (out / "train.bin.tmp").write_bytes(b"half")
    (out / "meta.json.tmp").write_text("{")
    meta = prep(tmp_path, "stdlib")
    assert_meta_matches_files(out, meta)  # also: nothing but the three outputs


def test_interrupted_force_keeps_the_old_output(tmp_path, monkeypatch):
    meta = prep(tmp_path, "stdlib")
    out = tmp_path / "data" / "stdlib"
    before = contents(out)
    with monkeypatch.context() as m:
        interrupt_writing(m, "val")
        with pytest.raises(KeyboardInterrupt):
            prep(tmp_path, "stdlib", "--force")
    assert contents(out) == before and load_meta(out) == meta  # still complete and valid


def test_skip_force_and_changed_settings(tmp_path, capsys):
    prep(tmp_path, "stdlib")
    out = tmp_path / "data" / "stdlib"
    mtimes = {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)}
    capsys.readouterr()
    prep(tmp_path, "stdlib")
    assert "already prepared" in capsys.readouterr().out
    assert mtimes == {n: os.stat(out / n).st_mtime_ns for n in os.listdir(out)}
    with pytest.raises(DataError, match=r"val_fraction: 0.01 -> 0.05.*--force"):
        prep(tmp_path, "stdlib", "--val_fraction", "0.05")
    meta = prep(tmp_path, "stdlib", "--val_fraction", "0.05", "--force")
    assert meta["settings"]["val_fraction"] == 0.05 and load_meta(out) == meta
    # a damaged output is not complete: load_meta refuses it and a plain rerun rebuilds it
    with open(out / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(DataError, match="incomplete.*--force"):
        load_meta(out)
    assert prep(tmp_path, "stdlib", "--val_fraction", "0.05") == meta
    assert load_meta(out) == meta


class HugeIdTokenizer:
    name, vocab_size, eot_token = "huge", 300, 299

    def encode(self, text):
        return [1, 2, 70000] if "bad" in text else [1, 2]


def test_token_id_that_does_not_fit(tmp_path):
    paths = []
    for i, t in enumerate(["fine\n", "bad\n"]):
        (tmp_path / f"{i}.txt").write_text(t)
        paths.append(str(tmp_path / f"{i}.txt"))
    with pytest.raises(DataError, match="token id 70000 does not fit.*vocab_size is 300.*uint16"):
        prep(tmp_path, "text", "--input", *paths, "--num_proc", "1", tokenizer=HugeIdTokenizer())
    assert_nothing_left(tmp_path / "data" / "text")


@pytest.mark.parametrize("argv, message", [
    (["shakespeare"], "unknown dataset 'shakespeare'"),
    ([], "which dataset"),
    (["text", "--input", "{tmp}/missing.txt"], "input file not found"),
    (["text", "--input", "{tmp}/empty.txt", "--tokenizer", "bytes"], "the input is empty"),
    (["text", "--input", "{tmp}"], "is a directory"),
    (["text", "--input", "{tmp}/latin1.txt"], "is not UTF-8 text (bad byte at offset 2)"),
    (["openwebtext", "--data_files", "{tmp}/docs.csv"], "unknown type .csv"),
    (["openwebtext", "--data_files", "{tmp}/missing.parquet"], "data file not found"),
    (["stdlib", "--val_fraction", "1.5"], "--val_fraction must be between 0 and 1"),
    (["stdlib", "--num_proc", "0"], "--num_proc must be at least 1"),
    (["stdlib", "--bogus"], "unrecognized arguments: --bogus"),
    (["hops", "--hops", "8"], "--hops 8 would go round the cycle of 8 nodes"),
    (["hops", "--queries", "9"], "--queries 9 is more than --nodes 8"),
    (["hops", "--nodes", "300"], "use at most 250 nodes"),
])
def test_user_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("größe".encode("latin-1"))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert prepare.main(argv + (["--data_dir", str(tmp_path / "data")] if argv else [])) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not os.path.exists(tmp_path / "data") or not any(
        n.endswith((".bin", ".json")) for _, _, fs in os.walk(tmp_path / "data") for n in fs)
