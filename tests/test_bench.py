"""tools/bench: every part runs end to end at tiny sizes, its figures are sane, and its measuring tools
(interleaved timing, peak memory in a fresh process) behave.  Benchmarks themselves are not tests."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from smallgpt import hardware
from smallgpt import tokenizer as tok
from smallgpt.cli import parse_args
from smallgpt.errors import UserError
from model import GPTConfig
from tools import bench
from tools.bench import attention, common, sample, train
from tools.bench import prepare as bench_prepare

TINY = ["--bench.repeats=1", "--bench.warmup=1", "--bench.train_steps=1", "--bench.gpt2_steps=0",
        "--bench.candidates=false", "--bench.options=false", "--bench.memory=false",
        "--bench.attn_batch=2", "--bench.attn_seq=16", "--bench.attn_embd=16", "--bench.attn_heads=2",
        "--bench.attn_sweep=8,16", "--bench.sample_tokens=12", "--bench.sample_blocks=8", "--bench.sample_batch=2",
        "--bench.prepare_mb=0.03", "--bench.formats_jsonl_mb=0.05", "--bench.formats_parquet_mb=0.05",
        "--data.vocab_size=300",
        "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=16", "--model.block_size=16",
        "--train.batch_size=2"]


def test_every_part_runs_and_writes_json(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "PROBE_N", 256)  # the MFU probe's matmul: its size is not under test
    monkeypatch.setattr(hardware, "peak_flops", lambda device, dtype: 1e11)
    cfg = parse_args(TINY + [f"--bench.json={tmp_path / 'b.json'}"], common.BenchSettings, "bench.py")
    printed = []
    res = bench.run(cfg, say=printed.append)
    on_disk = json.loads((tmp_path / "b.json").read_text())
    assert set(on_disk) >= {"machine", "settings", "train", "attention", "sample", "prepare"}
    a = res["train"]["nanogpt_shape"]
    assert a["baseline"]["tokens_per_s"] > 0 and a["ours"]["tokens_per_s"] > 0
    assert a["ours"]["compiled"] is False  # a 2,000-step run of a tiny model never pays a CPU compile back
    assert res["train"]["config_model"]["config model"]["mfu"] > 0
    assert set(res["attention"]["classes"]) == set(attention.ATTENTION)
    (r,) = res["sample"]["runs"]  # block 8, batch 2, 12 new tokens: past the context
    assert (r["block"], r["batch"], r["new_tokens"]) == (8, 2, 12)
    assert r["identical"] and r["identical_inside_context"]  # the caches change no greedy token where they must not
    assert set(r["speedup"]) == set(sample.SAMPLE_WAYS) and r["rolling"]["tokens_per_s"] > 0
    assert res["prepare"]["tokens"] > 0 and res["prepare"]["ratio"] > 0
    assert res["formats"]["jsonl"]["ratio"] > 0 and res["formats"]["jsonl"]["documents"] > 0
    text = "\n".join(printed)
    for title in ("train (a)", "attention at B=2", "attention sweep", "sampling", "prepare:", "formats:"):
        assert title in text


def test_encode_throughput_compares_prepare_with_raw_tiktoken(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("def f(x):\n    return x + 1\n" * 100, encoding="utf-8")
    r = bench_prepare.encode_throughput(path, tok.load_tokenizer(tok.bytes_spec(), tmp_path), threads=2)
    assert r["tokens"] == path.stat().st_size and r["threads"] == 2
    assert all(r[k] > 0 for k in ("prepare_mb_s", "tiktoken_batch_mb_s", "tiktoken_single_mb_s", "ratio"))


def test_interleave_times_every_fn_and_bounds_slow_ones():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        torch.ones(1)  # something to time

    t = common.interleave({"fast": fast, "slow": slow}, torch.device("cpu"), repeats=5, warmup=2,
                         slow_seconds=1.0)
    assert len(t["fast"].seconds) == 5 and calls["fast"] == 2 + 5  # warm-ups are not timed
    t = common.interleave({"slow": slow}, torch.device("cpu"), repeats=5, warmup=0, slow_seconds=1e-12)
    assert t["slow"].slow and len(t["slow"].seconds) == common.SLOW_REPEATS  # warmup 0: the first run counts


def test_attention_floor_equals_the_efficient_class():
    m = attention.make_attention("CausalSelfAttention", 32, 4, 16, torch.device("cpu"), torch.float32)
    floor = attention.ProjectionsAndSDPA(m)
    x = torch.randn(2, 16, 32)
    torch.testing.assert_close(floor(x), m(x))


def test_peak_memory_in_a_fresh_process_grows_with_materialised_scores():
    """The T x T score matrices of MultiHeadAttention cost memory that SDPA's causal kernel does not."""
    kw = dict(B=1, T=1024, d=32, heads=8, device="cpu", dtype="float32")
    mha = common.isolated(attention.attention_memory, torch.device("cpu"), name="MultiHeadAttention", **kw)
    eff = common.isolated(attention.attention_memory, torch.device("cpu"), name="CausalSelfAttention", **kw)
    scores = 8 * 1024 * 1024 * 4  # one (heads, T, T) float32 tensor: 32 MiB
    assert mha > 2 * scores  # scores, weights, and their gradients
    assert eff < mha / 4


@pytest.mark.parametrize("arg", ["--bench.parts=train,speed", "--bench.attn_sweep=1,x", "--bench.attn_heads=5",
                                 "--bench.gpt2_steps=-1"])
def test_bad_settings_are_user_errors(arg):
    with pytest.raises(UserError, match=arg.split("=")[0][2:]):
        parse_args([arg], common.BenchSettings, "bench.py")


def test_the_options_price_compares_gpt2s_options_with_the_modern_ones():
    """train (a2) eagerly at a tiny size (compiling is what a full bench adds): every run timed, ratios to GPT-2's."""
    cfg = parse_args(TINY, common.BenchSettings, "bench.py")
    printed = []
    mcfg = GPTConfig.gpt2(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16)
    out = train.options_price(mcfg, cfg.train, torch.device("cpu"), cfg.bench, printed.append, compiled=False)
    assert set(out) == {"GPT-2's options", "modern options"}
    assert out["GPT-2's options"]["vs_gpt2_eager"] == 1.0 and out["modern options"]["ms_per_step"] > 0
    assert "what the modern options cost" in "\n".join(printed)


def test_the_baselines_train_with_adamw_whatever_the_main_jobs_optimizer():
    """nanoGPT's loop and GPT-2 small are AdamW runs; the main job's default (Muon) must not leak into them."""
    t = parse_args(TINY, common.BenchSettings, "bench.py").train
    assert t.optimizer == "muon"  # the main job's, which the config model uses
    for settings in (train.NANOGPT_TRAIN, train.GPT2_TRAIN):
        assert dataclasses.replace(t, **settings).optimizer == "adamw"
