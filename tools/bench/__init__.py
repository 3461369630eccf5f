"""Measure speed side by side: ``python -m tools.bench [CONFIG.toml] [--bench.KEY=VALUE ...]``.

Five parts (``--bench.parts=train,attention,sample,prepare,formats``), a module each in this package,
each printed as a table as it finishes; all figures are also written to ``bench.json``:

* **train**: (a) nanoGPT's CPU recipe shape run two ways in this process: nanoGPT's own loop and
  ``smallgpt.step.TrainStep`` as train.py builds it for a 2,000-step run of that shape (its optimizer, its compile decision with
  the compile time spread over the run); (b) the config's model: tokens/s, MFU and peak memory;
  (c) the GPT-2 small shape: MFU against the fastest 2048³ matmul timed in the same run (on a GPU:
  against the card's known peak).
* **attention**: every class of ``tests/reference_attention.py`` that takes (B, T, d), the efficient
  ``model.CausalSelfAttention`` and its floor (its projections and ``F.scaled_dot_product_attention``
  alone): forward and forward+backward time and peak memory, and a sweep over T.
* **sample**: ``GPT.generate`` without a cache (nanoGPT's: the window recomputed for every token)
  against the KV cache in each ``sample.long_context`` mode: recompute, rolling, sinks.
* **prepare**: ``prepare.py``'s encoding against raw tiktoken on the same text, and its peak memory.
* **formats**: whole ``prepare.py`` runs on the same documents as plain text, as JSON Lines and as
  Parquet shards (generated, of ``bench.formats_jsonl_mb`` and ``bench.formats_parquet_mb``): MB/s and
  peak RSS of each.

How it measures, because these machines are shared and noisy: every figure is the median of
``bench.repeats`` timed runs after ``bench.warmup`` untimed ones, and figures that are compared are
timed in rounds that visit each of them in turn (rotating the order), so a change of load hits all
alike; a comparison is a ratio of figures from the same run.  A figure whose single run takes longer
than ``bench.slow_seconds`` gets at most 3 timed runs (marked ``*``).  Peak memory: on a GPU,
``torch.cuda.max_memory_allocated`` above what was allocated before; on a CPU torch's allocations
are invisible to tracemalloc, so each memory figure runs in a fresh process (spawned, nothing
inherited) and is that process's peak resident set above its resident set just before the measured
work (Linux: VmHWM reset through /proc/self/clear_refs; elsewhere ru_maxrss, which can only
under-report by what setup freed).
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from smallgpt import hardware
from smallgpt.cli import comma_list, parse_args
from smallgpt.encoding import default_threads
from smallgpt.safefiles import atomic_write
from tools.bench.attention import part_attention
from tools.bench.common import BenchSettings
from tools.bench.formats import part_formats
from tools.bench.prepare import part_prepare
from tools.bench.process import part_process
from tools.bench.sample import part_sample
from tools.bench.train import part_train

SUMMARY = ("Benchmark training, attention, sampling and data preparation on this machine; "
           "prints tables and writes bench.json.")


def machine(device: torch.device) -> dict:
    info = {"cpu": hardware.device_name(torch.device("cpu")), "cores": default_threads(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device), "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    if device.type == "cuda":
        info["gpu"] = hardware.device_name(device)
    return info


def say_line(text: str) -> None:
    tqdm.write(text, file=sys.stdout)  # keeps a progress bar on stderr intact


def run(cfg: BenchSettings, say: Callable[[str], None] = say_line) -> dict:
    b = cfg.bench
    parts = comma_list(b.parts)
    device = hardware.pick_device(b.device)
    if b.threads:
        torch.set_num_threads(b.threads)
    results: dict[str, Any] = {"machine": machine(device), "settings": cfg.to_dict()["bench"]}
    m = results["machine"]
    load = f", load average {m['load_average'][0]:.1f}" if m["load_average"] else ""
    say(f"bench on {m.get('gpu', m['cpu'])} ({m['cores']} cores, {m['torch_threads']} torch threads), "
        f"torch {m['torch']}{load}")
    if m["load_average"] and m["load_average"][0] > 0.5 * m["cores"]:
        say("warning: other processes are using this machine: absolute figures will be low and noisy; "
            "the ratios (measured in rounds) are what to read")
    part_fns = {"train": part_train, "attention": part_attention, "sample": part_sample, "prepare": part_prepare,
                "formats": part_formats, "process": part_process}
    for name in parts:
        t = time.perf_counter()
        results[name] = part_fns[name](cfg, device, say)
        results[name]["seconds"] = time.perf_counter() - t
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(b.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(results, indent=1, default=str) + "\n")
    say(f"\nwrote {out}")
    return results


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, BenchSettings, "python -m tools.bench", SUMMARY)
    run(cfg)
    return 0

