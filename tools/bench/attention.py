"""Bench part attention: every attention class of the lineage against model.CausalSelfAttention and its
floor, forward and backward, time and peak memory, and a sweep over the sequence length."""
from __future__ import annotations

import sys
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from model import CausalSelfAttention, GPTConfig
from smallgpt import hardware
from smallgpt.errors import UserError
from tools.bench.common import (ROOT, SLOW_REPEATS, BenchSettings, interleave, isolated, memory_mark, memory_peak, mib,
                                ms, release_freed_memory, table)

def reference_attention():
    """tests/reference_attention.py, the attention lineage, loaded by path (tests/ is not a package)."""
    import importlib.util
    path = ROOT / "tests" / "reference_attention.py"
    if not path.is_file():
        raise UserError(f"{path} is missing: the attention part compares its classes; run from a full clone")
    spec = importlib.util.spec_from_file_location("reference_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ProjectionsAndSDPA(nn.Module):
    """The floor of any efficient attention, on CausalSelfAttention's own weights: the fused QKV matmul,
    F.scaled_dot_product_attention(is_causal=True) and the output matmul, with only views in between."""

    def __init__(self, attn: CausalSelfAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        H = self.attn.n_head
        q, k, v = self.attn.c_attn(x).view(B, T, 3, H, C // H).transpose(1, 3).unbind(2)  # (B, H, T, hd) each
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
        return self.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))


# name: what it computes; every class maps (B, T, d) to (B, T, d)
ATTENTION = {
    "SimpleSelfAttention": "non-causal, no weights",
    "SelfAttentionV1": "non-causal, 1 head",
    "SelfAttentionV2": "non-causal, 1 head",
    "CausalAttention": "causal, 1 head",
    "MultiHeadAttentionWrapper": "causal, a loop over heads",
    "MultiHeadAttention": "causal, batched heads",
    "CausalSelfAttention": "causal, model.py (efficient)",
    "projections + SDPA": "causal, the floor",
}


def make_attention(name: str, d: int, heads: int, T: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    if name in ("CausalSelfAttention", "projections + SDPA"):
        m = CausalSelfAttention(GPTConfig.gpt2(vocab_size=1, block_size=T, n_embd=d, n_head=heads, dropout=0.0))
        m = ProjectionsAndSDPA(m) if name == "projections + SDPA" else m
    else:
        ref = reference_attention()
        m = {"SimpleSelfAttention": lambda: ref.SimpleSelfAttention(),
             "SelfAttentionV1": lambda: ref.SelfAttentionV1(d, d),
             "SelfAttentionV2": lambda: ref.SelfAttentionV2(d, d),
             "CausalAttention": lambda: ref.CausalAttention(d, d, T, 0.0),
             "MultiHeadAttentionWrapper": lambda: ref.MultiHeadAttentionWrapper(d, d // heads, T, 0.0, heads),
             "MultiHeadAttention": lambda: ref.MultiHeadAttention(d, d, T, 0.0, heads)}[name]()
    return m.to(device=device, dtype=dtype).train()


def attention_calls(m: nn.Module, B: int, T: int, d: int, device: torch.device, dtype: torch.dtype):
    """(forward, forward+backward) of m on a fixed input that needs a gradient, as inside a network."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, d, generator=g).to(device=device, dtype=dtype).requires_grad_()
    grad = torch.randn(B, T, d, generator=g).to(device=device, dtype=dtype)

    def forward():
        m(x)

    def forward_backward():
        m(x).backward(grad)
        m.zero_grad(set_to_none=True)  # as a training step would, and so a memory mark sees no gradients
        x.grad = None
    return forward, forward_backward


def attention_memory(name: str, B: int, T: int, d: int, heads: int, device: str, dtype: str) -> int:
    """Peak memory of one forward+backward above the module, its input and its output gradient, after a
    first run (which pays torch's one-off allocations: thread pools, BLAS buffers) and a malloc_trim."""
    dev, dt = torch.device(device), getattr(torch, dtype)
    m = make_attention(name, d, heads, T, dev, dt)
    _, fwd_bwd = attention_calls(m, B, T, d, dev, dt)
    fwd_bwd()
    release_freed_memory()
    mark = memory_mark(dev)
    fwd_bwd()
    return memory_peak(dev) - mark


def part_attention(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    b = cfg.bench
    B, T, d, H = b.attn_batch, b.attn_seq, b.attn_embd, b.attn_heads
    dtype = hardware.pick_dtype(cfg.train.dtype, device)
    dname = str(dtype).removeprefix("torch.")
    sweep = [int(s) for s in b.attn_sweep.split(",") if s]
    res: dict[str, Any] = {"shape": {"batch": B, "seq": T, "embd": d, "heads": H, "dtype": dname}, "classes": {}}
    n_mem = len(ATTENTION) * (1 + len(sweep)) if b.memory else 0
    bar = tqdm(total=len(ATTENTION) * (1 + len(sweep)) + n_mem, desc="attention", unit="figure",
               file=sys.stderr, leave=False)
    calls = {}
    for name in ATTENTION:
        fwd, fwd_bwd = attention_calls(make_attention(name, d, H, T, device, dtype), B, T, d, device, dtype)
        calls[f"{name}|fwd"], calls[f"{name}|fwd+bwd"] = fwd, fwd_bwd
    say(f"attention: {len(ATTENTION)} classes at B={B}, T={T}, d={d}, {H} heads ({dname}) ...")
    t = interleave(calls, device, b.repeats, b.warmup, b.slow_seconds)
    bar.update(len(ATTENTION))
    del calls
    main = res["classes"]
    for name in ATTENTION:
        main[name] = {"what": ATTENTION[name], "fwd": t[f"{name}|fwd"].to_json(),
                      "fwd_bwd": t[f"{name}|fwd+bwd"].to_json()}
        if b.memory:
            main[name]["fwd_bwd_peak_bytes"] = isolated(attention_memory, device, name=name, B=B, T=T, d=d,
                                                        heads=H, device=str(device), dtype=dname)
            bar.update(1)
    mha, eff, floor = (t[f"{n}|fwd+bwd"].median for n in ("MultiHeadAttention", "CausalSelfAttention",
                                                          "projections + SDPA"))
    rows = [[name, ATTENTION[name], ms(t[f"{name}|fwd"]), ms(t[f"{name}|fwd+bwd"]),
             mib(main[name].get("fwd_bwd_peak_bytes")), f"{t[f'{name}|fwd+bwd'].median / eff:.2f}"]
            for name in ATTENTION]
    res["ratios"] = {"MultiHeadAttention / CausalSelfAttention, fwd+bwd time": mha / eff,
                     "CausalSelfAttention / (projections + SDPA), fwd+bwd time": eff / floor}

    # the sweep: batch 1, time and memory as T grows
    sweep_res: dict[str, dict[int, dict]] = {name: {} for name in ATTENTION}
    for T_s in sweep:
        calls = {name: attention_calls(make_attention(name, d, H, T_s, device, dtype), 1, T_s, d, device, dtype)[1]
                 for name in ATTENTION}
        ts = interleave(calls, device, b.repeats, b.warmup, b.slow_seconds)
        del calls
        bar.update(len(ATTENTION))
        for name in ATTENTION:
            sweep_res[name][T_s] = {"fwd_bwd": ts[name].to_json()}
            if b.memory:
                sweep_res[name][T_s]["fwd_bwd_peak_bytes"] = isolated(
                    "attention_memory", device, name=name, B=1, T=T_s, d=d, heads=H, device=str(device), dtype=dname)
                bar.update(1)
            sweep_res[name][T_s]["_t"] = ts[name]
    bar.close()
    if b.memory and sweep:
        T_max = max(sweep)
        ratio = (sweep_res["CausalSelfAttention"][T_max]["fwd_bwd_peak_bytes"]
                 / max(1, sweep_res["MultiHeadAttention"][T_max]["fwd_bwd_peak_bytes"]))
        res["ratios"][f"peak memory CausalSelfAttention / MultiHeadAttention at T={T_max}, batch 1"] = ratio
    say(table(f"attention at B={B}, T={T}, d={d}, {H} heads, {dname}, {device}",
              ["class", "computes", "fwd ms", "fwd+bwd ms", "fwd+bwd peak MiB", "time / efficient"], rows,
              ["forward with autograd recording, as in training; fwd+bwd includes the input's gradient",
               "peak MiB: above the module, its input and the output gradient"
               + (", each in a fresh process" if device.type == "cpu" else ""),
               f"* = slow figure: at most {SLOW_REPEATS} timed runs"]
              + [f"{what}: {value:.2f}" for what, value in res["ratios"].items()]))
    if sweep:
        rows = [[name] + [f"{ms(sweep_res[name][T_s].pop('_t'))} / {mib(sweep_res[name][T_s].get('fwd_bwd_peak_bytes'))}"
                          for T_s in sweep] for name in ATTENTION]
        say(table("attention sweep, batch 1: fwd+bwd ms / peak MiB", ["class"] + [f"T={T_s}" for T_s in sweep],
                  rows))
    res["sweep"] = sweep_res
    return res


# --------------------------------------------------------------------------- sampling
