"""prepare.py: the split rule, documents, byte counts, dtype, reuse, atomic writes, bad input, bounded memory."""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prepare as prepare_script
from helpers import prepare_peak_rss
from smallgpt import corpus, dataset, encoding, pipeline, safefiles
from smallgpt import tokenizer as tok
from smallgpt.cli import run_main
from smallgpt.config import DataConfig
from smallgpt.errors import UserError
from helpers import serve

ROOT = Path(__file__).resolve().parents[1]
LINES = ["Grüße aus Köln — „Zitat“ ½\n", "    indented line with 日本語\n", "x = [1, 2, 3]  # code\n", "\n",
         "Emoji 🎉 and ελληνικά\n", "plain ASCII line, nothing special\n"]


def text_of(n_lines: int, offset: int = 0) -> str:
    return "".join(f"{i}: {LINES[(i + offset) % len(LINES)]}" if i % 7 else LINES[(i + offset) % len(LINES)]
                   for i in range(n_lines))


def data_cfg(tmp_path: Path, source, **kw) -> DataConfig:
    kw.setdefault("dir", str(tmp_path / "ds"))
    kw.setdefault("tokenizer", "bytes")
    return DataConfig(source=source if isinstance(source, list) else str(source), **kw)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def tokens_of(ds: dataset.Dataset) -> list[int]:
    return np.concatenate([ds.train, ds.val]).tolist()


def expected_split(raw: bytes, val_fraction: float) -> int:
    """SPLIT_RULE for a single file, written out independently of prepare.py."""
    s = int((1 - val_fraction) * len(raw))
    printable = range(0x21, 0x7F)
    return next(j for j in range(max(s, 2), len(raw))
                if raw[j - 1] == ord("\n") and raw[j] in printable and raw[j - 2] in printable)


def test_single_file_split_round_trip_and_counts(tmp_path):
    text = text_of(200)
    src = write(tmp_path / "corpus.txt", text)
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, src, val_fraction=0.1), progress=False))
    enc, raw = ds.tokenizer, text.encode()
    cut = expected_split(raw, 0.1)
    assert enc.decode(ds.train.tolist()) == raw[:cut].decode() and enc.decode(ds.val.tolist()) == raw[cut:].decode()
    m = ds.meta
    assert m["dtype"] == "uint16" and ds.train.dtype == np.uint16
    assert (m["train_tokens"], m["val_tokens"]) == (len(ds.train), len(ds.val)) == (cut, len(raw) - cut)
    assert (m["train_bytes"], m["val_bytes"]) == (cut, len(raw) - cut)
    assert ds.bytes_per_token("val") == 1.0 and ds.vocab_size == 257 and ds.eot_id == 256
    assert m["tokenizer"] == tok.bytes_spec() and m["val_fraction"] == 0.1 and m["split_rule"] == pipeline.SPLIT_RULE
    assert m["source"]["sha256"] == hashlib.sha256(raw).hexdigest() and m["format_version"] == dataset.FORMAT_VERSION
    assert len(ds.fingerprint) == 16 and int(ds.fingerprint, 16) >= 0


def test_directory_documents_eot_and_skipped_files(tmp_path, capsys):
    docs = {"b.txt": text_of(30, 1), "a.txt": text_of(20, 2), "sub/c.md": text_of(40, 3)}
    for name, content in docs.items():
        write(tmp_path / "src" / name, content)
    write(tmp_path / "src" / ".git" / "HEAD", "ref: hidden files are skipped\n")
    write(tmp_path / "src" / "empty.txt", "")
    write(tmp_path / "src" / "img.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, tmp_path / "src", val_fraction=0.6), progress=False))
    assert "skipped 1 files that hold no text or records" in capsys.readouterr().err
    ids = tokens_of(ds)
    parts, start = [], 0
    for j in [i for i, t in enumerate(ids) if t == ds.eot_id] + [len(ids)]:
        parts.append(ds.tokenizer.decode(ids[start:j]))
        start = j + 1
    assert parts == [docs["a.txt"], docs["b.txt"], docs["sub/c.md"]]  # sorted, separated by <|endoftext|>
    m = ds.meta
    assert (m["train_documents"], m["val_documents"]) == (2, 1)  # documents that start in each split
    assert m["train_bytes"] + m["val_bytes"] == sum(len(d.encode()) for d in docs.values())
    assert m["build"]["skipped"] == [f"{tmp_path / 'src' / 'img.png'} (binary)"]


def test_glob_and_list_sources(tmp_path, monkeypatch):
    a = write(tmp_path / "t" / "a.txt", text_of(20))
    b = write(tmp_path / "t" / "b.txt", text_of(20, 1))
    write(tmp_path / "t" / "c.csv", "not,matched\n")
    got = corpus.resolve_source(data_cfg(tmp_path, str(tmp_path / "t" / "*.txt")), tmp_path)
    assert got.files == [a, b]
    assert corpus.resolve_source(data_cfg(tmp_path, [str(b), str(tmp_path / "t" / "*.txt")]), tmp_path).files == [b, a]
    monkeypatch.chdir(tmp_path)
    assert dataset.dataset_dir(DataConfig()) == Path("data/python-stdlib-bpe4096")
    assert dataset.dataset_dir(DataConfig(source="t/a.txt", tokenizer="gpt2")) == Path("data/a-gpt2")
    assert dataset.dataset_dir(DataConfig(source=["t/*.txt", "x"], tokenizer="bytes")) == Path("data/t+1-bytes")


def test_default_source_is_the_standard_library():
    files = corpus.stdlib_files()
    assert len(files) > 500 and files == sorted(files)
    assert all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)
    assert any(f.name == "textwrap.py" for f in files)


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path, capsys):
    raw = text_of(100).encode() + b"caf\xe9 ok\n" + text_of(20).encode()
    src = write(tmp_path / "latin.txt", raw)
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, src), progress=False))
    assert "replaced 1 invalid UTF-8 sequences" in capsys.readouterr().err
    assert ds.meta["build"]["replaced"] == 1
    text = raw.decode("utf-8", "replace")
    assert ds.tokenizer.decode(tokens_of(ds)) == text
    assert ds.meta["train_bytes"] + ds.meta["val_bytes"] == len(text.encode())  # U+FFFD counts its 3 bytes


def test_dtype_uint32_for_large_vocabularies(tmp_path):
    ranks = {bytes([i]): i for i in range(256)} | {b"\xff\xfe" + i.to_bytes(3, "big"): 256 + i for i in range(70_000)}
    tok.write_rank_file(ranks, tmp_path / "big.tiktoken")
    src = write(tmp_path / "c.txt", text_of(50))
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, src, tokenizer=str(tmp_path / "big.tiktoken")), progress=False))
    assert ds.meta["dtype"] == "uint32" and ds.val.dtype == np.uint32
    assert ds.eot_id == 70_256 and ds.vocab_size == 70_257 and ds.meta["tokenizer"]["file"] == "big.tiktoken"
    assert ds.tokenizer.decode(tokens_of(ds)) == text_of(50)


def test_blockwise_encoding_gives_the_tokens_of_whole_documents(gpt2_rank_file, tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "BLOCK", 2048)  # many blocks per file
    stdlib = {f.name: f for f in corpus.stdlib_files()}
    docs = [stdlib[n].read_text(encoding="utf-8") for n in ("textwrap.py", "bisect.py", "shlex.py")]
    for n, d in enumerate(docs):
        write(tmp_path / "src" / f"{n}.py", d)
    one_line = "ünïcödé wörds without any line break " * 1000  # cut between words
    docs.append(one_line)
    write(tmp_path / "src" / "3.txt", one_line)
    no_gaps = "日本語のテキスト" * 3000  # > 16 blocks without a safe place: cut at a character boundary
    write(tmp_path / "src" / "4.txt", no_gaps)
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, tmp_path / "src", tokenizer=str(gpt2_rank_file)), progress=False))
    enc = ds.tokenizer
    whole = [t for d in docs for t in enc.encode_ordinary(d) + [ds.eot_id]]
    ids = tokens_of(ds)
    assert ids[:len(whole)] == whole
    assert enc.decode(ids[len(whole):]) == no_gaps and ds.meta["build"]["replaced"] == 0
    assert ds.meta["tokenizer"]["name"] == "r50k_base"


def test_bpe_dataset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = text_of(400) + "a literal <|endoftext|> is text, not a separator\n" + text_of(40)
    write(tmp_path / "novel.txt", text)
    cfg = DataConfig(source="novel.txt", tokenizer="bpe", vocab_size=300)
    path = pipeline.prepare(cfg, progress=False)
    assert path == Path("data/novel-bpe300") and (path / tok.RANK_FILE).is_file()
    ds = dataset.open_dataset(path)
    assert ds.vocab_size == 300 and ds.eot_id == 299 and ds.meta["tokenizer"]["kind"] == "bpe"
    assert ds.tokenizer.decode(tokens_of(ds)) == text and ds.eot_id not in tokens_of(ds)
    assert 1.2 < ds.bytes_per_token("train") < 10


def test_bpe_trains_on_an_evenly_spread_sample_of_train(tmp_path, monkeypatch):
    for n in range(10):  # ten files of the same size: val is the last one, marked
        write(tmp_path / "src" / f"{n}.txt", text_of(3000, n).replace("plain", "VALID" if n == 9 else "plain"))
    c = corpus.resolve_source(data_cfg(tmp_path, tmp_path / "src"), tmp_path)
    assert pipeline.split_point(c, 0.1) == (9, 0)
    train_bytes = c.position((9, 0))
    assert train_bytes == sum(e - s for _, s, e in pipeline.split_segments(c, (9, 0))["train"])
    ranges = pipeline.sample_ranges(c, train_bytes, c.total // 5, piece=4096)
    assert abs(sum(e - s for _, s, e in ranges) - c.total // 5) <= 4096
    assert {i for i, _, _ in ranges} == set(range(9))  # every part of train contributes, val (file 9) none
    texts, size = pipeline.bpe_sample(c, train_bytes, c.total // 5, piece=4096)
    assert all(t.endswith("\n") for t in texts if t) and size == sum(e - s for _, s, e in ranges)
    seen = []
    monkeypatch.setattr(tok, "count_chunks", lambda texts, *a, real=tok.count_chunks: real(seen.extend(texts) or seen, *a))
    ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, tmp_path / "src", tokenizer="bpe", vocab_size=320,
                                           bpe_train_bytes=c.total // 5), progress=False))
    assert ds.vocab_size == 320 and 0.15 * c.total < sum(len(t.encode()) for t in seen) <= 0.2 * c.total
    assert any("plain" in t for t in seen) and not any("VALID" in t for t in seen)  # never trained on val


def test_reuse_force_and_refusals(tmp_path, capsys):
    src = write(tmp_path / "c.txt", text_of(100))
    cfg = data_cfg(tmp_path, src)
    path = pipeline.prepare(cfg, progress=False)
    meta_time = (path / "meta.json").stat().st_mtime_ns
    fp = dataset.open_dataset(path).fingerprint
    capsys.readouterr()
    assert pipeline.prepare(cfg, progress=False) == path
    assert "reusing" in capsys.readouterr().err and (path / "meta.json").stat().st_mtime_ns == meta_time
    with pytest.raises(UserError, match=r"built differently \(val_fraction 0.1 there, 0.2 now\).*--force"):
        pipeline.prepare(data_cfg(tmp_path, src, val_fraction=0.2), progress=False)
    pipeline.prepare(data_cfg(tmp_path, src, force=True), progress=False)  # same data, rebuilt
    assert (path / "meta.json").stat().st_mtime_ns != meta_time and dataset.open_dataset(path).fingerprint == fp
    write(src, text_of(101))
    with pytest.raises(UserError, match="source files have changed"):
        pipeline.prepare(cfg, progress=False)
    pipeline.prepare(data_cfg(tmp_path, src, val_fraction=0.2, force=True), progress=False)
    assert dataset.open_dataset(path).fingerprint != fp
    (path / "meta.json").write_text("{broken")
    with pytest.raises(UserError, match="damaged"):
        pipeline.prepare(cfg, progress=False)
    write(tmp_path / "other" / "notes.txt", "mine")
    with pytest.raises(UserError, match="not a dataset"):
        pipeline.prepare(data_cfg(tmp_path, src, dir=str(tmp_path / "other"), force=True), progress=False)


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    src = write(tmp_path / "c.txt", text_of(100))
    real = encoding.encode_segments
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # after train.bin, during val.bin
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "encode_segments", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.prepare(data_cfg(tmp_path, src), progress=False)
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock")) == ["c.txt"]  # no dataset, no temp dir
    monkeypatch.setattr(pipeline, "encode_segments", real)
    path = pipeline.prepare(data_cfg(tmp_path, src), progress=False)
    before = (path / "train.bin").read_bytes()
    calls.clear()
    monkeypatch.setattr(pipeline, "encode_segments", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.prepare(data_cfg(tmp_path, src, val_fraction=0.5, force=True), progress=False)
    assert (path / "train.bin").read_bytes() == before and dataset.open_dataset(path).meta["val_fraction"] == 0.1


def test_min_tokens(tmp_path):
    src = write(tmp_path / "c.txt", text_of(100))
    with pytest.raises(UserError, match="too small.*block_size"):
        pipeline.prepare(data_cfg(tmp_path, src), min_tokens=10_000, progress=False)
    assert not (tmp_path / "ds").exists()
    pipeline.prepare(data_cfg(tmp_path, src), min_tokens=64, progress=False)
    with pytest.raises(UserError, match="too small"):  # also when reusing
        pipeline.prepare(data_cfg(tmp_path, src), min_tokens=10_000, progress=False)


def test_open_dataset_errors(tmp_path):
    with pytest.raises(UserError, match="run prepare.py"):
        dataset.open_dataset(tmp_path / "nowhere")
    path = pipeline.prepare(data_cfg(tmp_path, write(tmp_path / "c.txt", text_of(100))), progress=False)
    with open(path / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(UserError, match="val.bin"):
        dataset.open_dataset(path)


def cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["prepare.py", *argv])
    with pytest.raises(SystemExit) as e:
        run_main(prepare_script.main)
    return e.value.code, capsys.readouterr().err


BAD = {
    "missing path": (["--data.source={t}/nope.txt"], "nope.txt not found"),
    "empty corpus": (["--data.source={t}/empty.txt"], "is empty"),
    "too small": (["--data.source={t}/tiny.txt"], "too small"),
    "binary file": (["--data.source={t}/blob.dat"], "is binary"),
    "not UTF-8": (["--data.source={t}/latin1.txt"], "is not UTF-8"),
    "unknown tokenizer": (["--data.source={t}/ok.txt", "--data.tokenizer=gpt5"], "unknown tokenizer"),
    "vocab_size": (["--data.source={t}/ok.txt", "--data.tokenizer=bpe", "--data.vocab_size=100"], "vocab_size"),
    "unwritable dir": (["--data.source={t}/ok.txt", "--data.dir={t}/ok.txt/sub"], "cannot write"),
    "empty dir": (["--data.source={t}/emptydir"], "has no files"),
    "URL without sha256": (["--data.source=https://example.com/x.txt"], "sha256"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, monkeypatch, capsys):
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "tiny.txt", "hi")
    write(tmp_path / "blob.dat", bytes(range(256)) * 4)
    write(tmp_path / "latin1.txt", "Café, crème brûlée, façade, naïve, Noël, à la carte.\n".encode("latin-1") * 3)
    write(tmp_path / "ok.txt", text_of(50))
    (tmp_path / "emptydir").mkdir()
    monkeypatch.chdir(tmp_path)
    argv, message = BAD[case]
    code, err = cli(monkeypatch, capsys, *[a.format(t=tmp_path) for a in argv])
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and err.count("error:") == 1
    left = [p.name for p in (tmp_path / "data").iterdir()] if (tmp_path / "data").exists() else []
    assert all(name.endswith(".lock") for name in left)  # nothing half-written (a lock file stays beside)


def test_cli_in_a_subprocess(tmp_path):
    src = write(tmp_path / "c.txt", text_of(100))
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    ok = run([sys.executable, str(ROOT / "prepare.py"), f"--data.source={src}", "--data.tokenizer=bytes"])
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "data" / "c-bytes" / "meta.json").is_file() and "wrote data/c-bytes" in ok.stderr


def test_url_source(tmp_path):
    served = write(tmp_path / "www" / "book.txt", text_of(100))
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    with serve(tmp_path / "www") as root:
        url = f"{root}/book.txt"
        with pytest.raises(UserError, match="has sha256"):
            pipeline.prepare(data_cfg(tmp_path, url, sha256="0" * 64), progress=False)
        with pytest.raises(UserError, match="cannot download .*gone.txt"):
            pipeline.prepare(data_cfg(tmp_path, url.replace("book", "gone"), sha256=digest), progress=False)
        ds = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, url, sha256=digest), progress=False))
        assert ds.tokenizer.decode(tokens_of(ds)) == text_of(100)
        assert (tmp_path / "downloads" / "book.txt").read_bytes() == served.read_bytes()
    pipeline.prepare(data_cfg(tmp_path, url, sha256=digest, dir=str(tmp_path / "again")), progress=False)  # offline: cached
    with pytest.raises(UserError, match="cannot download"):
        pipeline.prepare(data_cfg(tmp_path, url.replace("book", "new"), sha256=digest), progress=False)


CHILD = """
import os, pathlib, signal, sys, time
sys.path.insert(0, sys.argv[1])
from smallgpt import pipeline, safefiles, tokenizer
from smallgpt.config import DataConfig
cfg = DataConfig(source=sys.argv[2], tokenizer=sys.argv[4], vocab_size=300, dir=sys.argv[3], force=True)
if sys.argv[5] == "slow":  # hold the lock a while, so that a second preparation has to wait
    real = tokenizer.train_bpe
    def slow_train(*args, **kw):
        print("building", flush=True)
        time.sleep(1.0)
        return real(*args, **kw)
    tokenizer.train_bpe = slow_train
if sys.argv[5] == "kill-between-renames":  # the fallback commit, killed after its first rename
    safefiles.exchange = lambda a, b: False
    real_rename = pathlib.Path.rename
    def rename(self, target):
        out = real_rename(self, target)
        if ".old." in str(target):
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    pathlib.Path.rename = rename
pipeline.prepare(cfg, progress=False)
"""


def child(tmp_path: Path, src: Path, tokenizer: str, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(src), str(tmp_path / "ds"), tokenizer, mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_second_preparation_waits_for_the_first_and_reuses_its_dataset(tmp_path, capsys):
    src = write(tmp_path / "c.txt", text_of(400))
    first = child(tmp_path, src, "bpe", "slow")
    try:
        assert first.stdout.readline().strip() == "building"  # it holds the dataset's lock now
        path = pipeline.prepare(data_cfg(tmp_path, src, tokenizer="bpe", vocab_size=300), progress=False)
        assert first.wait(timeout=60) == 0
    finally:
        first.kill()
    err = capsys.readouterr().err
    assert "waiting for the dataset" in err and f"held by pid {first.pid} on " in err and "reusing" in err
    assert dataset.open_dataset(path).vocab_size == 300


def test_a_commit_killed_between_its_renames_leaves_the_old_dataset(tmp_path):
    src = write(tmp_path / "c.txt", text_of(300))
    old = dataset.open_dataset(pipeline.prepare(data_cfg(tmp_path, src), progress=False))
    killed = child(tmp_path, src, "bytes", "kill-between-renames")
    killed.wait(timeout=60)
    assert killed.returncode == -9 and not (tmp_path / "ds").exists()  # the moment the fallback cannot avoid
    path = pipeline.prepare(data_cfg(tmp_path, src), progress=False)  # the next run puts the old one back, reuses it
    assert dataset.open_dataset(path).fingerprint == old.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "c.txt", "ds"]  # nothing left over


def test_a_forced_rebuild_swaps_the_dataset_in_one_step(tmp_path, monkeypatch):
    src = write(tmp_path / "c.txt", text_of(300))
    pipeline.prepare(data_cfg(tmp_path, src), progress=False)
    swaps = []
    real = safefiles.exchange
    monkeypatch.setattr(safefiles, "exchange", lambda a, b: swaps.append(real(a, b)) or swaps[-1])
    write(src, text_of(320))
    path = pipeline.prepare(data_cfg(tmp_path, src, force=True), progress=False)
    assert dataset.open_dataset(path).meta["source"]["bytes"] == len(text_of(320).encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "c.txt", "ds"]
    if sys.platform == "linux":
        assert swaps == [True] or swaps == [False]  # False: this file system has no RENAME_EXCHANGE


def test_a_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path):
    src = write(tmp_path / "c.txt", text_of(3000))

    def small_disk():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    done = subprocess.run([sys.executable, str(ROOT / "prepare.py"), f"--data.source={src}", "--data.tokenizer=bytes",
                           f"--data.dir={tmp_path / 'ds'}"], capture_output=True, text=True, preexec_fn=small_disk)
    last = done.stderr.strip().splitlines()[-1]  # after the progress bar
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and "Traceback" not in done.stderr
    assert last.startswith("error: preparing") and "File too large; nothing was written" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ds.lock", "c.txt"]


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_corpus(tmp_path):
    """200 MB of generated text: peak RSS must grow far less than the corpus or its tokens would need."""
    block = (text_of(3000) * 3).encode()
    with open(tmp_path / "big.txt", "wb") as f:
        for i in range(200_000_000 // len(block) + 1):
            f.write(block + f"{i}\n".encode())
    size = (tmp_path / "big.txt").stat().st_size
    grown_mb, meta = prepare_peak_rss(tmp_path / "big.txt", tmp_path / "ds")
    assert meta["train_bytes"] + meta["val_bytes"] == size
    assert grown_mb < 200, f"peak RSS grew by {grown_mb:.0f} MB on a {size / 1e6:.0f} MB corpus"
