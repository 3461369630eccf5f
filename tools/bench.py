"""Measure speed side by side: ``python tools/bench.py [CONFIG.toml] [--bench.KEY=VALUE ...]``.

Four parts (``--bench.parts=train,attention,sample,prepare``), each printed as a table as it
finishes; all figures are also written to ``bench.json``:

* **train**: (a) nanoGPT's CPU recipe shape run two ways in this process: nanoGPT's own loop and
  ``train.TrainStep`` as train.py builds it for a 2,000-step run of that shape (its optimizer, its compile decision with
  the compile time spread over the run); (b) the config's model: tokens/s, MFU and peak memory;
  (c) the GPT-2 small shape: MFU against the fastest 2048³ matmul timed in the same run (on a GPU:
  against the card's known peak).
* **attention**: every class of ``tests/reference_attention.py`` that takes (B, T, d), the efficient
  ``model.CausalSelfAttention`` and its floor (its projections and ``F.scaled_dot_product_attention``
  alone): forward and forward+backward time and peak memory, and a sweep over T.
* **sample**: ``GPT.generate`` without a cache (nanoGPT's: the window recomputed for every token)
  against the KV cache in each ``sample.long_context`` mode: recompute, rolling, sinks.
* **prepare**: ``prepare.py``'s encoding against raw tiktoken on the same text, and its peak memory.

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

import dataclasses
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the core's modules live at the repository's top level

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import curves  # noqa: E402
import hardware  # noqa: E402
import prepare  # noqa: E402
import tokenizer as tok  # noqa: E402
from config import (DataConfig, Settings, TrainConfig, comma_list, default_model, default_train, need,  # noqa: E402
                    parse_args, run_main)
from errors import UserError  # noqa: E402
from hardware import MatmulProbe, sync  # noqa: E402
from model import GPT, CausalSelfAttention, GPTConfig  # noqa: E402
from train import Batches, TrainStep  # noqa: E402

SUMMARY = ("Benchmark training, attention, sampling and data preparation on this machine; "
           "prints tables and writes bench.json.")
SLOW_REPEATS = 3  # timed runs of a figure whose single run exceeds bench.slow_seconds
PARTS = ("train", "attention", "sample", "prepare", "process")
MiB = 1 << 20

# nanoGPT's README CPU recipe (char-level Shakespeare): the shape of the (a) comparison
NANOGPT_SHAPE = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
NANOGPT_TRAIN = dict(optimizer="adamw", batch_size=12, learning_rate=1e-3, min_lr=1e-4, beta2=0.99, weight_decay=0.1,
                     grad_clip=1.0, max_seconds=0.0, warmup_iters=100, lr_decay_iters=2000, schedule="cosine")
MODERN_OPTIONS = dict(pos_emb="rope", activation="relu2", qk_norm=True, norm="rmsnorm")  # model.py's options GPT-2 lacks
GPT2_SMALL = dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, dropout=0.0)
GPT2_TRAIN = dict(optimizer="adamw", learning_rate=6e-4, min_lr=6e-5, beta2=0.95, weight_decay=0.1, grad_clip=1.0)
MEMORY_NOTE = {False: "peak RSS of a fresh process doing only this (torch and numpy included)",
               True: "torch.cuda.max_memory_allocated: weights, optimizer state, activations"}


@dataclass
class BenchConfig:
    parts: str = "train,attention,sample,prepare"  # comma-separated parts to run (also: process, whole runs)
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
        need(self.slow_seconds > 0, "bench.slow_seconds", "must be positive")
        need(self.process_steps >= 1, "bench.process_steps", "must be at least 1")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "bench.device",
             f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass
class BenchSettings(Settings):
    bench: BenchConfig = field(default_factory=BenchConfig)
    model: GPTConfig = field(default_factory=default_model)  # the "config model" of the train and sample parts
    train: TrainConfig = field(default_factory=default_train)  # how train.py would train it
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


def _child(fn_name: str, kwargs: dict, threads: int) -> Any:
    torch.set_num_threads(threads)
    return globals()[fn_name](**kwargs)


def isolated(fn_name: str, on: torch.device, **kwargs) -> Any:
    """Call this module's ``fn_name(**kwargs)``: for a CPU in a fresh spawned process (so the peak memory it
    measures is its own), for a GPU here (CUDA counts allocations itself)."""
    if on.type == "cuda":
        return globals()[fn_name](**kwargs)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(_child, fn_name, kwargs, torch.get_num_threads()).result()


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


# --------------------------------------------------------------------------- training


def random_tokens(vocab: int, n: int = 1 << 20, seed: int = 0) -> np.ndarray:
    """A token array standing in for a dataset: speed does not depend on what the tokens are."""
    return np.random.default_rng(seed).integers(0, vocab, n, dtype=np.int64).astype(np.uint16 if vocab <= 1 << 16
                                                                                     else np.uint32)


class NanoGPTLoop:
    """nanoGPT's train.py step as it runs on a CPU, on the same model.py GPT (whose GPT-2 configuration is
    nanoGPT's architecture): eager, AdamW with decay on 2-D weights (foreach; nanoGPT fuses only on
    CUDA), get_batch from the token array, forward, backward, clip, step, zero_grad."""

    def __init__(self, mcfg: GPTConfig, tcfg: TrainConfig, device: torch.device, data: np.ndarray):
        torch.manual_seed(tcfg.seed)
        self.model, self.device, self.data, self.t = GPT(mcfg).to(device), device, data, tcfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": tcfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=tcfg.learning_rate, betas=(tcfg.beta1, tcfg.beta2),
                                           fused=device.type == "cuda")
        dtype = hardware.pick_dtype(tcfg.dtype, device)
        self.ctx = hardware.autocast(device, dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.x, self.y = self.get_batch()

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        T = self.model.config.block_size
        ix = torch.randint(len(self.data) - T, (self.t.batch_size,))
        x = torch.stack([torch.from_numpy(self.data[i:i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(self.data[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def __call__(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.t.learning_rate
        with self.ctx:
            _, loss = self.model(self.x, self.y)
        self.x, self.y = self.get_batch()  # prefetch while the device works, as nanoGPT does
        self.scaler.scale(loss).backward()
        if self.t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss.item()


class TimedStep:
    """train.py's own ``TrainStep`` on random tokens standing in for a dataset, one optimizer step per
    call (the step counter advances, so each call draws new windows, as in a run)."""

    def __init__(self, mcfg: GPTConfig, tcfg: TrainConfig, device: torch.device, data: np.ndarray):
        batches = Batches(data, data, mcfg.block_size, tcfg.batch_size, 1, tcfg.seed, device)
        self.train_step = TrainStep(mcfg, tcfg, device, batches)
        self.steps_done = 0

    def __call__(self) -> None:
        self.train_step(self.steps_done, 1.0)
        self.steps_done += 1


def with_threads(fn: Callable[[], Any], n: int) -> Callable[[], Any]:
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(before)
    return run


def step_memory(kind: str, mcfg: dict, tcfg: dict, device: str, steps: int = 3) -> dict:
    """Peak memory of ``steps`` eager training steps (the first creates the optimizer state), above the level
    before the model was built; and the process's whole peak (torch included), as nanoGPT's figure is."""
    dev = torch.device(device)
    data = random_tokens(mcfg["vocab_size"])
    mark = memory_mark(dev)
    step = (NanoGPTLoop if kind == "baseline" else TimedStep)(GPTConfig(**mcfg), TrainConfig(**tcfg), dev, data)
    if kind == "ours" and step.train_step.compiled:  # the eager step's memory: a compile in a fresh process is slow
        step.train_step.step_model = step.train_step.model
    for _ in range(steps):
        step()
    peak = memory_peak(dev)
    return {"peak_bytes": peak - mark, "process_peak_bytes": peak if dev.type != "cuda" else None}


def training_figures(mcfg: GPTConfig, variants: dict[str, TrainConfig], device: torch.device, rounds: int,
                     steps: int, warmup: int, run_steps: int) -> dict[str, dict]:
    """ms/step, tokens/s and MFU of train.py's step on one model under each of ``variants`` (train settings),
    all timed in rounds with each other.  On a CPU the peak is hardware.MatmulProbe's (the fastest of its
    matmuls, in each variant's dtype), timed in the same rounds; on a GPU the card's known peak (hardware.py)."""
    data = random_tokens(mcfg.vocab_size)
    runs = {name: TimedStep(mcfg, tcfg, device, data) for name, tcfg in variants.items()}
    probes = {dtype: MatmulProbe(device, dtype) for dtype in {r.train_step.dtype for r in runs.values()}} \
        if device.type == "cpu" else {}
    # rounds of ``steps`` steps of each variant and one probe matmul per dtype, so that the probe's large
    # matmul, which flushes the caches, disturbs one step of a round rather than every step
    timings = interleave({**runs, **{f"matmul {d}": p for d, p in probes.items()}}, device, rounds, warmup,
                         per_round={name: steps for name in runs})
    out = {}
    for name, run in runs.items():
        t, step = timings[name], run.train_step
        peak_flops = probes[step.dtype].peak_flops if probes else hardware.peak_flops(device, step.dtype)
        compile_s = max(0.0, t.first - t.median) if step.compiled else 0.0
        flops_per_step = step.tokens_per_step * step.flops_per_token
        out[name] = {"ms_per_step": 1e3 * t.median, "tokens_per_s": step.tokens_per_step / t.median,
                     "mfu": flops_per_step / t.median / peak_flops, "peak_flops": peak_flops,
                     "peak_flops_source": "hardware.MatmulProbe, same run" if probes else "hardware.py table",
                     "compiled": step.compiled, "compile_s": compile_s,
                     "tokens_per_s_amortised": step.tokens_per_step * run_steps / (t.median * run_steps + compile_s),
                     "dtype": str(step.dtype).removeprefix("torch."), "steps": len(t.seconds),
                     "tokens_per_step": step.tokens_per_step, "flops_per_step": flops_per_step}
    return out


def train_memory(r: dict) -> int:
    """The memory figure a training table shows: a CPU process's whole peak RSS (torch included, as a user
    would see it in top), or on a GPU the peak allocated by the model, optimizer and step."""
    return r["process_peak_bytes"] or r["peak_bytes"]


def figure_row(name: str, f: dict) -> list[str]:
    return [name, f"{f['ms_per_step']:.1f}", f"{f['tokens_per_s']:,.0f}", f"{f['mfu']:.2f}", f"{f['peak_flops'] / 1e9:,.0f}",
            f"{f['compile_s']:.1f}" if f["compiled"] else "-", mib(train_memory(f)) if "peak_bytes" in f else "-"]


def options_price(mcfg: GPTConfig, tcfg: TrainConfig, device: torch.device, b: BenchConfig,
                  say: Callable[[str], None], compiled: bool = True) -> dict:
    """train (a2): GPT-2's options against rotary positions + squared ReLU + QK-norm + RMSNorm at the same
    shape, eager and compiled, float32, in rounds: the options cost few FLOPs, so their price is small
    kernels, which compiling fuses.  Ratios are to GPT-2's options, eager."""
    data, fp32 = random_tokens(mcfg.vocab_size), dataclasses.replace(tcfg, dtype="float32")
    runs = {}
    for label, options in (("GPT-2's options", {}), ("modern options", MODERN_OPTIONS)):
        for compile_ in ("false", "true") if compiled else ("false",):
            name = label + (", compiled" if compile_ == "true" else "")
            runs[name] = TimedStep(dataclasses.replace(mcfg, **options), dataclasses.replace(fp32, compile=compile_),
                                   device, data)
    say(f"train (a2): {', '.join(runs)} in rounds of {b.train_steps} steps ...")
    t = interleave(runs, device, b.repeats, b.warmup, per_round=b.train_steps)
    base = t["GPT-2's options"].median
    out = {name: {**timing.to_json(), "ms_per_step": 1e3 * timing.median, "vs_gpt2_eager": timing.median / base}
           for name, timing in t.items()}
    notes = [f"modern options = {', '.join(f'{k}={v}' for k, v in MODERN_OPTIONS.items())}; float32; "
             f"medians of {b.repeats} rounds x {b.train_steps} steps (compiling happens in the warm-up)"]
    if compiled:
        out["modern_over_gpt2_compiled"] = t["modern options, compiled"].median / t["GPT-2's options, compiled"].median
        notes.append(f"modern / GPT-2's options, both compiled: {out['modern_over_gpt2_compiled']:.3f}x a step")
    say(table("train (a2): what the modern options cost a step at nanoGPT's shape",
              ["run", "ms/step", "vs GPT-2's options, eager"],
              [[name, ms(timing), f"{timing.median / base:.3f}x"] for name, timing in t.items()], notes))
    return out


def bench_vocab(data: DataConfig) -> int:
    """The vocabulary the config's dataset would have, without preparing it."""
    return tok.vocab_size_for(data.tokenizer, data.vocab_size)


def part_train(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    res: dict[str, Any] = {}
    # (a) nanoGPT's recipe shape: nanoGPT's loop against train.py's, in rounds
    mcfg = GPTConfig(**NANOGPT_SHAPE)
    tcfg = dataclasses.replace(cfg.train, **NANOGPT_TRAIN, max_iters=b.run_steps, gradient_accumulation_steps=1)
    data = random_tokens(mcfg.vocab_size)
    runs: dict[str, Callable[[], Any]] = {"baseline": NanoGPTLoop(mcfg, tcfg, device, data),
                                          "ours": TimedStep(mcfg, tcfg, device, data)}
    ours = runs["ours"]
    if b.candidates:  # what train.py did not choose, for the record
        flip = "false" if ours.train_step.compiled else "true"
        runs[f"ours, compile={flip}"] = TimedStep(mcfg, dataclasses.replace(tcfg, compile=flip), device, data)
        if device.type == "cpu" and torch.get_num_threads() > 1:
            runs["ours, 1 thread"] = with_threads(ours, 1)
    say(f"train (a): {', '.join(runs)} in rounds of {b.train_steps} steps ...")
    t = interleave(runs, device, b.repeats, b.warmup, per_round=b.train_steps)
    tokens = tcfg.batch_size * mcfg.block_size
    base = t["baseline"].median
    rows, a = [], {}
    for name, timing in t.items():
        compiled = isinstance(runs[name], TimedStep) and runs[name].train_step.compiled
        compile_s = max(0.0, timing.first - timing.median) if compiled else 0.0
        if name == "ours, 1 thread":  # the same model as "ours": it pays the same compile
            compiled, compile_s = ours.train_step.compiled, a["ours"]["compile_s"]
        amortised = timing.median + compile_s / b.run_steps
        a[name] = {**timing.to_json(), "ms_per_step": 1e3 * timing.median, "tokens_per_s": tokens / timing.median,
                   "compiled": compiled, "compile_s": compile_s, "ms_per_step_amortised": 1e3 * amortised,
                   "tokens_per_s_amortised": tokens / amortised, "speedup_amortised": base / amortised}
        rows.append([name, ms(timing), f"{tokens / timing.median:,.0f}", f"{compile_s:.1f}" if compiled else "-",
                     f"{tokens / amortised:,.0f}", f"{base / amortised:.2f}x"])
    if b.memory:
        for name in ("baseline", "ours"):
            a[name].update(isolated("step_memory", device, kind=name, mcfg=dataclasses.asdict(mcfg),
                                    tcfg=dataclasses.asdict(tcfg), device=str(device)))
        rows[0].append(mib(train_memory(a["baseline"])))
        rows[1].append(mib(train_memory(a["ours"])))
        for r in rows[2:]:
            r.append("-")
    res["nanogpt_shape"] = a
    say(table(f"train (a): nanoGPT's CPU recipe shape (4x128, block 64, batch 12, vocab 65, fp32) on {device}",
              ["run", "ms/step", "tokens/s", "compile s", f"tok/s over {b.run_steps}", "vs baseline"]
              + (["peak MiB"] if b.memory else []), rows,
              ["baseline = nanoGPT's train.py loop (eager, foreach AdamW) on model.py, whose GPT-2 configuration "
               "is nanoGPT's architecture", f"ours = train.py's step for a {b.run_steps}-step run: "
               f"compile={ours.train_step.compiled} (train.should_compile), train.TrainStep itself; compile time "
               f"is spread over the {b.run_steps} steps",
               f"medians of {b.repeats} rounds x {b.train_steps} steps; peak MiB: " + MEMORY_NOTE[device.type == "cuda"]
               + " over 3 eager steps"]))

    if b.options:
        res["options"] = options_price(mcfg, tcfg, device, b, say)

    # (b) the config's own model, as train.py would train it (and, for the record, in bf16 autocast)
    mcfg_b = dataclasses.replace(cfg.model, vocab_size=bench_vocab(cfg.data))
    variants = {"config model": cfg.train}
    if b.candidates and device.type == "cpu":  # the precision train.py did not choose, for the record
        chosen = TimedStep(mcfg_b, cfg.train, device, random_tokens(mcfg_b.vocab_size, 1 << 16)).train_step.dtype
        other = "float32" if chosen == torch.bfloat16 else "bfloat16"
        variants[f"the same, --train.dtype={other}"] = dataclasses.replace(cfg.train, dtype=other)
    say(f"train (b): the config's model ({mcfg_b.n_layer}x{mcfg_b.n_embd}, block {mcfg_b.block_size}): "
        f"{', '.join(variants)} in rounds ...")
    fb = training_figures(mcfg_b, variants, device, b.repeats, b.train_steps, b.warmup, b.run_steps)
    if b.memory:
        fb["config model"].update(isolated("step_memory", device, kind="ours", mcfg=dataclasses.asdict(mcfg_b),
                                           tcfg=dataclasses.asdict(cfg.train), device=str(device)))
    res["config_model"] = fb
    rows = [figure_row(f"{name} ({f['dtype']})" if name == "config model" else name, f) for name, f in fb.items()]
    notes = []
    if len(fb) > 1:
        (name, other), = ((k, v) for k, v in fb.items() if k != "config model")
        notes.append(f"train.py's precision ({fb['config model']['dtype']}, train.dtype={cfg.train.dtype}) / "
                     f"{other['dtype']}, tokens/s in the same rounds: "
                     f"{fb['config model']['tokens_per_s'] / other['tokens_per_s']:.2f}x")

    # (c) GPT-2 small: MFU against the same run's matmul (CPU) or the card's peak (GPU)
    if b.gpt2_steps > 0:
        gpu = device.type == "cuda"
        block = b.gpt2_block or (1024 if gpu else 256)
        batch = b.gpt2_batch or (16 if gpu else 4)
        mcfg_c = GPTConfig(**GPT2_SMALL, block_size=block)
        tcfg_c = dataclasses.replace(cfg.train, **GPT2_TRAIN, batch_size=batch, gradient_accumulation_steps=1)
        steps = max(b.gpt2_steps, b.train_steps) if gpu else b.gpt2_steps
        say(f"train (c): GPT-2 small, block {block}, batch {batch}: {steps} steps after 1 warm-up ...")
        fc = training_figures(mcfg_c, {"GPT-2 small": tcfg_c}, device, steps, 1, 1, b.run_steps)["GPT-2 small"]
        if b.memory:
            fc.update(isolated("step_memory", device, kind="ours", mcfg=dataclasses.asdict(mcfg_c),
                               tcfg=dataclasses.asdict(tcfg_c), device=str(device), steps=2))
        res["gpt2_small"] = fc
        rows.append(figure_row(f"GPT-2 small (block {block}, batch {batch}, {fc['dtype']})", fc))
    notes = ["train.py's step; MFU = model FLOPs (GPT.flops_per_token) per second / peak FLOP/s: "
             + (f"hardware.MatmulProbe (fastest {hardware.PROBE_N}^3 matmul, model's dtype), timed in rounds with "
                "the steps" if device.type == "cpu" else "the card's dense peak for the dtype (hardware.py)"),
             "peak MiB: " + MEMORY_NOTE[device.type == "cuda"] + " over 3 eager steps (GPT-2 small: 2)"] + notes
    say(table("train (b, c): throughput and MFU", ["model", "ms/step", "tokens/s", "MFU", "peak GFLOP/s",
                                                   "compile s", "peak MiB"], rows, notes))
    return res


# --------------------------------------------------------------------------- attention


def reference_attention():
    """tests/reference_attention.py, the attention lineage, loaded by path (tests/ is not a package)."""
    import importlib.util
    path = ROOT / "tests" / "reference_attention.py"
    if not path.is_file():
        raise UserError(f"{path} is missing: the attention part compares its classes; run from a full clone")
    spec = importlib.util.spec_from_file_location("reference_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ProjectionsAndSDPA(nn.Module):
    """The floor of any efficient attention, on CausalSelfAttention's own weights: the fused QKV matmul,
    F.scaled_dot_product_attention(is_causal=True) and the output matmul, with only views in between."""

    def __init__(self, attn: CausalSelfAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.attn.n_head
        q, k, v = self.attn.c_attn(x).view(B, T, 3, H, C // H).transpose(1, 3).unbind(2)  # (B, H, T, hd) each
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


# name: what it computes; every class maps (B, T, d) to (B, T, d)
ATTENTION = {
    "SimpleSelfAttention": "non-causal, no weights",
    "SelfAttentionV1": "non-causal, 1 head",
    "SelfAttentionV2": "non-causal, 1 head",
    "CausalAttention": "causal, 1 head",
    "MultiHeadAttentionWrapper": "causal, a loop over heads",
    "MultiHeadAttention": "causal, batched heads",
    "CausalSelfAttention": "causal, model.py (efficient)",
    "projections + SDPA": "causal, the floor",
}


def make_attention(name: str, d: int, heads: int, T: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    if name in ("CausalSelfAttention", "projections + SDPA"):
        m = CausalSelfAttention(GPTConfig(vocab_size=1, block_size=T, n_embd=d, n_head=heads, dropout=0.0))
        m = ProjectionsAndSDPA(m) if name == "projections + SDPA" else m
    else:
        ref = reference_attention()
        m = {"SimpleSelfAttention": lambda: ref.SimpleSelfAttention(),
             "SelfAttentionV1": lambda: ref.SelfAttentionV1(d, d),
             "SelfAttentionV2": lambda: ref.SelfAttentionV2(d, d),
             "CausalAttention": lambda: ref.CausalAttention(d, d, T, 0.0),
             "MultiHeadAttentionWrapper": lambda: ref.MultiHeadAttentionWrapper(d, d // heads, T, 0.0, heads),
             "MultiHeadAttention": lambda: ref.MultiHeadAttention(d, d, T, 0.0, heads)}[name]()
    return m.to(device=device, dtype=dtype).train()


def attention_calls(m: nn.Module, B: int, T: int, d: int, device: torch.device, dtype: torch.dtype):
    """(forward, forward+backward) of m on a fixed input that needs a gradient, as inside a network."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    grad = torch.randn(B, T, d, generator=g).to(device=device, dtype=dtype)

    def forward():
        m(x)

    def forward_backward():
        m(x).backward(grad)
        m.zero_grad(set_to_none=True)  # as a training step would, and so a memory mark sees no gradients
        x.grad = None
    return forward, forward_backward


def attention_memory(name: str, B: int, T: int, d: int, heads: int, device: str, dtype: str) -> int:
    """Peak memory of one forward+backward above the module, its input and its output gradient, after a
    first run (which pays torch's one-off allocations: thread pools, BLAS buffers) and a malloc_trim."""
    dev, dt = torch.device(device), getattr(torch, dtype)
    m = make_attention(name, d, heads, T, dev, dt)
    _, fwd_bwd = attention_calls(m, B, T, d, dev, dt)
    fwd_bwd()
    release_freed_memory()
    mark = memory_mark(dev)
    fwd_bwd()
    return memory_peak(dev) - mark


def part_attention(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    B, T, d, H = b.attn_batch, b.attn_seq, b.attn_embd, b.attn_heads
    dtype = hardware.pick_dtype(cfg.train.dtype, device)
    dname = str(dtype).removeprefix("torch.")
    sweep = [int(s) for s in b.attn_sweep.split(",") if s]
    res: dict[str, Any] = {"shape": {"batch": B, "seq": T, "embd": d, "heads": H, "dtype": dname}, "classes": {}}
    n_mem = len(ATTENTION) * (1 + len(sweep)) if b.memory else 0
    bar = tqdm(total=len(ATTENTION) * (1 + len(sweep)) + n_mem, desc="attention", unit="figure",
               file=sys.stderr, leave=False)
    calls = {}
    for name in ATTENTION:
        fwd, fwd_bwd = attention_calls(make_attention(name, d, H, T, device, dtype), B, T, d, device, dtype)
        calls[f"{name}|fwd"], calls[f"{name}|fwd+bwd"] = fwd, fwd_bwd
    say(f"attention: {len(ATTENTION)} classes at B={B}, T={T}, d={d}, {H} heads ({dname}) ...")
    t = interleave(calls, device, b.repeats, b.warmup, b.slow_seconds)
    bar.update(len(ATTENTION))
    del calls
    main = res["classes"]
    for name in ATTENTION:
        main[name] = {"what": ATTENTION[name], "fwd": t[f"{name}|fwd"].to_json(),
                      "fwd_bwd": t[f"{name}|fwd+bwd"].to_json()}
        if b.memory:
            main[name]["fwd_bwd_peak_bytes"] = isolated("attention_memory", device, name=name, B=B, T=T, d=d,
                                                        heads=H, device=str(device), dtype=dname)
            bar.update(1)
    mha, eff, floor = (t[f"{n}|fwd+bwd"].median for n in ("MultiHeadAttention", "CausalSelfAttention",
                                                          "projections + SDPA"))
    rows = [[name, ATTENTION[name], ms(t[f"{name}|fwd"]), ms(t[f"{name}|fwd+bwd"]),
             mib(main[name].get("fwd_bwd_peak_bytes")), f"{t[f'{name}|fwd+bwd'].median / eff:.2f}"]
            for name in ATTENTION]
    res["ratios"] = {"MultiHeadAttention / CausalSelfAttention, fwd+bwd time": mha / eff,
                     "CausalSelfAttention / (projections + SDPA), fwd+bwd time": eff / floor}

    # the sweep: batch 1, time and memory as T grows
    sweep_res: dict[str, dict[int, dict]] = {name: {} for name in ATTENTION}
    for T_s in sweep:
        calls = {name: attention_calls(make_attention(name, d, H, T_s, device, dtype), 1, T_s, d, device, dtype)[1]
                 for name in ATTENTION}
        ts = interleave(calls, device, b.repeats, b.warmup, b.slow_seconds)
        del calls
        bar.update(len(ATTENTION))
        for name in ATTENTION:
            sweep_res[name][T_s] = {"fwd_bwd": ts[name].to_json()}
            if b.memory:
                sweep_res[name][T_s]["fwd_bwd_peak_bytes"] = isolated(
                    "attention_memory", device, name=name, B=1, T=T_s, d=d, heads=H, device=str(device), dtype=dname)
                bar.update(1)
            sweep_res[name][T_s]["_t"] = ts[name]
    bar.close()
    if b.memory and sweep:
        T_max = max(sweep)
        ratio = (sweep_res["CausalSelfAttention"][T_max]["fwd_bwd_peak_bytes"]
                 / max(1, sweep_res["MultiHeadAttention"][T_max]["fwd_bwd_peak_bytes"]))
        res["ratios"][f"peak memory CausalSelfAttention / MultiHeadAttention at T={T_max}, batch 1"] = ratio
    say(table(f"attention at B={B}, T={T}, d={d}, {H} heads, {dname}, {device}",
              ["class", "computes", "fwd ms", "fwd+bwd ms", "fwd+bwd peak MiB", "time / efficient"], rows,
              ["forward with autograd recording, as in training; fwd+bwd includes the input's gradient",
               "peak MiB: above the module, its input and the output gradient"
               + (", each in a fresh process" if device.type == "cpu" else ""),
               f"* = slow figure: at most {SLOW_REPEATS} timed runs"]
              + [f"{what}: {value:.2f}" for what, value in res["ratios"].items()]))
    if sweep:
        rows = [[name] + [f"{ms(sweep_res[name][T_s].pop('_t'))} / {mib(sweep_res[name][T_s].get('fwd_bwd_peak_bytes'))}"
                          for T_s in sweep] for name in ATTENTION]
        say(table("attention sweep, batch 1: fwd+bwd ms / peak MiB", ["class"] + [f"T={T_s}" for T_s in sweep],
                  rows))
    res["sweep"] = sweep_res
    return res


# --------------------------------------------------------------------------- sampling


SAMPLE_WAYS = {  # name -> GPT.generate keyword arguments
    "uncached": dict(use_cache=False),  # nanoGPT's generate: the window recomputed for every token
    "recompute": dict(long_context="recompute"),  # KV cache, nanoGPT's exact semantics past the context
    "rolling": dict(long_context="rolling"),  # rolling KV cache (sliding window)
    "sinks": dict(long_context="sinks"),  # rolling KV cache keeping the first tokens
}


def part_sample(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]
    dtype = hardware.pick_dtype(cfg.train.dtype, device)
    runs, rows = [], []
    for L in ints(b.sample_blocks):
        torch.manual_seed(0)
        mcfg = dataclasses.replace(cfg.model, vocab_size=bench_vocab(cfg.data), block_size=L, dropout=0.0)
        model = GPT(mcfg).to(device).eval()
        sinks = min(b.sample_sinks, L - 1)
        for B in ints(b.sample_batch):
            prompt = torch.zeros(B, 1, dtype=torch.long, device=device)  # one token, as sample.py's "\n"
            for n in ints(b.sample_tokens):
                outputs: dict[str, torch.Tensor] = {}

                def gen(name: str) -> Callable[[], None]:
                    def run():
                        with hardware.autocast(device, dtype), torch.inference_mode():
                            outputs[name] = model.generate(prompt, n, temperature=0.0, sink_tokens=sinks,
                                                           **SAMPLE_WAYS[name])
                    return run
                say(f"sample: block {L}, batch {B}, {n} new tokens ...")
                t = interleave({name: gen(name) for name in SAMPLE_WAYS}, device, b.repeats, b.warmup,
                               b.slow_seconds)
                inside = min(n, L - 1)  # new tokens inside the context (after the 1-token prompt)
                r = {"block": L, "batch": B, "new_tokens": n, "sink_tokens": sinks,
                     **{name: {**v.to_json(), "tokens_per_s": n * B / v.median} for name, v in t.items()},
                     "speedup": {name: t["uncached"].median / t[name].median for name in SAMPLE_WAYS},
                     "identical": torch.equal(outputs["recompute"], outputs["uncached"]),
                     "identical_inside_context": all(torch.equal(outputs[name][:, :1 + inside],
                                                                 outputs["uncached"][:, :1 + inside])
                                                     for name in SAMPLE_WAYS)}
                runs.append(r)
                rows.append([L, B, n] + [f"{r[name]['tokens_per_s']:,.0f}" for name in SAMPLE_WAYS]
                            + [f"{r['speedup'][name]:.2f}x" for name in ("recompute", "rolling", "sinks")]
                            + ["yes" if r["identical"] else "NO", "yes" if r["identical_inside_context"] else "NO"])
    m = cfg.model
    notes = [f"model: the config's ({m.n_layer}x{m.n_embd}, {m.pos_emb} positions), vocab {bench_vocab(cfg.data)}, "
             f"untrained, greedy, a 1-token prompt, {dtype}; tok/s = new tokens x batch / second",
             "uncached = use_cache=False: nanoGPT's generate, the whole window recomputed for every token; x = the "
             "same run's uncached time / this way's",
             "recompute = the KV cache with nanoGPT's exact semantics, which past block_size recompute the window "
             "every token; rolling, sinks = the rolling KV cache (sample.long_context), nothing recomputed",
             "same (a): recompute's tokens = uncached's; same inside: every way's tokens = uncached's while the "
             "sample fits in the context"]
    say(table(f"sampling ({device})", ["block", "batch", "new tokens"] + [f"{name} tok/s" for name in SAMPLE_WAYS]
              + ["recompute x", "rolling x", "sinks x", "same (a)", "same inside"], rows, notes))
    return {"runs": runs}


# --------------------------------------------------------------------------- preparation


def stdlib_text(n_bytes: int) -> str:
    """About ``n_bytes`` of the Python standard library's sources (the default corpus), whole files."""
    parts, size = [], 0
    for path in prepare.stdlib_files():
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
    corpus = prepare.Corpus([text_path], [size])
    cfg = dataclasses.replace(data, bpe_train_bytes=min(data.bpe_train_bytes, 2_000_000))
    spec = prepare.build_tokenizer(kind, cfg, corpus, [(0, 0, size)], directory, progress=False)
    return tok.load_tokenizer(spec, directory), spec


def encode_throughput(path: Path, tokenizer: Any, threads: int) -> dict:
    """prepare.py's encoding path against raw tiktoken on the same text, interleaved: one round.

    Times (a) ``prepare.encode_segments`` streaming the file (in the page cache) to a .bin file with
    ``threads`` threads; (b) ``tokenizer.encode_ordinary_batch`` on the same ~1 MB blocks already in
    memory, with as many threads; (c) ``encode_ordinary`` on one thread.  Returns their MB/s and
    ``ratio`` = (a) / (b).
    """
    size = path.stat().st_size
    corpus = prepare.Corpus([path], [size])
    blocks = [prepare.decode(raw)[0] for raw in prepare.read_blocks(path, 0, size)]
    seconds = {}
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with tqdm(disable=True) as bar:
            stats = prepare.encode_segments(corpus, [(0, 0, size)], prepare.encoder_for(tokenizer, "file"),
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
    prepare.prepare(cfg, progress=False)
    seconds = time.perf_counter() - t
    return {"peak_bytes": memory_peak(torch.device("cpu")) - mark, "seconds": seconds}


def part_prepare(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    threads = cfg.data.threads or prepare.default_threads()
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
                mem[label] = isolated("prepare_memory", torch.device("cpu"), source=str(src), tokenizer=tokenizer,
                                      directory=str(d / f"ds-{label}"), threads=threads)
            res["memory"] = mem
            notes += [f"a whole prepare.py run in a fresh process: peak RSS {mib(mem['full']['peak_bytes'])} MiB above "
                      f"its start on {b.prepare_mb:g} MB, {mib(mem['quarter']['peak_bytes'])} MiB on a quarter of it "
                      f"({mem['full']['seconds']:.1f} s and {mem['quarter']['seconds']:.1f} s)",
                      "  bounded by design, not by the corpus: ~2 x threads blocks of 1 MB in flight, plus a carry of "
                      "at most 16 MB where a file has no safe cut (prepare.read_blocks)"]
        say(table(f"prepare: {res['mb']:.1f} MB of Python stdlib text, tokenizer {spec['name']}",
                  ["encoder", "MB/s", "vs prepare.py"], rows,
                  [f"medians of {len(runs)} runs, the three encoders interleaved (encode_throughput)",
                   f"prepare.py / raw tiktoken (batch) throughput: {med['ratio']:.2f}"] + notes))
    return res


# --------------------------------------------------------------------------- whole processes


NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--dropout=0.0"]  # its README's CPU recipe, less the steps (bench.process_steps)
DEFAULT_OPTIONS = ["--model.pos_emb=rope", "--model.activation=relu2"]  # this project's defaults (config.py)


def timed_process(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of a whole process, start-up included, and its output; a failure is an error."""
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise UserError(f"{' '.join(cmd[:3])} ... failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds, done.stdout + done.stderr


def nanogpt_val_loss(output: str) -> float | None:
    """The last 'step N: train loss X, val loss Y' nanoGPT's train.py printed."""
    found = re.findall(r"step \d+: train loss [\d.]+, val loss ([\d.]+)", output)
    return float(found[-1]) if found else None


def our_val_loss(run_dir: Path) -> float | None:
    evals = [r for r in curves.read_records(run_dir / curves.METRICS) if "val_loss" in r]
    return evals[-1]["val_loss"] if evals else None


def part_process(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    """nanoGPT's CPU recipe as whole processes, start-up, evaluation, checkpoints and compile counted:
    nanoGPT's own train.py (a checkout given by bench.nanogpt) beside ``python train.py
    config/nanogpt-cpu.toml``, the same steps, evaluations (every 250 steps, 20 batches of each split)
    and a checkpoint whenever val improves; ours with GPT-2's options and with this project's defaults,
    and compiled from a cold and from a warm cache.  Data preparation is done once, before the clock."""
    b, steps = cfg.bench, cfg.bench.process_steps
    res: dict[str, Any] = {"steps": steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = d / "input.txt"
        if b.process_text:
            shutil.copyfile(Path(b.process_text).expanduser(), text)
        else:
            text.write_text(stdlib_text(1_100_000), encoding="utf-8")
        ours = [sys.executable, str(ROOT / "train.py"), str(ROOT / "config" / "nanogpt-cpu.toml"),
                f"--data.source={text}", f"--data.dir={d / 'data'}", f"--train.max_iters={steps}",
                f"--train.lr_decay_iters={steps}", "--train.sample_at_end=false"]
        prepare.prepare(DataConfig(source=str(text), tokenizer="bytes", dir=str(d / "data")), progress=False)
        runs: dict[str, tuple[list[str], dict]] = {}
        if b.nanogpt:
            src = Path(b.nanogpt).expanduser()
            if not (src / "train.py").is_file():
                raise UserError(f"--bench.nanogpt={b.nanogpt} has no train.py; give a checkout of karpathy/nanoGPT")
            shutil.copytree(src, d / "nanogpt", ignore=shutil.ignore_patterns(".git", "out*"))
            shutil.copyfile(text, d / "nanogpt" / "data" / "shakespeare_char" / "input.txt")
            timed_process([sys.executable, "prepare.py"], d / "nanogpt" / "data" / "shakespeare_char")
            runs["nanoGPT's train.py"] = ([sys.executable, "train.py", *NANOGPT_RECIPE, f"--max_iters={steps}",
                                          f"--lr_decay_iters={steps}", f"--out_dir={d / 'out-nanogpt'}"], {})
        runs["train.py, GPT-2's options"] = (ours + [f"--train.out_dir={d / 'gpt2'}"], {})
        runs["train.py, default options"] = (ours + DEFAULT_OPTIONS + [f"--train.out_dir={d / 'default'}"], {})
        cache = {"TORCHINDUCTOR_CACHE_DIR": str(d / "inductor")}  # a cache of its own: cold, then warm
        for warmth in ("cold", "warm"):
            runs[f"train.py, default options, compiled ({warmth} cache)"] = (
                ours + DEFAULT_OPTIONS + ["--train.compile=true", f"--train.out_dir={d / ('compiled-' + warmth)}"],
                cache)
        bar = tqdm(total=len(runs), desc="process", unit="run", file=sys.stderr, leave=False)
        for name, (cmd, env) in runs.items():
            say(f"process: {name}, {steps} steps ...")
            seconds, output = timed_process(cmd, d / "nanogpt" if name.startswith("nanoGPT") else ROOT, env)
            out_dir = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith(("--train.out_dir=", "--out_dir="))))
            loss = nanogpt_val_loss(output) if name.startswith("nanoGPT") else our_val_loss(out_dir)
            compile_s = next((r["compile_seconds"] for r in curves.read_records(out_dir / curves.METRICS)
                              if "compile_seconds" in r), None) if not name.startswith("nanoGPT") else None
            res["runs"][name] = {"seconds": seconds, "val_loss": loss, "compile_seconds": compile_s}
            bar.update(1)
        bar.close()
    base = res["runs"].get("nanoGPT's train.py")
    rows = [[name, f"{r['seconds']:.1f}", f"{base['seconds'] / r['seconds']:.2f}x" if base else "-",
             "-" if r["compile_seconds"] is None else f"{r['compile_seconds']:.1f}",
             "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"] for name, r in res["runs"].items()]
    say(table(f"process: nanoGPT's CPU recipe, {steps} steps, whole processes ({device})",
              ["run", "wall s", "vs nanoGPT", "compile s", f"val loss at {steps}"], rows,
              ["wall s: the whole process, start-up, evaluations (every 250 steps, 20 batches per split), "
               "checkpoints and compile included; data prepared once before",
               "val loss: nats per character (nanoGPT) or per byte (train.py, bytes): the same on ASCII text"]
              + ([] if base else ["nanoGPT's own train.py: give a checkout with --bench.nanogpt=PATH"])))
    return res


# --------------------------------------------------------------------------- main


def machine(device: torch.device) -> dict:
    info = {"cpu": hardware.device_name(torch.device("cpu")), "cores": prepare.default_threads(),
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
                "process": part_process}
    for name in parts:
        t = time.perf_counter()
        results[name] = part_fns[name](cfg, device, say)
        results[name]["seconds"] = time.perf_counter() - t
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(b.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    say(f"\nwrote {out}")
    return results


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, BenchSettings, "tools/bench.py", SUMMARY)
    run(cfg)
    return 0


if __name__ == "__main__":
    run_main(main)
