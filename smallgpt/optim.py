"""Optimizers and learning-rate schedules for train.py.

* **AdamW** (Loshchilov & Hutter 2019) with decoupled weight decay on 2-D and larger tensors only
  (matrices and embeddings); gains and biases are not decayed, as in nanoGPT.
* **Muon** (Keller Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/, modded-nanogpt):
  SGD with Nesterov momentum whose update for each 2-D hidden weight is replaced by the nearest
  semi-orthogonal matrix, found by a few Newton–Schulz iterations.  It equalises the update's
  singular values, so rare directions learn as fast as common ones.  Embeddings, the LM head and
  gains are not hidden matrices and keep AdamW, inside the same optimizer object (one state_dict).
  The fused attention projection stacks three matrices (Q, K, V); ``train.muon_split_qkv``
  orthogonalises each apart, as modded-nanogpt does, instead of the 3C x C stack as one.
* **A learning rate per role** (modded-nanogpt, nanochat): the embeddings, the head and the scalar
  gains each take their own peak rate (``train.embedding_lr``, ``head_lr``, ``scalar_lr``; 0 is
  ``train.learning_rate``), beside Muon's ``train.muon_lr`` for the matrices.
* **Schedules**, as one multiplier of every group's peak learning rate: linear warmup, then
  'cosine' decay to ``min_lr`` or 'wsd' (warmup–stable–decay: constant, then a linear decay over the
  last ``decay_fraction`` of the run; Hägele et al. 2024).  With a wall-clock budget
  (``max_seconds > 0``) the schedule follows elapsed training time instead of steps, so "train for
  5 minutes" ends exactly when the decay does.  Such a run is then exactly resumable only up to
  timing: the learning rate of each step depends on how fast the steps ran.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the settings' type only; the optimizers need nothing else of config.py
    from smallgpt.config import TrainConfig

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton–Schulz coefficients of modded-nanogpt


def _optimizers_without_the_compiler() -> None:
    """Let an optimizer be created and stepped without importing torch's compiler stack.

    ``torch.optim.Optimizer`` marks ``add_param_group``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict`` as never to be traced by wrapping them in ``torch._disable_dynamo``, which imports
    ``torch._dynamo`` on a method's first call: about 1.5 s of a laptop CPU, a third of a small run's
    start, spent on a compiler that an eager run never uses.  The wrapper keeps the untraceable form of
    each method in its ``__dynamo_disable`` attribute once made; this project traces no optimizer (it
    compiles the model or its blocks, never an optimizer step: speed.py), so that form is the method itself,
    and saying so up front spares the import.  Muon's own step imports nothing; torch's AdamW step still
    imports the compiler (its ``_use_grad_for_differentiable``).  Where a torch release keeps no such
    attribute the methods import the compiler as before: slower, never wrong."""
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict"):
        method = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if method is not None and not hasattr(method, "__dynamo_disable"):
            setattr(method, "__dynamo_disable", method)


_optimizers_without_the_compiler()


@torch.no_grad()
def newton_schulz(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately orthogonalise ``g`` (2-D): U Vᵀ of its SVD U S Vᵀ, singular values pushed near 1.

    The quintic iteration X <- aX + b(XXᵀ)X + c(XXᵀ)²X is tuned to raise small singular values fast;
    it lands them in roughly [0.7, 1.2] rather than exactly on 1, which works as well for training
    and runs in a handful of matmuls (bf16 on GPUs, fp32 on CPUs where bf16 matmuls are slow).
    """
    a, b, c = NS_COEFFS
    dtype = torch.bfloat16 if g.is_cuda else torch.float32
    x = g.to(dtype)
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the short side: XXᵀ is the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1, inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.T
    return x.to(g.dtype)


def muon_scale(w: torch.Tensor) -> float:
    """max(1, rows/cols)^0.5: keeps the RMS per element of an orthogonalised update comparable across shapes."""
    return max(1.0, w.size(0) / w.size(1)) ** 0.5


class Muon(torch.optim.Optimizer):
    """Muon for groups with ``use_muon=True`` (2-D weights), AdamW for the others.

    Muon step per weight W (rows x cols) with gradient G:
        m <- momentum·m + (1 - momentum)·G;   u <- Nesterov: lerp(G, m, momentum)
        W <- W·(1 - lr·wd) - lr · max(1, rows/cols)^0.5 · NewtonSchulz(u)
    The scale keeps the update's RMS per element comparable across shapes (modded-nanogpt).  A Muon group
    may carry ``split_rows``, one entry per parameter: None, or the row counts of the matrices the weight
    stacks (a fused Q, K, V projection), each of which then takes the step above on its own rows.
    """

    def __init__(self, param_groups: list[dict]):
        for group in param_groups:
            if group["use_muon"]:
                group.setdefault("momentum", 0.95)
                group.setdefault("nesterov", True)
                if any(p.dim() != 2 for p in group["params"]):
                    raise ValueError("Muon groups take 2-D weights only")
            else:
                group.setdefault("betas", (0.9, 0.95))
                group.setdefault("eps", 1e-8)
            group.setdefault("weight_decay", 0.0)
        super().__init__(param_groups, {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p, rows in zip(group["params"], group.get("split_rows") or [None] * len(group["params"])):
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["use_muon"]:
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    u = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                    p.mul_(1 - lr * wd)
                    if rows is None:
                        p.add_(newton_schulz(u), alpha=-lr * muon_scale(p))
                    else:  # each stacked matrix on its own rows (views of p, updated in place)
                        for w, part in zip(p.split(rows), u.split(rows)):
                            w.add_(newton_schulz(part), alpha=-lr * muon_scale(w))
                else:
                    if not state:
                        state["step"] = 0  # a plain int: no device sync to read it
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    t = state["step"]
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                    p.mul_(1 - lr * wd)
                    p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** t))
        return loss


def build_optimizer(groups: dict[str, list[torch.nn.Parameter]], cfg: TrainConfig, device_type: str,
                    fused: bool | None = None,
                    qkv_rows: dict[torch.nn.Parameter, tuple[int, ...]] | None = None) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` names, over ``GPT.param_groups()``.

    A param group per role, in GPT.param_groups' order: the matrices inside the blocks (Muon at
    ``muon_lr``, or AdamW at ``learning_rate``), the embeddings (``embedding_lr``), the head
    (``head_lr``), both with ``weight_decay``, and the scalar gains and biases (``scalar_lr``, no weight
    decay); a rate of 0 is ``learning_rate``.  Neighbouring groups whose settings are all equal are one
    group, so with the default rates the optimizer is the single-rate one this project always built, group
    for group and parameter for parameter: its steps, its state_dict and the checkpoints that hold it are
    unchanged.  ``qkv_rows`` (``GPT.qkv_rows()``) says how the fused attention weights stack Q, K and V,
    for ``cfg.muon_split_qkv``.

    Every param group carries ``initial_lr`` (its peak learning rate); :func:`set_lr` scales it by the
    schedule.  AdamW uses the fused kernel by default (one kernel for all tensors; on CPU it is
    also faster than foreach, docs/performance.md); ``fused=False`` selects foreach.
    """
    def rate(lr: float) -> float:
        return lr or cfg.learning_rate

    live = {role: [p for p in groups.get(role, []) if p.requires_grad]
            for role in ("matrix", "embedding", "head", "scalar")}
    if cfg.optimizer == "muon":
        if cfg.muon_split_qkv and qkv_rows is None:
            raise ValueError("train.muon_split_qkv needs qkv_rows (GPT.qkv_rows()) to know how c_attn stacks Q, K, V")
        split = [(qkv_rows or {}).get(p) if cfg.muon_split_qkv else None for p in live["matrix"]]
        matrix = dict(use_muon=True, lr=cfg.muon_lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay,
                      **({"split_rows": split} if any(split) else {}))
        adam = dict(use_muon=False, betas=(cfg.beta1, cfg.beta2))
    else:
        matrix, adam = dict(lr=cfg.learning_rate, weight_decay=cfg.weight_decay), {}
    spec = [dict(params=live["matrix"], **matrix),
            dict(params=live["embedding"], lr=rate(cfg.embedding_lr), weight_decay=cfg.weight_decay, **adam),
            dict(params=live["head"], lr=rate(cfg.head_lr), weight_decay=cfg.weight_decay, **adam),
            dict(params=live["scalar"], lr=rate(cfg.scalar_lr), weight_decay=0.0, **adam)]
    merged: list[dict] = []
    for group in (g for g in spec if g["params"]):
        settings = {k: v for k, v in group.items() if k != "params"}
        if merged and {k: v for k, v in merged[-1].items() if k != "params"} == settings:
            merged[-1]["params"] = merged[-1]["params"] + group["params"]
        else:
            merged.append(group)
    if cfg.optimizer == "muon":
        opt = Muon(merged)
    else:
        fused = (device_type in ("cuda", "cpu")) if fused is None else fused
        opt = torch.optim.AdamW(merged, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                                **({"fused": True} if fused else {"foreach": True}))
    for group in opt.param_groups:
        group["initial_lr"] = group["lr"]
    return opt


def set_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Every group at ``multiplier`` times its own peak learning rate (one schedule for all)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


def lr_multiplier(step: int, train_seconds: float, cfg: TrainConfig) -> float:
    """The schedule: the fraction of each peak learning rate to use for optimizer step ``step`` (0-based).

    Warmup is always counted in steps: (step+1)/(warmup_iters+1) for the first warmup_iters steps.
    The decay's progress p in [0, 1]:
      - with ``max_seconds > 0``: train_seconds / max_seconds (the budget spans warmup to the end);
      - else 'cosine': (step - warmup_iters) / (lr_decay_iters - warmup_iters), independent of
        max_iters as in nanoGPT; 'wsd': step / max_iters.
    'cosine' returns min + (1 - min)·(1 + cos(πp))/2; 'wsd' is 1 until p = 1 - decay_fraction, then
    falls linearly to min at p = 1.  ``min`` is min_lr / learning_rate.
    """
    floor = cfg.min_lr / cfg.learning_rate
    if step < cfg.warmup_iters:
        return (step + 1) / (cfg.warmup_iters + 1)
    if cfg.max_seconds > 0:
        p = train_seconds / cfg.max_seconds
    elif cfg.schedule == "cosine":
        p = (step - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    else:
        p = step / max(1, cfg.max_iters)
    p = min(max(p, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p))
    stable = 1.0 - cfg.decay_fraction
    if p <= stable or cfg.decay_fraction == 0:
        return 1.0
    return 1.0 - (1.0 - floor) * (p - stable) / cfg.decay_fraction
