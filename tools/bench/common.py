"""What every part of the bench shares: its settings, how it times, how it measures memory, its tables."""
from __future__ import annotations

import math
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from model import GPTConfig
from smallgpt.cli import Settings, comma_list, need
from smallgpt.config import DataConfig, TrainConfig
from smallgpt.hardware import sync

ROOT = Path(__file__).resolve().parents[2]

SLOW_REPEATS = 3  # timed runs of a figure whose single run exceeds bench.slow_seconds
PARTS = ("train", "attention", "sample", "prepare", "formats", "process")
MiB = 1 << 20

MEMORY_NOTE = {False: "peak RSS of a fresh process doing only this (torch and numpy included)",
               True: "torch.cuda.max_memory_allocated: weights, optimizer state, activations"}


@dataclass
class BenchConfig:
    parts: str = "train,attention,sample,prepare,formats"  # comma-separated parts to run (also: process, whole runs)
    repeats: int = 5  # timed repetitions per figure (the median is reported)
    warmup: int = 2  # untimed repetitions before timing
    train_steps: int = 20  # training part: optimizer steps per timed round (GPU: also the GPT-2 steps' minimum)
    run_steps: int = 2000  # training part: the run length over which compile time is spread (nanoGPT's recipe)
    gpt2_steps: int = 3  # training part: timed steps of the GPT-2-small MFU figure, after one warm-up; 0 = skip it
    gpt2_block: int = 0  # training part: GPT-2 small's block size; 0 = 256 on a CPU, 1024 on a GPU
    gpt2_batch: int = 0  # training part: GPT-2 small's batch size; 0 = 4 on a CPU, 16 on a GPU
    candidates: bool = True  # training part: also time what train.py does not choose (compile flipped, 1 thread, bf16)
    options: bool = True  # training part: what the modern options cost a step at nanoGPT's shape, eager and compiled
    attn_batch: int = 8  # attention part: batch size
    attn_seq: int = 1024  # attention part: sequence length
    attn_embd: int = 768  # attention part: width
    attn_heads: int = 12  # attention part: heads
    attn_sweep: str = "256,512,1024,2048,4096"  # attention part: sequence lengths of the sweep (batch 1)
    sample_tokens: str = "500,2000"  # sampling part: new tokens per measurement (comma-separated)
    sample_blocks: str = "256"  # sampling part: block sizes (comma-separated)
    sample_batch: str = "1"  # sampling part: batch sizes, i.e. samples generated together (comma-separated)
    sample_sinks: int = 4  # sampling part: sink tokens of the 'sinks' rolling cache
    prepare_mb: float = 20.0  # prepare part: megabytes of text encoded
    formats_jsonl_mb: float = 20.0  # formats part: megabytes of text in the generated JSON Lines file (the report's figure: 2000)
    formats_parquet_mb: float = 20.0  # formats part: megabytes of text in the generated Parquet shards (the report's figure: 1000)
    formats_shard_mb: float = 250.0  # formats part: megabytes of text per Parquet shard
    formats_row_group: int = 10_000  # formats part: rows per Parquet row group
    formats_dir: str = ""  # formats part: where the generated files go (they are removed); empty: the system's temporary directory
    json: str = "bench.json"  # where the figures are written as JSON
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    threads: int = 0  # CPU threads of torch (torch.set_num_threads); 0 = torch's default, one per core
    memory: bool = True  # measure peak memory (on a CPU each figure in a fresh process: a few seconds each)
    slow_seconds: float = 1.0  # a figure whose single run takes longer gets at most 3 timed runs (marked *)
    nanogpt: str = ""  # process part: a checkout of karpathy/nanoGPT, whose train.py runs beside ours; empty: ours only
    process_text: str = ""  # process part: the corpus (a text file); empty: 1.1 MB of the standard library's sources
    process_steps: int = 2000  # process part: steps of nanoGPT's CPU recipe

    def check(self) -> None:
        need(self.repeats >= 1 and self.warmup >= 0, "bench.repeats", "repeats must be at least 1 and warmup 0 or more")
        parts = comma_list(self.parts)
        need(bool(parts) and all(p in PARTS for p in parts), "bench.parts",
             f"must be a comma-separated list of {', '.join(PARTS)}; got {self.parts!r}")
        for key in ("attn_sweep", "sample_blocks", "sample_tokens", "sample_batch"):
            value = getattr(self, key)
            need(all(v.strip().isdigit() and int(v) > 0 for v in value.split(",") if v.strip()), f"bench.{key}",
                 f"must be comma-separated positive whole numbers, got {value!r}")
        for key in ("train_steps", "run_steps", "attn_batch", "attn_seq", "attn_embd", "attn_heads"):
            need(getattr(self, key) >= 1, f"bench.{key}", "must be at least 1")
        need(self.attn_embd % self.attn_heads == 0, "bench.attn_embd",
             f"must be divisible by bench.attn_heads ({self.attn_heads})")
        for key in ("gpt2_steps", "gpt2_block", "gpt2_batch", "threads", "sample_sinks"):
            need(getattr(self, key) >= 0, f"bench.{key}", "must be 0 or more")
        need(self.prepare_mb > 0, "bench.prepare_mb", "must be positive")
        for key in ("formats_jsonl_mb", "formats_parquet_mb", "formats_shard_mb", "formats_row_group"):
            need(getattr(self, key) > 0, f"bench.{key}", "must be positive")
        need(self.slow_seconds > 0, "bench.slow_seconds", "must be positive")
        need(self.process_steps >= 1, "bench.process_steps", "must be at least 1")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "bench.device",
             f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass
class BenchSettings(Settings):
    bench: BenchConfig = field(default_factory=BenchConfig)
    model: GPTConfig = field(default_factory=GPTConfig)  # the "config model" of the train and sample parts
    train: TrainConfig = field(default_factory=TrainConfig)  # how train.py would train it
    data: DataConfig = field(default_factory=DataConfig)  # its tokenizer (vocabulary) and prepare's settings


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Seconds of the timed runs of one figure, and of its first (warm-up) run."""
    seconds: list[float] = field(default_factory=list)
    first: float = 0.0
    slow: bool = False  # fewer runs than bench.repeats, because one run is slow

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def to_json(self) -> dict:
        return {"median_s": self.median, "runs": len(self.seconds), "first_s": self.first, "slow": self.slow}


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleave(fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int,
               slow_seconds: float = math.inf, per_round: int | dict[str, int] = 1) -> dict[str, Timing]:
    """Time every fn ``repeats`` rounds of ``per_round`` runs after ``warmup`` untimed runs.

    Each round visits every fn, the order rotating from round to round, so that a change of the
    machine's load slows all of them alike and their ratios stay fair.  ``per_round`` may differ by
    fn (a dict; 1 for a fn it does not name).  The first run of each fn is timed on its own
    (``Timing.first``: compile time shows there); with ``warmup`` 0 it counts.
    """
    out = {name: Timing() for name in fns}
    for name, fn in fns.items():
        t = out[name]
        t.first = time_once(fn, device)
        t.slow = t.first > slow_seconds
        if warmup == 0:
            t.seconds.append(t.first)
        for _ in range(0 if t.slow else warmup - 1):
            fn()
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = out[name]
            for _ in range(per_round.get(name, 1) if isinstance(per_round, dict) else per_round):
                if not (t.slow and len(t.seconds) >= SLOW_REPEATS):
                    t.seconds.append(time_once(fns[name], device))
    return out


# --------------------------------------------------------------------------- memory


def _rss_bytes(field_name: str) -> int | None:
    """VmRSS / VmHWM of this process from /proc (Linux), in bytes; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _maxrss() -> int:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def memory_mark(device: torch.device) -> int:
    """Start measuring peak memory: returns the level the peak is measured from."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    try:  # Linux: reset the high-water mark to the current resident set
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _rss_bytes("VmRSS") or _maxrss()
    except OSError:
        return _maxrss()


def memory_peak(device: torch.device) -> int:
    if device.type == "cuda":
        sync(device)
        return torch.cuda.max_memory_allocated(device)
    return _rss_bytes("VmHWM") or _maxrss()


def release_freed_memory() -> None:
    """Hand memory that was freed back to the OS (glibc's malloc_trim), so that a measurement after a
    warm-up run starts from a resident set without free pages it could reuse unseen."""
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement can only under-report by what was reused
        pass


def _child(fn: Callable[..., Any], kwargs: dict, threads: int) -> Any:
    torch.set_num_threads(threads)
    return fn(**kwargs)


def isolated(fn: Callable[..., Any], on: torch.device, **kwargs) -> Any:
    """Call ``fn(**kwargs)`` (a module-level function of the bench): for a CPU in a fresh spawned process (so
    the peak memory it measures is its own), for a GPU here (CUDA counts allocations itself)."""
    if on.type == "cuda":
        return fn(**kwargs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_child, fn, kwargs, torch.get_num_threads()).result()


# --------------------------------------------------------------------------- output


def table(title: str, header: list[str], rows: list[list[Any]], notes: list[str] = ()) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    out = [f"\n== {title}", line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]]
    return "\n".join(out + [f"  {n}" for n in notes])


def ms(t: Timing) -> str:
    return f"{1e3 * t.median:.1f}{'*' if t.slow else ''}"


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:,.0f}"


def random_tokens(vocab: int, n: int = 1 << 20, seed: int = 0) -> np.ndarray:
    """A token array standing in for a dataset: speed does not depend on what the tokens are."""
    return np.random.default_rng(seed).integers(0, vocab, n, dtype=np.int64).astype(np.uint16 if vocab <= 1 << 16
                                                                                     else np.uint32)
