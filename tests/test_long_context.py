"""Generation past block_size: the rolling KV cache against its definition, and tools/longcontext.py.

'recompute' (nanoGPT's exact window) is tested against nanoGPT's loop in test_model.py.  Here:
'rolling' and 'sinks' computed through the cache equal a reference written from their definitions
(each layer attends to the visible tokens' keys and values, with rotary positions by place in the
cache, as StreamingLLM assigns them), for every row of a batch and across the eviction boundary;
inside the context they equal recomputation token for token; past it they never recompute.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from smallgpt.checkpoint import FORMAT, save_checkpoint
from smallgpt.cli import parse_args
from smallgpt.errors import UserError
from helpers import spread
from model import GPT, GPTConfig, KVCache, Rotary
from smallgpt.dataset import open_dataset
from smallgpt.pipeline import prepare
from smallgpt.config import DataConfig
from smallgpt.tokenizer import bytes_spec
from tools import longcontext

V, S = 64, 8  # vocabulary, block_size
ROPE = dict(vocab_size=V, block_size=S, n_layer=2, n_head=4, n_embd=32, pos_emb="rope")
ALL_ON = dict(ROPE, bias=False, n_kv_head=2, norm="rmsnorm", qk_norm=True, activation="relu2",
              tie_embeddings=False, logit_softcap=15.0)
MODES = [("rolling", 0), ("sinks", 1), ("sinks", 3)]


def visible(t: int, sinks: int) -> list[int]:
    """The tokens the query at position t sees by definition: all while they fit in block_size, then the
    first ``sinks`` and the most recent block_size - sinks."""
    if t < S:
        return list(range(t + 1))
    return list(range(sinks)) + list(range(t - (S - sinks) + 1, t + 1))


def reference_logits(model: GPT, idx: torch.Tensor, sinks: int) -> torch.Tensor:
    """Logits (B, N, V) of every position of idx (B, N) under a rolling window keeping ``sinks`` tokens,
    written from the definition, one query at a time: at each layer the query at t attends to the
    keys/values of ``visible(t)``, computed from that layer's inputs at those tokens, with rotary
    positions by place in the cache (the visible tokens numbered 0, 1, ... in text order)."""
    x = model.transformer.wte(idx)  # (B, N, C)
    B, N, C = x.shape
    for block in model.transformer.h:
        attn = block.attn
        rotary, attn.rotary = attn.rotary, None
        q, k, v = attn.qkv(block.ln_1(x))  # unrotated: (B, heads, N, hd), (B, kv_heads, N, hd)
        attn.rotary = rotary
        group = attn.n_head // attn.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        ys = []
        for t in range(N):
            seen = visible(t, sinks)
            q_t = rotary(q[:, :, t:t + 1], start=len(seen) - 1)  # the query is the last place
            k_t = rotary(k[:, :, seen], start=0)
            weights = (q_t @ k_t.transpose(-2, -1) / math.sqrt(attn.head_dim)).softmax(dim=-1)
            ys.append(weights @ v[:, :, seen])  # (B, heads, 1, hd)
        y = torch.cat(ys, dim=2).transpose(1, 2).reshape(B, N, C)
        x = x + attn.c_proj(y)
        x = x + block.mlp(block.ln_2(x))
    return model.head(model.transformer.ln_f(x))


def cached_logits(model: GPT, idx: torch.Tensor, long_context: str, sinks: int, prefill: int = 1) -> torch.Tensor:
    """Logits (B, N - prefill + 1, V) of positions prefill-1 .. N-1 through GPT.next_logits, the generation
    step, teacher-forced: the first ``prefill`` tokens in one go, then one token at a time."""
    cache = model.new_cache(long_context, sinks)
    return torch.stack([model.next_logits(idx[:, :t], cache) for t in range(prefill, idx.size(1) + 1)], dim=1)


@pytest.mark.parametrize("config", [ROPE, ALL_ON], ids=["rope", "all-on"])
@pytest.mark.parametrize("long_context,sinks", MODES)
def test_rolling_cache_equals_its_definition_for_every_row(config, long_context, sinks):
    model = spread(GPT(GPTConfig.gpt2(**config)))
    idx = torch.randint(0, V, (3, 4 * S))  # three rows, evicting from position S on
    expected = reference_logits(model, idx, sinks)
    for prefill in (1, S - 2, S):  # decoded from the start, or a prompt prefilled up to the boundary
        got = cached_logits(model, idx, long_context, sinks, prefill)
        torch.testing.assert_close(got, expected[:, prefill - 1:], atol=2e-5, rtol=1e-4)
    # and the definitions differ: what a rolling cache sees is not the recomputed window
    recomputed = cached_logits(model, idx, "recompute", 0)
    assert not torch.allclose(recomputed[:, S + 1:], expected[:, S + 1:], atol=1e-3)
    torch.testing.assert_close(recomputed[:, :S], expected[:, :S], atol=2e-5, rtol=1e-4)  # inside: the same


@pytest.mark.parametrize("long_context,sinks", MODES)
def test_one_layer_rolling_cache_equals_feeding_what_it_sees(long_context, sinks):
    """With one layer a token's key and value depend on that token alone, so the cached step equals a plain
    forward pass over just the visible tokens at positions 0, 1, ...: the definition fed to the model."""
    model = spread(GPT(GPTConfig.gpt2(**dict(ROPE, n_layer=1))))
    idx = torch.randint(0, V, (2, 3 * S))
    got = cached_logits(model, idx, long_context, sinks)  # positions 0 .. N-1
    for t in range(S, idx.size(1)):
        direct, _ = model(idx[:, visible(t, sinks)])
        torch.testing.assert_close(got[:, t], direct[:, -1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("long_context,sinks", MODES)
def test_rolling_generation_is_recompute_inside_the_context_and_never_recomputes_past_it(
        long_context, sinks, monkeypatch):
    model = spread(GPT(GPTConfig.gpt2(**ROPE)))
    prompt = torch.randint(0, V, (2, 3))
    n = S - 3  # the last new token fills the context
    kw = dict(temperature=0, long_context=long_context, sink_tokens=sinks)
    greedy = model.generate(prompt, 4 * S, **kw)
    assert torch.equal(greedy[:, :3 + n], model.generate(prompt, n, temperature=0, use_cache=False))
    assert len(set(greedy[:, 3:].flatten().tolist())) > 3  # a real test: the output varies
    fed = []
    forward = GPT.hidden_states
    monkeypatch.setattr(GPT, "hidden_states", lambda self, idx, cache=None: fed.append(idx.size(1)) or
                        forward(self, idx, cache))
    assert torch.equal(model.generate(prompt, 4 * S, **kw), greedy)
    assert fed == [3] + [1] * (4 * S - 1)  # one prefill, then one token per step, past the context too


@pytest.mark.parametrize("long_context,sinks", MODES)
def test_every_row_of_a_batch_evicts_alike(long_context, sinks):
    """Rows of a batch share one cache: generated together, each row is what it is generated alone,
    across the boundary where the first keys are evicted."""
    model = spread(GPT(GPTConfig.gpt2(**ROPE)))
    prompts = torch.randint(0, V, (3, S - 1))  # the boundary comes at the second new token
    kw = dict(temperature=0, long_context=long_context, sink_tokens=sinks)
    together = model.generate(prompts, 2 * S, **kw)
    for row in range(3):
        assert torch.equal(together[row:row + 1], model.generate(prompts[row:row + 1], 2 * S, **kw))
    cache = model.new_cache(long_context, sinks)
    for t in range(S - 1, S + 3):
        model.next_logits(together[:, :t], cache)
    assert cache.length == S + 2 and cache.k[0].shape[2] == S  # evicted, never grown
    if sinks:  # the sink slots hold the first tokens' keys, turned on by the offset, for every row alike
        first = model.new_cache(long_context, sinks)
        model.next_logits(together[:, :sinks], first)
        rotary = model.transformer.h[0].attn.rotary
        turned = rotary.turn(first.k[0][:, :, :sinks], cache.length - 1 - (S - 1))
        torch.testing.assert_close(cache.k[0][:, :, :sinks], turned)


def test_learned_positions_keep_recompute():
    model = spread(GPT(GPTConfig.gpt2(**dict(ROPE, pos_emb="learned"))))
    prompt = torch.randint(0, V, (2, 3))
    for long_context in ("rolling", "sinks"):
        assert not model.new_cache(long_context).rolling
        assert torch.equal(model.generate(prompt, 3 * S, temperature=0, long_context=long_context),
                           model.generate(prompt, 3 * S, temperature=0, use_cache=False))
    with pytest.raises(ValueError, match="rotary"):
        model(prompt, cache=KVCache(2, S, rolling=True))


def test_cache_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError, match="sinks"):
        KVCache(2, S, rolling=True, sinks=S)
    with pytest.raises(ValueError, match="sinks"):
        KVCache(2, S, rolling=False, sinks=2)
    model = GPT(GPTConfig.gpt2(**ROPE)).eval()
    with pytest.raises(ValueError, match="long_context"):
        model.new_cache("sliding")
    with pytest.raises(ValueError, match="sink_tokens"):
        model.new_cache("sinks", 0)
    cache = model.new_cache("rolling")
    model(torch.zeros(1, S, dtype=torch.long), cache=cache)
    model(torch.zeros(1, 1, dtype=torch.long), cache=cache)  # past the context: one token at a time
    with pytest.raises(ValueError, match="one token at a time"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


def test_rotary_tables_grow_past_the_context_exactly():
    rotary = Rotary(head_dim=8, max_len=S, base=10000.0)
    inside = rotary.cos.clone()
    x = torch.randn(1, 2, 3, 8)
    with torch.inference_mode():  # as sample.py runs
        far = rotary(x, start=5000)
    assert rotary.cos.size(0) >= 5003 and torch.equal(rotary.cos[:S], inside)  # the context's rows unchanged
    assert not rotary.cos.is_inference()  # so training after sampling still works
    inv_freq = 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float32) / 8)
    angles = torch.outer(torch.arange(5000, 5003, dtype=torch.float64), inv_freq.double())
    x1, x2 = x.double().chunk(2, dim=-1)
    exact = torch.cat((x1 * angles.cos() - x2 * angles.sin(), x1 * angles.sin() + x2 * angles.cos()), dim=-1)
    torch.testing.assert_close(far, exact.float(), atol=1e-6, rtol=1e-5)
    # turning a rotated key on by d positions rotates it at p + d
    torch.testing.assert_close(rotary.turn(rotary(x, start=2), 7), rotary(x, start=9), atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- tools/longcontext.py


def test_teacher_forcing_scores_what_generation_predicts():
    model = spread(GPT(GPTConfig.gpt2(**ROPE)))
    windows = torch.randint(0, V, (3, 3 * S))
    recompute = longcontext.teacher_forced_nats(model, windows, "recompute")
    assert recompute.shape == (3, 2 * S)
    for t in (S, S + 3, 3 * S - 1):  # recompute: the last block_size tokens fed from scratch
        logits, _ = model(windows[:, t - S:t])
        expected = torch.nn.functional.cross_entropy(logits[:, -1], windows[:, t], reduction="none")
        torch.testing.assert_close(recompute[:, t - S], expected, atol=1e-5, rtol=1e-4)
    sinks = longcontext.teacher_forced_nats(model, windows, "sinks", 2)
    expected = reference_logits(model, windows, 2)[:, S - 1:-1]  # the predictions of tokens S .. N-1
    torch.testing.assert_close(sinks, torch.nn.functional.cross_entropy(
        expected.transpose(1, 2), windows[:, S:], reduction="none"), atol=1e-4, rtol=1e-4)


def test_measure_pairs_the_modes():
    model = spread(GPT(GPTConfig.gpt2(**ROPE)))
    windows = torch.randint(0, V, (5, 3 * S))
    variants = {"recompute": ("recompute", 0), "rolling": ("rolling", 0), "sinks=2": ("sinks", 2)}
    res = longcontext.measure(model, windows, variants, bytes_per_token=1.0, batch_size=2, progress=False)
    ref = res["modes"]["recompute"]
    assert ref["minus_recompute_bpb"] == 0 and ref["ratio_to_recompute"] == 1
    assert list(ref["by_position"]) == [f"{S}-{2 * S - 1}", f"{2 * S}-{3 * S - 1}"]
    for m in res["modes"].values():
        assert m["bpb"] > 0 and math.isclose(m["bpb"], ref["bpb"] + m["minus_recompute_bpb"], rel_tol=1e-5)
        assert math.isclose(m["bpb"], sum(m["by_position"].values()) / 2, rel_tol=1e-5)


def test_val_windows_are_spread_and_bounded():
    val = np.arange(100)
    w = longcontext.val_windows(val, 3, 30)
    assert w.shape == (3, 30) and w[0, 0] == 0 and w[-1, -1] == 99
    assert longcontext.val_windows(val, 10, 30).shape == (3, 30)  # no more than fit without overlap
    with pytest.raises(UserError, match="window_blocks"):
        longcontext.val_windows(val, 1, 101)


def test_the_tool_runs_on_a_run_directory(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("It is a truth universally acknowledged. " * 200, encoding="utf-8")
    prepare(DataConfig(source=str(text), tokenizer="bytes", dir=str(tmp_path / "ds")), progress=False)
    ds = open_dataset(tmp_path / "ds")
    config = GPTConfig.gpt2(**dict(ROPE, vocab_size=ds.vocab_size))
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "ckpt.pt", {"format": FORMAT, "model": GPT(config).state_dict(),
                                      "model_config": dataclasses.asdict(config), "tokenizer": bytes_spec(),
                                      "dataset": {"dir": str(tmp_path / "ds"), "fingerprint": ds.fingerprint},
                                      "step": 0})
    out = tmp_path / "lc.json"
    cfg = parse_args([f"--longcontext.checkpoint={run}", "--longcontext.windows=3", "--longcontext.batch_size=2",
                      "--longcontext.sink_tokens=1,4", "--longcontext.device=cpu", f"--longcontext.json={out}"],
                     longcontext.LongContextSettings, "tools/longcontext.py")
    res = longcontext.run(cfg, progress=False)
    assert set(res["modes"]) == {"recompute", "rolling", "sinks=1", "sinks=4"} and res["windows"] == 3
    assert json.loads(out.read_text())["modes"]["rolling"]["bpb"] == res["modes"]["rolling"]["bpb"]
    assert "long context" in capsys.readouterr().out
    with pytest.raises(UserError, match="block_size"):
        longcontext.run(parse_args([f"--longcontext.checkpoint={run}", f"--longcontext.sink_tokens={S}"],
                                   longcontext.LongContextSettings, "tools/longcontext.py"), progress=False)
    with pytest.raises(UserError, match="modes"):
        parse_args(["--longcontext.modes=recompute,sliding"], longcontext.LongContextSettings, "tools/longcontext.py")
