"""Train a GPT: ``python train.py [CONFIG.toml] [--section.key=value ...]``.

With no arguments it prepares the default corpus (if not prepared yet), trains a small model sized
for a laptop CPU for a few minutes, and prints a sample.  The same file runs on a GPU (bf16,
torch.compile) and on many through ``torchrun`` (DistributedDataParallel), with no edits.

Three pieces, each usable alone: :class:`Batches` (the data windows), :class:`TrainStep` (one
optimizer step: what tools/bench.py times) and :class:`Trainer` (the run: evaluation, metrics,
checkpoints, the schedule, the progress bar).

How it stays exactly resumable (nanoGPT loses its data position on resume):

* **Stateless data.**  The windows of global micro-batch ``k`` of optimizer step ``s`` are drawn by a
  generator seeded from ``(seed, s, k)``; dropout is reseeded from ``(seed, s, rank)`` every step.
  Nothing about the data order has to be stored: a run resumed at step ``s`` draws exactly what the
  uninterrupted run drew, and a 2-process run draws the same windows as a 1-process run with the
  same global batch (rank ``r`` of ``W`` takes micro-batches ``r·A/W .. (r+1)·A/W - 1`` of ``A``).
* **Whole state in the checkpoint**: weights, optimizer moments, GradScaler, step, best val loss,
  training time, RNG states; written atomically (checkpoint.py), never after a non-finite loss.
* **metrics.jsonl** is cut back to the checkpoint's step on resume, so it reads as one run.

On a CPU, losses after a SIGKILL and ``--train.resume=true`` are bitwise those of a run never
interrupted (with ``max_seconds`` the schedule follows wall-clock time, so only up to timing).

``train.compile`` compiles each transformer block once (regional compilation, with a compile cache
kept across runs); ``'auto'`` compiles on CUDA always, and on a CPU when the measured compile cost is
repaid by the run's expected steps; ``train.dtype = 'auto'`` takes bf16 autocast on a CPU where it is faster
there (speed.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import inspect
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

import hardware
import speed
import tensorboard_log
from checkpoint import (BEST, LAST, RunState, check_resumable, load_checkpoint, restore, save_checkpoint,
                        training_state)
from config import Config, TrainConfig, apply_budget_rule, comma_list, parse_args, run_main
from curves import METRICS, analyse, evaluations, read_records
from errors import UserError
from locks import DirLock
from model import GPT, GPTConfig, mean_log_probs
from optim import build_optimizer, lr_multiplier, set_lr
from prepare import Dataset, open_dataset, prepare
from pretrained import Start, load_source
from sample import generate_texts

SUMMARY = "Train a GPT on a corpus (prepared first if needed); resumable, on CPU, GPU or many GPUs via torchrun."
STREAM_TRAIN, STREAM_EVAL, STREAM_DROPOUT = 0, 1, 2  # independent random streams under one seed
# the model's only buffers are rotary tables, the same on every rank: DDP need not sync them each step
# (the argument was renamed in torch 2.13; the old name warns there)
NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                  inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
                  else {"broadcast_buffers": False})


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_and_device(device_name: str) -> tuple[Proc, torch.device]:
    """This process's place in a torchrun job (env RANK, WORLD_SIZE, LOCAL_RANK) and its device.

    Under torchrun each process takes GPU ``local_rank`` modulo the GPUs it sees (a launcher may show
    each process one GPU only).  The process group is joined later (:func:`join_process_group`), once
    the dataset is ready, so that a long first preparation cannot run into a collective's timeout.
    """
    device = hardware.pick_device(device_name)
    proc = Proc()
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        proc = Proc(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
        if device.type == "cuda":
            device = torch.device("cuda", proc.local_rank % torch.cuda.device_count())
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)  # so that kernels and allocations of this process land on it
    return proc, device


def join_process_group(proc: Proc, device: torch.device) -> None:
    """Join the process group torchrun set up: nccl on GPUs, gloo on CPUs."""
    if proc.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def local_accumulation(accum: int, world_size: int) -> int:
    """Micro-batches per process for ``accum`` micro-batches per step over ``world_size`` processes.

    ``gradient_accumulation_steps`` counts the micro-batches of all processes together, so the global
    batch is the same on 1 or 8 GPUs.  When it does not divide over the processes (the default of 1 on
    2 GPUs), each process takes the smallest equal share that covers it: ceil(accum / world_size), and
    the global batch grows to that times world_size (said at start).  Nothing is refused.
    """
    return -(-accum // world_size)


def all_sum(t: torch.Tensor, proc: Proc) -> torch.Tensor:
    if proc.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --------------------------------------------------------------------------- data


def mix_seed(*parts: int) -> int:
    """One well-mixed 64-bit seed from several integers (numpy's SeedSequence hashing), for stateless draws."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


class Batches:
    """Training and evaluation windows of two token arrays, each draw a pure function of its indices."""

    def __init__(self, train: np.ndarray, val: np.ndarray, block_size: int, batch_size: int, eval_iters: int,
                 seed: int, device: torch.device):
        self.data = {"train": train, "val": val}
        self.T, self.B, self.seed, self.device = block_size, batch_size, seed, device
        self.eval_offsets = {  # the same windows at every evaluation: (eval_iters, batch_size)
            split: self._offsets(self.data[split], (eval_iters, batch_size), STREAM_EVAL, i)
            for i, split in enumerate(("val", "train"))}

    def _offsets(self, data: np.ndarray, shape: tuple[int, ...], *stream: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(mix_seed(self.seed, *stream))
        return torch.randint(len(data) - self.T, shape, generator=g)  # window start; len T+1 fits

    def _load(self, data: np.ndarray, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = offsets.numpy()[:, None] + np.arange(self.T + 1)  # (B, T+1)
        w = torch.from_numpy(data[idx].astype(np.int64))
        if self.device.type == "cuda":
            w = w.pin_memory().to(self.device, non_blocking=True)
        else:
            w = w.to(self.device)
        return w[:, :-1], w[:, 1:]  # inputs, next-token targets: (B, T) each

    def train(self, step: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global micro-batch ``k`` of optimizer step ``step``."""
        data = self.data["train"]
        return self._load(data, self._offsets(data, (self.B,), STREAM_TRAIN, step, k))

    def eval(self, split: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(self.data[split], self.eval_offsets[split][i])


def load_dataset(cfg: Config, proc: Proc) -> Dataset:
    """Prepare the corpus if needed and open it; every process calls this before any collective.

    prepare() holds a lock on the dataset while it builds or checks it, so the first process of a
    machine builds it and the others wait (without a collective, so without a timeout) and then find it
    built.  It refuses a corpus with less than one window of block_size + 1 tokens per split.
    """
    return open_dataset(prepare(cfg.data, min_tokens=cfg.model.block_size + 1, progress=proc.is_main,
                                quiet=not proc.is_main))


def check_same_data(ds: Dataset, proc: Proc, device: torch.device) -> None:
    """Refuse to train when the processes opened different datasets (nodes with local disks that built
    their own from a different corpus or Python: the same token id would mean different text)."""
    if not proc.distributed:
        return
    mine = int(ds.fingerprint[:15], 16)  # 60 bits of the fingerprint fit an int64
    low, high = (torch.tensor([mine], device=device) for _ in range(2))
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise UserError(f"the processes' datasets differ (this one, rank {proc.rank}: {ds.dir}, fingerprint "
                        f"{ds.fingerprint}); prepare the dataset once on storage all nodes share, or from the same "
                        "corpus with the same Python on every node")


# --------------------------------------------------------------------------- one optimizer step


class StepResult(NamedTuple):
    loss: float  # mean loss of the step's micro-batches (all processes)
    seconds: float  # the step's time (the processes' mean)
    grad_norm: float  # the gradient's norm before clipping; not finite: the optimizer step was skipped


class TrainStep:
    """One optimizer step as train.py takes it, on a model it builds: the micro-batch loop (gradient
    accumulation, DDP's single all-reduce), mixed precision, gradient clipping, the optimizer.

    Calling it takes step ``step`` at ``multiplier`` x the peak learning rates and returns a
    :class:`StepResult`, equal on every process.  A gradient whose norm is not finite is never applied:
    with fp16's GradScaler that is the scaler's normal skip-and-lower-the-scale; in fp32 and bf16, which
    have no scaler, the step is skipped and the non-finite norm returned, so the caller can stop before
    a single weight turns NaN.  tools/bench.py times exactly this object.
    """

    def __init__(self, model_config: GPTConfig, t: TrainConfig, device: torch.device, batches: Batches,
                 proc: Proc | None = None, weights: dict[str, torch.Tensor] | None = None,
                 teachers: list[GPT] | None = None):
        self.t, self.device, self.batches, self.proc = t, device, batches, proc or Proc()
        self.teachers = teachers or []  # distillation (train.distill_from): fixed models, in eval mode
        hardware.setup(device)
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.model = GPT(model_config).to(device)  # the bare model: weights, checkpoints, sampling
        if weights is not None:  # a trained model's (train.init_from), instead of the random initialisation
            self.model.load_state_dict(weights)
        self.params = list(self.model.parameters())
        self.local_accum = local_accumulation(t.gradient_accumulation_steps, self.proc.world_size)
        self.accumulation = self.local_accum * self.proc.world_size  # micro-batches per step, all processes
        self.tokens_per_step = t.batch_size * model_config.block_size * self.accumulation
        self.flops_per_token = self.model.flops_per_token()
        shape = {"model": dataclasses.asdict(model_config), "batch": t.batch_size, "accumulation": self.local_accum,
                 "device": hardware.device_name(device), "threads": torch.get_num_threads(),
                 "torch": torch.__version__, "processes": self.proc.world_size,
                 **({"teachers": len(self.teachers)} if self.teachers else {})}  # a distilling step costs more
        self.dtype, self.dtype_reason = self._precision(speed.Record(shape))
        self.optimizer = build_optimizer(self.model.param_groups(), t, device.type)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(self.dtype == torch.float16))
        self.autocast = hardware.autocast(device, self.dtype)
        self.peak_flops = hardware.peak_flops(device, self.dtype) * self.proc.world_size
        self.record = speed.Record({**shape, "dtype": str(self.dtype)})
        measured = self.record.times()
        step_seconds = measured.eager_step or self.estimated_step_seconds(self.dtype)
        expected_steps = t.max_iters if t.max_seconds <= 0 else min(t.max_iters, t.max_seconds / step_seconds)
        self.compiled, self.compile_reason = speed.compile_pays(t.compile, device, expected_steps, step_seconds,
                                                                measured)
        self.warm_cache = measured.cold_compile is not None or measured.warm_compile is not None
        if self.compiled:
            speed.compile_blocks(self.model)  # in place: the names of the weights do not change
        self.eval_model = self.model  # what evaluation runs; the step runs it in DDP under torchrun
        self.step_model = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None, **NO_BUFFER_SYNC)
            if self.proc.distributed else self.model)

    def estimated_step_seconds(self, dtype: torch.dtype) -> float:
        """A step at half the device's peak: a guess, for choices made before any step ran."""
        return self.tokens_per_step * self.flops_per_token / (0.5 * hardware.peak_flops(self.device, dtype))

    def _precision(self, record: speed.Record) -> tuple[torch.dtype, str]:
        """``train.dtype``, and 'auto' on a CPU measured: bf16 autocast where its matmuls are faster here
        (the probe's peaks) and the model's forward and backward are too (speed.faster_precision), which a
        step of more than a few seconds is not timed for; every process takes rank 0's choice."""
        t, device = self.t, self.device
        if t.dtype != "auto" or device.type != "cpu":
            return hardware.pick_dtype(t.dtype, device), f"train.dtype={t.dtype}"
        if hardware.quick_peak(device, torch.bfloat16) < 1.5 * hardware.quick_peak(device, torch.float32):
            choice, why = torch.float32, "auto: this CPU's bf16 matmuls are not faster than its float32 ones"
        elif self.estimated_step_seconds(torch.float32) > 2.0:
            choice, why = torch.bfloat16, "auto: bf16 matmuls are faster here, and the model's are large"
        else:
            def forward_backward(dtype: torch.dtype) -> None:  # weights, optimizer and random streams untouched
                x, y = self.batches.train(0, 0)
                with hardware.autocast(device, dtype):
                    _, loss = self.model(x, y)
                loss.backward()
                self.model.zero_grad(set_to_none=True)
            choice, why = speed.faster_precision(forward_backward, record)
        if self.proc.distributed:  # one precision for all: rank 0's
            flag = torch.tensor([float(choice == torch.bfloat16)], device=device)
            dist.broadcast(flag, src=0)
            choice = torch.bfloat16 if flag.item() else torch.float32
        return choice, why

    def _forward_backward(self, step: int, i: int) -> torch.Tensor:
        """Micro-batch ``i`` of this process in step ``step``: forward, backward; returns its loss."""
        x, y = self.batches.train(step, self.proc.rank * self.local_accum + i)
        last = i == self.local_accum - 1  # DDP all-reduces the gradients once, after the last micro-batch
        with contextlib.nullcontext() if last or not self.proc.distributed else self.step_model.no_sync():
            with self.autocast:
                logits, loss = self.step_model(x, y)
                objective = self._distilled(x, logits, loss) if self.teachers else loss
            self.scaler.scale(objective / self.local_accum).backward()
        return loss.detach()  # the cross-entropy, comparable with any run's, even when distilling

    def _distilled(self, x: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """Knowledge distillation (Hinton, Vinyals and Dean 2015, at temperature 1): the cross-entropy mixed
        with the KL divergence from the teachers' mean probabilities, which carry what an ensemble knows
        about every token's alternatives, not only the one that came next."""
        with torch.no_grad():
            target = mean_log_probs([teacher(x)[0] for teacher in self.teachers])  # (B, T, V)
        kl = F.kl_div(F.log_softmax(logits.float(), dim=-1).flatten(0, 1), target.flatten(0, 1),
                      reduction="batchmean", log_target=True)
        w = self.t.distill_weight
        return (1 - w) * loss + w * kl

    def warm_up(self) -> float:
        """Compile the step (a forward and backward of step 0's first micro-batch, gradients then dropped:
        no weight, optimizer state or random stream changes) and return its seconds, so that compile time is
        reported on its own instead of inflating the first step's time, tokens/s and MFU."""
        t0 = time.perf_counter()
        for i in range(self.local_accum):  # DDP expects every micro-batch of a step
            self._forward_backward(0, i)
        self.optimizer.zero_grad(set_to_none=True)
        hardware.sync(self.device)
        return time.perf_counter() - t0

    def __call__(self, step: int, multiplier: float) -> StepResult:
        t, proc = self.t, self.proc
        t0 = time.perf_counter()
        set_lr(self.optimizer, multiplier)
        torch.manual_seed(mix_seed(t.seed, STREAM_DROPOUT, step, proc.rank))
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.local_accum):
            loss_sum += self._forward_backward(step, i)
        self.scaler.unscale_(self.optimizer)  # a no-op without a scaler
        if t.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in self.params
                                                         if p.grad is not None]))
        # the gradients are all-reduced already, so every rank sees the same norm and takes the same branch
        if self.scaler.is_enabled() or torch.isfinite(norm):
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum.item()  # wait for the device, so the time below is the step's
        # every rank takes the same loss and time, so all stop (time budget, non-finite loss) together
        both = all_sum(torch.stack([loss_sum / self.local_accum, torch.tensor(time.perf_counter() - t0).to(self.device),
                                    norm.float()]), proc) / proc.world_size
        return StepResult(*both.tolist())


# --------------------------------------------------------------------------- the run


ADVICE = ("training stopped and no checkpoint was written after it (the last good one is intact). "
          "Lower --train.learning_rate (now {lr:g}) or raise --train.warmup_iters, keep --train.grad_clip on, "
          "or train in float32/bfloat16 instead of float16")


def load_teachers(spec: str, ds: Dataset, student: GPTConfig, device: torch.device) -> list[GPT]:
    """The models of ``train.distill_from`` (comma-separated), checked to read the dataset's tokens with
    at least the student's context, in eval mode on ``device``."""
    teachers = []
    for name in comma_list(spec):
        source = load_source(name, "train.distill_from")
        source.check_dataset(ds)
        if source.config.vocab_size != student.vocab_size or source.config.block_size < student.block_size:
            raise UserError(f"--train.distill_from: {name} has a vocabulary of {source.config.vocab_size} and a context "
                            f"of {source.config.block_size} tokens; a teacher needs the student's vocabulary "
                            f"({student.vocab_size}) and at least its context ({student.block_size})")
        teachers.append(source.model(device))
    return teachers


class NonFiniteLoss(UserError):
    """Training diverged: not a typo, but the settings' fault, so it is reported like a user's error."""


def check_out_dir(t: TrainConfig) -> Path:
    """Refuse to start a new run over a checkpoint, before anything slow or anything is written."""
    out = Path(t.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--train.out_dir={out} is a file; give a directory")
    sources = (("init_from", [t.init_from] if t.init_from else []), ("distill_from", comma_list(t.distill_from)))
    for key, names in sources:
        for name in names:
            source = Path(name).expanduser()
            if source.exists() and (source if source.is_dir() else source.parent).resolve() == out.resolve():
                raise UserError(f"--train.{key}={name} is the directory this run would write "
                                f"(--train.out_dir={t.out_dir}); the new model gets its own: give another --train.out_dir")
    if t.resume:
        if not (out / LAST).is_file():
            raise UserError(f"--train.resume=true but there is no checkpoint {out / LAST} to continue; "
                            "start a new run without --train.resume, or give the run's --train.out_dir")
    elif (out / LAST).exists() and not t.overwrite:
        raise UserError(f"{out} already holds a run ({out / LAST}); pass --train.resume=true to continue it, "
                        f"--train.overwrite=true to replace it, or choose another --train.out_dir")
    return out


def trim_metrics(path: Path, step: int) -> None:
    """Keep the records of steps <= ``step`` (those the checkpoint contains); drop a torn last line."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep), encoding="utf-8")
    os.replace(tmp, path)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, batches: Batches, eval_iters: int, proc: Proc, ctx) -> dict[str, float]:
    """Mean loss over the fixed eval windows of val and train, shared out over ranks and all-reduced."""
    model.eval()
    out = {}
    for split in ("val", "train"):
        total = torch.zeros(2, device=batches.device)  # loss sum, batch count
        for i in range(proc.rank, eval_iters, proc.world_size):
            x, y = batches.eval(split, i)
            with ctx:
                _, loss = model(x, y)
            total += torch.stack([loss.float(), torch.ones((), device=loss.device)])
        total = all_sum(total, proc)
        out[split] = (total[0] / total[1]).item()
    model.train()
    return out


class Progress:
    """The tqdm bar on stderr: in steps, or in seconds of training when the run has a time budget."""

    def __init__(self, t: TrainConfig, rs: RunState, enabled: bool):
        self.by_time = t.max_seconds > 0
        self.bar = tqdm(total=t.max_seconds if self.by_time else t.max_iters,
                        unit="s" if self.by_time else "step", disable=not enabled, dynamic_ncols=True,
                        file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}{unit} [{elapsed}{postfix}]")
        self.update(rs)

    def update(self, rs: RunState, postfix: dict[str, str] | None = None) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        position = min(rs.train_seconds, self.bar.total) if self.by_time else rs.step
        self.bar.update(position - self.bar.n)

    def write(self, text: str) -> None:
        if not self.bar.disable:
            self.bar.write(text, file=sys.stdout)


def closing_sample(model: GPT, ds: Dataset, cfg: Config, device: torch.device) -> str:
    """A short sample from the start of a fresh document (sample.py is the full sampler)."""
    settings = dataclasses.replace(cfg.sample, num_samples=1, max_new_tokens=min(cfg.sample.max_new_tokens, 300))
    model.eval()
    with speed.eager(model):  # the KV cache changes shapes every token: no recompiling for a sample
        return generate_texts(model, ds.tokenizer, [ds.eot_id], settings, device)[0]


def train(cfg: Config) -> RunState:
    """Run (or continue) the training ``cfg`` describes on this process; under torchrun, one rank of many."""
    proc, device = process_and_device(cfg.train.device)
    finished = False
    try:
        trainer = Trainer(cfg, proc, device)
        try:
            rs = trainer.run()
        finally:
            trainer.close()
        if trainer.interrupted:  # every process stopped after the same step (Trainer._stop_requested)
            if proc.is_main:
                print(f"interrupted: {trainer.out / LAST} holds step {rs.step}; continue the run with the same "
                      "command and --train.resume=true", file=sys.stderr)
            finished = True
            raise SystemExit(128 + int(trainer.interrupted))  # 130 for Ctrl-C, 143 for SIGTERM
        if proc.is_main:
            report(rs, trainer.ds, trainer.out)
            if cfg.train.sample_at_end:
                print(f"\n--- a sample (python sample.py --train.out_dir={trainer.out} for more) ---")
                print(closing_sample(trainer.step.model, trainer.ds, cfg, device))
        finished = True
        return rs
    finally:
        if dist.is_initialized():
            if finished:  # no process may tear the group down while another still uses it (gloo aborts then)
                dist.barrier()
            dist.destroy_process_group()


class Trainer:
    """One run on one process: the dataset, a TrainStep, the schedule, evaluation, and (rank 0 only)
    the run directory's files, which it holds a lock on for the whole run (locks.py)."""

    def __init__(self, cfg: Config, proc: Proc, device: torch.device):
        t = self.t = cfg.train
        self.cfg, self.proc, self.device = cfg, proc, device
        self.out = Path(t.out_dir)
        self.lock = DirLock(self.out / ".lock", f"the run directory {self.out}",
                            "wait for that run to end, or choose another --train.out_dir")
        self.metrics = self.tensorboard = None
        self.interrupted: int = 0  # the signal that asked the run to stop, once one has
        try:
            if proc.is_main:
                if self.out.is_dir():  # before reading anything in it, so a second run is refused at once
                    self.lock.acquire()
                check_out_dir(t)
            if t.tensorboard:
                tensorboard_log.check()  # before anything slow
            start = Start(cfg)  # from scratch, or from train.init_from: its shape, tokenizer and weights
            cfg = self.cfg = start.cfg
            self.ds = load_dataset(cfg, proc)  # before any collective: a first preparation can be long
            join_process_group(proc, device)
            check_same_data(self.ds, proc, device)
            self.batches = Batches(self.ds.train, self.ds.val, cfg.model.block_size, t.batch_size, t.eval_iters,
                                   t.seed, device)
            model_config = start.model_config(self.ds)
            self.step = TrainStep(model_config, t, device, self.batches, proc,
                                  weights=None if t.resume else start.weights(),
                                  teachers=load_teachers(t.distill_from, self.ds, model_config, device))
            self.rs = RunState()
            if t.resume:
                ckpt = load_checkpoint(self.out / LAST, map_location=device)
                check_resumable(ckpt, self.out / LAST, cfg.to_dict(), self.dataset_info, self.ds.meta["tokenizer"])
                self.rs = restore(ckpt, self.step.model, self.step.optimizer, self.step.scaler)
                del ckpt
            if proc.is_main:
                self.metrics = self._open_run_dir()
                if t.tensorboard:
                    self.tensorboard = tensorboard_log.TensorBoardLog(self.out, self.rs.step if t.resume else None)
                self._banner()
        except BaseException:
            self.lock.release()
            raise
        self.progress = Progress(t, self.rs, proc.is_main)

    @property
    def dataset_info(self) -> dict[str, str]:
        return {"dir": str(self.ds.dir), "fingerprint": self.ds.fingerprint}

    def _open_run_dir(self):
        """The run directory, written only now that every check has passed; returns metrics.jsonl to append to."""
        out = self.out
        try:
            out.mkdir(parents=True, exist_ok=True)
            if not self.lock.held:  # a new directory: lock it, then check again that no run got there first
                self.lock.acquire()
                check_out_dir(self.t)
            if self.t.resume:
                trim_metrics(out / METRICS, self.rs.step)
            else:
                for name in (LAST, BEST, METRICS):  # of the run being replaced (--train.overwrite=true)
                    (out / name).unlink(missing_ok=True)
                shutil.rmtree(out / tensorboard_log.TENSORBOARD_DIR, ignore_errors=True)
            (out / "config.toml.tmp").write_text(self.cfg.to_toml(), encoding="utf-8")
            os.replace(out / "config.toml.tmp", out / "config.toml")
            rank_file = self.ds.meta["tokenizer"].get("file")
            if rank_file:  # so that sample.py needs only the run directory
                shutil.copyfile(self.ds.dir / rank_file, out / rank_file)
            return open(out / METRICS, "a", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write the run directory {out}: {e.strerror or e}; "
                            "free some disk space or choose another --train.out_dir") from None

    def _banner(self) -> None:
        m, t, s = self.cfg.model, self.t, self.step
        print(f"model: {s.model.num_params() / 1e6:.2f}M parameters, {m.n_layer} layers, {m.n_embd} wide, "
              f"context {m.block_size}; vocab {self.ds.vocab_size}")
        print(f"precision {str(s.dtype).removeprefix('torch.')} ({s.dtype_reason}); compile={s.compiled} "
              f"({s.compile_reason})")
        print(f"training on {self.device} x{self.proc.world_size}, "
              f"{s.tokens_per_step:,} tokens/step, optimizer {t.optimizer}, schedule {t.schedule}; "
              f"run directory {self.out}" + (f", resuming at step {self.rs.step}" if t.resume else "")
              + (f", starting from {t.init_from}" if t.init_from and not t.resume else ""))
        if s.teachers:
            print(f"distilling from {t.distill_from} ({len(s.teachers)} teacher(s), their mean probabilities): "
                  f"loss = {1 - t.distill_weight:g} x cross-entropy + {t.distill_weight:g} x KL divergence; "
                  "the logged loss is the cross-entropy")
        if s.accumulation != t.gradient_accumulation_steps:
            print(f"note: --train.gradient_accumulation_steps={t.gradient_accumulation_steps} does not divide over "
                  f"{self.proc.world_size} processes, so each runs {s.local_accum} micro-batch(es): a step is "
                  f"{s.accumulation} x {t.batch_size} sequences instead of {t.gradient_accumulation_steps} x "
                  f"{t.batch_size}")

    def close(self) -> None:
        if self.step.step_model is not self.step.model:
            # DDP's reducer keeps gloo's pending work and its tensors; freed at interpreter exit instead,
            # they can abort the process (SIGABRT) after a finished run, so drop it now, while all is alive
            self.step.step_model = self.step.model
            gc.collect()
        self.progress.bar.close()
        if self.metrics:
            self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()
        self.lock.release()

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics:
            try:
                self.metrics.write(json.dumps(record) + "\n")
                self.metrics.flush()
            except OSError as e:
                raise UserError(f"cannot write {self.out / METRICS}: {e.strerror or e}; the last checkpoint is "
                                "intact: free some disk space and continue with --train.resume=true") from None
        if self.tensorboard:
            self.tensorboard.write(record)

    def save(self, *names: str) -> None:
        """Write the checkpoint files ``names`` (LAST, BEST) of the run directory; rank 0 only.
        Weights that are not all finite are never written: the last good checkpoint stays."""
        if self.proc.is_main and names:
            s = self.step
            if not torch.stack([torch.isfinite(p).all() for p in s.params]).all():
                raise NonFiniteLoss(f"the weights are not finite at step {self.rs.step}; "
                                    + ADVICE.format(lr=self.t.learning_rate))
            state = training_state(s.model, s.optimizer, s.scaler, self.cfg.to_dict(), self.dataset_info,
                                   self.ds.meta["tokenizer"], self.rs, str(s.dtype).removeprefix("torch."))
            for name in names:
                save_checkpoint(self.out / name, state)

    def evaluate(self) -> None:
        """Loss and bits per byte on the fixed eval windows; best.pt when val improved."""
        t0, rs, ds = time.perf_counter(), self.rs, self.ds
        losses = estimate_loss(self.step.eval_model, self.batches, self.t.eval_iters, self.proc, self.step.autocast)
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteLoss(f"the evaluation loss became {losses['val']} at step {rs.step}; "
                                + ADVICE.format(lr=self.t.learning_rate))
        bpb = {s: losses[s] / math.log(2) / ds.bytes_per_token(s) for s in losses}
        self.log({"step": rs.step, "train_seconds": rs.train_seconds, "val_loss": losses["val"],
                  "val_bpb": bpb["val"], "train_loss": losses["train"], "train_bpb": bpb["train"],
                  "eval_seconds": round(time.perf_counter() - t0, 3)})
        self.progress.write(f"step {rs.step}: val {bpb['val']:.4f} bpb (loss {losses['val']:.4f}), "
                            f"train {bpb['train']:.4f} bpb, {rs.train_seconds:.1f}s")
        if losses["val"] < rs.best_val_loss:
            rs.best_val_loss = losses["val"]
            self.save(BEST)

    def _on_interrupt(self, signum, frame) -> None:
        """The first Ctrl-C (or SIGTERM, as a scheduler sends before it preempts a job): finish this step,
        write a checkpoint and stop; a second one stops at once."""
        self.interrupted = self.interrupted or int(signum)
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        if self.proc.is_main:
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self.progress.write(f"{what}: stopping after this step and writing a checkpoint ({what} again to quit "
                                "at once)")

    def _stop_requested(self) -> bool:
        """Whether any process was interrupted: all of them then stop after the same step."""
        if not self.proc.distributed:
            return bool(self.interrupted)
        flag = all_sum(torch.tensor([float(bool(self.interrupted))], device=self.device), self.proc)
        return flag.item() > 0

    def run(self) -> RunState:
        """Train until max_iters or max_seconds, evaluating, logging and checkpointing on the way."""
        signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
        previous = {signum: signal.signal(signum, self._on_interrupt) for signum in signals}
        try:
            return self._run()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> RunState:
        t, rs, s = self.t, self.rs, self.step
        if s.compiled:
            seconds = s.warm_up()
            how = "warm: from the cache" if s.warm_cache else "cold: nothing cached for this shape"
            if self.proc.is_main:
                s.record.update(**{"warm_compile" if s.warm_cache else "cold_compile": seconds})
            self.log({"step": rs.step, "compile_seconds": round(seconds, 3), "compile_cache": "warm" if s.warm_cache
                      else "cold"})
            self.progress.write(f"compiled in {seconds:.1f}s ({how}; not counted as training time)")
        if not t.resume:
            self.evaluate()
        step_times = []
        window_tokens, window_seconds, last_eval, last_ckpt = 0, 0.0, rs.step, rs.step
        while rs.step < t.max_iters and not (t.max_seconds > 0 and rs.train_seconds >= t.max_seconds):
            multiplier = lr_multiplier(rs.step, rs.train_seconds, t)
            loss, seconds, grad_norm = s(rs.step, multiplier)
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"the training loss became {loss} at step {rs.step + 1}; "
                                    + ADVICE.format(lr=t.learning_rate))
            if not math.isfinite(grad_norm) and not s.scaler.is_enabled():
                raise NonFiniteLoss(f"the gradient norm became {grad_norm} at step {rs.step + 1} and that step was "
                                    "not applied; " + ADVICE.format(lr=t.learning_rate))
            rs.step += 1
            rs.train_seconds += seconds
            step_times.append(seconds)
            rs.tokens_seen += s.tokens_per_step
            window_tokens += s.tokens_per_step
            window_seconds += seconds
            postfix = None
            if rs.step % t.log_interval == 0:
                tps = window_tokens / window_seconds
                mfu = s.flops_per_token * tps / s.peak_flops
                lr = t.learning_rate * multiplier
                self.log({"step": rs.step, "loss": loss, "lr": lr, "tokens_per_s": round(tps, 1),
                          "train_seconds": rs.train_seconds, "mfu": round(mfu, 4)})
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tps:,.0f}", "mfu": f"{100 * mfu:.1f}%"}
                window_tokens, window_seconds = 0, 0.0
            self.progress.update(rs, postfix)
            if self._stop_requested():
                self.interrupted = self.interrupted or int(signal.SIGINT)  # another process was interrupted
                break
            if rs.step % t.eval_interval == 0:
                self.evaluate()
                last_eval = rs.step
            if rs.step % t.checkpoint_interval == 0:
                self.save(LAST)
                last_ckpt = rs.step
        if last_eval != rs.step and not self.interrupted:
            self.evaluate()
        if last_ckpt != rs.step or not (self.out / LAST).exists():
            self.save(LAST)
        if self.proc.is_main and len(step_times) >= 20:  # this shape's step here, for compile='auto' next time
            s.record.update(**{"compiled_step" if s.compiled else "eager_step": statistics.median(step_times[5:])})
        return rs


def report(rs: RunState, ds: Dataset, out: Path) -> None:
    """The run's summary: what was trained, how well, and where its files are."""
    best = rs.best_val_loss
    bpb = best / math.log(2) / ds.bytes_per_token("val") if math.isfinite(best) else float("nan")
    print(f"\ndone: {rs.step} steps, {rs.tokens_seen:,} tokens in {rs.train_seconds:.1f}s of training; "
          f"best val {bpb:.4f} bits/byte (loss {best:.4f} nats/token)")
    curve = analyse(evaluations(read_records(out / METRICS)))
    if curve:
        print(f"val curve: {curve.describe()}")
    print(f"files in {out}/: {LAST} (last), {BEST} (best val), {METRICS}, config.toml")
    print(f"plot it: python plot.py {shlex.quote(str(out))}")


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, Config, "train.py", SUMMARY)
    rule = apply_budget_rule(cfg)
    if rule and int(os.environ.get("RANK", "0")) == 0:
        print(rule)
    train(cfg)
    return 0


if __name__ == "__main__":
    run_main(main)
