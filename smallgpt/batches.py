"""The windows a run trains and evaluates on, each a pure function of its indices.

The windows of global micro-batch ``k`` of optimizer step ``s`` are drawn by a generator seeded from
``(seed, s, k)``, so nothing about the data order has to be stored: a run resumed at step ``s`` draws
exactly what the uninterrupted run drew, and a 2-process run draws the same windows as a 1-process run
with the same global batch (rank ``r`` of ``W`` takes micro-batches ``r·A/W .. (r+1)·A/W - 1`` of
``A``).  The evaluation windows are fixed: the same at every evaluation.
"""
from __future__ import annotations

import numpy as np
import torch

STREAM_TRAIN, STREAM_EVAL, STREAM_DROPOUT = 0, 1, 2  # independent random streams under one seed


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
