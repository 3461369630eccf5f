"""Weight averaging over the end of a run: an exponential moving average (EMA) or LAWA of the weights.

The weights a run ends with are one noisy point of its last steps; an average of the points around it
sits nearer the middle of the valley they wander in, which generalises better (Polyak and Juditsky
1992; SWA, Izmailov et al. 2018).  Two ways, chosen by ``train.average``:

* ``ema``: after every optimizer step, ``avg <- beta * avg + (1 - beta) * weights``; ``beta`` =
  ``train.average_beta`` (0.98: a window of about 1 / (1 - beta) = 50 steps).
* ``lawa``: the plain mean of the last ``train.average_k`` snapshots taken every
  ``train.average_every`` steps (LAtest Weight Averaging, Kaddour 2022; over the whole averaging window
  it is SWA).

Averaging starts at ``train.average_start`` of the run (a fraction of its steps, or of its time budget
when it has one), by default where the learning rate starts to decay: before that the weights still
move far, and an average of them would lag behind.  Until it starts, the average is the weights
themselves.  What the run evaluates, keeps as ``best.pt`` and writes as every checkpoint's ``model``
(what sample.py, eval.py and export.py read) is the average; the weights being trained go beside it
(``train_model``), with the average's own state, so that a resume continues both exactly.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

AVERAGES = ("", "ema", "lawa")


class WeightAverage:
    """The running average of ``model``'s parameters (its buffers are tables that do not train)."""

    def __init__(self, model: torch.nn.Module, kind: str, start: float, beta: float = 0.98, every: int = 20,
                 k: int = 10):
        if kind not in AVERAGES[1:]:
            raise ValueError(f"kind must be one of {AVERAGES[1:]}, got {kind!r}")
        self.model, self.kind, self.start, self.beta, self.every, self.k = model, kind, start, beta, every, k
        self.params = [p for p in model.parameters()]
        self.avg: list[torch.Tensor] | None = None  # the average, once started
        self.snapshots: list[list[torch.Tensor]] = []  # lawa: the last k snapshots, oldest first

    @property
    def started(self) -> bool:
        return self.avg is not None

    @torch.no_grad()
    def update(self, step: int, progress: float) -> None:
        """After optimizer step ``step`` (1-based), ``progress`` of the run done (0..1)."""
        if progress < self.start:
            return
        weights = [p.detach() for p in self.params]
        if self.kind == "ema":
            if self.avg is None:
                self.avg = [w.clone() for w in weights]
            else:
                torch._foreach_lerp_(self.avg, weights, 1.0 - self.beta)
            return
        if self.avg is None or step % self.every == 0:
            self.snapshots = [*self.snapshots[-(self.k - 1):], [w.clone() for w in weights]] if self.k > 1 else \
                [[w.clone() for w in weights]]
            n = len(self.snapshots)
            self.avg = [torch.stack([s[i] for s in self.snapshots]).sum(0).div_(n) for i in range(len(weights))]

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs: the average and (lawa) the snapshots it is the mean of."""
        return {"kind": self.kind, "avg": self.avg, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.params[0].device
        self.avg = None if state["avg"] is None else [t.to(device) for t in state["avg"]]
        self.snapshots = [[t.to(device) for t in s] for s in state["snapshots"]]

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """The model's state_dict with the average in place of the trained weights (the weights until it starts)."""
        with self.applied():
            return {k: v.clone() for k, v in self.model.state_dict().items()}

    @contextlib.contextmanager
    def applied(self) -> Iterator[torch.nn.Module]:
        """The model holding the average inside this context (for evaluation, saving, sampling), its trained
        weights again after."""
        if self.avg is None:
            yield self.model
            return
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            torch._foreach_copy_(self.params, self.avg)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, trained)
