"""Train a GPT: ``python train.py [CONFIG.toml] [--section.key=value ...]``.

With no arguments it prepares the default corpus (if not prepared yet), trains a small model sized
for a laptop CPU for a few minutes, and prints a sample.  The same file runs on a GPU (bf16,
torch.compile) and on many through ``torchrun`` (DistributedDataParallel), with no edits.

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
train for at least COMPILE_PAYBACK_SECONDS: there compile saves ~15 % per step but a cold compile
costs ~35–65 s, so it pays back only after several minutes.  The expected time is ``max_seconds``
if set, else ``max_iters`` steps at half of the measured matmul peak.
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
from checkpoint import BEST, LAST, load_checkpoint, save_checkpoint, strip_wrapper_prefixes
from config import Config, UserError, parse_args, run_main, to_toml
from model import GPT, GPTConfig
from optim import build_optimizer, lr_multiplier, set_lr
from prepare import Dataset, open_dataset, prepare

SUMMARY = "Train a GPT on a corpus (prepared first if needed); resumable, on CPU, GPU or many GPUs via torchrun."
COMPILE_PAYBACK_SECONDS = 600.0  # 'auto' compiles on a CPU only for runs expected to train this long
METRICS = "metrics.jsonl"
STREAM_TRAIN, STREAM_EVAL, STREAM_DROPOUT = 0, 1, 2  # independent random streams under one seed


# --------------------------------------------------------------------------- processes


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (env RANK, WORLD_SIZE, LOCAL_RANK): nccl on GPUs, gloo on CPUs."""
    device = hardware.pick_device(device_name)
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), device
    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
    if device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def all_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# --------------------------------------------------------------------------- data


def mix_seed(*parts: int) -> int:
    """One well-mixed 64-bit seed from several integers (numpy's SeedSequence hashing), for stateless draws."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


class Batches:
    """Training and evaluation windows of a dataset's token arrays, each draw a pure function of its indices."""

    def __init__(self, ds: Dataset, block_size: int, batch_size: int, eval_iters: int, seed: int,
                 device: torch.device):
        self.ds, self.T, self.B, self.seed, self.device = ds, block_size, batch_size, seed, device
        self.eval_offsets = {  # the same windows at every evaluation: (eval_iters, batch_size)
            split: self._offsets(getattr(ds, split), (eval_iters, batch_size), STREAM_EVAL, i)
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
        return self._load(self.ds.train, self._offsets(self.ds.train, (self.B,), STREAM_TRAIN, step, k))

    def eval(self, split: str, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._load(getattr(self.ds, split), self.eval_offsets[split][i])


def load_dataset(cfg: Config, d: Dist) -> Dataset:
    """Prepare the corpus if needed (local rank 0 of each machine builds it, the others then reuse it)
    and open it; prepare() refuses a corpus with less than one window of block_size + 1 tokens per split."""
    need = cfg.model.block_size + 1
    if d.local_rank == 0:
        path = prepare(cfg.data, min_tokens=need, progress=d.is_main)
    if d.enabled:
        dist.barrier()  # the others wait for it, then find it built
    if d.local_rank != 0:
        path = prepare(cfg.data, min_tokens=need, progress=False)
    return open_dataset(path)


# --------------------------------------------------------------------------- the run


@dataclass
class RunState:
    step: int = 0  # optimizer steps done
    best_val_loss: float = float("inf")
    train_seconds: float = 0.0  # time spent training, evaluation and checkpoints excluded
    tokens_seen: int = 0


ADVICE = ("training stopped and no checkpoint was written after it (the last good one is intact). "
          "Lower --train.learning_rate (now {lr:g}) or raise --train.warmup_iters, keep --train.grad_clip on, "
          "or train in float32/bfloat16 instead of float16")


class NonFiniteLoss(UserError):
    """Training diverged: not a typo, but the settings' fault, so it is reported like a user's error."""


def should_compile(cfg: Config, device: torch.device, est_step_seconds: float) -> bool:
    if cfg.train.compile != "auto":
        return cfg.train.compile == "true"
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    t = cfg.train
    expected = t.max_seconds if t.max_seconds > 0 else t.max_iters * est_step_seconds
    return expected >= COMPILE_PAYBACK_SECONDS


def check_out_dir(cfg: Config) -> Path:
    """Refuse to start a new run over a checkpoint, before anything slow or anything is written."""
    out = Path(cfg.train.out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--train.out_dir={out} is a file; give a directory")
    if cfg.train.resume:
        if not (out / LAST).is_file():
            raise UserError(f"--train.resume=true but there is no checkpoint {out / LAST} to continue; "
                            "start a new run without --train.resume, or give the run's --train.out_dir")
    elif (out / LAST).exists() and not cfg.train.overwrite:
        raise UserError(f"{out} already holds a run ({out / LAST}); pass --train.resume=true to continue it, "
                        f"--train.overwrite=true to replace it, or choose another --train.out_dir")
    return out


def restore(ckpt: dict[str, Any], cfg: Config, ds: Dataset, model: GPT, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, path: Path) -> RunState:
    """Continue from ``ckpt``, refusing when its dataset, tokenizer, model or optimizer differ from this run's."""
    def refuse(what: str) -> None:
        raise UserError(f"cannot resume {path}: {what}; resume with the config and settings of that run, "
                        f"or start a new run in another --train.out_dir")

    if ckpt.get("dataset", {}).get("fingerprint") != ds.fingerprint:
        refuse(f"its dataset ({ckpt.get('dataset', {}).get('dir')}) differs from this one ({ds.dir})")
    if ckpt["tokenizer"] != ds.meta["tokenizer"]:
        refuse("its tokenizer differs from this dataset's")
    now = dataclasses.asdict(model.config)
    diff = [f"model.{k}: checkpoint {v!r}, now {now.get(k)!r}" for k, v in ckpt["model_config"].items() if now.get(k) != v]
    if diff:
        refuse("model settings differ (" + "; ".join(diff) + ")")
    was = ckpt.get("config", {}).get("train", {}).get("optimizer")
    if was != cfg.train.optimizer:
        refuse(f"it was trained with optimizer {was!r}, not {cfg.train.optimizer!r}")
    model.load_state_dict(strip_wrapper_prefixes(ckpt["model"]))
    current = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, settings in zip(optimizer.param_groups, current):  # moments from the checkpoint, settings from now
        group.update(settings)
    if scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt.get("rng", {})
    if "torch" in rng:  # RNG states are CPU byte tensors, whatever map_location moved them to
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return RunState(ckpt["step"], ckpt["best_val_loss"], ckpt["train_seconds"], ckpt["tokens_seen"])


def checkpoint_state(model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                     cfg: Config, ds: Dataset, rs: RunState) -> dict[str, Any]:
    """Everything a resume needs, in types ``torch.load(weights_only=True)`` accepts."""
    return {
        "format": 1, "model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
        "config": cfg.to_dict(), "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "step": rs.step, "best_val_loss": rs.best_val_loss, "train_seconds": rs.train_seconds,
        "tokens_seen": rs.tokens_seen,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "dataset": {"dir": str(ds.dir), "fingerprint": ds.fingerprint},
        "tokenizer": ds.meta["tokenizer"],
    }


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
def evaluate(model: torch.nn.Module, batches: Batches, cfg: Config, d: Dist, ctx) -> dict[str, float]:
    """Mean loss over the fixed eval windows of val and train, shared out over ranks and all-reduced."""
    model.eval()
    out = {}
    for split in ("val", "train"):
        total = torch.zeros(2, device=batches.device)  # loss sum, batch count
        for i in range(d.rank, cfg.train.eval_iters, d.world_size):
            x, y = batches.eval(split, i)
            with ctx:
                _, loss = model(x, y)
            total += torch.stack([loss.float(), torch.ones((), device=loss.device)])
        total = all_sum(total, d)
        out[split] = (total[0] / total[1]).item()
    model.train()
    return out


class Progress:
    """The tqdm bar on stderr: in steps, or in seconds of training when the run has a time budget."""

    def __init__(self, cfg: Config, rs: RunState, enabled: bool):
        self.by_time = cfg.train.max_seconds > 0
        self.bar = tqdm(total=cfg.train.max_seconds if self.by_time else cfg.train.max_iters,
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


def sample_text(model: GPT, ds: Dataset, cfg: Config, device: torch.device) -> str:
    """A short sample from the start of a fresh document (sample.py is the full sampler)."""
    s = cfg.sample
    model.eval()
    idx = torch.tensor([[ds.eot_id]], device=device)  # (1, 1)
    g = torch.Generator(device=device).manual_seed(s.seed)
    with torch.inference_mode():
        out = model.generate(idx, min(s.max_new_tokens, 300), temperature=s.temperature, top_k=s.top_k or None,
                             top_p=s.top_p if s.top_p < 1 else None, generator=g)
    ids = out[0, 1:].tolist()
    ids = ids[:ids.index(ds.eot_id)] if ds.eot_id in ids else ids
    return ds.tokenizer.decode([i for i in ids if i < ds.tokenizer.n_vocab], errors="replace")


def train(cfg: Config) -> RunState:
    """Run (or continue) the training ``cfg`` describes on this process; under torchrun, one rank of many."""
    d, device = init_distributed(cfg.train.device)
    try:
        trainer = Trainer(cfg, d, device)
        try:
            rs = trainer.run()
        finally:
            trainer.close()
        if d.is_main:
            report(cfg, rs, trainer.ds, trainer.out)
            if cfg.train.sample_at_end:
                print(f"\n--- a sample (python sample.py --train.out_dir={trainer.out} for more) ---")
                print(sample_text(trainer.model, trainer.ds, cfg, device))
        return rs
    finally:
        if d.enabled:
            dist.destroy_process_group()


class Trainer:
    """One run on one process: data, model, optimizer, and (rank 0 only) the run directory's files."""

    def __init__(self, cfg: Config, d: Dist, device: torch.device):
        t = self.t = cfg.train
        self.cfg, self.d, self.device = cfg, d, device
        if t.gradient_accumulation_steps % d.world_size:
            raise UserError(f"--train.gradient_accumulation_steps={t.gradient_accumulation_steps} must be divisible "
                            f"by the number of processes ({d.world_size}): it counts the micro-batches of all of them")
        self.out = check_out_dir(cfg)
        dtype = hardware.pick_dtype(t.dtype, device)
        hardware.setup(device)
        self.ds = load_dataset(cfg, d)

        torch.manual_seed(t.seed)  # the same initial weights on every rank
        self.model = GPT(GPTConfig(**{**dataclasses.asdict(cfg.model), "vocab_size": self.ds.vocab_size})).to(device)
        self.params = list(self.model.parameters())
        self.optimizer = build_optimizer(self.model.param_groups(), t, device.type)
        self.scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        self.rs = RunState()
        if t.resume:
            ckpt = load_checkpoint(self.out / LAST, map_location=device)
            self.rs = restore(ckpt, cfg, self.ds, self.model, self.optimizer, self.scaler, self.out / LAST)
            del ckpt

        self.local_accum = t.gradient_accumulation_steps // d.world_size
        self.tokens_per_step = t.batch_size * cfg.model.block_size * t.gradient_accumulation_steps
        self.flops_per_token = self.model.flops_per_token()
        self.peak = hardware.peak_flops(device, dtype) * d.world_size
        est_step_seconds = self.tokens_per_step * self.flops_per_token / (0.5 * self.peak)
        self.compiled = torch.compile(self.model) if should_compile(cfg, device, est_step_seconds) else self.model
        self.train_model = (torch.nn.parallel.DistributedDataParallel(
            self.compiled, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
            if d.enabled else self.compiled)
        self.autocast = hardware.autocast(device, dtype)
        self.batches = Batches(self.ds, cfg.model.block_size, t.batch_size, t.eval_iters, t.seed, device)
        self.metrics = self._open_run_dir(dtype) if d.is_main else None
        self.progress = Progress(cfg, self.rs, d.is_main)

    def _open_run_dir(self, dtype: torch.dtype):
        """The run directory, written only now that every check has passed; returns metrics.jsonl to append to."""
        out, cfg, ds, rs = self.out, self.cfg, self.ds, self.rs
        out.mkdir(parents=True, exist_ok=True)
        if self.t.resume:
            trim_metrics(out / METRICS, rs.step)
        else:
            for name in (LAST, BEST, METRICS):  # of the run being replaced (--train.overwrite=true)
                (out / name).unlink(missing_ok=True)
        (out / "config.toml.tmp").write_text(to_toml(cfg), encoding="utf-8")
        os.replace(out / "config.toml.tmp", out / "config.toml")
        rank_file = ds.meta["tokenizer"].get("file")
        if rank_file:  # so that sample.py needs only the run directory
            shutil.copyfile(ds.dir / rank_file, out / rank_file)
        m = cfg.model
        print(f"model: {self.model.num_params() / 1e6:.2f}M parameters, {m.n_layer} layers, {m.n_embd} wide, "
              f"context {m.block_size}; vocab {ds.vocab_size}")
        print(f"training on {self.device} ({dtype}, compile={self.compiled is not self.model}) x{self.d.world_size}, "
              f"{self.tokens_per_step:,} tokens/step, optimizer {self.t.optimizer}, schedule {self.t.schedule}; "
              f"run directory {out}" + (f", resuming at step {rs.step}" if self.t.resume else ""))
        return open(out / METRICS, "a", encoding="utf-8")

    def close(self) -> None:
        self.progress.bar.close()
        if self.metrics:
            self.metrics.close()

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def save(self, best: bool = False, last: bool = False) -> None:
        if self.d.is_main and (best or last):
            state = checkpoint_state(self.model, self.optimizer, self.scaler, self.cfg, self.ds, self.rs)
            for name, wanted in ((BEST, best), (LAST, last)):
                if wanted:
                    save_checkpoint(self.out / name, state)

    def step(self, multiplier: float) -> tuple[float, float]:
        """One optimizer step at ``multiplier`` x peak learning rates: (mean loss, seconds), equal on all ranks."""
        t, d, rs = self.t, self.d, self.rs
        t0 = time.perf_counter()
        set_lr(self.optimizer, multiplier)
        torch.manual_seed(mix_seed(t.seed, STREAM_DROPOUT, rs.step, d.rank))
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.local_accum):
            x, y = self.batches.train(rs.step, d.rank * self.local_accum + i)
            last = i == self.local_accum - 1  # DDP all-reduces the gradients once, after the last micro-batch
            with contextlib.nullcontext() if last or not d.enabled else self.train_model.no_sync():
                with self.autocast:
                    _, loss = self.train_model(x, y)
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
                                    .to(self.device)]), d) / d.world_size
        return both[0].item(), both[1].item()

    def evaluate(self) -> None:
        """Loss and bits per byte on the fixed eval windows; best.pt when val improved."""
        t0, rs, ds = time.perf_counter(), self.rs, self.ds
        losses = evaluate(self.compiled, self.batches, self.cfg, self.d, self.autocast)
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteLoss(f"the evaluation loss became {losses['val']} at step {rs.step}; "
                                + ADVICE.format(lr=self.t.learning_rate))
        bpb = {s: losses[s] / math.log(2) / ds.bytes_per_token(s) for s in losses}
        self.log({"step": rs.step, "train_seconds": round(rs.train_seconds, 3), "val_loss": losses["val"],
                  "val_bpb": bpb["val"], "train_loss": losses["train"], "train_bpb": bpb["train"],
                  "eval_seconds": round(time.perf_counter() - t0, 3)})
        self.progress.write(f"step {rs.step}: val {bpb['val']:.4f} bpb (loss {losses['val']:.4f}), "
                            f"train {bpb['train']:.4f} bpb, {rs.train_seconds:.1f}s")
        improved = losses["val"] < rs.best_val_loss
        rs.best_val_loss = min(rs.best_val_loss, losses["val"])
        self.save(best=improved)

    def run(self) -> RunState:
        """Train until max_iters or max_seconds, evaluating, logging and checkpointing on the way."""
        t, rs = self.t, self.rs
        if not t.resume:
            self.evaluate()
        window_tokens, window_seconds, last_eval, last_ckpt = 0, 0.0, rs.step, rs.step
        while rs.step < t.max_iters and not (t.max_seconds > 0 and rs.train_seconds >= t.max_seconds):
            multiplier = lr_multiplier(rs.step, rs.train_seconds, t)
            loss, seconds = self.step(multiplier)
            if not math.isfinite(loss):
                raise NonFiniteLoss(f"the training loss became {loss} at step {rs.step + 1}; "
                                    + ADVICE.format(lr=t.learning_rate))
            rs.step += 1
            rs.train_seconds += seconds
            rs.tokens_seen += self.tokens_per_step
            window_tokens += self.tokens_per_step
            window_seconds += seconds
            postfix = None
            if rs.step % t.log_interval == 0:
                tps = window_tokens / window_seconds
                mfu = self.flops_per_token * tps / self.peak
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
                self.save(last=True)
                last_ckpt = rs.step
        if last_eval != rs.step:
            self.evaluate()
        if last_ckpt != rs.step or not (self.out / LAST).exists():
            self.save(last=True)
        return rs


def report(cfg: Config, rs: RunState, ds: Dataset, out: Path) -> None:
    """The run's summary: what was trained, how well, and where its files are."""
    best = rs.best_val_loss
    bpb = best / math.log(2) / ds.bytes_per_token("val") if math.isfinite(best) else float("nan")
    print(f"\ndone: {rs.step} steps, {rs.tokens_seen:,} tokens in {rs.train_seconds:.1f}s of training; "
          f"best val {bpb:.4f} bits/byte (loss {best:.4f} nats/token)")
    print(f"files in {out}/: {LAST} (last), {BEST} (best val), {METRICS}, config.toml")


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, "train.py", ("data", "model", "train", "sample"), SUMMARY)
    train(cfg)
    return 0


if __name__ == "__main__":
    run_main(main)
