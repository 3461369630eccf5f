"""Text to tokens at any size: documents read in blocks cut where no token can straddle, decoded as
UTF-8, and encoded by a pool of threads with tiktoken (its Rust core releases the GIL), appended to a
token file as they finish.  Memory stays bounded whatever the corpus size, and encoding block by
block gives exactly the tokens of the whole document (:func:`safe_cut` says why).
"""
from __future__ import annotations

import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator

import numpy as np
import tiktoken
from tqdm import tqdm

if TYPE_CHECKING:
    from smallgpt.corpus import Corpus

BLOCK = 1 << 20  # bytes read, decoded and encoded as one piece
Segment = tuple[int, int, int]  # (document index, start byte, end byte of its text)


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


def read_blocks(src: BinaryIO, length: int) -> Iterator[bytes]:
    """The next ``length`` bytes of ``src`` (a file, a decompressed stream or a record's text) in pieces of
    about BLOCK bytes, cut at safe places."""
    block = BLOCK
    left, carry = length, b""
    while left > 0:
        chunk = src.read(min(block, left))
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
    replaced: dict[int, int] = field(default_factory=dict)  # document index -> invalid UTF-8 sequences replaced


def encode_segments(corpus: Corpus, segments: Iterable[Segment], encode: Callable[[str], np.ndarray], eot_id: int,
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
                bar.set_postfix_str(f"{stats.documents:,} documents", refresh=False)
                bar.update(n)

        items, size = [], 0
        for i, start, end in segments:
            stats.documents += start == 0
            sep = start == 0 and i > 0
            for raw in corpus.blocks(i, start, end):
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
