"""Bits per byte of any model on any text: what eval.py measures, and how.

The model (``eval.checkpoint``): a run directory or checkpoint of this project, a Hugging Face GPT-2
directory, or one of OpenAI's sizes by name from the local Hugging Face cache (pretrained.py).  The
text (``data.source``, read as prepare.py reads it: a file, a directory, a glob, a list, a URL; text,
JSON Lines, JSON or Parquet): each file or record a document, encoded with the model's own
tokenizer, ``<|endoftext|>`` before every document as in training, so the first token of the text is
predicted as the start of a document and every byte of the text is scored.  Bits per byte, unlike loss per token, compares models with different
tokenizers: it is the total loss in bits over the number of UTF-8 bytes the scored tokens spell.

**Windows.**  A text longer than the model's context is scored in windows of ``block_size`` tokens
that start ``stride`` tokens apart (default: half the context).  Each window scores only the tokens
that no earlier window scored, so every token is scored exactly once: those of the first window with
what context there is, all later ones with at least ``block_size - stride`` tokens before them.
Disjoint windows (stride = block_size) would score the first tokens of each window with almost no
context, so the figure would depend on where the cuts fall and be worse than the model is; a stride
of 1 gives every token a full context at block_size times the cost.  Half a window is the usual
compromise (transformers' perplexity guide): twice the cost of disjoint windows.

**Ensembles.**  Several models, separated by commas in ``eval.checkpoint``, are scored as one: the
probability of each token is the mean of the members' probabilities (an ensemble of independently
trained models, as in Kim et al., *Pre-training under infinite compute*, 2025).  The members must
share the tokenizer and the context length, so that every member sees the same windows.

The record :func:`evaluate` returns: ``bpb``, ``loss`` (nats per token), ``tokens`` (scored), ``bytes``
(UTF-8 bytes of the scored tokens), and what was measured how.
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import GPT
from smallgpt import hardware
from smallgpt import tokenizer as tok
from smallgpt.cli import need
from smallgpt.config import DataConfig
from smallgpt.corpus import resolve_source
from smallgpt.dataset import downloads_dir
from smallgpt.encoding import default_threads, encode_segments, encoder_for
from smallgpt.ensemble import load_members, mean_log_probs
from smallgpt.errors import UserError

HEAD_ROWS = 1024  # positions whose logits are computed at once: bounds memory at a large vocabulary


@dataclass
class EvalConfig:
    checkpoint: str = "out"  # a run directory, a checkpoint file, a Hugging Face GPT-2 directory, or gpt2, gpt2-medium, gpt2-large, gpt2-xl; several, comma-separated: their ensemble
    stride: int = 0  # tokens from one window's start to the next; 0 = half the model's context
    batch_size: int = 8  # windows per forward pass
    max_tokens: int = 0  # score only the first this many tokens of the text; 0 = all
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = "auto"  # 'auto' (bf16 on GPUs that support it; fp32 on cpu), 'float32', 'bfloat16', 'float16'

    def check(self) -> None:
        need(bool(self.checkpoint), "eval.checkpoint", "is empty; give a run directory, checkpoint or model")
        need(self.stride >= 0, "eval.stride", "must be 0 (half the context) or more")
        need(self.batch_size >= 1, "eval.batch_size", "must be at least 1")
        need(self.max_tokens >= 0, "eval.max_tokens", "must be 0 (all) or more")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "eval.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")


def read_tokens(data: DataConfig, enc: tiktoken.Encoding, progress: bool = True) -> np.ndarray:
    """The text of ``data.source`` as token ids: <|endoftext|>, then the documents with <|endoftext|>
    between them, encoded as prepare.py encodes a corpus (streaming, in parallel)."""
    corpus = resolve_source(data, downloads_dir(data))
    if corpus.shards:
        raise UserError("eval.py scores text; data.source is token shards. Give the text they were made from")
    corpus.progress = progress
    kind = "bytes" if enc.name == "bytes" else "bpe"
    segments = corpus.segments((0, 0), (len(corpus) - 1, int(corpus.sizes[-1])))
    with tempfile.TemporaryDirectory() as d, tqdm(total=corpus.total, unit="B", unit_scale=True, desc="encoding",
                                                  disable=not progress, file=sys.stderr) as bar:
        path = Path(d) / "tokens.bin"
        encode_segments(corpus, segments, encoder_for(enc, kind), enc.eot_token, np.dtype(np.uint32), path,
                        threads=data.threads or default_threads(), bar=bar)
        corpus.close()
        return np.concatenate([np.array([enc.eot_token], dtype=np.uint32), np.fromfile(path, dtype=np.uint32)])


def windows(n: int, block_size: int, stride: int) -> list[tuple[int, int]]:
    """(start, first scored target) of each window over n tokens, so that every target 1..n-1 is scored once.

    The window starting at b reads tokens b .. b+block_size-1 and predicts targets b+1 .. b+block_size
    (target index j - b - 1 for token j); the first scores all of its targets, each later one the
    last ``stride``, i.e. those from index block_size - stride on."""
    out, b = [(0, 0)], 0
    while b + block_size < n - 1:
        b += stride
        out.append((b, block_size - stride))
    return out


@torch.no_grad()
def score(models: list[GPT], tokens: np.ndarray, stride: int, batch_size: int, device: torch.device, autocast,
          progress: bool = True) -> tuple[float, int, int]:
    """(summed loss in nats, scored tokens, windows) of ``models`` (one, or an ensemble's members, whose
    probabilities are averaged) over ``tokens`` in strided windows."""
    L, n = models[0].config.block_size, len(tokens)
    spans = windows(n, L, stride)
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    with tqdm(total=len(spans), unit="window", desc="eval", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(spans), batch_size):
            batch = spans[i:i + batch_size]
            x = torch.zeros(len(batch), L, dtype=torch.long)  # (B, L); positions past the text: padding
            y = torch.full((len(batch), L), -1, dtype=torch.long)  # (B, L); -1: not scored here
            for r, (b, first) in enumerate(batch):
                seg = torch.from_numpy(tokens[b:b + L + 1].astype(np.int64))
                x[r, :len(seg) - 1] = seg[:-1]
                y[r, first:len(seg) - 1] = seg[1 + first:]
            x, y = x.to(device), y.to(device)
            scored = y >= 0
            targets = y[scored]  # (M,): only the positions this batch scores
            with autocast:
                hs = [model.hidden_states(x)[scored] for model in models]  # each (M, C)
            for i, want in enumerate(targets.split(HEAD_ROWS)):
                rows = slice(i * HEAD_ROWS, i * HEAD_ROWS + len(want))
                with autocast:
                    logits = [model.head(h[rows]).float() for model, h in zip(models, hs)]  # each (rows, V)
                total += F.nll_loss(mean_log_probs(logits), want, reduction="sum").double()
            count += len(targets)
            bar.update(len(batch))
    return total.item(), count, len(spans)


def evaluate(e: EvalConfig, data: DataConfig, progress: bool = True) -> dict:
    """Measure ``e.checkpoint`` on ``data.source``; returns the JSON record."""
    t0 = time.time()
    sources = load_members(e.checkpoint, "eval.checkpoint")
    encodings = [s.encoding(data.tokenizer) for s in sources]  # every check before the slow part
    source, enc = sources[0], encodings[0]
    device = hardware.pick_device(e.device, key="eval.device")
    need(e.dtype != "float16" or device.type == "cuda", "eval.dtype", "float16 needs a CUDA GPU; use float32 or bfloat16")
    dtype = hardware.pick_dtype(e.dtype, device)
    L = source.config.block_size
    stride = e.stride or max(1, L // 2)
    need(stride <= L, "eval.stride", f"must be at most the model's context ({L} tokens)")
    tokens = read_tokens(data, enc, progress)
    if e.max_tokens:
        tokens = tokens[:e.max_tokens + 1]
    n_bytes = int(tok.token_lengths(enc, source.config.vocab_size)[tokens[1:]].sum())
    models = [s.model(device) for s in sources]
    nats, n_tokens, n_windows = score(models, tokens, stride, e.batch_size, device,
                                      hardware.autocast(device, dtype), progress)
    loss = nats / max(n_tokens, 1)
    record = {"bpb": nats / math.log(2) / max(n_bytes, 1), "loss": loss, "tokens": n_tokens, "bytes": n_bytes,
              "bytes_per_token": n_bytes / max(n_tokens, 1), "model": ",".join(str(s.path) for s in sources), "tokenizer": enc.name,
              "source": data.source, "block_size": L, "stride": stride, "windows": n_windows,
              "dtype": str(dtype).removeprefix("torch."), "seconds": round(time.time() - t0, 2)}
    print(f"eval: {record['bpb']:.4f} bits per byte (loss {loss:.4f} nats per token) on {n_tokens:,} tokens "
          f"({n_bytes:,} bytes) of {data.source}, windows of {L} every {stride} tokens"
          + (f", an ensemble of {len(models)}" if len(models) > 1 else ""), file=sys.stderr)
    return record
