"""A prepared dataset, read: the token files by memory map, the tokenizer, and ``meta.json``.

train.py, sample.py's closing sample and the tools open a dataset here; ``smallgpt/pipeline.py``
builds one.  Where a dataset lives (``data.dir``, default ``data/<source>-<tokenizer>``) is decided
here too, so that every script finds the same one.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tiktoken

from smallgpt import tokenizer as tok
from smallgpt.corpus import source_name
from smallgpt.errors import UserError

if TYPE_CHECKING:
    from smallgpt.config import DataConfig

FORMAT_VERSION = 1  # of meta.json and the token files; bump when their layout changes


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
