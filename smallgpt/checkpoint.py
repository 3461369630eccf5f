"""Checkpoints: written atomically, read back without unpickling code.

A checkpoint is one ``torch.save`` of a dict of tensors and plain data; this module owns
its layout end to end: :func:`training_state` writes it (:data:`FORMAT`), :func:`load_checkpoint`
reads it, :func:`check_resumable` and :func:`restore` continue a run from it, and
:func:`model_from_checkpoint` rebuilds the model for sampling.  Two things nanoGPT users lose
sleep over are ruled out here:

* **A kill mid-write never costs the last good checkpoint.**  The new file is
  written beside the old one under a temporary name, flushed and fsync'ed, then
  ``os.replace``'d onto it (atomic on POSIX and Windows) and the directory is
  fsync'ed so the rename itself survives a power cut.  At every instant the path
  holds either the whole old or the whole new checkpoint.
* **Loading a checkpoint never runs code.**  ``torch.load(weights_only=True)``
  only rebuilds tensors and plain containers, so a checkpoint from a stranger is
  as safe to open as a text file.  Anything else is refused with one line.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from model import GPT, GPTConfig
from smallgpt.averaging import WeightAverage
from smallgpt.errors import UserError
from smallgpt.safefiles import fsync_dir, sweep_temps, temp_path

FORMAT = 1  # bump when the layout of the checkpoint dict changes incompatibly
REQUIRED = ("model", "model_config", "tokenizer")  # what every reader (sample.py, train.py) needs
RESUME = ("optimizer", "step", "best_val_loss", "train_seconds", "tokens_seen", "dataset", "config")  # train.py's
LAST, BEST, CONFIG = "ckpt.pt", "best.pt", "config.toml"  # file names inside a run directory
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # added to parameter names by torch.compile and DDP
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
# model settings added since checkpoints were first written, at the value that describes a checkpoint without
# them: a model_config that lacks vocab_multiple was built unpadded
OLDER_MODEL_CONFIG = {"vocab_multiple": 1}


class _RecordingWriter:
    """A file's ``write`` that remembers the OSError it raised: torch.save reports a failed write (a full
    disk, a file-size limit) as a RuntimeError about zip positions, and the cause is worth telling the user."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: the old file stays intact until the new one is complete.

    A failed write (disk full, no permission) leaves no temporary file and is a UserError; temporary files
    left by a writer killed with SIGKILL are swept, but only those of writers on this host that have ended.
    """
    path = Path(path)
    tmp = temp_path(path)  # same directory, so the rename is atomic
    writer = None
    try:
        with open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(state, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # including KeyboardInterrupt: never leave a temporary file behind
        tmp.unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else writer.error if writer is not None else None
        if cause is not None:
            raise UserError(f"cannot write checkpoint {path}: {cause.strerror or cause}; the previous checkpoint "
                            "is intact; free some disk space or choose another --train.out_dir") from None
        raise
    fsync_dir(path.parent)
    sweep_temps(path)  # left by a writer killed with SIGKILL


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu",
                    require: Iterable[str] = ()) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain data only).

    A missing, truncated or corrupt file, one holding anything but tensors and plain data, or one
    without the keys every reader needs (plus ``require``) is a :class:`UserError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; give a run directory or a .pt file written by train.py")
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise UserError(f"checkpoint {path} is not a PyTorch checkpoint file (truncated or corrupt); "
                            "delete it and use another checkpoint, or train again")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever fails to parse is a bad file, not a bug here
        if type(e).__name__ == "UnpicklingError" and "Weights only load failed" in str(e):
            raise UserError(f"checkpoint {path} holds Python objects other than tensors and plain data; "
                            "refusing to unpickle it (only load checkpoints written by train.py)") from None
        raise UserError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}); "
                        "delete it and use another checkpoint, or train again") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise UserError(f"{path} is not a smallgpt checkpoint (no 'format' key); "
                        "give a checkpoint written by train.py")
    if ckpt["format"] != FORMAT:
        raise UserError(f"checkpoint {path} has format {ckpt['format']!r}, this code reads format {FORMAT}; "
                        "use the version of smallgpt that wrote it")
    missing = [k for k in (*REQUIRED, *require) if k not in ckpt]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}; it is incomplete, "
                        "use another checkpoint or train again")
    return ckpt


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or the one to use in a run directory: best.pt (best val loss), else ckpt.pt."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise UserError(f"no checkpoint in {p}; train one with python train.py --train.out_dir={p}")
    raise UserError(f"{p} does not exist; give a run directory or a checkpoint file "
                    f"(train one with python train.py --train.out_dir={p})")


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter names as the bare GPT has them, whether saved from a compiled and/or DDP-wrapped model."""
    def bare(name: str) -> str:
        while name.startswith(WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        return name
    return {bare(k): v for k, v in state_dict.items()}


# --------------------------------------------------------------------------- a run's whole state


@dataclass
class RunState:
    """How far a run has come, as its checkpoint records it."""
    step: int = 0  # optimizer steps done
    best_val_loss: float = float("inf")
    train_seconds: float = 0.0  # time spent training, evaluation and checkpoints excluded
    tokens_seen: int = 0


def training_state(model: GPT, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   config: dict[str, Any], dataset: dict[str, str], tokenizer: dict, rs: RunState,
                   precision: str, average: WeightAverage | None = None) -> dict[str, Any]:
    """Everything a resume needs, in types ``torch.load(weights_only=True)`` accepts.

    ``config`` is the run's resolved settings (``Config.to_dict()``), ``dataset`` the dataset's
    ``dir`` and ``fingerprint``, ``tokenizer`` its spec (tokenizer.py), ``precision`` the number format
    the run computed in ('float32', 'bfloat16', 'float16': what ``train.dtype = 'auto'`` chose).  With
    weight averaging (``average``), ``model`` is the average, the weights being trained are
    ``train_model`` and the average's state ``average``: readers take ``model``, a resume all three.
    """
    weights = {"model": model.state_dict()}
    if average is not None:
        weights = {"model": average.averaged_state(), "train_model": weights["model"], "average": average.state_dict()}
    return {"precision": precision,
        "format": FORMAT, **weights, "model_config": dataclasses.asdict(model.config),
        "config": config, "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        **dataclasses.asdict(rs),
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "dataset": dataset, "tokenizer": tokenizer,
    }


def check_resumable(ckpt: dict[str, Any], path: Path, config: dict[str, Any], dataset: dict[str, str],
                    tokenizer: dict) -> None:
    """Refuse to continue ``ckpt`` when its dataset, tokenizer, model or optimizer differ from this run's
    (``config``, ``dataset`` and ``tokenizer`` as :func:`training_state` takes them)."""
    def refuse(what: str) -> None:
        raise UserError(f"cannot resume {path}: {what}; resume with the config and settings of that run, "
                        f"or start a new run in another --train.out_dir")

    missing = [k for k in RESUME if k not in ckpt]
    if missing:
        refuse(f"it lacks {', '.join(missing)} (it was not written by train.py)")
    if ckpt["dataset"].get("fingerprint") != dataset["fingerprint"]:
        refuse(f"its dataset ({ckpt['dataset'].get('dir')}) differs from this one ({dataset['dir']})")
    if ckpt["tokenizer"] != tokenizer:
        refuse("its tokenizer differs from this dataset's")
    now = {k: v for k, v in config["model"].items()}
    diff = [f"model.{k}: checkpoint {v!r}, now {now[k]!r}" for k, v in saved_model_config(ckpt).items()
            if k in now and now[k] != v]
    if diff:
        refuse("model settings differ (" + "; ".join(diff) + ")")
    was, wants = ckpt["config"].get("train", {}).get("optimizer"), config["train"]["optimizer"]
    if was != wants:
        refuse(f"it was trained with optimizer {was!r}, not {wants!r}")
    was, wants = ckpt.get("average", {}).get("kind", ""), config["train"].get("average", "")
    if was != wants:
        refuse(f"it was trained with train.average={was!r}, not {wants!r}")


def restore(ckpt: dict[str, Any], model: GPT, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler) -> RunState:
    """Load weights, optimizer moments, GradScaler and RNG states into this run; return its progress.

    The optimizer's settings (learning rates, betas, ...) stay this run's: only its state is loaded."""
    model.load_state_dict(strip_wrapper_prefixes(ckpt.get("train_model", ckpt["model"])))
    current = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(ckpt["optimizer"])
    for group, settings in zip(optimizer.param_groups, current):
        group.update(settings)
    if scaler.is_enabled() and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt.get("rng", {})
    if "torch" in rng:  # RNG states are CPU byte tensors, whatever map_location moved them to
        torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    return RunState(**{f.name: ckpt[f.name] for f in dataclasses.fields(RunState)})


# --------------------------------------------------------------------------- the model alone


def saved_model_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's model_config, a setting that did not exist when it was written at the value it had then."""
    return {**OLDER_MODEL_CONFIG, **ckpt["model_config"]}


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> GPT:
    """The GPT a checkpoint holds, on ``device``, in eval mode."""
    try:
        config = GPTConfig(**saved_model_config(ckpt))
    except (TypeError, ValueError) as e:
        raise UserError(f"the checkpoint's model_config does not fit this model.py ({e}); "
                        "use the version of smallgpt that wrote it") from None
    model = GPT(config)
    try:
        model.load_state_dict(strip_wrapper_prefixes(ckpt["model"]))
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        detail = (lines[1] if len(lines) > 1 else str(e)).strip()[:200]
        raise UserError(f"the checkpoint's weights do not fit its model_config ({detail}); "
                        "the checkpoint is damaged or from another version") from None
    return model.to(device).eval()
