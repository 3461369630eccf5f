"""Readers, one per format of file, and the one place that picks a file's reader (:func:`pick`).

A corpus is a sequence of *documents*.  A plain text file (also gzip- or zstandard-compressed) is one
document; a JSON Lines record, an element of a JSON array, or a Parquet row is one too, its text taken
from ``data.text_field``.  A reader does two things for its files:

* ``index``: one streaming pass that checks every record and reports, for each document, a *locator*
  (the byte offset of its line or JSON value, or its row group and row) and the UTF-8 size of its text:
  two integers each, so millions of records fit;
* ``text``: a record's text again from its locator, for the later passes (the split, the BPE sample,
  the encoding), which read documents in order, so a handle kept open reads on without seeking back.

Every later pass therefore sees a record exactly as it sees a file holding that text, and a corpus of
records gives the very tokens of the same texts as files.  pyarrow (Parquet) and zstandard (``.zst``)
are optional: imported only when such a file is read.  llm.c's token shards (``.bin``) are recognised
here and read by ``smallgpt/shards.py``: they hold tokens, not text.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from smallgpt.encoding import char_cut, decode
from smallgpt.errors import UserError

FORMATS = ("auto", "text", "jsonl", "json", "parquet", "tokens")  # data.format
RECORDS = ("jsonl", "json", "parquet")  # the formats whose documents are records with a text field
SNIFF = 1 << 16  # bytes read to tell a text file from a binary or non-UTF-8 one
LINE_LIMIT = 32 << 20  # bytes: a longer JSON Lines record (or JSON array element) is refused, not read into memory
ROW_BITS = 32  # a Parquet locator is row_group << ROW_BITS | row
JOIN = "\n\n"  # between the fields of a record when data.text_field names several
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
SHARD_MAGIC = 20240520  # llm.c's token shards: the first int32 of their 256-int32 header


@dataclass(frozen=True)
class Kind:
    """How one file is read: its format ('text', 'jsonl', 'json', 'parquet', 'tokens') and compression."""
    format: str
    compression: str = ""  # '', 'gzip' or 'zstd'

    def __str__(self) -> str:
        return self.format + (f"+{self.compression}" if self.compression else "")


# --------------------------------------------------------------------------- choosing a reader


def pick(path: Path, format: str) -> tuple[Kind, str | None]:
    """How to read ``path`` under ``data.format`` (``auto``: by suffix and content), and why it holds no
    text (``'binary'``, ``'not UTF-8'``) or None.  Judged on its first 64 KB (decompressed)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF)
    compression = ("gzip" if head[:2] == b"\x1f\x8b" else "zstd" if head[:4] == b"\x28\xb5\x2f\xfd" else "")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    if format == "auto":
        if head[:4] == b"PAR1" or (suffixes and suffixes[-1] == ".parquet"):
            return Kind("parquet"), None
        if not compression and len(head) >= 4 and int.from_bytes(head[:4], "little") == SHARD_MAGIC:
            return Kind("tokens"), None
        format = SUFFIXES.get(suffixes[-1], "text") if suffixes else "text"
    if format in ("parquet", "tokens"):
        return Kind(format), None
    kind = Kind(format, compression)
    if compression:
        head = decompressed_head(path, compression, head)
    if format == "json":
        return kind, json_records(head)
    return kind, (sniff(head) if format == "text" else None)


def json_records(head: bytes) -> str | None:
    """Why a .json file holds no records (a single document, such as a dataset's dataset_info.json), or None:
    records are an array, or one JSON value per line (judged on the first line)."""
    if head.lstrip()[:1] in (b"[", b""):  # an array; or nothing readable, which the reader then explains
        return None
    first = head.lstrip().split(b"\n", 1)
    if len(first) == 1 and len(head) >= SNIFF:
        return None  # a first line longer than the sniff: its parse decides
    try:
        json.loads(first[0])
        return None
    except ValueError:
        return "a JSON document, not records (an array, or one JSON object per line)"


def sniff(head: bytes) -> str | None:
    """Why ``head`` (a file's first bytes) is not UTF-8 text ('binary', 'not UTF-8'), or None."""
    if b"\0" in head:
        return "binary"
    if len(head) >= SNIFF:
        head = head[:char_cut(head)]  # not a character cut by the limit
    bad = decode(head)[1]
    return "not UTF-8" if bad * 100 > len(head) else None  # a stray bad byte is replaced, a legacy encoding is not


def decompressed_head(path: Path, compression: str, head: bytes) -> bytes:
    """The first bytes of a compressed file's content, for sniffing (a damaged stream reads as far as it goes)."""
    try:
        with open_stream(path, compression) as f:
            return f.read(SNIFF)
    except damage_errors(compression):
        return head[:0]


# --------------------------------------------------------------------------- compressed streams


def open_stream(path: Path, compression: str) -> BinaryIO:
    """``path``'s content as a seekable binary stream with ``readline`` (seeking back in a compressed
    stream starts it again, so the passes read forward)."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        return io.BufferedReader(ZstdReader(path), 1 << 16)
    return open(path, "rb")


def raw_position(stream: BinaryIO) -> int:
    """How far into the file on disk a stream has read: the progress of a pass over a compressed file."""
    inner = getattr(stream, "fileobj", None) or getattr(getattr(stream, "raw", None), "file", None)
    return (inner or stream).tell()


def damage_errors(compression: str) -> tuple[type[BaseException], ...]:
    """What a damaged or truncated stream of this compression raises while it is read."""
    if compression == "gzip":
        return EOFError, zlib.error, gzip.BadGzipFile
    if compression == "zstd":
        return EOFError, zstandard().ZstdError
    return ()


def missing(package: str) -> UserError:
    return UserError(f"reading this file needs the package {package}, which is not installed; pip install {package}")


def zstandard() -> Any:
    """The zstandard package, imported only when a .zst file is read."""
    try:
        import zstandard
    except ImportError:
        raise missing("zstandard") from None
    return zstandard


def pyarrow() -> Any:
    """pyarrow with its Parquet reader and compute functions, imported only when a Parquet file is read."""
    try:
        import pyarrow
        import pyarrow.compute
        import pyarrow.parquet
    except ImportError:
        raise missing("pyarrow") from None
    return pyarrow


class ZstdReader(io.RawIOBase):
    """A zstandard file's content, frame after frame, as a raw stream (python-zstandard's own stream reader
    ends a truncated file silently; this one raises EOFError, as gzip does)."""

    def __init__(self, path: Path):
        self.zstd = zstandard()
        self.path, self.file = path, None
        self.restart()

    def restart(self) -> None:
        if self.file is not None:
            self.file.close()
        self.file = open(self.path, "rb")
        self.dec, self.fed, self.pos = self.zstd.ZstdDecompressor().decompressobj(), False, 0
        self.out, self.at = b"", 0  # decompressed bytes not yet read: out[at:]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def readinto(self, b) -> int:
        while self.at == len(self.out):
            chunk = self.dec.unused_data if self.dec.eof else self.file.read(1 << 16)
            if self.dec.eof:  # the next frame
                self.dec, self.fed = self.zstd.ZstdDecompressor().decompressobj(), False
                if not chunk:
                    chunk = self.file.read(1 << 16)
            if not chunk:
                if self.fed:
                    raise EOFError("the zstandard stream ends inside a frame")
                return 0
            self.fed = True
            self.out, self.at = self.dec.decompress(chunk), 0
        n = min(len(b), len(self.out) - self.at)
        b[:n] = memoryview(self.out)[self.at:self.at + n]
        self.at += n
        self.pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.pos + offset
        if whence not in (io.SEEK_SET, io.SEEK_CUR):
            raise io.UnsupportedOperation("a zstandard stream seeks from its start or where it is")
        if target < self.pos:
            self.restart()
        buf = bytearray(1 << 20)
        while self.pos < target and self.readinto(memoryview(buf)[:min(len(buf), target - self.pos)]):
            pass
        return self.pos

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        super().close()


@contextmanager
def reading(path: Path, kind: Kind) -> Iterator[None]:
    """A damaged compressed stream, read during a pass, becomes one line that says what to do."""
    try:
        yield
    except damage_errors(kind.compression) as e:
        raise UserError(f"{path}: the {kind.compression} stream is damaged or cut short ({e}); download or "
                        "compress the file again") from None


# --------------------------------------------------------------------------- records: their text field


def field_text(record: Any, fields: list[str], where: Callable[[], str]) -> str | None:
    """The text of one record: ``fields`` (dotted paths) looked up and joined by a blank line (empty ones left
    out); None when it has no text (null or ""). A record without a field or with a non-string one is refused."""
    parts = []
    for name in fields:
        value = record
        for key in name.split("."):
            if not isinstance(value, dict) or key not in value:
                have = ", ".join(list(record)[:8]) if isinstance(record, dict) else type(record).__name__
                raise UserError(f"{where()} has no field {name!r} (it has: {have}); set --data.text_field to the "
                                "field that holds the text (a dotted path like meta.body, or several: a,b)")
            value = value[key]
        if value is None:
            continue
        if not isinstance(value, str):
            raise UserError(f"{where()}: field {name!r} is a {type(value).__name__}, not a string; set "
                            "--data.text_field to a field that holds text")
        if value:
            parts.append(value)
    return JOIN.join(parts) or None


def utf8(text: str) -> bytes:
    """A record's text as the bytes the passes read (a lone surrogate from a JSON escape kept as its 3 bytes,
    which decoding then replaces and counts, as it would in a file)."""
    return text.encode("utf-8", "surrogatepass")


def parse_json(raw: bytes, where: Callable[[], str]) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise UserError(f"{where()} is not UTF-8; convert the file to UTF-8 first") from None
    except ValueError as e:
        raise UserError(f"{where()} is not valid JSON ({e}); fix or remove that line, or give "
                        "--data.format=text to train on the file as text") from None


def too_long(where: str) -> UserError:
    return UserError(f"{where} is longer than {LINE_LIMIT >> 20} MB, the limit of one record; split that record "
                     "or give the file as --data.format=text")


# --------------------------------------------------------------------------- readers


class Sink:
    """Where an index pass puts its documents: (locator, size) pairs in compact arrays, and empties counted."""

    def __init__(self):
        self.locs, self.sizes, self.empty, self.records = [], [], 0, 0

    def add(self, loc: int | np.ndarray, size: int | np.ndarray) -> None:
        locs, sizes = np.atleast_1d(np.asarray(loc, dtype=np.int64)), np.atleast_1d(np.asarray(size, dtype=np.int64))
        keep = sizes > 0
        self.empty += int((~keep).sum())
        self.records += len(sizes)
        self.locs.append(locs[keep])
        self.sizes.append(sizes[keep])
        if len(self.locs) >= 4096:  # few arrays, not one per record
            self.locs, self.sizes = [np.concatenate(self.locs)], [np.concatenate(self.sizes)]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return cat(self.locs), cat(self.sizes)


class TextReader:
    """A plain text file (maybe compressed): one document, read by seeking."""
    records = False

    def __init__(self, fields: list[str]):
        self.fields = fields

    def open(self, path: Path, kind: Kind) -> BinaryIO:
        return open_stream(path, kind.compression)

    def index(self, handle: BinaryIO, path: Path, kind: Kind, sink: Sink, progress: Callable[[int], None]) -> None:
        if not kind.compression:
            size = path.stat().st_size
            sink.add(0, size)
            progress(size)
            return
        n, last = 0, 0
        for block in iter(lambda: handle.read(1 << 20), b""):
            n += len(block)
            last = progress_to(raw_position(handle), last, progress)
        sink.add(0, n)


def progress_to(position: int, last: int, progress: Callable[[int], None]) -> int:
    progress(position - last)
    return position


class JsonLinesReader(TextReader):
    """JSON Lines: one JSON object per line, each a document (blank lines are no records)."""
    records = True

    def index(self, handle: BinaryIO, path: Path, kind: Kind, sink: Sink, progress: Callable[[int], None]) -> None:
        off, lineno, last, locs, sizes = 0, 0, 0, [], []
        for line in iter(lambda: handle.readline(LINE_LIMIT + 1), b""):
            lineno += 1
            if len(line) > LINE_LIMIT:
                raise too_long(f"{path}: line {lineno}")
            if not line.isspace():
                text = field_text(parse_json(line, lambda: f"{path}: line {lineno}"), self.fields,
                                  lambda: f"{path}: the record on line {lineno}")
                locs.append(off)
                sizes.append(len(utf8(text)) if text else 0)
                if len(locs) >= 1 << 16:
                    sink.add(locs, sizes)
                    locs, sizes = [], []
                    last = progress_to(raw_position(handle), last, progress)
            off += len(line)
        sink.add(locs, sizes)
        progress_to(raw_position(handle), last, progress)

    def text(self, handle: BinaryIO, path: Path, loc: int) -> bytes:
        handle.seek(loc)
        line = handle.readline(LINE_LIMIT + 1)
        text = field_text(parse_json(line, lambda: f"{path} at byte {loc}"), self.fields, lambda: f"{path} at byte {loc}")
        return utf8(text or "")


class JsonReader(JsonLinesReader):
    """A ``.json`` file: JSON Lines, or one array of records (read value by value, never whole)."""

    def index(self, handle: BinaryIO, path: Path, kind: Kind, sink: Sink, progress: Callable[[int], None]) -> None:
        if not isinstance(handle, ArrayScanner):
            return super().index(handle, path, kind, sink, progress)
        scanner, locs, sizes, last = handle, [], [], 0
        scanner.reset(0)
        for n, (loc, value) in enumerate(scanner.values(), 1):
            text = field_text(value, self.fields, lambda: f"{path}: record {n} of the array (byte {loc})")
            locs.append(loc)
            sizes.append(len(utf8(text)) if text else 0)
            if len(locs) >= 1 << 16:
                sink.add(locs, sizes)
                locs, sizes = [], []
                last = progress_to(raw_position(scanner.handle), last, progress)
        sink.add(locs, sizes)
        progress_to(raw_position(scanner.handle), last, progress)

    def open(self, path: Path, kind: Kind) -> Any:
        handle = open_stream(path, kind.compression)
        return ArrayScanner(handle, path, 0) if is_array(handle) else handle

    def text(self, handle: Any, path: Path, loc: int) -> bytes:
        if not isinstance(handle, ArrayScanner):
            return super().text(handle, path, loc)
        value = handle.value_at(loc)
        return utf8(field_text(value, self.fields, lambda: f"{path}: the record at byte {loc}") or "")


def is_array(handle: BinaryIO) -> bool:
    """Whether a .json file is one array (its first non-blank byte is '['); leaves the stream at its start."""
    head = handle.read(SNIFF)
    handle.seek(0)
    return head.lstrip()[:1] == b"["


class ArrayScanner:
    """The values of a top-level JSON array, one at a time, with the byte offset each starts at, from a
    buffer of about a megabyte (a value may be up to LINE_LIMIT)."""

    def __init__(self, handle: BinaryIO, path: Path, start: int):
        self.handle, self.path = handle, path
        self.reset(start)

    def reset(self, start: int) -> None:
        self.handle.seek(start)
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf, self.at, self.byte, self.eof = "", 0, start, False  # buf[at] is at byte offset `byte`

    def more(self) -> bool:
        if self.eof:
            return False
        chunk = self.handle.read(1 << 20)
        self.eof = not chunk
        self.buf = self.buf[self.at:] + self.decoder.decode(chunk, final=self.eof)
        self.at = 0
        return True

    def advance(self, n: int) -> None:
        self.byte += len(self.buf[self.at:self.at + n].encode("utf-8", "surrogateescape"))
        self.at += n

    def skip(self, chars: str) -> str:
        """Skip white space and ``chars``; the next character ('' at the end)."""
        while True:
            rest = self.buf[self.at:]
            stripped = rest.lstrip(" \t\r\n" + chars)
            self.advance(len(rest) - len(stripped))
            if stripped or not self.more():
                return stripped[:1]

    def decode(self) -> Any:
        """The JSON value at the current place; reads more while it is incomplete."""
        while True:
            try:
                value, end = json.JSONDecoder().raw_decode(self.buf, self.at)
                if end < len(self.buf) or self.eof:
                    self.advance(end - self.at)
                    return value
            except json.JSONDecodeError as e:
                if self.eof and e.pos >= len(self.buf.rstrip()):
                    raise UserError(f"{self.path} ends inside its array (cut short?); download or write it again") from None
                if self.eof:
                    raise UserError(f"{self.path} at byte {self.byte}: not valid JSON ({e.msg}); fix the file, or "
                                    "give --data.format=text to train on it as text") from None
            if len(self.buf) - self.at > LINE_LIMIT:
                raise too_long(f"{self.path}: the array element at byte {self.byte}")
            self.more()

    def values(self) -> Iterator[tuple[int, Any]]:
        if self.skip("") != "[":
            raise UserError(f"{self.path} is not a JSON array; give JSON Lines or one array of records")
        self.advance(1)
        while True:
            c = self.skip(",")
            if c == "]":
                return
            if not c:
                raise UserError(f"{self.path} ends inside its array (cut short?); download or write it again")
            yield self.byte, self.decode()

    def close(self) -> None:
        self.handle.close()

    def value_at(self, loc: int) -> Any:
        if loc != self.byte:
            self.skip(",")
        if loc != self.byte:
            self.reset(loc)
        return self.decode()


class ParquetReader(TextReader):
    """Parquet, streamed in batches of rows within each row group (only the text columns are read, never a
    whole file or even a whole row group); each row a document."""
    records = True

    def open(self, path: Path, kind: Kind) -> Any:
        pa = pyarrow()
        try:
            file = pa.parquet.ParquetFile(path)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...: all say the file is not whole
            raise UserError(f"{path} is not a readable Parquet file ({str(e).splitlines()[0]}); it may be cut short: "
                            "download it again") from None
        return ParquetRows(file, path, self.fields)

    def index(self, handle: ParquetRows, path: Path, kind: Kind, sink: Sink, progress: Callable[[int], None]) -> None:
        groups, size = handle.file.num_row_groups, path.stat().st_size
        for g in range(groups):
            row, n = 0, handle.file.metadata.row_group(g).num_rows
            while row < n:
                first, _, lengths = handle.batch(g, row)
                sink.add((g << ROW_BITS) + first + np.arange(len(lengths), dtype=np.int64), lengths)
                row = first + len(lengths)
            progress(size * (g + 1) // groups - size * g // groups)

    def text(self, handle: ParquetRows, path: Path, loc: int) -> bytes:
        first, columns, _ = handle.batch(loc >> ROW_BITS, loc & ((1 << ROW_BITS) - 1))
        row = (loc & ((1 << ROW_BITS) - 1)) - first
        parts = [bytes(data[offsets[row]:offsets[row + 1]]) for offsets, data, valid in columns
                 if valid[row] and offsets[row + 1] > offsets[row]]
        return JOIN.encode().join(parts)


class ParquetRows:
    """An open Parquet file, read on from where it is: the batch of rows last read, as Arrow's buffers of its
    text columns (no Python strings), and the iterator over the rest of its row group."""
    BATCH = 2048  # rows decoded at a time: memory is bounded by this many documents, not by a row group

    def __init__(self, file, path: Path, fields: list[str]):
        self.file, self.path, self.fields = file, path, fields
        self.group, self.rows, self.first, self.cached = -1, None, 0, None
        schema = file.schema_arrow
        self.pa = pyarrow()
        for name in fields:
            t = column_type(schema, name, path)
            if not (self.pa.types.is_string(t) or self.pa.types.is_large_string(t)
                    or getattr(self.pa.types, "is_string_view", lambda t: False)(t)):
                raise UserError(f"{path}: column {name!r} holds {t}, not text; set --data.text_field to a text column "
                                f"(its columns: {', '.join(schema.names)})")

    def batch(self, g: int, row: int) -> tuple[int, list, np.ndarray]:
        """The batch of row group ``g`` that holds ``row``: (its first row, per text field (offsets, data, valid),
        each row's text size in bytes). Reading on is cheap; going back starts the row group again."""
        if g != self.group or row < self.first:
            self.group, self.first, self.cached = g, 0, None
            self.rows = self.file.iter_batches(self.BATCH, row_groups=[g], columns=sorted({f.split(".")[0] for f in self.fields}),
                                               use_threads=False)
        while self.cached is None or row >= self.first + len(self.cached[1]):
            if self.cached is not None:
                self.first += len(self.cached[1])
            try:
                self.cached = self.decode(next(self.rows))
            except StopIteration:
                raise UserError(f"{self.path}: row group {g} ends before row {row}; the file changed while it was "
                                "being read: run again") from None
            except Exception as e:
                raise UserError(f"{self.path}: row group {g} cannot be read ({str(e).splitlines()[0]}); the file may be "
                                "damaged or cut short: download it again") from None
        return self.first, *self.cached

    def decode(self, rows) -> tuple[list, np.ndarray]:
        columns, lengths, count = [], np.zeros(rows.num_rows, dtype=np.int64), np.zeros(rows.num_rows, dtype=np.int64)
        for name in self.fields:
            top, *rest = name.split(".")
            arr = rows.column(top)
            if rest:
                arr = self.pa.compute.struct_field(arr, rest)
            arr = arr.cast(self.pa.large_string())
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + len(arr) + 1]
            valid = arr.is_valid().to_numpy(zero_copy_only=False)
            n = np.where(valid, np.diff(offsets), 0)
            columns.append((offsets, memoryview(arr.buffers()[2] or b""), valid))
            lengths += n
            count += n > 0
        lengths += len(JOIN) * np.maximum(count - 1, 0)
        return columns, lengths

    def close(self) -> None:
        self.rows, self.cached, self.group = None, None, -1
        if hasattr(self.file, "close"):
            self.file.close()


def column_type(schema, name: str, file: Path):
    """The Arrow type of a (dotted) column, or a UserError naming the columns there are."""
    names, t = schema.names, None
    for key in name.split("."):
        if key not in names:
            raise UserError(f"{file} has no column {name!r} (its columns: {', '.join(names)}); set --data.text_field "
                            "to the column that holds the text")
        t = schema.field(key).type if t is None else t.field(key).type
        names = [t.field(i).name for i in range(t.num_fields)] if hasattr(t, "num_fields") else []
    return t


READERS = {"text": TextReader, "jsonl": JsonLinesReader, "json": JsonReader, "parquet": ParquetReader}


def reader(kind: Kind, fields: list[str]) -> TextReader:
    return READERS[kind.format](fields)
