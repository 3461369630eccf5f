"""Bench part sample: generation without a cache (nanoGPT's) against the KV cache in each long-context mode."""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from model import GPT
from smallgpt import hardware
from tools.bench.common import BenchSettings, interleave, table
from tools.bench.train import bench_vocab

SAMPLE_WAYS = {  # name -> GPT.generate keyword arguments
    "uncached": dict(use_cache=False),  # nanoGPT's generate: the window recomputed for every token
    "recompute": dict(long_context="recompute"),  # KV cache, nanoGPT's exact semantics past the context
    "rolling": dict(long_context="rolling"),  # rolling KV cache (sliding window)
    "sinks": dict(long_context="sinks"),  # rolling KV cache keeping the first tokens
}


def part_sample(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]
    dtype = hardware.pick_dtype(cfg.train.dtype, device)
    runs, rows = [], []
    for L in ints(b.sample_blocks):
        torch.manual_seed(0)
        mcfg = dataclasses.replace(cfg.model, vocab_size=bench_vocab(cfg.data), block_size=L, dropout=0.0)
        model = GPT(mcfg).to(device).eval()
        sinks = min(b.sample_sinks, L - 1)
        for B in ints(b.sample_batch):
            prompt = torch.zeros(B, 1, dtype=torch.long, device=device)  # one token, as sample.py's "\n"
            for n in ints(b.sample_tokens):
                outputs: dict[str, torch.Tensor] = {}

                def gen(name: str) -> Callable[[], None]:
                    def run():
                        with hardware.autocast(device, dtype), torch.inference_mode():
                            outputs[name] = model.generate(prompt, n, temperature=0.0, sink_tokens=sinks,
                                                           **SAMPLE_WAYS[name])
                    return run
                say(f"sample: block {L}, batch {B}, {n} new tokens ...")
                t = interleave({name: gen(name) for name in SAMPLE_WAYS}, device, b.repeats, b.warmup,
                               b.slow_seconds)
                inside = min(n, L - 1)  # new tokens inside the context (after the 1-token prompt)
                r = {"block": L, "batch": B, "new_tokens": n, "sink_tokens": sinks,
                     **{name: {**v.to_json(), "tokens_per_s": n * B / v.median} for name, v in t.items()},
                     "speedup": {name: t["uncached"].median / t[name].median for name in SAMPLE_WAYS},
                     "identical": torch.equal(outputs["recompute"], outputs["uncached"]),
                     "identical_inside_context": all(torch.equal(outputs[name][:, :1 + inside],
                                                                 outputs["uncached"][:, :1 + inside])
                                                     for name in SAMPLE_WAYS)}
                runs.append(r)
                rows.append([L, B, n] + [f"{r[name]['tokens_per_s']:,.0f}" for name in SAMPLE_WAYS]
                            + [f"{r['speedup'][name]:.2f}x" for name in ("recompute", "rolling", "sinks")]
                            + ["yes" if r["identical"] else "NO", "yes" if r["identical_inside_context"] else "NO"])
    m = cfg.model
    notes = [f"model: the config's ({m.n_layer}x{m.n_embd}, {m.pos_emb} positions), vocab {bench_vocab(cfg.data)}, "
             f"untrained, greedy, a 1-token prompt, {dtype}; tok/s = new tokens x batch / second",
             "uncached = use_cache=False: nanoGPT's generate, the whole window recomputed for every token; x = the "
             "same run's uncached time / this way's",
             "recompute = the KV cache with nanoGPT's exact semantics, which past block_size recompute the window "
             "every token; rolling, sinks = the rolling KV cache (sample.long_context), nothing recomputed",
             "same (a): recompute's tokens = uncached's; same inside: every way's tokens = uncached's while the "
             "sample fits in the context"]
    say(table(f"sampling ({device})", ["block", "batch", "new tokens"] + [f"{name} tok/s" for name in SAMPLE_WAYS]
              + ["recompute x", "rolling x", "sinks x", "same (a)", "same inside"], rows, notes))
    return {"runs": runs}


# --------------------------------------------------------------------------- preparation
