"""A training run: the run directory, evaluation, metrics, checkpoints, the schedule, the progress bar.

:func:`train` runs (or continues) the run a ``Config`` describes on this process; under ``torchrun``
one rank of many (``smallgpt/distributed.py``).  The step it repeats is ``smallgpt/step.py``, the
windows it reads ``smallgpt/batches.py``.

How it stays exactly resumable (nanoGPT loses its data position on resume):

* **Stateless data**: the windows of a step are a pure function of (seed, step, micro-batch), and
  dropout is reseeded from (seed, step, rank) every step, so nothing about the data order is stored.
* **Whole state in the checkpoint**: weights, optimizer moments, GradScaler, step, best val loss,
  training time, RNG states; written atomically (``smallgpt/checkpoint.py``), never after a
  non-finite loss.
* **metrics.jsonl** is cut back to the checkpoint's step on resume, so it reads as one run.

On a CPU, losses after a SIGKILL and ``--train.resume=true`` are bitwise those of a run never
interrupted (with ``max_seconds`` the schedule follows wall-clock time, so only up to timing).

Nothing is lost: the run directory is locked for the run's whole life before anything slow happens
(``smallgpt/safefiles.py``), a new run never replaces a finished one unless asked, and Ctrl-C or
SIGTERM finishes the step, writes a checkpoint and stops.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import shlex
import shutil
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from model import GPT
from smallgpt import loggers, speed
from smallgpt.averaging import WeightAverage
from smallgpt.batches import Batches
from smallgpt.checkpoint import (BEST, CONFIG, LAST, RunState, check_resumable, load_checkpoint, restore, save_checkpoint,
                                 training_state)
from smallgpt.cli import comma_list
from smallgpt.config import Config, TrainConfig
from smallgpt.curves import METRICS, analyse, evaluations, read_records

from smallgpt.dataset import Dataset, open_dataset
from smallgpt.distributed import Proc, all_sum, check_same_data, join_process_group, process_and_device
from smallgpt.ensemble import load_teachers
from smallgpt.errors import UserError
from smallgpt.generation import generate_texts
from smallgpt.optim import lr_multiplier
from smallgpt.pipeline import prepare
from smallgpt.pretrained import Start
from smallgpt.safefiles import DirLock, atomic_write
from smallgpt.step import TrainStep


def load_dataset(cfg: Config, proc: Proc) -> Dataset:
    """Prepare the corpus if needed and open it; every process calls this before any collective.

    prepare() holds a lock on the dataset while it builds or checks it, so the first process of a
    machine builds it and the others wait (without a collective, so without a timeout) and then find it
    built.  It refuses a corpus with less than one window of block_size + 1 tokens per split.
    """
    return open_dataset(prepare(cfg.data, min_tokens=cfg.model.block_size + 1, progress=proc.is_main,
                                quiet=not proc.is_main))


ADVICE = ("training stopped and no checkpoint was written after it (the last good one is intact). "
          "Lower --train.learning_rate (now {lr:g}) or raise --train.warmup_iters, keep --train.grad_clip on, "
          "or train in float32/bfloat16 instead of float16")


class NonFiniteLoss(UserError):
    """Training diverged: not a typo, but the settings' fault, so it is reported like a user's error."""


def check_out_dir(t: TrainConfig) -> Path:
    """Refuse to start a new run over a finished one, or one that would write over its own source."""
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
    if not t.resume and (out / LAST).exists() and not t.overwrite:
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
    atomic_write(path, "".join(keep))


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, batches: Batches, eval_iters: int, proc: Proc, ctx,
                  splits: tuple[str, ...] = ("val", "train")) -> dict[str, float]:
    """Mean loss over the fixed eval windows of ``splits``, shared out over ranks and all-reduced."""
    model.eval()
    out = {}
    for split in splits:
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


def closing_sample(model: GPT, ds: Dataset, cfg: Config, device: torch.device,
                   autocast: contextlib.AbstractContextManager) -> str:
    """A short sample from the start of a fresh document (sample.py is the full sampler), in the run's precision
    (``autocast``, TrainStep.autocast)."""
    settings = dataclasses.replace(cfg.sample, num_samples=1, max_new_tokens=min(cfg.sample.max_new_tokens, 300))
    model.eval()
    with speed.eager(model), autocast:  # the KV cache changes shapes every token: no recompiling for a sample
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
                with trainer.averaged() as model:
                    print(closing_sample(model, trainer.ds, cfg, device, trainer.step.autocast))
        finished = True
        return rs
    finally:
        if dist.is_initialized():
            if finished:  # no process may tear the group down while another still uses it (gloo aborts then)
                dist.barrier()
            dist.destroy_process_group()


class Trainer:
    """One run on one process: the dataset, a TrainStep, the schedule, evaluation, and (rank 0 only)
    the run directory's files, which it holds a lock on for the whole run (smallgpt/safefiles.py).

    The run directory and its lock come first, before the dataset, the model and every speed probe, so
    that a second run into it is refused at once and a kill at any moment leaves either nothing of this
    run or a run directory that ``--train.resume=true`` continues (from its checkpoint, or from the start
    when it has none yet).  What a run replaces (``--train.overwrite=true``) is removed only once every
    check has passed, and a start that fails removes the directory it made."""

    def __init__(self, cfg: Config, proc: Proc, device: torch.device):
        t = self.t = cfg.train
        self.cfg, self.proc, self.device = cfg, proc, device
        self.out = Path(t.out_dir)
        self.lock = DirLock(self.out / ".lock", f"the run directory {self.out}",
                            "wait for that run to end, or choose another --train.out_dir")
        self.log: loggers.RunLog | None = None
        self.interrupted: int = 0  # the signal that asked the run to stop, once one has
        self.made_dir = False  # whether this process made the run directory (removed again if the start fails)
        try:
            self.resuming = self._claim_run_dir() if proc.is_main else t.resume and (self.out / LAST).is_file()
            loggers.check(t.tensorboard, t.wandb_project)  # before anything slow
            start = Start(cfg)  # from scratch, or from train.init_from: its shape, tokenizer and weights
            cfg = self.cfg = start.cfg
            if proc.is_main and not (self.out / LAST).exists():  # a run that holds nothing yet says what it is
                self._write(lambda: atomic_write(self.out / CONFIG, cfg.to_toml()))
            self.ds = load_dataset(cfg, proc)  # before any collective: a first preparation can be long
            join_process_group(proc, device)
            check_same_data(self.ds, proc, device)
            self.batches = Batches(self.ds.train, self.ds.val, cfg.model.block_size, t.batch_size, t.eval_iters,
                                   t.seed, device)
            model_config = start.model_config(self.ds)
            self.step = TrainStep(model_config, t, device, self.batches, proc,
                                  weights=None if self.resuming else start.weights(),
                                  teachers=load_teachers(t.distill_from, self.ds, model_config, device))
            self.average = (WeightAverage(self.step.model, t.average, t.averaging_from, t.average_beta,
                                          t.average_every, t.average_k) if t.average else None)
            self.rs = RunState()
            if self.resuming:
                ckpt = load_checkpoint(self.out / LAST, map_location=device)
                check_resumable(ckpt, self.out / LAST, cfg.to_dict(), self.dataset_info, self.ds.meta["tokenizer"])
                self.rs = restore(ckpt, self.step.model, self.step.optimizer, self.step.scaler)
                if self.average:
                    self.average.load_state_dict(ckpt["average"])
                del ckpt
            if proc.is_main:
                self._write(self._open_run_dir)
                self._banner()
        except BaseException:
            self._abandon()
            raise
        self.progress = Progress(t, self.rs, proc.is_main)

    @property
    def dataset_info(self) -> dict[str, str]:
        return {"dir": str(self.ds.dir), "fingerprint": self.ds.fingerprint}

    @property
    def choices(self) -> dict[str, str]:
        """What ``train.dtype`` and ``train.compile`` chose, as settings that repeat it, and why."""
        s = self.step
        return {"train.dtype": f"{str(s.dtype).removeprefix('torch.')} ({s.dtype_reason})",
                "train.compile": f"{str(s.compiled).lower()} ({s.compile_reason})"}

    def _write(self, write) -> None:
        """Call ``write`` (files of the run directory); a full disk or a read-only directory is one line."""
        try:
            write()
        except OSError as e:
            raise UserError(f"cannot write the run directory {self.out}: {e.strerror or e}; "
                            "free some disk space or choose another --train.out_dir") from None

    def _claim_run_dir(self) -> bool:
        """The run directory, made and locked, or refused (a file, another run's, a finished run): before
        anything slow.  Returns whether the run continues a checkpoint there."""
        t, out = self.t, self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--train.out_dir={out} is a file; give a directory")
        self.made_dir = not out.exists()
        self._write(lambda: out.mkdir(parents=True, exist_ok=True))
        self.lock.acquire()  # refused at once if another process holds it
        check_out_dir(t)
        if t.resume and not (out / LAST).is_file():
            print(f"note: --train.resume=true, but {out} holds no checkpoint yet: starting the run from step 0",
                  file=sys.stderr)
            return False
        return t.resume

    def _abandon(self) -> None:
        """A start that failed: let the directory go, and remove it if this process made it."""
        if self.log:
            self.log.close()
        if self.made_dir and not (self.out / LAST).exists():
            rank_file = self.ds.meta["tokenizer"].get("file") if hasattr(self, "ds") else None
            for name in (CONFIG, METRICS, ".lock", rank_file):
                if name:
                    (self.out / name).unlink(missing_ok=True)
            try:
                self.out.rmdir()  # only if nothing else is in it
            except OSError:
                pass
        self.lock.release()

    def _open_run_dir(self) -> None:
        """The run directory's files, written only now that every check has passed: the old run's files
        replaced (a new run) or metrics.jsonl cut back to the checkpoint (a resume), the config with what the
        automatic settings chose, the tokenizer, and the records."""
        out, t = self.out, self.t
        if self.resuming:
            trim_metrics(out / METRICS, self.rs.step)
        else:
            for name in (LAST, BEST, METRICS):  # of the run being replaced (--train.overwrite=true)
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / loggers.TENSORBOARD_DIR, ignore_errors=True)
        auto = {key: f"chose {value}" for key, value in self.choices.items() if getattr(t, key.split(".")[1]) == "auto"}
        atomic_write(out / CONFIG, self.cfg.to_toml(notes=auto))
        rank_file = self.ds.meta["tokenizer"].get("file")
        if rank_file:  # so that sample.py needs only the run directory
            shutil.copyfile(self.ds.dir / rank_file, out / rank_file)
        self.log = loggers.RunLog(out, t.tensorboard, t.wandb_project, t.wandb_run, self.cfg.to_dict(),
                                  self.rs.step if self.resuming else None)
        self.log.write({"step": self.rs.step, "chosen": self.choices})  # what 'auto' chose here, and why

    def _banner(self) -> None:
        m, t, s = self.cfg.model, self.t, self.step
        print(f"model: {s.model.num_params() / 1e6:.2f}M parameters, {m.n_layer} layers, {m.n_embd} wide, "
              f"context {m.block_size}; vocab {self.ds.vocab_size}")
        print(f"precision {str(s.dtype).removeprefix('torch.')} ({s.dtype_reason}); compile={s.compiled} "
              f"({s.compile_reason})")
        print(f"training on {self.device} x{self.proc.world_size}, "
              f"{s.tokens_per_step:,} tokens/step, optimizer {t.optimizer}, schedule {t.schedule}; "
              f"run directory {self.out}" + (f", resuming at step {self.rs.step}" if self.resuming else "")
              + (f", starting from {t.init_from}" if t.init_from and not self.resuming else ""))
        if self.average:
            print(f"weight averaging: {t.average} from {t.averaging_from:.0%} of the run"
                  + (f", beta {t.average_beta:g}" if t.average == "ema" else
                     f", the last {t.average_k} snapshots {t.average_every} steps apart")
                  + "; evaluations, best.pt and every checkpoint's model are the average")
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
        if self.log:
            self.log.close()
        self.lock.release()

    def record(self, record: dict[str, Any]) -> None:
        """A record of metrics.jsonl (and of TensorBoard and W&B when asked); rank 0 only."""
        if self.log:
            self.log.write(record)

    def save(self, *names: str) -> None:
        """Write the checkpoint files ``names`` (LAST, BEST) of the run directory; rank 0 only.
        Weights that are not all finite are never written: the last good checkpoint stays."""
        if self.proc.is_main and names:
            s = self.step
            if not torch.stack([torch.isfinite(p).all() for p in s.params]).all():
                raise NonFiniteLoss(f"the weights are not finite at step {self.rs.step}; "
                                    + ADVICE.format(lr=self.t.learning_rate))
            state = training_state(s.model, s.optimizer, s.scaler, self.cfg.to_dict(), self.dataset_info,
                                   self.ds.meta["tokenizer"], self.rs, str(s.dtype).removeprefix("torch."), self.average)
            for name in names:
                save_checkpoint(self.out / name, state)

    def evaluate(self) -> None:
        """Loss and bits per byte on the fixed eval windows (of the average, with weight averaging); best.pt
        when val improved."""
        t0, rs, ds = time.perf_counter(), self.rs, self.ds
        with self.averaged():
            losses = estimate_loss(self.step.eval_model, self.batches, self.t.eval_iters, self.proc,
                                   self.step.autocast)
        trained = {}  # what averaging bought: the trained weights' own val loss beside the average's
        if self.average and self.average.started:
            trained = estimate_loss(self.step.eval_model, self.batches, self.t.eval_iters, self.proc,
                                    self.step.autocast, splits=("val",))
        if not all(math.isfinite(v) for v in losses.values()):
            raise NonFiniteLoss(f"the evaluation loss became {losses['val']} at step {rs.step}; "
                                + ADVICE.format(lr=self.t.learning_rate))
        bpb = {s: losses[s] / math.log(2) / ds.bytes_per_token(s) for s in losses}
        self.record({"step": rs.step, "train_seconds": rs.train_seconds, "val_loss": losses["val"],
                     "val_bpb": bpb["val"], "train_loss": losses["train"], "train_bpb": bpb["train"],
                     **({"trained_val_loss": trained["val"],
                         "trained_val_bpb": trained["val"] / math.log(2) / ds.bytes_per_token("val")} if trained else {}),
                     "eval_seconds": round(time.perf_counter() - t0, 3)})
        self.progress.write(f"step {rs.step}: val {bpb['val']:.4f} bpb (loss {losses['val']:.4f}), "
                            f"train {bpb['train']:.4f} bpb, {rs.train_seconds:.1f}s")
        if losses["val"] < rs.best_val_loss:
            rs.best_val_loss = losses["val"]
            self.save(BEST)

    def averaged(self) -> contextlib.AbstractContextManager:
        """The model holding the weights the run keeps: the average with weight averaging, else its own."""
        return self.average.applied() if self.average else contextlib.nullcontext(self.step.model)

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
            self.record({"step": rs.step, "compile_seconds": round(seconds, 3), "compile_cache": "warm" if s.warm_cache
                      else "cold"})
            self.progress.write(f"compiled in {seconds:.1f}s ({how}; not counted as training time)")
        if not self.resuming:
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
            if self.average:  # its cost is the run's: counted as training time
                t0 = time.perf_counter()
                self.average.update(rs.step, (rs.train_seconds + seconds) / t.max_seconds if t.max_seconds > 0
                                    else rs.step / max(1, t.max_iters))
                seconds += time.perf_counter() - t0
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
                self.record({"step": rs.step, "loss": loss, "lr": lr, "tokens_per_s": round(tps, 1),
                          "train_seconds": rs.train_seconds, "mfu": round(mfu, 4)})
                postfix = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}", "tok/s": f"{tps:,.0f}", "mfu": f"{100 * mfu:.1f}%"}
                window_tokens, window_seconds = 0, 0.0
            self.progress.update(rs, postfix)
            if self._stop_requested():
                self.interrupted = self.interrupted or int(signal.SIGINT)  # another process was interrupted
                break
            if rs.step % t.eval_interval == 0 or (t.eval_early and rs.step < t.eval_interval
                                                  and rs.step % t.eval_early == 0):
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
    print(f"files in {out}/: {LAST} (last), {BEST} (best val), {METRICS}, {CONFIG}")
    print(f"plot it: python plot.py {shlex.quote(str(out))}")
