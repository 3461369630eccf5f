"""Bench part prepare: the preparation pipeline's encoding against raw tiktoken on the same text, and its
peak memory."""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from smallgpt import tokenizer as tok
from smallgpt.config import DataConfig
from smallgpt import pipeline
from smallgpt.corpus import Corpus, stdlib_files
from smallgpt.encoding import decode, default_threads, encode_segments, encoder_for
from tools.bench.common import BenchSettings, isolated, memory_mark, memory_peak, mib, table

def stdlib_text(n_bytes: int) -> str:
    """About ``n_bytes`` of the Python standard library's sources (the default corpus), whole files."""
    parts, size = [], 0
    for path in stdlib_files():
        if size >= n_bytes:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
    return "\n".join(parts)


def bench_tokenizer(data: DataConfig, text_path: Path, directory: Path) -> tuple[Any, dict]:
    """The config's tokenizer, built by prepare.py's own code on (a 2 MB sample of) the text: (encoding, spec)."""
    kind = tok.tokenizer_kind(data.tokenizer)
    size = text_path.stat().st_size
    corpus = Corpus([text_path], [size])
    cfg = dataclasses.replace(data, bpe_train_bytes=min(data.bpe_train_bytes, 2_000_000))
    spec = pipeline.build_tokenizer(kind, cfg, corpus, size, directory, progress=False)
    return tok.load_tokenizer(spec, directory), spec


def encode_throughput(path: Path, tokenizer: Any, threads: int) -> dict:
    """prepare.py's encoding path against raw tiktoken on the same text, interleaved: one round.

    Times (a) ``prepare.encode_segments`` streaming the file (in the page cache) to a .bin file with
    ``threads`` threads; (b) ``tokenizer.encode_ordinary_batch`` on the same ~1 MB blocks already in
    memory, with as many threads; (c) ``encode_ordinary`` on one thread.  Returns their MB/s and
    ``ratio`` = (a) / (b).
    """
    size = path.stat().st_size
    corpus = Corpus([path], [size])
    blocks = [decode(raw)[0] for raw in corpus.blocks(0, 0, size)]
    seconds = {}
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with tqdm(disable=True) as bar:
            stats = encode_segments(corpus, [(0, 0, size)], encoder_for(tokenizer, "file"),
                                            tokenizer.eot_token, np.dtype(np.uint32), Path(d) / "out.bin", threads, bar)
        seconds["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    n_batch = sum(map(len, tokenizer.encode_ordinary_batch(blocks, num_threads=threads)))
    seconds["batch"] = time.perf_counter() - t
    t = time.perf_counter()
    for block in blocks:
        tokenizer.encode_ordinary(block)
    seconds["single"] = time.perf_counter() - t
    if n_batch != stats.tokens:
        raise RuntimeError(f"prepare.py encoded {stats.tokens} tokens, tiktoken {n_batch}: the encodings differ")
    mb = size / 1e6
    return {"mb": round(mb, 3), "tokens": stats.tokens, "threads": threads, "prepare_mb_s": mb / seconds["prepare"],
            "tiktoken_batch_mb_s": mb / seconds["batch"], "tiktoken_single_mb_s": mb / seconds["single"],
            "ratio": seconds["batch"] / seconds["prepare"]}


def prepare_memory(source: str, tokenizer: str, directory: str, threads: int) -> dict:
    """Peak memory and time of a whole prepare.py run (split, encode, write) in this process."""
    cfg = DataConfig(source=source, tokenizer=tokenizer, dir=directory, force=True, threads=threads)
    mark = memory_mark(torch.device("cpu"))
    t = time.perf_counter()
    pipeline.prepare(cfg, progress=False)
    seconds = time.perf_counter() - t
    return {"peak_bytes": memory_peak(torch.device("cpu")) - mark, "seconds": seconds}


def part_prepare(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    threads = cfg.data.threads or default_threads()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = stdlib_text(int(b.prepare_mb * 1e6))
        path = d / "text.txt"
        path.write_text(text, encoding="utf-8")
        enc, spec = bench_tokenizer(cfg.data, path, d)
        say(f"prepare: {path.stat().st_size / 1e6:.1f} MB of stdlib text, tokenizer {spec['name']}, "
            f"{threads} threads ...")
        runs = []
        for i in range(b.warmup + b.repeats):  # encode_throughput times its three ways interleaved
            r = encode_throughput(path, enc, threads)
            if i >= b.warmup:
                runs.append(r)
        med = {k: statistics.median(r[k] for r in runs)
               for k in ("prepare_mb_s", "tiktoken_batch_mb_s", "tiktoken_single_mb_s", "ratio")}
        res = {"mb": runs[0]["mb"], "tokens": runs[0]["tokens"], "threads": threads, "tokenizer": spec["name"],
               "runs": len(runs), **med}
        rows = [["prepare.py encoding (streamed from file to .bin)", f"{med['prepare_mb_s']:.1f}", "1.00"],
                [f"tiktoken encode_ordinary_batch, {threads} threads (in memory)",
                 f"{med['tiktoken_batch_mb_s']:.1f}", f"{med['tiktoken_batch_mb_s'] / med['prepare_mb_s']:.2f}"],
                ["tiktoken encode_ordinary, 1 thread (in memory)", f"{med['tiktoken_single_mb_s']:.1f}",
                 f"{med['tiktoken_single_mb_s'] / med['prepare_mb_s']:.2f}"]]
        notes = []
        if b.memory:  # a whole prepare run, on a quarter of the text and on all of it: memory must not grow
            tokenizer = str(d / spec["file"]) if spec.get("file") else spec["name"] if spec["kind"] != "bytes" \
                else "bytes"
            quarter = d / "quarter.txt"
            quarter.write_text(text[:len(text) // 4], encoding="utf-8")
            mem = {}
            for label, src in (("quarter", quarter), ("full", path)):
                mem[label] = isolated(prepare_memory, torch.device("cpu"), source=str(src), tokenizer=tokenizer,
                                      directory=str(d / f"ds-{label}"), threads=threads)
            res["memory"] = mem
            notes += [f"a whole prepare.py run in a fresh process: peak RSS {mib(mem['full']['peak_bytes'])} MiB above "
                      f"its start on {b.prepare_mb:g} MB, {mib(mem['quarter']['peak_bytes'])} MiB on a quarter of it "
                      f"({mem['full']['seconds']:.1f} s and {mem['quarter']['seconds']:.1f} s)",
                      "  bounded by design, not by the corpus: ~2 x threads blocks of 1 MB in flight, plus a carry of "
                      "at most 16 MB where a file has no safe cut (smallgpt.encoding.read_blocks)"]
        say(table(f"prepare: {res['mb']:.1f} MB of Python stdlib text, tokenizer {spec['name']}",
                  ["encoder", "MB/s", "vs prepare.py"], rows,
                  [f"medians of {len(runs)} runs, the three encoders interleaved (encode_throughput)",
                   f"prepare.py / raw tiktoken (batch) throughput: {med['ratio']:.2f}"] + notes))
    return res


# --------------------------------------------------------------------------- whole processes
