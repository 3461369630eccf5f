"""What each long-context mode costs in quality: ``python -m tools.longcontext [CONFIG.toml] [--longcontext.KEY=VALUE ...]``.

Past ``block_size`` generation either recomputes the last block_size tokens for every new token
(nanoGPT's exact semantics, ``sample.long_context=recompute``) or keeps a rolling KV cache
(``rolling``: Mistral's sliding window; ``sinks``: StreamingLLM's, keeping the first tokens).  This
tool measures how well a trained run predicts text in each mode: teacher-forced bits per byte on
its validation split, for the tokens past the context.

It cuts ``longcontext.windows`` windows of ``window_blocks`` x block_size tokens, evenly spread over
the split, and feeds each window through ``GPT.next_logits``, the one step that generation runs,
with the mode's cache: the first block_size tokens are prefilled, then every later token is scored
as the prediction the model makes at that step and fed in, so the cache evolves exactly as in
generation (a prefill gives the same keys and values as decoding those tokens one by one).  The
scored tokens are the same for every mode, so the differences are paired; their standard error
is taken over windows (tokens of one window are not independent).  Bits per byte divide by the
split's bytes per token, as train.py's val_bpb does.

It is a tool of its own, not a part of ``tools/bench.py``: it needs a trained run and its dataset
and measures quality, where the benchmark times untrained models on random tokens.

Example (a run trained by ``python train.py``):

    python -m tools.longcontext --longcontext.checkpoint=out
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import GPT, LONG_CONTEXT
from smallgpt import hardware
from smallgpt.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from smallgpt.cli import Settings, comma_list, need, parse_args, run_main
from smallgpt.dataset import open_dataset
from smallgpt.errors import UserError
from smallgpt.safefiles import atomic_write
from tools.bench.common import table

SUMMARY = ("Teacher-forced bits per byte of a trained run on its validation split, past the context, "
           "for each long-context mode of generation (recompute, rolling, sinks).")


@dataclass
class LongContextConfig:
    checkpoint: str = "out"  # run directory or checkpoint file
    data_dir: str = ""  # dataset directory; empty: the one the checkpoint was trained on
    windows: int = 64  # windows of the validation split scored (fewer if the split is too short)
    window_blocks: int = 4  # window length in block sizes; the tokens after the first block_size are scored
    modes: str = "recompute,rolling,sinks"  # comma-separated modes; 'recompute' (the reference) is always measured
    sink_tokens: str = "4"  # comma-separated sink counts to measure for 'sinks'
    batch_size: int = 16  # windows run together
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'mps' (float32 always)
    json: str = "longcontext.json"  # where the figures are written

    def check(self) -> None:
        modes = self.mode_list()
        need(bool(modes) and all(m in LONG_CONTEXT for m in modes), "longcontext.modes",
             f"must be a comma-separated list of {', '.join(LONG_CONTEXT)}; got {self.modes!r}")
        need(all(s.strip().isdigit() and int(s) > 0 for s in self.sink_tokens.split(",") if s.strip())
             and self.sinks_list(), "longcontext.sink_tokens",
             f"must be comma-separated positive whole numbers, got {self.sink_tokens!r}")
        need(self.windows >= 1, "longcontext.windows", "must be at least 1")
        need(self.window_blocks >= 2, "longcontext.window_blocks", "must be at least 2 (one block of context, then scored tokens)")
        need(self.batch_size >= 1, "longcontext.batch_size", "must be at least 1")

    def mode_list(self) -> list[str]:
        return comma_list(self.modes)

    def sinks_list(self) -> list[int]:
        return [int(s) for s in self.sink_tokens.split(",") if s.strip().isdigit()]

    def variants(self) -> dict[str, tuple[str, int]]:
        """Name -> (long_context, sink_tokens), the reference first."""
        out = {"recompute": ("recompute", 0)}
        for m in self.mode_list():
            if m == "rolling":
                out["rolling"] = ("rolling", 0)
            elif m == "sinks":
                out.update({f"sinks={k}": ("sinks", k) for k in self.sinks_list()})
        return out


@dataclass
class LongContextSettings(Settings):
    longcontext: LongContextConfig = field(default_factory=LongContextConfig)


@torch.no_grad()
def teacher_forced_nats(model: GPT, windows: torch.Tensor, long_context: str, sink_tokens: int = 4,
                        bar: tqdm | None = None) -> torch.Tensor:
    """Nats of every token of ``windows`` (B, N) past the first block_size, each predicted as generation
    predicts it (``GPT.next_logits`` with the mode's cache), the true token fed next: (B, N - block_size)."""
    L = model.config.block_size
    cache = model.new_cache(long_context, sink_tokens)
    nats = []
    for t in range(L, windows.size(1)):
        logits = model.next_logits(windows[:, :t], cache)  # (B, V): the prediction of token t
        nats.append(F.cross_entropy(logits.float(), windows[:, t], reduction="none"))  # (B,)
        if bar is not None:
            bar.update(1)
    return torch.stack(nats, dim=1)  # (B, N - L)


def in_context_nats(model: GPT, windows: torch.Tensor) -> torch.Tensor:
    """Nats of tokens 1..block_size-1 of each window, inside the context (the same in every mode): (B, L - 1)."""
    L = model.config.block_size
    with torch.no_grad():
        logits, _ = model(windows[:, :L - 1])  # (B, L - 1, V)
    return F.cross_entropy(logits.float().transpose(1, 2), windows[:, 1:L], reduction="none")


def val_windows(val: np.ndarray, n: int, length: int) -> np.ndarray:
    """Up to ``n`` windows of ``length`` tokens evenly spread over ``val``, without overlap: (W, length)."""
    count = min(n, len(val) // length)
    if count == 0:
        raise UserError(f"the validation split has {len(val)} tokens, fewer than one window of {length}; "
                        "lower --longcontext.window_blocks")
    starts = np.linspace(0, len(val) - length, count).astype(np.int64)
    return np.stack([np.asarray(val[s:s + length], dtype=np.int64) for s in starts])


def measure(model: GPT, windows: torch.Tensor, variants: dict[str, tuple[str, int]], bytes_per_token: float,
            batch_size: int, progress: bool = True) -> dict:
    """Bits per byte of each variant on ``windows`` (W, N), by distance past the context, with paired
    differences against 'recompute' and their standard errors over windows."""
    L = model.config.block_size
    W, N = windows.shape
    to_bpb = 1 / math.log(2) / bytes_per_token
    batches = [windows[i:i + batch_size] for i in range(0, W, batch_size)]
    bar = tqdm(total=len(variants) * len(batches) * (N - L), unit="step", desc="long context",
               disable=not progress, file=sys.stderr)
    nats = {name: torch.cat([teacher_forced_nats(model, b, mode, sinks, bar) for b in batches])  # (W, N - L)
            for name, (mode, sinks) in variants.items()}
    bar.close()
    inside = torch.cat([in_context_nats(model, b) for b in batches])  # (W, L - 1)
    ref = nats["recompute"].mean(dim=1)  # (W,) per-window mean nats
    blocks = [(b * L, min((b + 1) * L, N)) for b in range(1, -(-N // L))]  # token ranges [start, end) scored
    out = {"windows": W, "window_tokens": N, "block_size": L, "scored_tokens_per_window": N - L,
           "bytes_per_token": bytes_per_token, "in_context_bpb": inside.mean().item() * to_bpb, "modes": {}}
    for name, (mode, sinks) in variants.items():
        per_window = nats[name].mean(dim=1)  # (W,)
        diff = (per_window - ref) * to_bpb
        out["modes"][name] = {
            "long_context": mode, "sink_tokens": sinks, "bpb": nats[name].mean().item() * to_bpb,
            "by_position": {f"{a}-{b - 1}": nats[name][:, a - L:b - L].mean().item() * to_bpb for a, b in blocks},
            "minus_recompute_bpb": diff.mean().item(),
            "standard_error_bpb": (diff.std().item() / math.sqrt(W)) if W > 1 else float("nan"),
        }
        out["modes"][name]["ratio_to_recompute"] = out["modes"][name]["bpb"] / out["modes"]["recompute"]["bpb"]
    return out


def report(res: dict, title: str) -> str:
    """The figures as a table."""
    positions = list(res["modes"]["recompute"]["by_position"])
    rows = [[name, f"{m['bpb']:.4f}", f"{m['ratio_to_recompute']:.4f}",
             f"{m['minus_recompute_bpb']:+.4f} ({m['standard_error_bpb']:.4f})"]
            + [f"{m['by_position'][p]:.4f}" for p in positions] for name, m in res["modes"].items()]
    return table(title, ["mode", "bpb", "/ recompute", "minus recompute (s.e.)"] + [f"tokens {p}" for p in positions],
                 rows, [f"{res['windows']} validation windows of {res['window_tokens']} tokens; bits per byte of the "
                        f"{res['scored_tokens_per_window']} tokens of each after the first {res['block_size']} "
                        "(block_size), teacher-forced through GPT.next_logits",
                        f"inside the context (tokens 1-{res['block_size'] - 1}, the same in every mode): "
                        f"{res['in_context_bpb']:.4f} bpb",
                        "s.e.: standard error of the paired difference over windows"])


def run(cfg: LongContextSettings, progress: bool = True) -> dict:
    c = cfg.longcontext
    path = find_checkpoint(c.checkpoint)
    ckpt = load_checkpoint(path)
    device = hardware.pick_device(c.device, key="longcontext.device")
    model = model_from_checkpoint(ckpt, device)
    recorded = (ckpt.get("dataset") or {}).get("dir", "")
    data_dir = Path(c.data_dir or recorded)
    if not (c.data_dir or recorded):
        raise UserError(f"{path} does not record its dataset; pass --longcontext.data_dir=DIR")
    if not (data_dir / "meta.json").is_file():
        raise UserError(f"dataset directory {data_dir} not found" + ("" if c.data_dir else
                        " (recorded in the checkpoint); run from the directory you trained in, "
                        "or pass --longcontext.data_dir=DIR"))
    ds = open_dataset(data_dir)
    fingerprint = (ckpt.get("dataset") or {}).get("fingerprint")
    if fingerprint and fingerprint != ds.fingerprint:
        raise UserError(f"{data_dir} is not the dataset {path} was trained on; pass the right --longcontext.data_dir")
    L = model.config.block_size
    too_many = [k for k in c.sinks_list() if "sinks" in c.mode_list() and k >= L]
    if too_many:
        raise UserError(f"--longcontext.sink_tokens: must be below the model's block_size ({L}), got {too_many[0]}")
    variants = c.variants()
    if model.config.pos_emb != "rope":
        print("note: the model has learned positions, so every mode recomputes the window", file=sys.stderr)
    windows = torch.from_numpy(val_windows(ds.val, c.windows, c.window_blocks * L)).to(device)  # (W, N)
    res = measure(model, windows, variants, ds.bytes_per_token("val"), c.batch_size, progress)
    res.update(checkpoint=str(path), dataset=str(data_dir), step=ckpt.get("step"),
               model=f"{model.config.n_layer}x{model.config.n_embd}, {model.config.pos_emb} positions")
    print(report(res, f"long context: {path} (step {res['step']}, {res['model']}), val of {data_dir}"))
    out = Path(c.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")
    return res


def main(argv: list[str]) -> int:
    run(parse_args(argv, LongContextSettings, "python -m tools.longcontext", SUMMARY))
    return 0


if __name__ == "__main__":
    run_main(main)
