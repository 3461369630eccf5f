"""Bench part train: train.py's step against nanoGPT's loop, what the modern options cost, the config's
model and GPT-2 small, in tokens/s and MFU."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import torch

from model import GPT, GPTConfig
from smallgpt import hardware
from smallgpt import tokenizer as tok
from smallgpt.batches import Batches
from smallgpt.config import DataConfig, TrainConfig
from smallgpt.hardware import MatmulProbe
from smallgpt.step import TrainStep
from tools.bench.common import (MEMORY_NOTE, BenchConfig, BenchSettings, interleave, isolated, memory_mark,
                                memory_peak, mib, ms, random_tokens, table)

# nanoGPT's README CPU recipe (char-level Shakespeare): the shape of the (a) comparison
NANOGPT_SHAPE = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)
NANOGPT_TRAIN = dict(optimizer="adamw", batch_size=12, learning_rate=1e-3, min_lr=1e-4, beta2=0.99, weight_decay=0.1,
                     grad_clip=1.0, max_seconds=0.0, warmup_iters=100, lr_decay_iters=2000, schedule="cosine")
MODERN_OPTIONS = dict(pos_emb="rope", activation="relu2", qk_norm=True, norm="rmsnorm")  # model.py's options GPT-2 lacks
GPT2_SMALL = dict(dropout=0.0)  # GPTConfig.gpt2(), the shape of the (c) figure, at the bench's block size
GPT2_TRAIN = dict(optimizer="adamw", learning_rate=6e-4, min_lr=6e-5, beta2=0.95, weight_decay=0.1, grad_clip=1.0)


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
    matmuls, in each variant's dtype), timed in the same rounds; on a GPU the card's peak (hardware.peak_flops:
    its table, or the probe where the table has no entry)."""
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
                     "peak_flops_source": ("hardware.MatmulProbe, same run" if probes
                                           else hardware.peak_source(device, step.dtype)),
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
    mcfg = GPTConfig.gpt2(**NANOGPT_SHAPE)
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
            a[name].update(isolated(step_memory, device, kind=name, mcfg=dataclasses.asdict(mcfg),
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
               f"compile={ours.train_step.compiled} (speed.compile_pays), smallgpt.step.TrainStep itself; compile time "
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
        fb["config model"].update(isolated(step_memory, device, kind="ours", mcfg=dataclasses.asdict(mcfg_b),
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
        mcfg_c = GPTConfig.gpt2(**GPT2_SMALL, block_size=block)
        tcfg_c = dataclasses.replace(cfg.train, **GPT2_TRAIN, batch_size=batch, gradient_accumulation_steps=1)
        steps = max(b.gpt2_steps, b.train_steps) if gpu else b.gpt2_steps
        say(f"train (c): GPT-2 small, block {block}, batch {batch}: {steps} steps after 1 warm-up ...")
        fc = training_figures(mcfg_c, {"GPT-2 small": tcfg_c}, device, steps, 1, 1, b.run_steps)["GPT-2 small"]
        if b.memory:
            fc.update(isolated(step_memory, device, kind="ours", mcfg=dataclasses.asdict(mcfg_c),
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
