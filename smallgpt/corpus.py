"""What a corpus is and where its documents come from: ``data.source`` resolved to documents.

``data.source`` is a file, a directory (read recursively, hidden files left out), a glob, a list of
these, an ``http(s)://`` URL checked by its sha256, or ``python-stdlib`` (the default corpus: the
running Python's standard library, present on every machine, no network needed).  Each file is read
by the reader its format picks (``smallgpt/formats.py``): a text file is one document; a JSON Lines
record, a JSON array element or a Parquet row is one document.  Files named directly must be
readable; files found in a directory or a glob are skipped, with a warning, when they hold no text
(binary, another encoding).

A :class:`Corpus` is its documents in order: for each, the file it is in, a locator inside that file and
the UTF-8 size of its text, in numpy arrays filled by one streaming pass (:meth:`Corpus.index`), so
that millions of records fit.  The later passes read a document's bytes ``[start, end)`` through
:meth:`Corpus.blocks` and :meth:`Corpus.read`, whatever its format.
"""
from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
from tqdm import tqdm

from smallgpt import encoding
from smallgpt import formats as fmt
from smallgpt import shards
from smallgpt import tokenizer as tok
from smallgpt.errors import UserError

if TYPE_CHECKING:
    from smallgpt.config import DataConfig

Segment = encoding.Segment  # (document index, start byte, end byte) of its text


class Corpus:
    """The documents of a corpus, in order: the files they are in (with how each is read), and per document
    its file, its locator in that file and the UTF-8 size of its text (empty documents dropped).

    Built from plain text files (``Corpus(files, sizes)``) it is indexed at once; otherwise the first use of
    its documents runs the index pass (:meth:`index`), which reads every record once and refuses bad ones.
    """

    def __init__(self, files: list[Path], sizes: list[int] | None = None, kinds: list[fmt.Kind] | None = None,
                 fields: list[str] | None = None, skipped: list[str] | None = None, stdlib: bool = False,
                 origins: list[int] | None = None, items: list[str] | None = None):
        self.files, self.kinds = list(files), kinds or [fmt.Kind("text")] * len(files)
        self.fields = fields or ["text"]
        self.skipped, self.stdlib = skipped or [], stdlib
        self.items, self.origins = items or [], origins or [0] * len(files)  # the source item each file came from
        self.readers = {k: fmt.reader(k, self.fields) for k in set(self.kinds) if k.format != "tokens"}
        self.progress, self.empty = False, 0
        self._docs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._open: tuple[int, Any] | None = None  # the file whose handle is open: the passes read in order
        self._record: tuple[int, bytes] | None = None  # the last record read whole
        self.file_docs: np.ndarray | None = None  # documents per file
        self.file_empty: list[int] = []
        if sizes is not None:
            self._set(np.arange(len(files), dtype=np.int32), np.zeros(len(files), dtype=np.int64),
                      np.asarray(sizes, dtype=np.int64), [0] * len(files))

    # ------------------------------------------------------------------ the documents

    def _set(self, doc_file: np.ndarray, locs: np.ndarray, sizes: np.ndarray, empty: list[int]) -> None:
        keep = sizes > 0
        self._docs = (doc_file[keep], locs[keep], sizes[keep])
        self.starts = np.concatenate([[0], np.cumsum(self._docs[2])[:-1]]).astype(np.int64)
        self.file_docs = np.bincount(self._docs[0], minlength=len(self.files))
        self.file_empty = empty

    @property
    def shards(self) -> bool:
        """Whether the corpus is llm.c token shards (tokens, not text: ``smallgpt/shards.py`` reads them)."""
        return bool(self.kinds) and all(k.format == "tokens" for k in self.kinds)

    @property
    def records(self) -> bool:
        """Whether any document is a record (of JSON Lines, JSON or Parquet) rather than a whole file."""
        return any(k.format in fmt.RECORDS for k in self.kinds)

    @property
    def sizes(self) -> np.ndarray:
        return self.index()[2]

    @property
    def total(self) -> int:
        return int(self.sizes.sum())

    def __len__(self) -> int:
        return len(self.sizes)

    def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(file, locator, size) of every document: one streaming pass over the files that need reading (records,
        compressed text), with a progress bar of bytes and records; a bad record is a UserError."""
        if self._docs is not None:
            return self._docs
        on_disk = sum(p.stat().st_size for p in self.files)
        parts_file, parts_loc, parts_size, empty, records = [], [], [], [], 0
        with tqdm(total=on_disk, unit="B", unit_scale=True, desc="reading", disable=not self.progress,
                  file=sys.stderr) as bar:
            for i, (path, kind) in enumerate(zip(self.files, self.kinds)):
                sink = fmt.Sink()
                with fmt.reading(path, kind):
                    self.readers[kind].index(self._handle(i), path, kind, sink, bar.update)
                locs, sizes = sink.arrays()
                parts_file.append(np.full(len(locs), i, dtype=np.int32))
                parts_loc.append(locs)
                parts_size.append(sizes)
                empty.append(sink.empty)
                if kind.format in fmt.RECORDS:
                    records += sink.records
                    bar.set_postfix_str(f"{records:,} records", refresh=False)
        self.close()
        cat = lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dtype=dt)
        self._set(cat(parts_file, np.int32), cat(parts_loc, np.int64), cat(parts_size, np.int64), empty)
        self.empty = sum(empty)
        if not self.total:
            raise UserError(f"the corpus {self.spec!r} is empty: no text found; give files with text in them"
                            + (f" ({self.empty} records have an empty --data.text_field)" if self.empty else ""))
        return self._docs

    @property
    def spec(self) -> str | list[str]:
        return self.items[0] if len(self.items) == 1 else self.items

    def _handle(self, i: int) -> Any:
        if self._open is None or self._open[0] != i:
            self.close()
            self._open = (i, self.readers[self.kinds[i]].open(self.files[i], self.kinds[i]))
        return self._open[1]

    def close(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None
        self._record = None

    def record(self, d: int) -> bytes:
        """The whole text of record ``d``, read again from its file (the last one is kept)."""
        if self._record is None or self._record[0] != d:
            doc_file, locs, sizes = self.index()
            i = int(doc_file[d])
            with fmt.reading(self.files[i], self.kinds[i]):
                text = self.readers[self.kinds[i]].text(self._handle(i), self.files[i], int(locs[d]))
            if len(text) != sizes[d]:
                raise UserError(f"{self.files[i]} changed while it was being read; run again")
            self._record = (d, text)
        return self._record[1]

    def stream(self, d: int, start: int) -> io.BufferedIOBase:
        """Document ``d``'s text as a stream positioned at byte ``start``."""
        i = int(self.index()[0][d])
        if self.readers[self.kinds[i]].records:
            src = io.BytesIO(self.record(d))
        else:
            src = self._handle(i)
        src.seek(start)
        return src

    def read(self, d: int, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of document ``d``'s text (a small range)."""
        i = int(self.index()[0][d])
        if self.readers[self.kinds[i]].records:
            return self.record(d)[start:end]
        with fmt.reading(self.files[i], self.kinds[i]):
            return self.stream(d, start).read(end - start)

    def blocks(self, d: int, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``[start, end)`` of document ``d``'s text in pieces of about BLOCK bytes, cut where no token can
        straddle (:func:`smallgpt.encoding.read_blocks`): the same pieces for a record as for a file of its text."""
        i = int(self.index()[0][d])
        if self.readers[self.kinds[i]].records and end - start <= encoding.BLOCK:
            yield self.record(d)[start:end]  # what read_blocks yields for it, without a stream
            return
        with fmt.reading(self.files[i], self.kinds[i]):
            yield from encoding.read_blocks(self.stream(d, start), end - start)

    def segments(self, begin: tuple[int, int], end: tuple[int, int]) -> Iterator[Segment]:
        """The documents from (document, offset) ``begin`` to ``end`` (exclusive) as segments, in order."""
        sizes = self.sizes
        (d0, o0), (d1, o1) = begin, end
        for d in range(d0, min(d1, len(sizes) - 1) + 1):
            s = o0 if d == d0 else 0
            e = o1 if d == d1 else int(sizes[d])
            if e > s:
                yield d, s, e

    def at(self, position: int) -> tuple[int, int]:
        """(document, offset) of a byte position in the corpus's text taken as one stream."""
        d = int(np.searchsorted(self.starts, position, side="right")) - 1
        return d, position - int(self.starts[d])

    def position(self, at: tuple[int, int]) -> int:
        return int(self.starts[at[0]]) + at[1]

    def file_of(self, d: int) -> Path:
        return self.files[int(self.index()[0][d])]

    def where(self, d: int) -> dict:
        """Where document ``d`` is: its file, and for a record its number in that file (from 0)."""
        doc_file, _, _ = self.index()
        i = int(doc_file[d])
        out = {"file": str(self.files[i])}
        if self.kinds[i].format in fmt.RECORDS:
            out["record"] = int(d - np.searchsorted(doc_file, i))
        return out

    def sources(self) -> list[dict]:
        """Per source item: its files by format, and (text) its documents, the empty records skipped, the text field."""
        out = [{"source": item, "formats": {}} for item in self.items]
        for i, kind in enumerate(self.kinds):
            o = out[self.origins[i]]
            o["formats"][str(kind)] = o["formats"].get(str(kind), 0) + 1
            if not self.shards:
                self.index()
                o["documents"] = o.get("documents", 0) + int(self.file_docs[i])
                o["empty"] = o.get("empty", 0) + self.file_empty[i]
            if kind.format in fmt.RECORDS:
                o["text_field"] = self.fields
        return out

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


def resolve_source(cfg: DataConfig, downloads: Path, exclude: Path | None = None) -> Corpus:
    """``data.source`` -> a Corpus (not yet indexed: that reads the files). Files named directly must be
    readable; files found in a directory, a glob or the standard library are skipped (with a warning) when
    they hold no text. Files found under ``exclude`` (the dataset directory itself, when a source directory
    holds it) are left out."""
    items = cfg.sources
    if not items or not all(items):
        raise UserError("data.source is empty; give a text file, a directory, a glob, a list of them, a URL "
                        "or 'python-stdlib'")
    found: list[tuple[Path, bool, int]] = []  # (path, named directly, source item)
    stdlib = False
    for n, item in enumerate(items):
        if item == "python-stdlib":
            stdlib = True
            found += [(p, False, n) for p in stdlib_files()]
        elif is_url(item):
            found.append((download(item, cfg.sha256, downloads), True, n))
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"data.source: no files match {item!r}")
            found += [(p, False, n) for p in matches]
        else:
            p = Path(item).expanduser()
            if p.is_dir():
                files = sorted(f for f in p.rglob("*")
                               if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts))
                if not files:
                    raise UserError(f"data.source: directory {item} has no files")
                found += [(f, False, n) for f in files]
            elif p.is_file():
                found.append((p, True, n))
            else:
                raise UserError(f"data.source: {item} not found; give a text file, a directory, a glob, a list of "
                                "them, an http(s) URL or 'python-stdlib'")
    files, kinds, origins, skipped, seen = [], [], [], [], set()
    inside = exclude.resolve() if exclude is not None else None
    for p, named, n in found:
        key = p.resolve()
        if key in seen or (inside is not None and not named and key.is_relative_to(inside)):
            continue
        seen.add(key)
        try:
            kind, why = fmt.pick(p, cfg.format)
            size = p.stat().st_size
        except OSError as e:
            raise UserError(f"data.source: cannot read {p}: {e.strerror}") from None
        if why == "binary" and named and p.suffix.lower() == ".bin":
            shards.read_header(p)  # a .bin named directly is meant as a token shard: say why it is none
        if why and named:
            hint = "convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)" if why == "not UTF-8" else \
                "give a text, JSON Lines, Parquet or token shard file (or name its format: --data.format)"
            if why.startswith("a JSON document"):
                raise UserError(f"data.source: {p} is {why}; give --data.format=text to train on it as text")
            raise UserError(f"data.source: {p} is {why} (judged on its first 64 KB); {hint}")
        if why:
            skipped.append(f"{p} ({why})")
        elif size:
            files.append(p)
            kinds.append(kind)
            origins.append(n)
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        warn(f"skipped {len(skipped)} files that hold no text or records: {shown}")
    if not files:
        where = "no readable file" if skipped else "no text found"
        raise UserError(f"the corpus {cfg.source!r} is empty: {where}; give files with text in them")
    tokens = [k.format == "tokens" for k in kinds]
    if any(tokens) and not all(tokens):
        raise UserError(f"data.source mixes token shards ({files[tokens.index(True)]}) with text "
                        f"({files[tokens.index(False)]}); give the shards alone, or only text")
    sizes = [p.stat().st_size for p in files] if all(k == fmt.Kind("text") for k in kinds) else None
    return Corpus(files, sizes, kinds, cfg.text_fields, skipped, stdlib, origins, items)


def is_url(item: str) -> bool:
    """Whether a source names a download rather than a local path."""
    return item.startswith(("http://", "https://"))


def is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def download(url: str, sha256: str, directory: Path, keys: tuple[str, str] = ("data.source", "data.sha256")) -> Path:
    """Fetch ``url`` once into ``directory``, checked against ``sha256``; ``keys`` are the settings that gave
    the URL and the sha256 (data.source and data.sha256; eval.data and eval.sha256), named in the errors."""
    url_key, sha_key = keys
    if not is_sha256(sha256 or ""):
        raise UserError(f"{url_key} is a URL: give its sha256 as --{sha_key}=<64 hex digits> to check the download")
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
            raise UserError(f"the download of {url} has sha256 {got}, not {sha256}; check the URL and {sha_key}")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot download {url} ({getattr(e, 'reason', None) or e}); check the network, or download "
                        f"it yourself and give the file as {url_key}") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def source_name(item: str) -> str:
    """A short name for a source: a file's stem, a directory's name, a glob's directory, a URL's file stem."""
    if item == "python-stdlib":
        return item
    if is_url(item):
        return Path(urllib.parse.urlparse(item).path).stem or "download"
    fixed = re.split(r"[*?\[]", item)[0]
    if fixed != item:  # a glob: name it by the directory it searches
        fixed = fixed if fixed.endswith(("/", os.sep)) else os.path.dirname(fixed)
    p = Path(os.path.abspath(os.path.expanduser(fixed or ".")))
    return p.stem if p.is_file() else p.name


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
