"""Where a run's records go: ``metrics.jsonl`` always, TensorBoard and Weights & Biases when asked.

``metrics.jsonl`` is the run's own record (one JSON object per line; plot.py and the closing summary
read it back through curves.py), cut back to the checkpoint's step on resume so that it reads as one
run.  The same scalars can also go to

* **TensorBoard** (``--train.tensorboard=true``): ``torch.utils.tensorboard.SummaryWriter`` into
  ``out_dir/tensorboard/``.  On resume the writer is opened with ``purge_step`` = the checkpoint's step
  + 1, which tells TensorBoard to drop the killed run's events from that step on, so every step shows once;
* **W&B** (``--train.wandb_project=NAME``, ``--train.wandb_run`` for the run's name): ``wandb.log``
  with the run's resolved config, files under ``out_dir/wandb/``.  ``WANDB_MODE=offline`` is honoured
  (no network; ``wandb sync out_dir/wandb/offline-run-*`` uploads later).  A resumed run continues the
  same W&B run (its id is kept in the run directory); the steps the killed run had logged after its
  checkpoint were logged already, and W&B keeps those (on a CPU they are bitwise the same).

Both are optional packages: :func:`check` runs before anything slow and turns a missing one into one
line that says how to install it; neither is imported unless asked for.
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import IO, Any

from smallgpt.curves import METRICS
from smallgpt.errors import UserError

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
WANDB_DIR = "wandb"  # inside the run directory: W&B's own files, and the id a resumed run continues
WANDB_ID = "smallgpt-run-id"
TAGS = {  # metrics.jsonl field -> TensorBoard / W&B tag (grouped by what they measure)
    "loss": "train/loss", "lr": "train/lr",
    "val_loss": "eval/val_loss", "val_bpb": "eval/val_bpb",
    "train_loss": "eval/train_loss", "train_bpb": "eval/train_bpb",
    "tokens_per_s": "speed/tokens_per_s", "mfu": "speed/mfu",
}


def check(tensorboard: bool, wandb_project: str) -> None:
    """Fail now, in one line, if a logger that was asked for is not installed."""
    if tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (it needs the tensorboard package)
        except ImportError:
            raise UserError("--train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                            "(or leave --train.tensorboard=false)") from None
    if wandb_project:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("--train.wandb_project needs the wandb package: pip install wandb "
                            "(or leave --train.wandb_project empty)") from None


class TensorBoardLog:
    """A SummaryWriter fed with metrics.jsonl records; the x axis is the optimizer step."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        purge = None if resume_step is None else resume_step + 1  # what the checkpoint holds stays
        self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=purge, flush_secs=30)

    def write(self, record: dict[str, Any]) -> None:
        for key, tag in TAGS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], record["step"])

    def close(self) -> None:
        self.writer.close()


class WandbLog:
    """A W&B run fed with metrics.jsonl records, at the optimizer step; the same run across resumes."""

    def __init__(self, run_dir: Path, project: str, name: str, config: dict[str, Any], resuming: bool):
        import wandb
        directory = Path(run_dir) / WANDB_DIR
        directory.mkdir(parents=True, exist_ok=True)
        id_file = directory / WANDB_ID
        if not (resuming and id_file.is_file()):  # a new run of this directory is a new W&B run
            id_file.write_text(secrets.token_hex(8) + "\n", encoding="utf-8")
        self.run = wandb.init(project=project, name=name or Path(run_dir).resolve().name, dir=str(run_dir),
                              config=config, id=id_file.read_text(encoding="utf-8").strip(), resume="allow")

    def write(self, record: dict[str, Any]) -> None:
        scalars = {tag: record[key] for key, tag in TAGS.items() if key in record}
        if scalars:
            self.run.log(scalars, step=record["step"])

    def close(self) -> None:
        self.run.finish()


class RunLog:
    """The records of one run, on rank 0: appended to metrics.jsonl (flushed, so a kill loses at most the
    line being written) and passed on to the loggers that were asked for."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, wandb_project: str = "", wandb_run: str = "",
                 config: dict[str, Any] | None = None, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS
        self.file: IO[str] = open(self.path, "a", encoding="utf-8")
        self.sinks: list[TensorBoardLog | WandbLog] = []
        if tensorboard:
            self.sinks.append(TensorBoardLog(run_dir, resume_step))
        if wandb_project:
            self.sinks.append(WandbLog(run_dir, wandb_project, wandb_run, config or {}, resume_step is not None))

    def write(self, record: dict[str, Any]) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}; the last checkpoint is intact: free "
                            "some disk space and continue with --train.resume=true") from None
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        self.file.close()
        for sink in self.sinks:
            sink.close()
