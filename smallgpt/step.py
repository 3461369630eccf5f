"""One optimizer step as train.py takes it: what the run repeats and what tools/bench times.

The micro-batch loop (gradient accumulation, DDP's single all-reduce), mixed precision, gradient
clipping, the optimizer, and the speed choices made before the first step (precision and compile,
``smallgpt/speed.py``).  Dropout is reseeded from ``(seed, step, rank)`` every step, so a resumed run
draws exactly the masks of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from typing import NamedTuple

import torch
import torch.distributed as dist

from model import GPT, GPTConfig
from smallgpt import hardware, speed
from smallgpt.batches import STREAM_DROPOUT, Batches, mix_seed
from smallgpt.config import TrainConfig
from smallgpt.distributed import NO_BUFFER_SYNC, Proc, all_sum, local_accumulation
from smallgpt.ensemble import distillation_loss
from smallgpt.optim import build_optimizer, set_lr


class StepResult(NamedTuple):
    loss: float  # mean loss of the step's micro-batches (all processes)
    seconds: float  # the step's time (this process's; under torchrun with a time budget, the processes' mean)
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
        hardware.setup(device, t.deterministic)
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
        self.optimizer = build_optimizer(self.model.param_groups(), t, device.type, qkv_rows=self.model.qkv_rows())
        self.scaler = torch.amp.GradScaler(device.type, enabled=(self.dtype == torch.float16))
        self.autocast = hardware.autocast(device, self.dtype)
        self.record = speed.Record({**shape, "dtype": str(self.dtype)})
        measured = self.record.times()
        step_seconds = measured.eager_step or self.estimated_step_seconds(self.dtype)
        expected_steps = t.max_iters if t.max_seconds <= 0 else min(t.max_iters, t.max_seconds / step_seconds)
        self.compiled, self.compile_reason = speed.compile_pays(t.compile, device, expected_steps, step_seconds,
                                                                measured)
        self.warm_cache = measured.cold_compile is not None or measured.warm_compile is not None
        if self.compiled:  # in place: the names of the weights do not change
            self.compile_reason += f"; {speed.COMPILE_SCOPES[speed.compile_model(self.model, device)]}"
        self.eval_model = self.model  # what evaluation runs; the step runs it in DDP under torchrun
        self.step_model = (torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device.index] if device.type == "cuda" else None, **NO_BUFFER_SYNC)
            if self.proc.distributed else self.model)

    @functools.cached_property
    def peak_flops(self) -> float:
        """The peak MFU is measured against (all processes): measured on first use, when the first record is
        written, so that a run's start does not wait for the probe."""
        return hardware.peak_flops(self.device, self.dtype) * self.proc.world_size

    def estimated_step_seconds(self, dtype: torch.dtype) -> float:
        """A step at half the device's peak (the quick probe's): a guess, for choices made before any step ran."""
        return self.tokens_per_step * self.flops_per_token / (0.5 * hardware.rough_peak(self.device, dtype))

    def _precision(self, record: speed.Record) -> tuple[torch.dtype, str]:
        """``train.dtype``, and 'auto' on a CPU measured: bf16 autocast where its matmuls are faster here
        (the probe's peaks) and the model's forward and backward are too (speed.faster_precision), which a
        step of more than a few seconds is not timed for; every process takes rank 0's choice."""
        t, device = self.t, self.device
        if t.dtype != "auto" or device.type != "cpu":
            return hardware.pick_dtype(t.dtype, device), f"train.dtype={t.dtype}"
        measured = record.get().get("bf16_speedup") is not None  # then speed.faster_precision reads it, no probe
        if not measured and hardware.quick_peak(device, torch.bfloat16) < 1.5 * hardware.quick_peak(device, torch.float32):
            choice, why = torch.float32, "auto: this CPU's bf16 matmuls are not faster than its float32 ones"
        elif not measured and self.estimated_step_seconds(torch.float32) > 2.0:
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
                objective = (distillation_loss(logits, loss, self.teachers, x, self.t.distill_weight)
                             if self.teachers else loss)
            self.scaler.scale(objective / self.local_accum).backward()
        return loss.detach()  # the cross-entropy, comparable with any run's, even when distilling

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
        # the step's one wait for the device: the loss and the norm together (all processes' mean under torchrun)
        stats = all_sum(torch.stack([loss_sum / self.local_accum, norm.float()]), proc) / proc.world_size
        loss, grad_norm = stats.tolist()
        # the gradients are all-reduced already, so every rank sees the same norm and takes the same branch
        if self.scaler.is_enabled() or math.isfinite(grad_norm):
            self.scaler.step(self.optimizer)  # launched after the wait: the next step's wait covers its kernels
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        if proc.distributed and t.max_seconds > 0:
            # a time budget: every process must take the same time, to stop and to schedule alike (a second wait)
            seconds = (all_sum(torch.full((1,), seconds, device=self.device), proc) / proc.world_size).item()
        return StepResult(loss, seconds, grad_norm)
