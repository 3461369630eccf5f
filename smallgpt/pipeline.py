"""The preparation pipeline: a corpus to ``train.bin``, ``val.bin`` and ``meta.json`` in ``data.dir``.

One function each:

1. **source** -> documents: text files in sorted order, each one document, and records (JSON Lines,
   JSON, Parquet), each one document, read by ``smallgpt/formats.py`` (``smallgpt/corpus.py``); or
   llm.c's token shards, copied as they are (``smallgpt/shards.py``);
2. **split**: val is the tail of the corpus from a line start (:func:`split_point`), as nanoGPT's
   Shakespeare split takes the last 10 % of the characters;
3. **tokenizer**: built or trained (``smallgpt/tokenizer.py``); a BPE learns from the train split, or
   from an evenly spread sample of ``data.bpe_train_bytes`` bytes of it (:func:`bpe_sample`);
4. **encode**: streamed, in parallel, memory bounded (``smallgpt/encoding.py``);
5. **commit**: everything is written to a temporary directory swapped into place at the end
   (``smallgpt/safefiles.py``), so an interrupted run never leaves a dataset that looks complete, and
   a rebuild leaves the old dataset or the new one, never none.

A dataset with the same source files and settings is reused; other settings for an existing one are
refused unless ``data.force``.  One process builds a dataset at a time: the others wait on its lock.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import tiktoken
from tqdm import tqdm

from smallgpt import shards
from smallgpt import tokenizer as tok
from smallgpt.corpus import Corpus, resolve_source, warn
from smallgpt.dataset import FORMAT_VERSION, dataset_dir, downloads_dir, read_meta
from smallgpt.encoding import BLOCK, SAFE, Segment, SplitStats, decode, default_threads, encode_segments, encoder_for
from smallgpt.errors import UserError
from smallgpt.safefiles import DirLock, commit_dir, make_temp_dir, recover

if TYPE_CHECKING:
    from smallgpt.config import DataConfig

SAMPLE_PIECE = 1 << 16  # the BPE sample is made of pieces of this many bytes
SPLIT_RULE = ("documents (files in sorted order; a JSON Lines or Parquet record is a document) are joined with <|endoftext|> between them; val is the tail from "
              "the first line start at or after byte floor((1 - val_fraction) * N) of the N source bytes where a "
              "line ending in a printable ASCII character meets a line beginning with one (else the next document, "
              "else that byte); train is everything before it")


def split_point(corpus: Corpus, val_fraction: float) -> tuple[int, int]:
    """(document index, byte offset) where val begins: see SPLIT_RULE."""
    target = int((1.0 - val_fraction) * corpus.total)
    i = int(np.searchsorted(corpus.starts, target, side="right")) - 1
    off, size = target - int(corpus.starts[i]), int(corpus.sizes[i])
    if off == 0:
        return i, 0
    pos = max(off - 2, 0)  # a line start at exactly `off` has its newline at off - 1
    while pos < size:
        data = corpus.read(i, pos, min(pos + BLOCK + 2, size))
        m = SAFE.search(data)
        if m:
            return i, pos + m.start() + 2
        if len(data) <= 2:
            break
        pos += len(data) - 2
    if i + 1 < len(corpus):
        return i + 1, 0
    tail = corpus.read(i, off, min(off + 4, size))
    while tail and tail[0] & 0xC0 == 0x80:  # not inside a UTF-8 character
        off, tail = off + 1, tail[1:]
    return i, off


def split_segments(corpus: Corpus, at: tuple[int, int]) -> dict[str, Iterator[Segment]]:
    """The segments of each split, streamed (a corpus of millions of records is never listed whole)."""
    end = (len(corpus) - 1, int(corpus.sizes[-1]))
    return {"train": corpus.segments((0, 0), at), "val": corpus.segments(at, end)}


def bpe_sample(corpus: Corpus, train_bytes: int, n_bytes: int, piece: int = SAMPLE_PIECE) -> tuple[Iterator[str], int]:
    """The text a BPE learns from, and its size in bytes: the train split (its first ``train_bytes`` bytes of
    text, never val) if it has at most ``n_bytes``, else ``n_bytes / piece`` pieces spread evenly over it, each
    without its partial first and last lines. Counting chunks is the slowest part of training, hence the sample."""
    if train_bytes <= n_bytes:
        at = corpus.at(train_bytes)
        return (decode(raw)[0] for i, s, e in corpus.segments((0, 0), at) for raw in corpus.blocks(i, s, e)), train_bytes
    ranges = sample_ranges(corpus, train_bytes, n_bytes, piece)
    return (trim_lines(corpus, r) for r in ranges), sum(e - s for _, s, e in ranges)


def sample_ranges(corpus: Corpus, train_bytes: int, n_bytes: int, piece: int) -> list[Segment]:
    """``n_bytes`` in ranges of about ``piece`` bytes, evenly spaced over the first ``train_bytes`` bytes of the
    corpus's text taken as one stream."""
    starts, sizes = corpus.starts, corpus.sizes
    k = max(1, -(-n_bytes // piece))
    out = []
    for j in range(k):
        g = int(j * train_bytes / k)
        n = int(np.searchsorted(starts, g, side="right")) - 1
        off, need = g - int(starts[n]), n_bytes // k
        while need > 0 and n < len(sizes):
            end = min(int(sizes[n]), train_bytes - int(starts[n]))
            take = min(need, end - off)
            if take <= 0:
                break
            out.append((n, off, off + take))
            need, n, off = need - take, n + 1, 0
    return out


def trim_lines(corpus: Corpus, segment: Segment) -> str:
    """The text of a small range, less the partial lines at its ends (where it cuts into a document)."""
    i, start, end = segment
    text = decode(corpus.read(i, start, end))[0]
    if start > 0 and "\n" in text:
        text = text[text.index("\n") + 1:]
    if end < corpus.sizes[i] and "\n" in text:
        text = text[:text.rindex("\n") + 1]
    return text


def settings_of(cfg: DataConfig, kind: str, corpus: Corpus | None = None) -> dict:
    """The settings a dataset is built from; a re-run with other settings must not reuse (or clobber) it.
    How its files were read enters only where it matters: the formats when not all plain text, the text
    field when any file holds records (so a dataset of text files keeps the settings it always had)."""
    if corpus is not None and corpus.shards:  # the shards' own tokens: no tokenizer is built
        return {"format_version": FORMAT_VERSION, "tokenizer": "r50k_base", "val_fraction": cfg.val_fraction,
                "formats": ["tokens"]}
    s = {"format_version": FORMAT_VERSION, "tokenizer": cfg.tokenizer, "val_fraction": cfg.val_fraction}
    if kind == "bpe":
        s |= {"vocab_size": cfg.vocab_size, "bpe_train_bytes": cfg.bpe_train_bytes}
    if kind == "file":
        s["tokenizer"] = "file sha256 " + tok.file_sha256(Path(cfg.tokenizer).expanduser())
    if corpus is not None and {str(k) for k in corpus.kinds} != {"text"}:
        s["formats"] = sorted({str(k) for k in corpus.kinds})
    if corpus is not None and corpus.records:
        s["text_field"] = cfg.text_fields
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
    settings, inputs = settings_of(cfg, kind, corpus), corpus.inputs_digest()
    if reusable(target, settings, inputs, cfg.force):
        if not quiet:
            print(f"prepare: reusing {target} (same source files and settings; --force rebuilds it)", file=sys.stderr)
        check_size(read_meta(target), min_tokens, target)
        return target
    try:
        tmp = make_temp_dir(target)
    except OSError as e:
        raise UserError(f"cannot write the dataset to {target} ({e.strerror or e}); choose a writable --data.dir") from None
    try:  # a UserError from here on (a bad record, a damaged file) leaves any existing dataset as it was
        corpus.progress = progress
        build = shards.build if corpus.shards else encode_corpus
        spec, stats, split_at, source = build(cfg, kind, corpus, tmp, progress)
        meta = {
            "format_version": FORMAT_VERSION, "dtype": spec_dtype(spec).name, "vocab_size": spec["vocab_size"],
            "eot_id": spec["eot_id"], "tokenizer": spec,
            **{f"{s}_{k}": getattr(stats[s], k) for s in stats for k in ("tokens", "bytes", "documents")},
            "source": {"spec": cfg.source, "files": len(corpus.files)} | source
            | ({"python": platform.python_version()} if corpus.stdlib else {}),
            "val_fraction": cfg.val_fraction, "split_rule": shards.SPLIT_RULE if corpus.shards else SPLIT_RULE,
            "split_at": split_at,
            "settings": settings,
            "build": {"inputs": inputs, "seconds": round(time.time() - t0, 2), "tiktoken": tiktoken.__version__,
                      "skipped": corpus.skipped[:20], "skipped_count": len(corpus.skipped),
                      "replaced": sum(sum(s.replaced.values()) for s in stats.values())},
        }
        check_size(meta, min_tokens, target)
        report_replaced(corpus, stats)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        commit_dir(tmp, target)
    except OSError as e:  # disk full, a source file removed mid-run, ...
        raise UserError(f"preparing {target} failed: {e}; nothing was written") from None
    finally:
        corpus.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"prepare: wrote {target}: {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens "
              f"({meta['dtype']}), vocab {spec['vocab_size']:,}, {meta['train_bytes'] / meta['train_tokens']:.2f} "
              f"bytes/token, in {time.time() - t0:.1f} s", file=sys.stderr)
    return target


def spec_dtype(spec: dict) -> np.dtype:
    """The token files' dtype: uint16 while the vocabulary fits, else uint32."""
    return np.dtype(np.uint16 if spec["vocab_size"] <= 1 << 16 else np.uint32)


def encode_corpus(cfg: DataConfig, kind: str, corpus: Corpus, tmp: Path,
                  progress: bool) -> tuple[dict, dict[str, SplitStats], dict, dict]:
    """Split, tokenizer, encode: train.bin and val.bin in ``tmp``; (spec, stats per split, split_at, source)."""
    at = split_point(corpus, cfg.val_fraction)  # the first use of the documents indexes them
    spec = build_tokenizer(kind, cfg, corpus, corpus.position(at), tmp, progress)
    enc = tok.load_tokenizer(spec, tmp)
    digest, stats = hashlib.sha256(), {}
    with tqdm(total=corpus.total, unit="B", unit_scale=True, desc="encoding", disable=not progress) as bar:
        for split, segments in split_segments(corpus, at).items():
            stats[split] = encode_segments(corpus, segments, encoder_for(enc, kind), spec["eot_id"], spec_dtype(spec),
                                           tmp / f"{split}.bin", threads=cfg.threads or default_threads(),
                                           bar=bar, digest=digest)
    source = {"bytes": corpus.total, "sha256": digest.hexdigest(), "documents": len(corpus),
              "empty_records": corpus.empty, "parts": corpus.sources()}
    return spec, stats, corpus.where(at[0]) | {"offset": at[1]}, source


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


def build_tokenizer(kind: str, cfg: DataConfig, corpus: Corpus, train_bytes: int, directory: Path,
                    progress: bool) -> dict:
    """The tokenizer's spec; a rank file, if any, is written into ``directory``. A BPE learns from the first
    ``train_bytes`` bytes of the corpus's text (the train split)."""
    if kind == "bytes":
        return tok.bytes_spec()
    if kind == "tiktoken":
        return tok.named_spec(cfg.tokenizer)
    if kind == "file":
        return tok.file_spec(Path(cfg.tokenizer).expanduser(), directory)
    texts, size = bpe_sample(corpus, train_bytes, cfg.bpe_train_bytes)
    return tok.bpe_spec(tok.count_chunks(texts, progress, size), cfg.vocab_size, directory, progress)


def check_size(meta: dict, min_tokens: int, target: Path) -> None:
    need = max(min_tokens, 1)
    if meta["train_tokens"] < need or meta["val_tokens"] < need:
        raise UserError(f"the corpus is too small: {target} gets {meta['train_tokens']} train and "
                        f"{meta['val_tokens']} val tokens, but each split needs at least {need} (one training "
                        "window); use a larger corpus, a smaller --model.block_size or another --data.val_fraction")


def report_replaced(corpus: Corpus, stats: dict[str, SplitStats]) -> None:
    per_doc: dict[int, int] = {}
    for s in stats.values():
        for i, n in s.replaced.items():
            per_doc[i] = per_doc.get(i, 0) + n
    if per_doc:
        first = corpus.file_of(min(per_doc))
        warn(f"replaced {sum(per_doc.values())} invalid UTF-8 sequences by U+FFFD in {len(per_doc)} documents "
             f"(first: {first})")
