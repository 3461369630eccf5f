"""When torch.compile pays, and compiling the repeated block once.

``torch.compile`` fuses a block's small element-wise kernels (norms, rotary positions, the MLP's
activation, dropout) into a few larger ones, which matters most where those kernels are many and
small: the modern options on a CPU.  But compiling costs time up front, and on a CPU a whole model's
first (cold) compile can take longer than a short run saves.  Three things bring that cost down:

* **Regional compilation** (PyTorch's recipe "Reducing torch.compile cold start compilation time
  with regional compilation"): the transformer block is compiled, not the whole model.  Every block
  runs the same code, and with parameters treated as inputs (dynamo's default) the compiled block is
  reused for every layer, so the cost no longer grows with depth.  The embeddings, the final norm,
  the head and the loss run eagerly; they are a few large kernels already.
* **A cache kept across runs**: inductor's compiled kernels and graphs live in
  ``TORCHINDUCTOR_CACHE_DIR``; unless the user set it, it is put under the user's cache directory
  (``~/.cache/smallgpt/torchinductor``) so that it survives reboots, and a second run of the same
  shapes compiles from the cache in seconds ("warm") instead of from scratch ("cold").
* **A record of what compiling cost here** (:class:`CompileRecord`, a small JSON file in that cache):
  per model shape, batch, precision, device and torch version, the last compile's seconds and the
  measured seconds per step compiled and eagerly.  ``train.compile = 'auto'`` then compiles a CPU run
  when the steps it expects to take, times the measured saving per step, repay the measured compile
  cost; before anything is measured for a shape it compiles only runs long enough to repay a cold
  compile (COMPILE_PAYBACK_SECONDS).  On CUDA it always compiles: there compile pays within minutes.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

COMPILE_PAYBACK_SECONDS = 600.0  # with nothing measured yet, 'auto' compiles CPU runs expected to train this long
RECORD_FILE = "smallgpt-compile.json"


def use_persistent_cache() -> Path:
    """Point inductor's cache at the user's cache directory (unless TORCHINDUCTOR_CACHE_DIR is set)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "smallgpt" / "torchinductor")
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def compile_blocks(model: torch.nn.Module) -> None:
    """Compile each transformer block of a model.GPT in place (its parameter names do not change)."""
    for block in model.transformer.h:
        block.compile()


@dataclass
class StepTimes:
    """What was measured for one shape on this machine: seconds of the last compile, and per step."""
    compile_seconds: float | None = None
    compiled_step: float | None = None
    eager_step: float | None = None


class CompileRecord:
    """The measured compile costs and step times of this machine, keyed by everything they depend on."""

    def __init__(self, key: dict):
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.path = use_persistent_cache() / RECORD_FILE

    def _all(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def get(self) -> StepTimes:
        entry = self._all().get(self.key, {})
        return StepTimes(**{k: entry.get(k) for k in ("compile_seconds", "compiled_step", "eager_step")})

    def update(self, **values: float) -> None:
        """Merge measured ``values`` into this key's entry (best effort: a read-only cache is no error)."""
        everything = self._all()
        everything[self.key] = {**everything.get(self.key, {}), **values, "when": time.strftime("%Y-%m-%d %H:%M")}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(everything, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass


def pays(setting: str, device: torch.device, expected_steps: float, est_step_seconds: float,
         measured: StepTimes) -> tuple[bool, str]:
    """Whether to compile, and why in words: ``train.compile`` ('true', 'false', 'auto')."""
    if setting != "auto":
        return setting == "true", f"train.compile={setting}"
    if device.type == "cuda":
        return True, "auto: always on CUDA"
    if device.type != "cpu":
        return False, f"auto: not on {device.type}"
    m = measured
    if m.compile_seconds is not None and m.compiled_step is not None and m.eager_step is not None:
        saved = (m.eager_step - m.compiled_step) * expected_steps
        return saved > m.compile_seconds, (f"auto: {expected_steps:,.0f} steps would save {saved:.0f} s against a "
                                           f"{m.compile_seconds:.0f} s compile (measured here before)")
    expected = expected_steps * (m.eager_step or est_step_seconds)
    return expected >= COMPILE_PAYBACK_SECONDS, (f"auto: a {expected:.0f} s run, nothing measured for this shape "
                                                 f"yet (compiles runs of {COMPILE_PAYBACK_SECONDS:.0f} s or more)")
