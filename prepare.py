"""Turn a text corpus into the token files that train.py reads by memory map.

    python prepare.py [CONFIG.toml] [--data.key=value ...] [--force]

writes, in ``data.dir``: ``train.bin`` and ``val.bin`` (flat token ids, uint16 when the vocabulary
fits, else uint32), ``meta.json`` (see :func:`prepare`) and, for a trained or given BPE, its
``.tiktoken`` rank file.  The pipeline, one function each:

1. **source** -> a sorted list of text files, each one document (:func:`resolve_source`);
2. **split**: val is the tail of the corpus from a line start (:func:`split_point`), as nanoGPT's
   Shakespeare split takes the last 10 % of the characters;
3. **tokenizer**: built or trained (``tokenizer.py``); a BPE learns from the train split, or from an
   evenly spread sample of ``data.bpe_train_bytes`` bytes of it (:func:`bpe_sample`);
4. **encode**: the files are streamed in ~1 MB blocks cut where no token can straddle, encoded by a
   pool of threads with tiktoken (its Rust core releases the GIL) and appended to the .bin files
   (:func:`encode_segments`): memory stays bounded whatever the corpus size;
5. **commit**: everything is written to a temporary directory renamed into place at the end, so an
   interrupted run never leaves a dataset that looks complete.
"""
from __future__ import annotations

import bisect
import ctypes
import errno
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import tiktoken
from tqdm import tqdm

import tokenizer as tok
from config import DataConfig, Settings, default_model, parse_args, run_main
from errors import UserError
from locks import DirLock, writer_gone, writer_tag
from model import GPTConfig

FORMAT_VERSION = 1
BLOCK = 1 << 20  # bytes read, decoded and encoded as one piece
SNIFF = 1 << 16  # bytes read to tell a text file from a binary or non-UTF-8 one
SAMPLE_PIECE = 1 << 16  # the BPE sample is made of pieces of this many bytes
SPLIT_RULE = ("documents (files, in sorted order) are joined with <|endoftext|> between them; val is the tail from "
              "the first line start at or after byte floor((1 - val_fraction) * N) of the N source bytes where a "
              "line ending in a printable ASCII character meets a line beginning with one (else the next document, "
              "else that byte); train is everything before it")
SUMMARY = ("Prepare a text corpus: train.bin, val.bin and meta.json in data.dir, with a tokenizer (trained BPE by "
           "default).\nAn existing dataset with the same settings is reused; --force rebuilds it.")


# --------------------------------------------------------------------------- the source


@dataclass
class Corpus:
    """The documents of a corpus: text files, in order, with their sizes (empty files dropped)."""
    files: list[Path]
    sizes: list[int]
    skipped: list[str] = field(default_factory=list)  # 'path (why)' of files left out
    stdlib: bool = False

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def inputs_digest(self) -> str:
        """What a re-run must find unchanged to reuse a dataset: each file's path, size and mtime."""
        h = hashlib.sha256()
        for p in self.files:  # resolved: the same file given as a relative or an absolute path is the same
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def stdlib_files() -> list[Path]:
    """The default corpus: every .py file of the running Python's standard library (its tests included,
    ~30 MB on CPython 3.11), without site-packages; present on any machine with Python, no network needed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts) and p.is_file())


def sniff(path: Path) -> str | None:
    """Why ``path`` is not UTF-8 text ('binary', 'not UTF-8'), or None: judged on its first 64 KB."""
    with open(path, "rb") as f:
        head = f.read(SNIFF)
    if b"\0" in head:
        return "binary"
    if len(head) == SNIFF:
        head = head[:char_cut(head)]  # not a character cut by the limit
    bad = decode(head)[1]
    return "not UTF-8" if bad * 100 > len(head) else None  # a stray bad byte is replaced, a legacy encoding is not


def resolve_source(cfg: DataConfig, downloads: Path, exclude: Path | None = None) -> Corpus:
    """``data.source`` -> a Corpus. Files named directly must be text; files found in a directory, a glob or
    the standard library are skipped (with a warning) when binary or not UTF-8. Files found under
    ``exclude`` (the dataset directory itself, when a source directory holds it) are left out."""
    items = cfg.sources
    if not items or not all(items):
        raise UserError("data.source is empty; give a text file, a directory, a glob, a list of them, a URL "
                        "or 'python-stdlib'")
    found: list[tuple[Path, bool]] = []  # (path, named directly)
    stdlib = False
    for item in items:
        if item == "python-stdlib":
            stdlib = True
            found += [(p, False) for p in stdlib_files()]
        elif item.startswith(("http://", "https://")):
            found.append((download(item, cfg.sha256, downloads), True))
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"data.source: no files match {item!r}")
            found += [(p, False) for p in matches]
        else:
            p = Path(item).expanduser()
            if p.is_dir():
                files = sorted(f for f in p.rglob("*")
                               if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts))
                if not files:
                    raise UserError(f"data.source: directory {item} has no files")
                found += [(f, False) for f in files]
            elif p.is_file():
                found.append((p, True))
            else:
                raise UserError(f"data.source: {item} not found; give a text file, a directory, a glob, a list of "
                                "them, an http(s) URL or 'python-stdlib'")
    corpus, seen = Corpus([], [], stdlib=stdlib), set()
    inside = exclude.resolve() if exclude is not None else None
    for p, named in found:
        key = p.resolve()
        if key in seen or (inside is not None and not named and key.is_relative_to(inside)):
            continue
        seen.add(key)
        try:
            why, size = sniff(p), p.stat().st_size
        except OSError as e:
            raise UserError(f"data.source: cannot read {p}: {e.strerror}") from None
        if why and named:
            hint = "convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)" if why == "not UTF-8" else "give a text file"
            raise UserError(f"data.source: {p} is {why} (judged on its first 64 KB); {hint}")
        if why:
            corpus.skipped.append(f"{p} ({why})")
        elif size:
            corpus.files.append(p)
            corpus.sizes.append(size)
    if corpus.skipped:
        shown = ", ".join(corpus.skipped[:3]) + (", ..." if len(corpus.skipped) > 3 else "")
        warn(f"skipped {len(corpus.skipped)} files that are not UTF-8 text: {shown}")
    if not corpus.total:
        raise UserError(f"the corpus {cfg.source!r} is empty: no text found; give files with text in them")
    return corpus


def download(url: str, sha256: str, directory: Path) -> Path:
    """Fetch ``url`` once into ``directory``, checked against ``data.sha256``."""
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256 or ""):
        raise UserError("data.source is a URL: give its sha256 as --data.sha256=<64 hex digits> to check the download")
    dest = directory / (Path(urllib.parse.urlparse(url).path).name or "download")
    if dest.is_file() and tok.file_sha256(dest) == sha256.lower():
        return dest
    part = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as r, open(part, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=f"downloading {dest.name}") as bar:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
        got = tok.file_sha256(part)
        if got != sha256.lower():
            raise UserError(f"the download of {url} has sha256 {got}, not {sha256}; check the URL and data.sha256")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot download {url} ({getattr(e, 'reason', None) or e}); check the network, or download "
                        "it yourself and give the file as data.source") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


# --------------------------------------------------------------------------- reading text in blocks


def decode(raw: bytes) -> tuple[str, int]:
    """UTF-8 text and the number of invalid sequences replaced by U+FFFD."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        return text, text.count("\ufffd") - raw.count("\ufffd".encode())


SAFE = re.compile(rb"[\x21-\x7e]\n[\x21-\x7e]")  # cut after the newline
WORD_GAP = re.compile(rb"[A-Za-z] [A-Za-z]")  # cut after the first letter


def safe_cut(data: bytes) -> int:
    """The last place in ``data`` where no token can straddle, or -1.

    First choice: just after a newline between two printable ASCII bytes (``x\\ny``). No split pattern of
    tiktoken (GPT-2's, GPT-4's, o200k's) lets a chunk run across it, and the lone newline is a chunk
    of its own at the end of a block too (a longer whitespace run is not: ``\\s++$`` takes it whole).
    Else (long indented code): between a letter and `` word``, where every pattern ends one chunk and
    starts the next. So encoding block by block gives exactly the tokens of the whole document.
    """
    end = len(data) - 1
    while (j := data.rfind(b"\n", 1, end)) >= 0:
        if 0x21 <= data[j + 1] <= 0x7E and 0x21 <= data[j - 1] <= 0x7E:
            return j + 1
        end = j
    m = None
    for m in WORD_GAP.finditer(data, max(0, len(data) - (1 << 16))):
        pass
    return m.start() + 1 if m else -1


def char_cut(data: bytes) -> int:
    """The last character boundary: a fallback cut for text without safe places (tokens may differ there)."""
    p = len(data) - 1
    while p > 0 and data[p] & 0xC0 == 0x80:
        p -= 1
    return p


def read_blocks(path: Path, start: int, end: int) -> Iterator[bytes]:
    """Bytes ``[start, end)`` of a file in pieces of about BLOCK bytes, cut at safe places."""
    block = BLOCK
    with open(path, "rb") as f:
        f.seek(start)
        left, carry = end - start, b""
        while left > 0:
            chunk = f.read(min(block, left))
            left = left - len(chunk) if chunk else 0  # a file that shrank since it was listed just ends early
            data = carry + chunk
            cut = len(data) if left == 0 else safe_cut(data)
            if cut <= 0 and len(data) >= 16 * block:  # 16 MB without a safe place: cut anyway
                cut = char_cut(data)
            if cut > 0:
                yield data[:cut]
                carry = data[cut:]
            else:
                carry = data
        if carry:
            yield carry


# --------------------------------------------------------------------------- split and sample


Segment = tuple[int, int, int]  # (file index, start byte, end byte)


def split_point(corpus: Corpus, val_fraction: float) -> tuple[int, int]:
    """(file index, byte offset) where val begins: see SPLIT_RULE."""
    target = int((1.0 - val_fraction) * corpus.total)
    starts = np.cumsum([0] + corpus.sizes[:-1]).tolist()
    i = bisect.bisect_right(starts, target) - 1
    off = target - starts[i]
    if off == 0:
        return i, 0
    with open(corpus.files[i], "rb") as f:
        pos = max(off - 2, 0)  # a line start at exactly `off` has its newline at off - 1
        while pos < corpus.sizes[i]:
            f.seek(pos)
            data = f.read(BLOCK + 2)
            m = SAFE.search(data)
            if m:
                return i, pos + m.start() + 2
            if len(data) <= 2:
                break
            pos += len(data) - 2
        if i + 1 < len(corpus.files):
            return i + 1, 0
        f.seek(off)
        tail = f.read(4)
    while tail and tail[0] & 0xC0 == 0x80:  # not inside a UTF-8 character
        off, tail = off + 1, tail[1:]
    return i, off


def split_segments(corpus: Corpus, at: tuple[int, int]) -> dict[str, list[Segment]]:
    i, off = at
    train = [(j, 0, corpus.sizes[j]) for j in range(i)] + ([(i, 0, off)] if off > 0 else [])
    val = ([(i, off, corpus.sizes[i])] if off < corpus.sizes[i] else []) + \
        [(j, 0, corpus.sizes[j]) for j in range(i + 1, len(corpus.files))]
    return {"train": train, "val": val}


def bpe_sample(corpus: Corpus, train: list[Segment], n_bytes: int, piece: int = SAMPLE_PIECE) -> tuple[Iterator[str], int]:
    """The text a BPE learns from, and its size in bytes: the train split (never val) if it has at most
    ``n_bytes``, else ``n_bytes / piece`` pieces spread evenly over it, each without its partial first and
    last lines. Counting chunks is the slowest part of training, hence the sample."""
    total = sum(e - s for _, s, e in train)
    if total <= n_bytes:
        return (decode(raw)[0] for i, s, e in train for raw in read_blocks(corpus.files[i], s, e)), total
    ranges = sample_ranges(train, n_bytes, piece)
    return (trim_lines(corpus, r) for r in ranges), sum(e - s for _, s, e in ranges)


def sample_ranges(segments: list[Segment], n_bytes: int, piece: int) -> list[Segment]:
    """``n_bytes`` in ranges of about ``piece`` bytes, evenly spaced over ``segments`` taken as one stream."""
    lengths = [e - s for _, s, e in segments]
    total, starts = sum(lengths), np.cumsum([0] + lengths[:-1]).tolist()
    k = max(1, -(-n_bytes // piece))
    out = []
    for j in range(k):
        g = int(j * total / k)
        n = bisect.bisect_right(starts, g) - 1
        off, need = segments[n][1] + g - starts[n], n_bytes // k
        while need > 0 and n < len(segments):
            i, _, end = segments[n]
            take = min(need, end - off)
            out.append((i, off, off + take))
            need, n = need - take, n + 1
            off = segments[n][1] if n < len(segments) else 0
    return out


def trim_lines(corpus: Corpus, segment: Segment) -> str:
    """The text of a small range, less the partial lines at its ends (where it cuts into a file)."""
    i, start, end = segment
    with open(corpus.files[i], "rb") as f:
        f.seek(start)
        text = decode(f.read(end - start))[0]
    if start > 0 and "\n" in text:
        text = text[text.index("\n") + 1:]
    if end < corpus.sizes[i] and "\n" in text:
        text = text[:text.rindex("\n") + 1]
    return text


# --------------------------------------------------------------------------- encoding


def encoder_for(enc: tiktoken.Encoding, kind: str) -> Callable[[str], np.ndarray]:
    """text -> token ids, without Python lists: ``encode_to_numpy`` (tiktoken >= 0.8), and for the bytes
    tokenizer the UTF-8 bytes themselves (the same ids, much faster)."""
    if kind == "bytes":
        return lambda text: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if hasattr(enc, "encode_to_numpy"):
        return lambda text: enc.encode_to_numpy(text, disallowed_special=())
    return lambda text: np.array(enc.encode_ordinary(text), dtype=np.uint32)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class SplitStats:
    tokens: int = 0
    bytes: int = 0  # UTF-8 bytes of the text (what bits per byte divides by)
    documents: int = 0  # documents that start in this split
    replaced: dict[int, int] = field(default_factory=dict)  # file index -> invalid UTF-8 sequences replaced


def encode_segments(corpus: Corpus, segments: list[Segment], encode: Callable[[str], np.ndarray], eot_id: int,
                    dtype: np.dtype, out_path: Path, threads: int, bar: tqdm, digest=None) -> SplitStats:
    """Stream ``segments`` through ``encode`` in a thread pool and append the tokens to ``out_path``.

    This is tiktoken's ``encode_ordinary_batch`` (a thread pool over ``encode_ordinary``) made streaming:
    the main thread reads, decodes and writes while up to ``2 * threads`` jobs of ~1 MB are encoded, in
    order. ``<|endoftext|>`` goes before every document but the corpus's first.
    """
    stats, eot = SplitStats(), np.array([eot_id], dtype=dtype)

    def job(items: list[tuple[bool, str]]) -> np.ndarray:
        parts = []
        for sep, text in items:
            if sep:
                parts.append(eot)
            parts.append(encode(text))
        return np.concatenate(parts).astype(dtype, copy=False) if parts else eot[:0]

    with open(out_path, "wb") as out, ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()

        def drain(limit: int) -> None:
            while len(pending) > limit:
                future, n = pending.popleft()
                ids = future.result()
                out.write(memoryview(ids))
                stats.tokens += len(ids)
                bar.update(n)

        items, size = [], 0
        for i, start, end in segments:
            stats.documents += start == 0
            sep = start == 0 and i > 0
            for raw in read_blocks(corpus.files[i], start, end):
                if digest is not None:
                    digest.update(raw)
                text, bad = decode(raw)
                if bad:
                    stats.replaced[i] = stats.replaced.get(i, 0) + bad
                stats.bytes += len(text.encode("utf-8")) if bad else len(raw)
                items.append((sep, text))
                sep, size = False, size + len(raw)
                if size >= BLOCK:
                    pending.append((pool.submit(job, items), size))
                    items, size = [], 0
                    drain(2 * threads)
        if items:
            pending.append((pool.submit(job, items), size))
        drain(0)
    return stats


# --------------------------------------------------------------------------- the dataset


def dataset_dir(cfg: DataConfig) -> Path:
    """``data.dir``, or ``data/<source>-<tokenizer>`` (e.g. data/python-stdlib-bpe4096) in the current directory."""
    if cfg.dir:
        return Path(cfg.dir).expanduser()
    items = cfg.sources
    stem = source_name(items[0] if items else "empty") + (f"+{len(items) - 1}" if len(items) > 1 else "")
    kind = tok.tokenizer_kind(cfg.tokenizer)
    name = f"bpe{cfg.vocab_size}" if kind == "bpe" else (Path(cfg.tokenizer).stem if kind == "file" else cfg.tokenizer)
    return Path("data") / re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{stem}-{name}")


def downloads_dir(cfg: DataConfig) -> Path:
    """Where downloaded files go (URL sources; GPT-2's rank file for a fine-tuning run): beside the dataset."""
    return dataset_dir(cfg).parent / "downloads"


def source_name(item: str) -> str:
    """A short name for a source: a file's stem, a directory's name, a glob's directory, a URL's file stem."""
    if item == "python-stdlib":
        return item
    if item.startswith(("http://", "https://")):
        return Path(urllib.parse.urlparse(item).path).stem or "download"
    fixed = re.split(r"[*?\[]", item)[0]
    if fixed != item:  # a glob: name it by the directory it searches
        fixed = fixed if fixed.endswith(("/", os.sep)) else os.path.dirname(fixed)
    p = Path(os.path.abspath(os.path.expanduser(fixed or ".")))
    return p.stem if p.is_file() else p.name


def settings_of(cfg: DataConfig, kind: str) -> dict:
    """The settings a dataset is built from; a re-run with other settings must not reuse (or clobber) it."""
    s = {"format_version": FORMAT_VERSION, "tokenizer": cfg.tokenizer, "val_fraction": cfg.val_fraction}
    if kind == "bpe":
        s |= {"vocab_size": cfg.vocab_size, "bpe_train_bytes": cfg.bpe_train_bytes}
    if kind == "file":
        s["tokenizer"] = "file sha256 " + tok.file_sha256(Path(cfg.tokenizer).expanduser())
    return s


def prepare(cfg: DataConfig, min_tokens: int = 0, progress: bool = True, quiet: bool = False) -> Path:
    """Build the dataset ``cfg`` describes (or reuse an identical one) and return its directory.

    ``min_tokens``: each split must hold at least this many tokens (train.py asks for one training
    window, block_size + 1); a smaller corpus is a UserError. meta.json records: ``format_version``,
    ``dtype``, ``vocab_size``, ``eot_id``, ``tokenizer`` (the spec of tokenizer.py), per split
    ``{train,val}_tokens``, ``{train,val}_bytes`` (UTF-8 bytes of its text, for bits per byte) and
    ``{train,val}_documents``, ``source``, ``val_fraction``, ``split_rule``, ``split_at``, the
    ``settings`` that decide reuse, and under ``build`` what identifies the input files and how the build went.
    ``progress``: show progress bars; ``quiet``: print nothing but warnings (the other processes of a job).
    """
    t0 = time.time()
    target = dataset_dir(cfg)
    kind = tok.tokenizer_kind(cfg.tokenizer)
    corpus = resolve_source(cfg, downloads_dir(cfg), exclude=target)  # bad input: nothing written yet
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write the dataset to {target} ({e.strerror or e}); choose a writable --data.dir") from None
    # one builder at a time: the others (the other processes of a torchrun job, a second terminal) wait
    # here, without a timeout, and then find the dataset built
    lock = DirLock(target.parent / f".{target.name}.lock", f"the dataset {target}", "")
    lock.acquire(wait=True)
    try:
        recover(target)
        return _prepare_locked(cfg, kind, corpus, target, min_tokens, progress, quiet, t0)
    finally:
        lock.release()


def _prepare_locked(cfg: DataConfig, kind: str, corpus: Corpus, target: Path, min_tokens: int, progress: bool,
                    quiet: bool, t0: float) -> Path:
    settings, inputs = settings_of(cfg, kind), corpus.inputs_digest()
    if reusable(target, settings, inputs, cfg.force):
        if not quiet:
            print(f"prepare: reusing {target} (same source files and settings; --force rebuilds it)", file=sys.stderr)
        check_size(read_meta(target), min_tokens, target)
        return target
    tmp = make_temp_dir(target)
    try:
        at = split_point(corpus, cfg.val_fraction)
        splits = split_segments(corpus, at)
        spec = build_tokenizer(kind, cfg, corpus, splits["train"], tmp, progress)
        enc = tok.load_tokenizer(spec, tmp)
        dtype = np.dtype(np.uint16 if spec["vocab_size"] <= 1 << 16 else np.uint32)
        digest, stats = hashlib.sha256(), {}
        with tqdm(total=corpus.total, unit="B", unit_scale=True, desc="encoding", disable=not progress) as bar:
            for split, segments in splits.items():
                stats[split] = encode_segments(corpus, segments, encoder_for(enc, kind), spec["eot_id"], dtype,
                                               tmp / f"{split}.bin", threads=cfg.threads or default_threads(),
                                               bar=bar, digest=digest)
        meta = {
            "format_version": FORMAT_VERSION, "dtype": dtype.name, "vocab_size": spec["vocab_size"],
            "eot_id": spec["eot_id"], "tokenizer": spec,
            **{f"{s}_{k}": getattr(stats[s], k) for s in stats for k in ("tokens", "bytes", "documents")},
            "source": {"spec": cfg.source, "files": len(corpus.files), "bytes": corpus.total,
                       "sha256": digest.hexdigest()} | ({"python": platform.python_version()} if corpus.stdlib else {}),
            "val_fraction": cfg.val_fraction, "split_rule": SPLIT_RULE,
            "split_at": {"file": str(corpus.files[at[0]]), "offset": at[1]},
            "settings": settings,
            "build": {"inputs": inputs, "seconds": round(time.time() - t0, 2), "tiktoken": tiktoken.__version__,
                      "skipped": corpus.skipped[:20], "skipped_count": len(corpus.skipped),
                      "replaced": sum(sum(s.replaced.values()) for s in stats.values())},
        }
        check_size(meta, min_tokens, target)
        report_replaced(corpus, stats)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        commit(tmp, target)
    except OSError as e:  # disk full, a source file removed mid-run, ...
        raise UserError(f"preparing {target} failed: {e}; nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"prepare: wrote {target}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
              f"({dtype.name}), vocab {spec['vocab_size']:,}, {meta['train_bytes'] / meta['train_tokens']:.2f} "
              f"bytes/token, in {time.time() - t0:.1f} s", file=sys.stderr)
    return target


def reusable(target: Path, settings: dict, inputs: str, force: bool) -> bool:
    """True when ``target`` holds this very dataset; a different dataset (or anything else) there is
    never overwritten silently: UserError, unless ``force`` for a dataset."""
    if target.exists() and not target.is_dir():
        raise UserError(f"data.dir {target} is a file; choose another --data.dir")
    if not (target / "meta.json").is_file():
        if target.is_dir() and any(target.iterdir()):
            raise UserError(f"{target} exists and is not a dataset (no meta.json); choose another --data.dir")
        return False
    if force:
        return False
    try:
        old = read_meta(target)
    except UserError:
        raise UserError(f"{target}/meta.json is damaged; pass --force to rebuild the dataset") from None
    was = old.get("settings", {})
    if was == settings and old.get("build", {}).get("inputs") == inputs:
        return True
    diff = "; ".join(f"{k} {was.get(k)!r} there, {v!r} now" for k, v in settings.items() if was.get(k) != v)
    raise UserError(f"{target} holds a dataset built differently ({diff or 'its source files have changed'}); "
                    "pass --force to rebuild it, or choose another --data.dir")


def build_tokenizer(kind: str, cfg: DataConfig, corpus: Corpus, train: list[Segment], directory: Path,
                    progress: bool) -> dict:
    """The tokenizer's spec; a rank file, if any, is written into ``directory``."""
    if kind == "bytes":
        return tok.bytes_spec()
    if kind == "tiktoken":
        return tok.named_spec(cfg.tokenizer)
    if kind == "file":
        return tok.file_spec(Path(cfg.tokenizer).expanduser(), directory)
    texts, size = bpe_sample(corpus, train, cfg.bpe_train_bytes)
    return tok.bpe_spec(tok.count_chunks(texts, progress, size), cfg.vocab_size, directory, progress)


def check_size(meta: dict, min_tokens: int, target: Path) -> None:
    need = max(min_tokens, 1)
    if meta["train_tokens"] < need or meta["val_tokens"] < need:
        raise UserError(f"the corpus is too small: {target} gets {meta['train_tokens']} train and "
                        f"{meta['val_tokens']} val tokens, but each split needs at least {need} (one training "
                        "window); use a larger corpus, a smaller --model.block_size or another --data.val_fraction")


def report_replaced(corpus: Corpus, stats: dict[str, SplitStats]) -> None:
    per_file: dict[int, int] = {}
    for s in stats.values():
        for i, n in s.replaced.items():
            per_file[i] = per_file.get(i, 0) + n
    if per_file:
        first = corpus.files[min(per_file)]
        warn(f"replaced {sum(per_file.values())} invalid UTF-8 sequences by U+FFFD in {len(per_file)} files "
             f"(first: {first})")


def make_temp_dir(target: Path) -> Path:
    """A fresh hidden directory beside ``target``, named for this writer (host and pid)."""
    try:
        tmp = target.parent / f".{target.name}.tmp.{writer_tag()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        return tmp
    except OSError as e:
        raise UserError(f"cannot write the dataset to {target} ({e.strerror or e}); choose a writable --data.dir") from None


def recover(target: Path) -> None:
    """Clear up after builders killed on this host (called under the dataset's lock): put back an old
    dataset that a killed commit had moved aside, and remove what killed builders left half-written."""
    for kind in ("old", "tmp"):
        for left in sorted(target.parent.glob(f".{target.name}.{kind}.*")):
            if not writer_gone(left.name[len(f".{target.name}.{kind}."):]):
                continue  # a live writer's, or another machine's
            if kind == "old" and not target.exists():
                left.rename(target)  # the commit was killed between its two renames: the old one stays
            else:
                shutil.rmtree(left, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux's renameat2 with RENAME_EXCHANGE); False where the
    system or file system cannot, and the caller falls back to two renames."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit(tmp: Path, target: Path) -> None:
    """Put the finished temporary directory in place of ``target``, replacing an older dataset there.

    A reader, or a kill at any moment, finds the old dataset or the new one: the two are swapped in one
    atomic step where the system can; elsewhere the old one is first renamed aside, and a commit killed
    between the two renames is undone by :func:`recover` (the old one is put back) on the next run."""
    if not target.exists():
        tmp.rename(target)
        return
    if exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # it now holds the old dataset
        return
    old = target.parent / f".{target.name}.old.{writer_tag()}"
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- reading a dataset


@dataclass
class Dataset:
    """A prepared dataset: token arrays by memory map, the tokenizer, and meta.json."""
    dir: Path
    meta: dict
    train: np.memmap
    val: np.memmap
    tokenizer: tiktoken.Encoding
    vocab_size: int
    eot_id: int
    fingerprint: str  # identifies the dataset's content; train.py refuses to resume on another one

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of text per token in ``split``: loss in nats / ln 2 / this = bits per byte."""
        return self.meta[f"{split}_bytes"] / self.meta[f"{split}_tokens"]


def read_meta(directory: Path) -> dict:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError
        return meta
    except (OSError, ValueError):
        raise UserError(f"{directory} has no valid meta.json, so it is no dataset; run prepare.py "
                        "(with the same [data] settings) to build it") from None


def fingerprint(meta: dict) -> str:
    """A short sha256 of meta.json without its ``build`` record (file times, timings): the same data, the
    same tokenizer and the same split give the same fingerprint."""
    body = json.dumps({k: v for k, v in meta.items() if k != "build"}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def open_dataset(directory: str | Path) -> Dataset:
    """Open a dataset written by :func:`prepare`; a missing or damaged one is a UserError."""
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("format_version") != FORMAT_VERSION:  # includes a meta.json of something else
        raise UserError(f"{directory} was written by another version of prepare.py; run prepare.py --force to rebuild it")
    try:
        dtype = np.dtype(meta["dtype"])
        arrays = {}
        for split in ("train", "val"):
            path, n = directory / f"{split}.bin", meta[f"{split}_tokens"]
            if not path.is_file() or path.stat().st_size != n * dtype.itemsize:
                raise UserError(f"{path} is missing or not the {n} tokens meta.json says; run prepare.py --force")
            arrays[split] = np.memmap(path, dtype=dtype, mode="r")
        spec = meta["tokenizer"]
    except (KeyError, TypeError):
        raise UserError(f"{directory}/meta.json lacks fields; run prepare.py --force to rebuild it") from None
    return Dataset(directory, meta, arrays["train"], arrays["val"], tok.load_tokenizer(spec, directory),
                   spec["vocab_size"], spec["eot_id"], fingerprint(meta))


# --------------------------------------------------------------------------- command line


@dataclass
class PrepareSettings(Settings):
    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=default_model)  # block_size only: each split must hold one window


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, PrepareSettings, "prepare.py", SUMMARY, flags=("force:data.force",))
    prepare(cfg.data, min_tokens=cfg.model.block_size + 1)  # as train.py will ask of it
    return 0


if __name__ == "__main__":
    run_main(main)
