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

``train.compile = 'auto'`` compiles on CUDA always, and on a CPU only when the run is expected to
train for at least COMPILE_PAYBACK_SECONDS: a CPU compile saves less per step than it costs up
front, so it pays back only on long runs.  The expected time is ``max_seconds`` if set, else
``max_iters`` steps at half of the measured matmul peak.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import hardware
from checkpoint import (BEST, LAST, RunState, check_resumable, load_checkpoint, restore, save_checkpoint,
                        training_state)
from config import Config, TrainConfig, parse_args, run_main
from errors import UserError
from model import GPT, GPTConfig
from optim import build_optimizer, lr_multiplier, set_lr
from prepare import Dataset, open_dataset, prepare
from pretrained import Start
from sample import generate_texts

SUMMARY = "Train a GPT on a corpus (prepared first if needed); resumable, on CPU, GPU or many GPUs via torchrun."
COMPILE_PAYBACK_SECONDS = 600.0  # 'auto' compiles on a CPU only for runs expected to train this long
METRICS = "metrics.jsonl"
STREAM_TRAIN, STREAM_EVAL, STREAM_DROPOUT = 0, 1, 2  # independent random streams under one seed


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


def init_distributed(device_name: str) -> tuple[Proc, torch.device]:
    """Join the process group torchrun set up (env RANK, WORLD_SIZE, LOCAL_RANK): nccl on GPUs, gloo on CPUs."""
    device = hardware.pick_device(device_name)
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Proc(), device
    proc = Proc(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", proc.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return proc, device


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
    """Prepare the corpus if needed (local rank 0 of each machine builds it, the others then reuse it)
    and open it; prepare() refuses a corpus with less than one window of block_size + 1 tokens per split."""
    need = cfg.model.block_size + 1
    if proc.local_rank == 0:
        path = prepare(cfg.data, min_tokens=need, progress=proc.is_main)
    if proc.distributed:
        dist.barrier()  # the others wait for it, then find it built
    if proc.local_rank != 0:
        path = prepare(cfg.data, min_tokens=need, progress=False)
    return open_dataset(path)


# --------------------------------------------------------------------------- one optimizer step


def should_compile(t: TrainConfig, device: torch.device, est_step_seconds: float) -> bool:
    if t.compile != "auto":
        return t.compile == "true"
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    expected = t.max_seconds if t.max_seconds > 0 else t.max_iters * est_step_seconds
    return expected >= COMPILE_PAYBACK_SECONDS


class TrainStep:
    """One optimizer step as train.py takes it, on a model it builds: the micro-batch loop (gradient
    accumulation, DDP's single all-reduce), mixed precision, gradient clipping, the optimizer.

    Calling it takes step ``step`` at ``multiplier`` x the peak learning rates and returns (mean loss,
    seconds), equal on every rank.  tools/bench.py times exactly this object.
    """

    def __init__(self, model_config: GPTConfig, t: TrainConfig, device: torch.device, batches: Batches,
                 proc: Proc | None = None, weights: dict[str, torch.Tensor] | None = None):
        self.t, self.device, self.batches, self.proc = t, device, batches, proc or Proc()
        self.dtype = hardware.pick_dtype(t.dtype, device)
        hardware.setup(device)
        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.model = GPT(model_config).to(device)  # the bare model: weights, checkpoints, sampling
        if weights is not None:  # a trained model's (train.init_from), instead of the random initialisation
            self.model.load_state_dict(weights)
        self.params = list(self.model.parameters())
        self.optimizer = build_optimizer(self.model.param_groups(), t, device.type)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(self.dtype == torch.float16))
        self.autocast = hardware.autocast(device, self.dtype)
        self.local_accum = t.gradient_accumulation_steps // self.proc.world_size
        self.tokens_per_step = t.batch_size * model_config.block_size * t.gradient_accumulation_steps
        self.flops_per_token = self.model.flops_per_token()
        self.peak_flops = hardware.peak_flops(device, self.dtype) * self.proc.world_size
        est_step_seconds = self.tokens_per_step * self.flops_per_token / (0.5 * self.peak_flops)
        self.compiled = should_compile(t, device, est_step_seconds)
        # what evaluation runs (compiled when chosen), and what the step runs (that, in DDP under torchrun)
        self.eval_model = torch.compile(self.model) if self.compiled else self.model
        self.step_model = (torch.nn.parallel.DistributedDataParallel(
            self.eval_model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
            if self.proc.distributed else self.eval_model)

    def __call__(self, step: int, multiplier: float) -> tuple[float, float]:
        t, proc = self.t, self.proc
        t0 = time.perf_counter()
        set_lr(self.optimizer, multiplier)
        torch.manual_seed(mix_seed(t.seed, STREAM_DROPOUT, step, proc.rank))
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.local_accum):
            x, y = self.batches.train(step, proc.rank * self.local_accum + i)
            last = i == self.local_accum - 1  # DDP all-reduces the gradients once, after the last micro-batch
            with contextlib.nullcontext() if last or not proc.distributed else self.step_model.no_sync():
                with self.autocast:
                    _, loss = self.step_model(x, y)
                self.scaler.scale(loss / self.local_accum).backward()
            loss_sum += loss.detach()
        if t.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum.item()  # wait for the device, so the time below is the step's
        # every rank takes the same loss and time, so all stop (time budget, non-finite loss) together
        both = all_sum(torch.stack([loss_sum / self.local_accum, torch.tensor(time.perf_counter() - t0)
                                    .to(self.device)]), proc) / proc.world_size
        return both[0].item(), both[1].item()


# --------------------------------------------------------------------------- the run


ADVICE = ("training stopped and no checkpoint was written after it (the last good one is intact). "
          "Lower --train.learning_rate (now {lr:g}) or raise --train.warmup_iters, keep --train.grad_clip on, "
          "or train in float32/bfloat16 instead of float16")


class NonFiniteLoss(UserError):
    """Training diverged: not a typo, but the settings' fault, so it is reported like a user's error."""


def check_out_dir(t: TrainConfig) -> Path:
    """Refuse to start a new run over a checkpoint, before anything slow or anything is written."""
    out = Path(t.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--train.out_dir={out} is a file; give a directory")
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
    return generate_texts(model, ds.tokenizer, [ds.eot_id], settings, device)[0]


def train(cfg: Config) -> RunState:
    """Run (or continue) the training ``cfg`` describes on this process; under torchrun, one rank of many."""
    proc, device = init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, proc, device)
        try:
            rs = trainer.run()
        finally:
            trainer.close()
        if proc.is_main:
            report(rs, trainer.ds, trainer.out)
            if cfg.train.sample_at_end:
                print(f"\n--- a sample (python sample.py --train.out_dir={trainer.out} for more) ---")
                print(closing_sample(trainer.step.model, trainer.ds, cfg, device))
        return rs
    finally:
        if proc.distributed:
            dist.destroy_process_group()


class Trainer:
    """One run on one process: the dataset, a TrainStep, the schedule, evaluation, and (rank 0 only)
    the run directory's files."""

    def __init__(self, cfg: Config, proc: Proc, device: torch.device):
        t = self.t = cfg.train
        if t.gradient_accumulation_steps % proc.world_size:
            raise UserError(f"--train.gradient_accumulation_steps={t.gradient_accumulation_steps} must be divisible "
                            f"by the number of processes ({proc.world_size}): it counts the micro-batches of all of them")
        start = Start(cfg)  # from scratch, or from train.init_from: its shape, tokenizer and weights
        cfg = start.cfg
        self.cfg, self.proc, self.device = cfg, proc, device
        self.out = check_out_dir(t)
        self.ds = load_dataset(cfg, proc)
        self.batches = Batches(self.ds.train, self.ds.val, cfg.model.block_size, t.batch_size, t.eval_iters,
                               t.seed, device)
        self.step = TrainStep(start.model_config(self.ds), t, device, self.batches, proc,
                              weights=None if t.resume else start.weights())
        self.rs = RunState()
        if t.resume:
            ckpt = load_checkpoint(self.out / LAST, map_location=device)
            check_resumable(ckpt, self.out / LAST, cfg.to_dict(), self.dataset_info, self.ds.meta["tokenizer"])
            self.rs = restore(ckpt, self.step.model, self.step.optimizer, self.step.scaler)
            del ckpt
        self.metrics = None
        if proc.is_main:
            self.metrics = self._open_run_dir()
            self._banner()
        self.progress = Progress(t, self.rs, proc.is_main)

    @property
    def dataset_info(self) -> dict[str, str]:
        return {"dir": str(self.ds.dir), "fingerprint": self.ds.fingerprint}

    def _open_run_dir(self):
        """The run directory, written only now that every check has passed; returns metrics.jsonl to append to."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        if self.t.resume:
            trim_metrics(out / METRICS, self.rs.step)
        else:
            for name in (LAST, BEST, METRICS):  # of the run being replaced (--train.overwrite=true)
                (out / name).unlink(missing_ok=True)
        (out / "config.toml.tmp").write_text(self.cfg.to_toml(), encoding="utf-8")
        os.replace(out / "config.toml.tmp", out / "config.toml")
        rank_file = self.ds.meta["tokenizer"].get("file")
        if rank_file:  # so that sample.py needs only the run directory
            shutil.copyfile(self.ds.dir / rank_file, out / rank_file)
        return open(out / METRICS, "a", encoding="utf-8")

    def _banner(self) -> None:
        m, t, s = self.cfg.model, self.t, self.step
        print(f"model: {s.model.num_params() / 1e6:.2f}M parameters, {m.n_layer} layers, {m.n_embd} wide, "
              f"context {m.block_size}; vocab {self.ds.vocab_size}")
        print(f"training on {self.device} ({s.dtype}, compile={s.compiled}) x{self.proc.world_size}, "
              f"{s.tokens_per_step:,} tokens/step, optimizer {t.optimizer}, schedule {t.schedule}; "
              f"run directory {self.out}" + (f", resuming at step {self.rs.step}" if t.resume else "")
              + (f", starting from {t.init_from}" if t.init_from and not t.resume else ""))

    def close(self) -> None:
        self.progress.bar.close()
        if self.metrics:
            self.metrics.close()

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def save(self, *names: str) -> None:
        """Write the checkpoint files ``names`` (LAST, BEST) of the run directory; rank 0 only."""
        if self.proc.is_main and names:
            s = self.step
            state = training_state(s.model, s.optimizer, s.scaler, self.cfg.to_dict(), self.dataset_info,
                                   self.ds.meta["tokenizer"], self.rs)
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
        self.log({"step": rs.step, "train_seconds": round(rs.train_seconds, 3), "val_loss": losses["val"],
                  "val_bpb": bpb["val"], "train_loss": losses["train"], "train_bpb": bpb["train"],
                  "eval_seconds": round(time.perf_counter() - t0, 3)})
        self.progress.write(f"step {rs.step}: val {bpb['val']:.4f} bpb (loss {losses['val']:.4f}), "
                            f"train {bpb['train']:.4f} bpb, {rs.train_seconds:.1f}s")
        if losses["val"] < rs.best_val_loss:
            rs.best_val_loss = losses["val"]
            self.save(BEST)

    def run(self) -> RunState:
        """Train until max_iters or max_seconds, evaluating, logging and checkpointing on the way."""
        t, rs, s = self.t, self.rs, self.step
        if not t.resume:
            self.evaluate()
        window_tokens, window_seconds, last_eval, last_ckpt = 0, 0.0, rs.step, rs.step
        while rs.step < t.max_iters and not (t.max_seconds > 0 and rs.train_seconds >= t.max_seconds):
            multiplier = lr_multiplier(rs.step, rs.train_seconds, t)
            loss, seconds = s(rs.step, multiplier)
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"the training loss became {loss} at step {rs.step + 1}; "
                                    + ADVICE.format(lr=t.learning_rate))
            rs.step += 1
            rs.train_seconds += seconds
            rs.tokens_seen += s.tokens_per_step
            window_tokens += s.tokens_per_step
            window_seconds += seconds
            postfix = None
            if rs.step % t.log_interval == 0:
                tps = window_tokens / window_seconds
                mfu = s.flops_per_token * tps / s.peak_flops
                lr = t.learning_rate * multiplier
                self.log({"step": rs.step, "loss": loss, "lr": lr, "tokens_per_s": round(tps, 1),
                          "train_seconds": round(rs.train_seconds, 3), "mfu": round(mfu, 4)})
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tps:,.0f}", "mfu": f"{100 * mfu:.1f}%"}
                window_tokens, window_seconds = 0, 0.0
            self.progress.update(rs, postfix)
            if rs.step % t.eval_interval == 0:
                self.evaluate()
                last_eval = rs.step
            if rs.step % t.checkpoint_interval == 0:
                self.save(LAST)
                last_ckpt = rs.step
        if last_eval != rs.step:
            self.evaluate()
        if last_ckpt != rs.step or not (self.out / LAST).exists():
            self.save(LAST)
        return rs


def report(rs: RunState, ds: Dataset, out: Path) -> None:
    """The run's summary: what was trained, how well, and where its files are."""
    best = rs.best_val_loss
    bpb = best / math.log(2) / ds.bytes_per_token("val") if math.isfinite(best) else float("nan")
    print(f"\ndone: {rs.step} steps, {rs.tokens_seen:,} tokens in {rs.train_seconds:.1f}s of training; "
          f"best val {bpb:.4f} bits/byte (loss {best:.4f} nats/token)")
    print(f"files in {out}/: {LAST} (last), {BEST} (best val), {METRICS}, config.toml")


def main(argv: list[str]) -> int:
    train(parse_args(argv, Config, "train.py", SUMMARY))
    return 0


if __name__ == "__main__":
    run_main(main)
