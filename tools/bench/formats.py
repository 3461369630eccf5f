"""Bench part formats: preparing the same documents as plain text, as one JSON Lines file and as Parquet
shards, each a whole prepare.py run in a fresh process: throughput (MB of text per second) and peak RSS.

The documents are the Python standard library's sources in pieces of about 4 KB (web pages' size),
repeated to the size asked for.  The plain-text baseline is the strictest one: the same documents
concatenated into as many files as the other format has (one for the JSON Lines file, one per Parquet
shard), so it pays no per-document cost at all; a JSON Lines record or a Parquet row pays an index
pass and a parse.  Nothing here is shipped: the files are generated in a temporary directory
(``bench.formats_dir``) and removed.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from smallgpt.corpus import stdlib_files
from smallgpt.encoding import default_threads
from tools.bench.common import BenchSettings, isolated, mib, table
from tools.bench.prepare import prepare_memory

PIECE = 4000  # characters per generated document


def pieces() -> list[str]:
    """About 30 MB of documents of ~4 KB: the standard library's sources, cut at line starts."""
    out = []
    for path in stdlib_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        while text:
            cut = text.find("\n", PIECE)
            cut = len(text) if cut < 0 else cut + 1
            out.append(text[:cut])
            text = text[cut:]
    return out


def stream(n_bytes: int, docs: list[str]) -> Iterator[str]:
    """Documents, round and round, until about ``n_bytes`` of UTF-8 text."""
    size, k = 0, 0
    while size < n_bytes:
        doc = docs[k % len(docs)]
        yield doc
        size, k = size + len(doc.encode("utf-8")), k + 1


def write_jsonl(directory: Path, n_bytes: int, docs: list[str]) -> tuple[Path, Path, int]:
    """One JSON Lines file and its plain-text twin; (jsonl, plain, documents)."""
    directory.mkdir(parents=True, exist_ok=True)
    jsonl, plain, n = directory / "docs.jsonl", directory / "plain" / "docs.txt", 0
    plain.parent.mkdir()
    with open(jsonl, "w", encoding="utf-8") as j, open(plain, "w", encoding="utf-8") as t:
        for n, doc in enumerate(stream(n_bytes, docs), 1):
            j.write(json.dumps({"id": n, "text": doc}, ensure_ascii=False) + "\n")
            t.write(doc)
    return jsonl, plain.parent, n


def write_parquet(directory: Path, n_bytes: int, docs: list[str], shard_mb: float,
                  row_group: int) -> tuple[Path, Path, int]:
    """Parquet shards (as FineWeb's: an id and a text column, zstd-compressed) and their plain-text twins."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    shards, plain = directory / "shards", directory / "plain"
    shards.mkdir(parents=True)
    plain.mkdir()
    batch, size, n, part = [], 0, 0, 0

    def flush() -> None:
        nonlocal batch, size, part
        if batch:
            pq.write_table(pa.table({"id": list(range(n - len(batch), n)), "text": batch}),
                           shards / f"{part:03d}_00000.parquet", row_group_size=row_group, compression="zstd")
            (plain / f"{part:03d}_00000.txt").write_text("".join(batch), encoding="utf-8")
            batch, size, part = [], 0, part + 1

    for doc in stream(n_bytes, docs):
        batch.append(doc)
        n, size = n + 1, size + len(doc.encode("utf-8"))
        if size >= shard_mb * 1e6:
            flush()
    flush()
    return shards, plain, n


def run_prepare(source: str, tokenizer: str, directory: str, threads: int, memory: bool) -> dict:
    """A whole prepare run: in a fresh process when measuring memory, else here (timing only)."""
    if memory:
        return isolated(prepare_memory, torch.device("cpu"), source=source, tokenizer=tokenizer, directory=directory,
                        threads=threads)
    t = time.perf_counter()
    prepare_memory(source, tokenizer, directory, threads)
    return {"peak_bytes": None, "seconds": time.perf_counter() - t}


def part_formats(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    threads = cfg.data.threads or default_threads()
    docs = pieces()
    res, rows = {"threads": threads, "tokenizer": cfg.data.tokenizer}, []
    legs = [("jsonl", b.formats_jsonl_mb)]
    try:
        import pyarrow  # noqa: F401  (the Parquet leg needs it to write its shards)
        legs.append(("parquet", b.formats_parquet_mb))
    except ImportError:
        res["parquet"] = "skipped: pyarrow is not installed"
    with tempfile.TemporaryDirectory(dir=b.formats_dir or None) as tmp:
        for name, mb in legs:
            d = Path(tmp) / name
            say(f"formats: writing {mb:g} MB of documents as {name} and as plain text ...")
            if name == "jsonl":
                src, plain, n = write_jsonl(d, int(mb * 1e6), docs)
            else:
                src, plain, n = write_parquet(d, int(mb * 1e6), docs, b.formats_shard_mb, b.formats_row_group)
            text_mb = sum(p.stat().st_size for p in plain.iterdir()) / 1e6
            leg = {"documents": n, "text_mb": round(text_mb, 1),
                   "file_mb": round(sum(p.stat().st_size for p in (src.iterdir() if src.is_dir() else [src])) / 1e6, 1)}
            for label, source in (("plain", plain), (name, src)):
                r = run_prepare(str(source), cfg.data.tokenizer, str(d / f"ds-{label}"), threads, b.memory)
                leg[label] = {"seconds": r["seconds"], "mb_s": text_mb / r["seconds"], "peak_rss_bytes": r["peak_bytes"]}
            leg["ratio"] = leg[name]["mb_s"] / leg["plain"]["mb_s"]
            if b.memory:
                leg["rss_growth_bytes"] = leg[name]["peak_rss_bytes"] - leg["plain"]["peak_rss_bytes"]
            res[name] = leg
            rows += [[f"{name}: the same text as plain files", f"{leg['plain']['mb_s']:.2f}", "1.00",
                      mib(leg["plain"]["peak_rss_bytes"])],
                     [f"{name}: {n:,} records, {leg['file_mb']:g} MB on disk", f"{leg[name]['mb_s']:.2f}",
                      f"{leg['ratio']:.2f}", mib(leg[name]["peak_rss_bytes"])]]
    say(table(f"formats: whole prepare.py runs, tokenizer {cfg.data.tokenizer}, {threads} threads",
              ["source", "MB/s of text", "vs plain", "peak RSS MiB"], rows,
              ["each a fresh process (bench.memory) preparing from scratch: index pass, split, tokenizer, encoding",
               "plain: the same documents concatenated into as many files as the format has (no per-document cost)",
               "peak RSS above the process's start (its imports excluded)"]))
    return res
