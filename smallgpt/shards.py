"""Pre-tokenized GPT-2 shards of llm.c and modded-nanogpt, opened as a dataset without re-tokenizing.

A shard (``fineweb_train_000001.bin``) is a header of 256 little-endian int32 (magic 20240520, version
1, the token count, then zeros) followed by that many uint16 GPT-2 tokens (r50k_base), each document
starting with ``<|endoftext|>``.  The tokens are copied as they are into ``train.bin`` and
``val.bin`` (a streaming copy, memory bounded by one chunk), val being the shards whose name says
``val`` or else the tail (SPLIT_RULE).  Bits per byte needs each split's UTF-8 byte count: it is the
sum over its tokens of each token's byte length, from a table of the GPT-2 ranks (tiktoken's ``gpt2``,
downloaded on first use, or a local rank file given as ``data.tokenizer``).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from smallgpt import tokenizer as tok
from smallgpt.encoding import SplitStats
from smallgpt.errors import UserError

if TYPE_CHECKING:
    from smallgpt.config import DataConfig
    from smallgpt.corpus import Corpus

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256
HEADER = 4 * HEADER_INTS  # bytes
CHUNK = 1 << 22  # tokens copied (and counted) at a time
VAL_NAME = re.compile(r"(?<![a-z])val(?![a-z])")  # 'fineweb_val_000000', 'val.bin'; not 'interval'
SPLIT_RULE = ("token shards: val is every shard whose file name says 'val', else the tail of the shards (in sorted "
              "order) from the first <|endoftext|> at or after token floor((1 - val_fraction) * N) of their N tokens; "
              "the tokens are copied as they are (each document starts with <|endoftext|>)")
Range = tuple[Path, int, int, int]  # (shard, its token count, first token, end token)


def read_header(path: Path) -> int:
    """The token count of a shard, checked against its header and its size; anything else is refused."""
    with open(path, "rb") as f:
        head = f.read(HEADER)
    h = np.frombuffer(head[:HEADER - HEADER % 4], dtype="<i4")
    if len(head) < HEADER or h[0] != MAGIC or h[1] != VERSION:
        said = f"magic {h[0]}, version {h[1]}" if len(h) >= 2 else f"{len(head)} bytes"
        raise UserError(f"{path} is not a GPT-2 token shard of llm.c (its header: {said}; a shard's is magic {MAGIC}, "
                        f"version {VERSION}, in {HEADER} bytes); give the shards llm.c's or modded-nanogpt's data "
                        "scripts write, or name the format of a text file with --data.format")
    n, size = int(h[2]), path.stat().st_size
    if size != HEADER + 2 * n:
        raise UserError(f"{path} holds {(size - HEADER) // 2} tokens but its header says {n}: the shard is cut short "
                        "or damaged; download it again")
    return n


def shard_spec(cfg: DataConfig, kind: str, directory: Path) -> dict:
    """GPT-2's tokenizer (the shards' own): tiktoken's 'gpt2', or a local r50k_base rank file."""
    if kind == "bpe" or cfg.tokenizer in ("gpt2", "r50k_base"):
        return tok.named_spec("gpt2" if kind == "bpe" else cfg.tokenizer)
    if kind == "file":
        spec = tok.file_spec(Path(cfg.tokenizer).expanduser(), directory)
        if spec["name"] == "r50k_base":
            return spec
    raise UserError(f"data.tokenizer {cfg.tokenizer!r} is not GPT-2's, but token shards hold GPT-2 tokens; leave "
                    "data.tokenizer out, or give --data.tokenizer=gpt2 or a local r50k_base.tiktoken file")


def split(files: list[Path], counts: list[int], val_fraction: float, eot: int) -> tuple[list[Range], list[Range], dict]:
    """The train and val ranges of the shards (see SPLIT_RULE), and where val begins (meta.json's split_at)."""
    val = [(p, n, 0, n) for p, n in zip(files, counts) if VAL_NAME.search(p.stem.lower())]
    train = [(p, n, 0, n) for p, n in zip(files, counts) if not VAL_NAME.search(p.stem.lower())]
    if not train:
        raise UserError("every shard given is a val shard (its name says val); give the train shards too")
    if val:
        return train, val, {"val_shards": [str(p) for p, *_ in val]}
    total = sum(counts)
    target = int((1.0 - val_fraction) * total)
    start = 0
    for j, n in enumerate(counts):  # the first <|endoftext|> at or after the target
        if start + n > target:
            tokens = np.memmap(files[j], dtype="<u2", mode="r", offset=HEADER, shape=(n,))
            for a in range(max(target - start, 0), n, CHUNK):
                hit = np.flatnonzero(tokens[a:a + CHUNK] == eot)
                if len(hit):
                    target = start + a + int(hit[0])
                    break
            else:
                start += n
                continue
            break
        start += n
    train, val, start = [], [], 0
    for p, n in zip(files, counts):
        cut = min(max(target - start, 0), n)
        if cut > 0:
            train.append((p, n, 0, cut))
        if cut < n:
            val.append((p, n, cut, n))
        start += n
    at = next(((str(p), s) for p, _, s, _ in val), (str(files[-1]), counts[-1]))
    return train, val, {"file": at[0], "offset_tokens": at[1]}


def copy(ranges: list[Range], out_path: Path, lengths: np.ndarray, eot: int, bar: tqdm, digest) -> SplitStats:
    """Append the tokens of ``ranges`` to ``out_path``, counting their UTF-8 bytes and documents."""
    stats = SplitStats()
    with open(out_path, "wb") as out:
        for path, n, s, e in ranges:
            tokens = np.memmap(path, dtype="<u2", mode="r", offset=HEADER, shape=(n,))
            for a in range(s, e, CHUNK):
                chunk = np.asarray(tokens[a:min(a + CHUNK, e)], dtype=np.uint16)
                if chunk.max() >= len(lengths):
                    raise UserError(f"{path} holds token id {int(chunk.max())}, past GPT-2's {len(lengths)}: it is "
                                    "no GPT-2 shard; give shards of GPT-2 tokens")
                counts = np.bincount(chunk, minlength=len(lengths))
                stats.tokens += len(chunk)
                stats.bytes += int(counts @ lengths)
                stats.documents += int(counts[eot])
                raw = chunk.tobytes()
                out.write(raw)
                digest.update(raw)
                bar.update(len(raw))
    return stats


def build(cfg: DataConfig, kind: str, corpus: Corpus, tmp: Path, progress: bool) -> tuple[dict, dict, dict, dict]:
    """train.bin and val.bin in ``tmp`` from the shards of ``corpus``: (spec, stats per split, split_at, source)."""
    counts = [read_header(p) for p in corpus.files]  # every shard checked before the slow part
    spec = shard_spec(cfg, kind, tmp)
    enc = tok.load_tokenizer(spec, tmp)
    lengths = tok.token_lengths(enc, spec["vocab_size"])
    train, val, at = split(corpus.files, counts, cfg.val_fraction, spec["eot_id"])
    digest, stats = hashlib.sha256(), {}
    with tqdm(total=2 * sum(counts), unit="B", unit_scale=True, desc="copying tokens", disable=not progress) as bar:
        for name, ranges in (("train", train), ("val", val)):
            stats[name] = copy(ranges, tmp / f"{name}.bin", lengths, spec["eot_id"], bar, digest)
    source = {"bytes": stats["train"].bytes + stats["val"].bytes, "tokens": sum(counts), "sha256": digest.hexdigest(),
              "parts": corpus.sources()}
    return spec, stats, at, source
