"""What eval.py measures, and how: bits per byte of any model on any text (``eval.task=bpb``, the
default), or HellaSwag's accuracy (``eval.task=hellaswag``: smallgpt/hellaswag.py).  Both start from
:func:`open_models`: the model(s), their tokenizer, the device and the precision.

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

The record :func:`evaluate` returns for bpb: ``task``, ``bpb``, ``loss`` (nats per token), ``tokens``
(scored), ``bytes`` (UTF-8 bytes of the scored tokens), and what was measured how.
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
from tqdm import tqdm

from model import GPT
from smallgpt import hardware, hellaswag
from smallgpt import tokenizer as tok
from smallgpt.cli import need
from smallgpt.config import DataConfig
from smallgpt.corpus import is_sha256, resolve_source
from smallgpt.dataset import downloads_dir
from smallgpt.encoding import default_threads, encode_segments, encoder_for
from smallgpt.ensemble import load_members, target_log_probs
from smallgpt.errors import UserError
from smallgpt.pretrained import Source

TASKS = ("bpb", "hellaswag")


@dataclass
class EvalConfig:
    checkpoint: str = "out"  # a run directory, a checkpoint file, a Hugging Face GPT-2 directory, or gpt2, gpt2-medium, gpt2-large, gpt2-xl; several, comma-separated: their ensemble
    task: str = "bpb"  # 'bpb' (bits per byte of the text of data.source) or 'hellaswag' (accuracy on the items of eval.data; smallgpt/hellaswag.py)
    data: str = ""  # task 'hellaswag': HellaSwag's JSON Lines (hellaswag_val.jsonl), a file or an http(s) URL (with eval.sha256)
    sha256: str = ""  # expected sha256 of eval.data: required for a URL, checked for a file when given
    stride: int = 0  # task 'bpb': tokens from one window's start to the next; 0 = half the model's context
    batch_size: int = 8  # windows (bpb) or items, four rows each (hellaswag), per forward pass
    max_tokens: int = 0  # task 'bpb': score only the first this many tokens of the text; 0 = all
    max_items: int = 0  # task 'hellaswag': score only the first this many items; 0 = all
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'mps'
    dtype: str = "auto"  # 'auto' (bf16 on GPUs that support it; fp32 on cpu), 'float32', 'bfloat16', 'float16'

    def check(self) -> None:
        need(bool(self.checkpoint), "eval.checkpoint", "is empty; give a run directory, checkpoint or model")
        need(self.task in TASKS, "eval.task", f"must be 'bpb' or 'hellaswag', got {self.task!r}")
        need(self.stride >= 0, "eval.stride", "must be 0 (half the context) or more")
        need(self.batch_size >= 1, "eval.batch_size", "must be at least 1")
        need(self.max_tokens >= 0, "eval.max_tokens", "must be 0 (all) or more")
        need(self.max_items >= 0, "eval.max_items", "must be 0 (all) or more")
        need(not self.sha256 or is_sha256(self.sha256), "eval.sha256", "must be 64 hex digits")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "eval.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        if self.task == "hellaswag":
            need(bool(self.data), "eval.data", "is empty; give HellaSwag's hellaswag_val.jsonl, a file or its URL "
                 "with eval.sha256")
            for key in ("stride", "max_tokens"):  # a setting that would do nothing is a mistake
                need(not getattr(self, key), f"eval.{key}", "is a setting of eval.task=bpb; hellaswag has eval.max_items")
        else:
            for key in ("data", "sha256", "max_items"):
                need(not getattr(self, key), f"eval.{key}",
                     "is a setting of eval.task=hellaswag; the text of bpb is data.source (data.sha256 for a URL)")


@dataclass
class Models:
    """The models ``eval.checkpoint`` names (one, or an ensemble's members), their tokenizer, and where and in
    what precision they run: what every task starts from."""
    sources: list[Source]
    enc: tiktoken.Encoding
    device: torch.device
    dtype: torch.dtype

    @property
    def block_size(self) -> int:
        return self.sources[0].config.block_size

    def load(self) -> list[GPT]:
        return [s.model(self.device) for s in self.sources]

    def autocast(self):
        return hardware.autocast(self.device, self.dtype)

    def describe(self) -> dict:
        """What the record says of the models."""
        return {"model": ",".join(str(s.path) for s in self.sources), "tokenizer": self.enc.name,
                "block_size": self.block_size, "dtype": str(self.dtype).removeprefix("torch.")}


def open_models(e: EvalConfig, data: DataConfig) -> Models:
    """The models of ``e.checkpoint``, checked (members alike, ``data.tokenizer`` theirs, the device and dtype
    usable) before any slow part."""
    sources = load_members(e.checkpoint, "eval.checkpoint")
    encodings = [s.encoding(data.tokenizer) for s in sources]
    device = hardware.pick_device(e.device, key="eval.device")
    need(e.dtype != "float16" or device.type == "cuda", "eval.dtype", "float16 needs a CUDA GPU; use float32 or bfloat16")
    return Models(sources, encodings[0], device, hardware.pick_dtype(e.dtype, device))


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
            logp = target_log_probs(models, x.to(device), y.to(device), autocast)  # (M,): the positions scored here
            total -= logp.double().sum()
            count += len(logp)
            bar.update(len(batch))
    return total.item(), count, len(spans)


def bits_per_byte(e: EvalConfig, data: DataConfig, m: Models, progress: bool = True) -> dict:
    """Task 'bpb': ``m`` on the text of ``data.source``; the JSON record (without ``seconds``)."""
    L = m.block_size
    stride = e.stride or max(1, L // 2)
    need(stride <= L, "eval.stride", f"must be at most the model's context ({L} tokens)")
    tokens = read_tokens(data, m.enc, progress)
    if e.max_tokens:
        tokens = tokens[:e.max_tokens + 1]
    n_bytes = int(tok.token_lengths(m.enc, m.sources[0].config.vocab_size)[tokens[1:]].sum())
    models = m.load()
    nats, n_tokens, n_windows = score(models, tokens, stride, e.batch_size, m.device, m.autocast(), progress)
    loss = nats / max(n_tokens, 1)
    record = {"task": "bpb", "bpb": nats / math.log(2) / max(n_bytes, 1), "loss": loss, "tokens": n_tokens,
              "bytes": n_bytes, "bytes_per_token": n_bytes / max(n_tokens, 1), **m.describe(), "source": data.source,
              "stride": stride, "windows": n_windows}
    print(f"eval: {record['bpb']:.4f} bits per byte (loss {loss:.4f} nats per token) on {n_tokens:,} tokens "
          f"({n_bytes:,} bytes) of {data.source}, windows of {L} every {stride} tokens"
          + (f", an ensemble of {len(models)}" if len(models) > 1 else ""), file=sys.stderr)
    return record


def evaluate(e: EvalConfig, data: DataConfig, progress: bool = True) -> dict:
    """Measure ``e.checkpoint`` on ``e.task``; returns the JSON record."""
    t0 = time.time()
    m = open_models(e, data)
    run = hellaswag.evaluate if e.task == "hellaswag" else bits_per_byte
    return {**run(e, data, m, progress), "seconds": round(time.time() - t0, 2)}
