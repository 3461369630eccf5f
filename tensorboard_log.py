"""TensorBoard scalars of a run, opt-in (``--train.tensorboard=true``): the records of metrics.jsonl,
also written through ``torch.utils.tensorboard.SummaryWriter`` to ``out_dir/tensorboard/``.

metrics.jsonl stays the run's own record (plot.py reads it); this is for people who already watch
their runs in TensorBoard, or in W&B (``wandb sync out_dir/tensorboard``).  tensorboard is an
optional package, so :func:`check` runs before anything slow and turns its absence into one line.

On resume, the steps after the checkpoint were logged once already by the run that was killed; the
new writer is opened with ``purge_step`` = the checkpoint's step + 1, which tells TensorBoard to drop
the older events from that step on, so every step shows once (as metrics.jsonl is cut back).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from errors import UserError

TENSORBOARD_DIR = "tensorboard"  # inside the run directory
TAGS = {  # metrics.jsonl field -> TensorBoard tag (grouped by what they measure)
    "loss": "train/loss", "lr": "train/lr",
    "val_loss": "eval/val_loss", "val_bpb": "eval/val_bpb",
    "train_loss": "eval/train_loss", "train_bpb": "eval/train_bpb",
    "tokens_per_s": "speed/tokens_per_s", "mfu": "speed/mfu",
}


def check() -> None:
    """Fail now, in one line, if tensorboard is not installed (torch.utils.tensorboard needs it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--train.tensorboard=true needs the tensorboard package: pip install tensorboard "
                        "(or leave --train.tensorboard=false)") from None


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
