"""optim.py: Muon orthogonalises, its AdamW part is AdamW, optimizers group parameters right, schedules."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from smallgpt.config import TrainConfig
from smallgpt.optim import Muon, build_optimizer, lr_multiplier, newton_schulz, set_lr


@pytest.mark.parametrize("shape", [(64, 32), (32, 96), (48, 48)])
def test_newton_schulz_orthogonalises(shape):
    """Singular values spread over two decades (a typical gradient) all land near 1, vectors kept."""
    torch.manual_seed(0)
    u, _, vh = torch.linalg.svd(torch.randn(*shape), full_matrices=False)
    g = u @ torch.diag(5 * torch.logspace(-2, 0, min(shape))) @ vh
    out = newton_schulz(g)
    assert out.shape == g.shape and out.dtype == g.dtype
    s = torch.linalg.svdvals(out)
    assert s.min() > 0.6 and s.max() < 1.25  # the quintic lands them in about [0.7, 1.2], not exactly on 1
    cos = (out * (u @ vh)).sum() / (out.norm() * (u @ vh).norm())  # u @ vh: the exact orthogonalisation
    assert cos > 0.97


def test_muon_update_is_orthogonal_and_scaled():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(64, 16))
    w.grad = torch.randn(64, 16)
    opt = Muon([dict(params=[w], use_muon=True, lr=0.1, momentum=0.0, nesterov=False)])
    opt.step()
    s = torch.linalg.svdvals(-w.detach() / 0.1)
    assert torch.allclose(s, torch.full_like(s, 2.0), atol=0.8)  # scaled by max(1, 64/16)**0.5 = 2


def test_muon_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(a.detach().clone())
    ours = Muon([dict(params=[a], use_muon=False, lr=0.01, betas=(0.9, 0.95), weight_decay=0.1)])
    ref = torch.optim.AdamW([b], lr=0.01, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    for _ in range(5):
        g = torch.randn(8, 4)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)


def test_muon_minimises_and_round_trips_state():
    """Muon on a linear regression lowers the loss; its state_dict restores an identical continuation."""
    torch.manual_seed(0)
    x, target = torch.randn(256, 32), torch.randn(256, 16)

    def make():
        torch.manual_seed(1)
        w, bias = torch.nn.Parameter(torch.randn(32, 16) * 0.1), torch.nn.Parameter(torch.zeros(16))
        return w, bias, Muon([dict(params=[w], use_muon=True, lr=0.02), dict(params=[bias], use_muon=False, lr=0.01)])

    def step(w, bias, opt):
        opt.zero_grad()
        loss = ((x @ w + bias - target) ** 2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    w, bias, opt = make()
    losses = [step(w, bias, opt) for _ in range(30)]
    assert losses[-1] < 0.8 * losses[0]
    w2, b2, opt2 = make()
    with torch.no_grad():
        w2.copy_(w), b2.copy_(bias)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if read from a file: no shared tensors
    assert [step(w, bias, opt) for _ in range(3)] == [step(w2, b2, opt2) for _ in range(3)]


def _groups():
    torch.manual_seed(0)
    emb, mat, head = torch.nn.Parameter(torch.randn(10, 8)), torch.nn.Parameter(torch.randn(8, 8)), \
        torch.nn.Parameter(torch.randn(10, 8))
    gain = torch.nn.Parameter(torch.ones(8))
    return {"matrix": [mat], "embedding": [emb], "head": [head], "scalar": [gain]}


def test_build_adamw_decays_only_matrices():
    groups = _groups()
    cfg = TrainConfig(optimizer="adamw", learning_rate=3e-3, weight_decay=0.1)
    opt = build_optimizer(groups, cfg, "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(p) for k in ("matrix", "embedding", "head") for p in groups[k]}
    assert sum(len(g["params"]) for g in opt.param_groups) == 4
    set_lr(opt, 0.5)
    assert all(g["lr"] == 1.5e-3 and g["initial_lr"] == 3e-3 for g in opt.param_groups)


def test_build_muon_uses_muon_for_hidden_matrices_only():
    groups = _groups()
    cfg = TrainConfig(optimizer="muon", learning_rate=3e-3, muon_lr=0.05)
    opt = build_optimizer(groups, cfg, "cpu")
    muon = [p for g in opt.param_groups if g["use_muon"] for p in g["params"]]
    assert [id(p) for p in muon] == [id(groups["matrix"][0])]
    assert {g["initial_lr"] for g in opt.param_groups if g["use_muon"]} == {0.05}
    assert {g["initial_lr"] for g in opt.param_groups if not g["use_muon"]} == {3e-3}
    set_lr(opt, 0.1)
    assert sorted(round(g["lr"], 9) for g in opt.param_groups) == [3e-4, 3e-4, 5e-3]


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_each_role_takes_its_own_learning_rate(optimizer):
    groups = _groups()
    cfg = TrainConfig(optimizer=optimizer, learning_rate=3e-3, muon_lr=0.05, embedding_lr=0.3, head_lr=0.008,
                      scalar_lr=0.04, weight_decay=0.1)
    opt = build_optimizer(groups, cfg, "cpu")
    rate = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    (mat,), (emb,), (head,), (gain,) = groups["matrix"], groups["embedding"], groups["head"], groups["scalar"]
    assert rate[id(mat)] == (0.05 if optimizer == "muon" else 3e-3)
    assert (rate[id(emb)], rate[id(head)], rate[id(gain)]) == (0.3, 0.008, 0.04)
    assert decay[id(emb)] == decay[id(head)] == 0.1 and decay[id(gain)] == 0.0
    assert len(opt.param_groups) == 4
    set_lr(opt, 0.5)
    assert {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}[id(emb)] == 0.15


@pytest.mark.parametrize("optimizer, sizes", [("muon", [1, 2, 1]), ("adamw", [3, 1])])
def test_default_rates_build_the_single_rate_optimizer_group_for_group(optimizer, sizes):
    """0 means train.learning_rate, and then the groups are those of one rate: a run's steps and its checkpoint's
    optimizer state_dict are as they were."""
    groups = _groups()
    opt = build_optimizer(groups, TrainConfig(optimizer=optimizer, learning_rate=3e-3, muon_lr=0.05), "cpu")
    assert [len(g["params"]) for g in opt.param_groups] == sizes
    order = [p for k in ("matrix", "embedding", "head", "scalar") for p in groups[k]]
    assert [id(p) for g in opt.param_groups for p in g["params"]] == [id(p) for p in order]
    assert not any("split_rows" in g for g in opt.param_groups)


def test_split_orthogonalisation_equals_each_block_alone():
    """train.muon_split_qkv: a fused (2C + 2 kv) x C weight of grouped-query attention (C=32, kv 16) is stepped as
    Q, K and V on their own, each orthogonalised and scaled as the matrix it is."""
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2(vocab_size=64, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=32))
    rows = model.qkv_rows()
    w = model.transformer.h[0].attn.c_attn.weight
    assert rows[w] == (32, 16, 16) and w.shape == (64, 32) and len(rows) == 2
    g = torch.randn_like(w)
    cfg = TrainConfig(optimizer="muon", muon_lr=0.1, muon_momentum=0.0, muon_split_qkv=True)
    before = w.detach().clone()
    opt = build_optimizer(model.param_groups(), cfg, "cpu", qkv_rows=rows)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    w.grad = g.clone()
    opt.step()
    # Nesterov with momentum 0 is the gradient itself; each block: W_i -= lr * NS(G_i) * max(1, rows_i/cols)^0.5
    want = torch.cat([b - 0.1 * newton_schulz(gi) for b, gi in zip(before.split((32, 16, 16)), g.split((32, 16, 16)))])
    torch.testing.assert_close(w.detach(), want, atol=1e-6, rtol=0)
    whole = before - 0.1 * newton_schulz(g) * 2 ** 0.5  # the stack as one matrix: another update
    assert not torch.allclose(w.detach(), whole, atol=1e-3)
    with pytest.raises(ValueError, match="qkv_rows"):
        build_optimizer(model.param_groups(), cfg, "cpu")


def test_cosine_schedule_key_points():
    cfg = TrainConfig(schedule="cosine", learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=110,
                      max_iters=1000, max_seconds=0.0)
    f = lambda s: lr_multiplier(s, 0.0, cfg)  # noqa: E731
    assert f(0) == pytest.approx(1 / 11) and f(9) == pytest.approx(10 / 11)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # decay length is not max_iters
    assert all(f(s) >= f(s + 1) for s in range(10, 200))


def test_wsd_schedule_key_points():
    cfg = TrainConfig(schedule="wsd", learning_rate=1e-3, min_lr=0.0, warmup_iters=5, max_iters=100,
                      decay_fraction=0.2, max_seconds=0.0)
    f = lambda s: lr_multiplier(s, 0.0, cfg)  # noqa: E731
    assert f(4) == pytest.approx(5 / 6)
    assert f(5) == f(50) == f(80) == 1.0
    assert f(90) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


def test_schedule_follows_time_with_max_seconds():
    base = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=2, max_iters=10**9, max_seconds=60.0)
    cos = dataclasses.replace(base, schedule="cosine")
    wsd = dataclasses.replace(base, schedule="wsd", decay_fraction=0.5)
    assert lr_multiplier(1, 0.0, cos) == pytest.approx(2 / 3)  # warmup is still counted in steps
    assert lr_multiplier(10**6, 0.0, cos) == pytest.approx(1.0)  # steps do not decay it: time does
    assert lr_multiplier(50, 30.0, cos) == pytest.approx(0.55)
    assert lr_multiplier(50, 60.0, cos) == pytest.approx(0.1) == lr_multiplier(50, 99.0, cos)
    assert lr_multiplier(50, 29.0, wsd) == 1.0
    assert lr_multiplier(50, 45.0, wsd) == pytest.approx(1 - 0.9 * 0.5)
    assert math.isclose(lr_multiplier(50, 60.0, wsd), 0.1)
