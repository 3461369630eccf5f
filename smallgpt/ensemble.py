"""Several models as one: an ensemble's probabilities, and distillation from it.

An ensemble of independently trained models (Kim et al., *Pre-training under infinite compute*,
2025) predicts each token with the mean of its members' probabilities: eval.py scores one
(``eval.checkpoint=a,b``), and a run learns from one (``train.distill_from=a,b``, knowledge
distillation: Hinton, Vinyals and Dean 2015).  Both compute the mean here, once, and every task of
eval.py reads its log-probabilities of given targets from :func:`target_log_probs`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig
from smallgpt.cli import comma_list
from smallgpt.dataset import Dataset
from smallgpt.errors import UserError
from smallgpt.pretrained import Source, load_source

HEAD_ROWS = 1024  # positions whose logits are computed at once: bounds memory at a large vocabulary


def mean_log_probs(logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of the probabilities softmax(logits) of several models (an ensemble), in float32:
    logsumexp over the models of their log-probabilities, less log k.  (..., V) each -> (..., V)."""
    if len(logits) == 1:  # one model: its own log-probabilities (no stacked copy of a vocabulary-wide tensor)
        return F.log_softmax(logits[0].float(), dim=-1)
    logp = torch.stack([F.log_softmax(z.float(), dim=-1) for z in logits])  # (k, ..., V)
    return logp.logsumexp(0) - math.log(len(logits))


def target_log_probs(models: list[GPT], x: torch.Tensor, y: torch.Tensor, autocast) -> torch.Tensor:
    """log p(y | x) under ``models`` (one, or an ensemble's members: the mean of their probabilities) at the
    positions where the target ``y`` (B, T) is not -1, in row-major order: (M,) in float32.

    Only the scored positions' hidden states go through the head, HEAD_ROWS at a time: the logits of a
    whole batch at GPT-2's vocabulary of 50,257 would be gigabytes, and most positions of an evaluation
    batch (padding, context already scored) need none."""
    scored = y >= 0
    targets = y[scored]  # (M,)
    with autocast:
        hs = [model.hidden_states(x)[scored] for model in models]  # each (M, C)
    out = []
    for i, want in enumerate(targets.split(HEAD_ROWS)):
        rows = slice(i * HEAD_ROWS, i * HEAD_ROWS + len(want))
        with autocast:
            logits = [model.head(h[rows]).float() for model, h in zip(models, hs)]  # each (rows, V)
        out.append(mean_log_probs(logits).gather(-1, want[:, None])[:, 0])
    return torch.cat(out) if out else torch.zeros(0, device=x.device)


def distillation_loss(logits: torch.Tensor, loss: torch.Tensor, teachers: list[GPT], x: torch.Tensor,
                      weight: float) -> torch.Tensor:
    """The cross-entropy ``loss`` of the student's ``logits`` (B, T, V) mixed with the KL divergence from
    the teachers' mean probabilities on the same inputs ``x`` (B, T), at temperature 1: ``(1 - weight) x
    loss + weight x KL``.  The teachers' probabilities carry what an ensemble knows about every token's
    alternatives, not only the one that came next."""
    with torch.no_grad():
        target = mean_log_probs([teacher(x)[0] for teacher in teachers])  # (B, T, V)
    kl = F.kl_div(F.log_softmax(logits.float(), dim=-1).flatten(0, 1), target.flatten(0, 1),
                  reduction="batchmean", log_target=True)
    return (1 - weight) * loss + weight * kl


def load_members(spec: str, key: str) -> list[Source]:
    """The models of a comma-separated setting ``key`` (eval.checkpoint), checked to share a tokenizer and
    a context, so that every member reads the same windows of the same tokens."""
    names = comma_list(spec)
    sources = [load_source(name, key) for name in names]
    first = sources[0]
    for name, other in zip(names[1:], sources[1:]):
        if other.identity() != first.identity() or other.config.vocab_size != first.config.vocab_size:
            raise UserError(f"--{key}: {names[0]} and {name} have different tokenizers; an ensemble's members must "
                            "share one")
        if other.config.block_size != first.config.block_size:
            raise UserError(f"--{key}: {names[0]} has a context of {first.config.block_size} tokens and {name} of "
                            f"{other.config.block_size}; an ensemble's members must share one")
    return sources


def load_teachers(spec: str, ds: Dataset, student: GPTConfig, device: torch.device) -> list[GPT]:
    """The models of ``train.distill_from`` (comma-separated), checked to read the dataset's tokens with
    at least the student's context, in eval mode on ``device``."""
    teachers = []
    for name in comma_list(spec):
        source = load_source(name, "train.distill_from")
        source.check_dataset(ds)
        if source.config.vocab_size != student.vocab_size or source.config.block_size < student.block_size:
            raise UserError(f"--train.distill_from: {name} has a vocabulary of {source.config.vocab_size} and a context "
                            f"of {source.config.block_size} tokens; a teacher needs the student's vocabulary "
                            f"({student.vocab_size}) and at least its context ({student.block_size})")
        teachers.append(source.model(device))
    return teachers
