"""Choices made for speed, by measurement on this machine: when torch.compile pays (compiling the
repeated block once), and when bf16 autocast is faster than float32 on a CPU.

``torch.compile`` fuses a block's small element-wise kernels (norms, rotary positions, the MLP's
activation, dropout) into a few larger ones, which matters most where those kernels are many and
small: the modern options on a CPU.  But compiling costs time up front, and on a CPU a whole model's
first (cold) compile can take longer than a short run saves.  Three things bring that cost down:

* **Regional compilation on a CPU** (PyTorch's recipe "Reducing torch.compile cold start compilation
  time with regional compilation"): the transformer block is compiled, not the whole model.  Every
  block runs the same code, and with parameters treated as inputs (dynamo's default) the compiled
  block is reused for every layer, so the cost no longer grows with depth.  The embeddings, the final
  norm, the head and the loss run eagerly; they are a few large kernels already.  On CUDA, where a
  compile pays back within minutes whatever it covers, the whole forward is compiled with its loss
  (:func:`compile_scope`), so that inductor fuses the head's output with the cross-entropy: eagerly
  the logits (batch x context x vocabulary, a small model's largest activation) are written by the
  matmul in bf16 and then again, twice, in fp32 by the loss's upcast and log-softmax.
* **A cache kept across runs**: inductor's compiled kernels and graphs live in
  ``TORCHINDUCTOR_CACHE_DIR``; unless the user set it, it is put under the user's cache directory
  (``~/.cache/smallgpt/torchinductor``) so that it survives reboots, and a second run of the same
  shapes compiles from the cache in seconds ("warm") instead of from scratch ("cold").
* **A record of what compiling cost here** (:class:`Record`, a small JSON file in that cache):
  per model shape, batch, precision, device and torch version, the last compile's seconds and the
  measured seconds per step compiled and eagerly.  ``train.compile = 'auto'`` then compiles a CPU run
  when the steps it expects to take, times the measured saving per step, repay the measured compile
  cost; before anything is measured for a shape it compiles only runs long enough to repay a cold
  compile (COLD_COMPILE_SECONDS).  On CUDA it always compiles: there compile pays within minutes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from smallgpt.safefiles import atomic_write

COLD_COMPILE_SECONDS = 30.0  # assumed first compile of a shape on a CPU, until one is measured
WARM_COMPILE_SECONDS = 5.0  # assumed compile from the cache, until one is measured
PRIOR_SAVING = 0.10  # assumed saving per step on a CPU, until both steps are measured
BF16_MARGIN = 0.05  # bf16 must be this much faster end to end to be chosen
RECORD_FILE = "smallgpt-compile.json"


def use_persistent_cache() -> Path:
    """Point inductor's cache at the user's cache directory (unless TORCHINDUCTOR_CACHE_DIR is set)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "smallgpt" / "torchinductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


COMPILE_SCOPES = {"model": "the whole model with its loss", "blocks": "each block (regional compilation)"}


def compile_scope(device: torch.device) -> str:
    """What torch.compile covers on ``device`` (a key of COMPILE_SCOPES): the whole model on CUDA, the blocks
    elsewhere (see the module's doc)."""
    return "model" if device.type == "cuda" else "blocks"


def compile_blocks(model: torch.nn.Module) -> None:
    """Compile each transformer block of a model.GPT in place (its parameter names do not change)."""
    for block in model.transformer.h:
        block.compile()


def compile_model(model: torch.nn.Module, device: torch.device) -> str:
    """Compile a model.GPT in place for ``device``, as :func:`compile_scope` says; returns the scope.  In place
    (``nn.Module.compile``): the parameter names do not change, and nothing compiles before the first call."""
    scope = compile_scope(device)
    if scope == "model":
        model.compile()
    else:
        compile_blocks(model)
    return scope


@contextlib.contextmanager
def eager(model: torch.nn.Module):
    """Run a model.GPT, and its blocks, uncompiled inside this context, then as they were.

    For sampling from a model compiled for training: a KV cache grows by one token a step, so a
    compiled block would recompile for each new shape (and warn when dynamo's recompile limit is hit)
    for a few hundred tokens that run as fast eagerly.  ``nn.Module.compile`` keeps the compiled call
    in ``_compiled_call_impl``; without it the module calls its forward as usual.
    """
    saved = [(m, m._compiled_call_impl) for m in (model, *model.transformer.h)]
    for m, _ in saved:
        m._compiled_call_impl = None
    try:
        yield model
    finally:
        for m, compiled in saved:
            m._compiled_call_impl = compiled


@dataclass
class StepTimes:
    """What was measured for one shape and precision on this machine."""
    cold_compile: float | None = None  # seconds of the first compile (no cache)
    warm_compile: float | None = None  # seconds of the last compile from the cache
    compiled_step: float | None = None  # seconds per step, compiled
    eager_step: float | None = None  # seconds per step, eagerly


class Record:
    """Measurements of this machine (a JSON file beside the compile cache), keyed by what they depend on."""

    def __init__(self, key: dict):
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.path = use_persistent_cache() / RECORD_FILE

    def _all(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def get(self) -> dict:
        return self._all().get(self.key, {})

    def times(self) -> StepTimes:
        entry = self.get()
        return StepTimes(**{f: entry.get(f) for f in StepTimes.__dataclass_fields__})

    def update(self, **values) -> None:
        """Merge measured ``values`` into this key's entry (best effort: a read-only cache is no error)."""
        everything = self._all()
        everything[self.key] = {**everything.get(self.key, {}), **values, "when": time.strftime("%Y-%m-%d %H:%M")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(everything, indent=1))
        except OSError:
            pass


def compile_pays(setting: str, device: torch.device, expected_steps: float, step_seconds: float,
                 m: StepTimes) -> tuple[bool, str]:
    """Whether to compile, and why in words: ``train.compile`` ('true', 'false', 'auto')."""
    if setting != "auto":
        return setting == "true", f"train.compile={setting}"
    if device.type == "cuda":
        return True, "auto: always on CUDA"
    if device.type != "cpu":
        return False, f"auto: not on {device.type}"
    eager = m.eager_step or step_seconds
    if m.cold_compile is None and m.warm_compile is None:
        cost, how = COLD_COMPILE_SECONDS, "a first compile of this shape, assumed"
    elif m.warm_compile is None:
        cost, how = WARM_COMPILE_SECONDS, "a compile from the cache, assumed"
    else:
        cost, how = m.warm_compile, "the last compile from the cache"
    saving = 1 - m.compiled_step / m.eager_step if m.compiled_step and m.eager_step else PRIOR_SAVING
    saved = saving * eager * expected_steps
    return saved > cost, (f"auto: {expected_steps:,.0f} steps at {100 * saving:.0f} % saved each: {saved:.0f} s "
                          f"against {cost:.0f} s ({how})")


def faster_precision(forward_backward: Callable[[], None], record: Record,
                     repeats: int = 3) -> tuple[torch.dtype, str]:
    """float32 or bfloat16 on a CPU: whichever runs ``forward_backward`` (under the autocast of
    the given dtype) faster, measured once per shape (then read from ``record``)."""
    known = record.get().get("bf16_speedup")
    if known is None:
        times = {torch.float32: [], torch.bfloat16: []}
        for dtype in times:  # one untimed pass each: first-call allocations, oneDNN's kernel choice
            forward_backward(dtype)
        for _ in range(repeats):
            for dtype in times:
                t0 = time.perf_counter()
                forward_backward(dtype)
                times[dtype].append(time.perf_counter() - t0)
        known = min(times[torch.float32]) / min(times[torch.bfloat16])
        record.update(bf16_speedup=known)
    chosen = torch.bfloat16 if known > 1 + BF16_MARGIN else torch.float32
    return chosen, f"auto: bf16 autocast ran a forward and backward {known:.2f}x as fast as float32 here"
