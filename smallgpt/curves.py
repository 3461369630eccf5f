"""Learning curves: a run's ``metrics.jsonl`` read back, and what its validation curve says.

train.py writes the records (one JSON object per line: training records with ``loss``, ``lr``,
``tokens_per_s``; evaluation records with ``val_bpb`` and, when measured, ``train_bpb``); its closing
summary and plot.py read them back here, so the rule that names a curve "still improving",
"flattened" or "overfitting" is written once.

The rule, on the evaluations in order (``tol`` = :data:`FLAT_BPB`, ``k`` = :data:`PATIENCE`):

* **overfitting**: the last ``k`` evaluations all come after the best one and are each more than
  ``tol`` above it, while train bits per byte fell from the best evaluation to the last — the model
  learns its training text better and everything else worse (the classic picture of Prechelt,
  "Early Stopping — But When?", 1998: stop at the minimum of the validation curve, which best.pt keeps);
* **turned up**: the same rise of val, but train did not fall (or was not measured) — not
  overfitting but training getting worse, most often a learning rate too high for the late run;
* **flattened**: otherwise, if some evaluation is followed by at least ``k`` more that all stay
  within ``tol`` below it — the earliest such evaluation is where the curve flattened;
* **still improving**: otherwise (including runs of fewer than ``k + 1`` evaluations).

``tol`` is in bits per byte, so the rule reads the same for every tokenizer; ``k`` evaluations, not
one, so that a single noisy evaluation neither starts nor ends a verdict.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"  # inside a run directory
FLAT_BPB = 0.01  # a change of val bits per byte smaller than this is "flat"
PATIENCE = 3  # evaluations a verdict needs behind it


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in order; a line that does not parse (the torn last line of a
    run killed mid-write, or of one still writing) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            out.append(record)
    return out


def evaluations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "val_bpb" in r]


@dataclass
class Curve:
    """What a validation curve says: its best point and its state at the end."""
    best_bpb: float
    best_step: int
    best_seconds: float
    last_bpb: float
    state: str  # 'still improving', 'flattened', 'overfitting', 'turned up'
    since_step: int | None  # where it flattened, or the best from which it turned up; None while improving
    since_change: float  # bpb change of val since since_step (improving: over the last k evaluations)
    train_change: float | None  # bpb change of train over the same span, when measured
    evaluations: int  # how many the verdict rests on (after since_step; improving: the last k)
    tol: float = FLAT_BPB  # the tolerance the verdict used

    def describe(self) -> str:
        """One line for a person: the best point, then the verdict with its evidence."""
        best = (f"best val {self.best_bpb:.4f} bits/byte at step {self.best_step} "
                f"({self.best_seconds:.1f}s of training)")
        n = self.evaluations
        evals = f"{n} evaluation{'s' * (n != 1)}"
        if self.state == "overfitting":
            what = (f"overfitting since step {self.since_step}: val rose {self.since_change:+.4f} over the "
                    f"{evals} since while train fell {self.train_change:+.4f} (best.pt keeps the best)")
        elif self.state == "turned up":
            train = "" if self.train_change is None else f" and train {self.train_change:+.4f}"
            what = (f"turned up after step {self.since_step}: val rose {self.since_change:+.4f}{train} over "
                    f"the {evals} since; not overfitting: try a lower learning rate")
        elif self.state == "flattened":
            what = (f"flattened from step {self.since_step}: the {evals} since never beat it by more than "
                    f"{self.tol} bits/byte (val {self.since_change:+.4f} since)")
        elif n:
            what = f"still improving: val {self.since_change:+.4f} over the last {evals}"
        else:
            what = "still improving (too few evaluations to tell more)"
        return f"{best}; {what}"


def analyse(evals: list[dict[str, Any]], tol: float = FLAT_BPB, k: int = PATIENCE) -> Curve | None:
    """The verdict of the module docstring's rule on evaluation records (``step``, ``train_seconds``,
    ``val_bpb``, optional ``train_bpb``) in order; None without any."""
    if not evals:
        return None
    val = [r["val_bpb"] for r in evals]
    b = min(range(len(val)), key=val.__getitem__)  # the first best
    best, last = evals[b], evals[-1]
    curve = dict(best_bpb=val[b], best_step=best["step"], best_seconds=best["train_seconds"], last_bpb=val[-1],
                 tol=tol)
    after = len(val) - 1 - b
    if after >= k and all(v > val[b] + tol for v in val[-k:]):
        trains = (best.get("train_bpb"), last.get("train_bpb"))
        train_change = None if None in trains else trains[1] - trains[0]
        state = "overfitting" if train_change is not None and train_change < 0 else "turned up"
        return Curve(**curve, state=state, since_step=best["step"], since_change=val[-1] - val[b],
                     train_change=train_change, evaluations=after)
    for s in range(len(val) - k):  # the earliest evaluation that the next >= k never beat by more than tol
        if min(val[s + 1:]) >= val[s] - tol:
            return Curve(**curve, state="flattened", since_step=evals[s]["step"], since_change=val[-1] - val[s],
                         train_change=_change(evals, s), evaluations=len(val) - 1 - s)
    s = max(0, len(val) - 1 - k)
    return Curve(**curve, state="still improving", since_step=None, since_change=val[-1] - val[s],
                 train_change=_change(evals, s), evaluations=len(val) - 1 - s)


def _change(evals: list[dict[str, Any]], s: int) -> float | None:
    a, b = evals[s].get("train_bpb"), evals[-1].get("train_bpb")
    return None if a is None or b is None else b - a
