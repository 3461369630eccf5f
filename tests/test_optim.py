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
