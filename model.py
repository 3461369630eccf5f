"""A GPT in one file, built on one compact, efficient causal multi-head attention.

``GPTConfig()`` is the small model this project trains by default on a laptop CPU (6 layers, 192
wide, a context of 128 tokens, rotary positions and a squared-ReLU MLP); ``GPTConfig.gpt2()`` is
GPT-2's architecture and size (Radford et al. 2019): learned position embeddings, pre-LayerNorm
blocks, a GELU MLP, the LM head tied to the token embedding, GPT-2 initialisation, and GPT-2's
parameter names, so its checkpoints map straight onto this model (the preset's GELU is the exact
one, as nanoGPT's; ``activation='gelu_tanh'`` is GPT-2's own tanh approximation, which an imported
GPT-2 uses, so it computes exactly what transformers does).  The other options (RMSNorm, QK-norm,
SwiGLU, grouped-query attention, untied head, logit soft-capping, zero-initialised projections) are
off by default; with rotary positions and ReLU^2 they are the choices modded-nanogpt found to train
faster, kept small enough to read in one sitting.

The attention is the end of the lineage in ``tests/reference_attention.py`` (simple
self-attention -> trainable weights -> causal mask -> multi-head -> one fused projection and
``F.scaled_dot_product_attention``); the tests prove it computes the same thing.

Imports only torch and the standard library.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# what generation does past block_size (GPT.new_cache): nanoGPT's exact window recompute, a rolling
# KV cache (Mistral's sliding window), or a rolling cache that keeps attention sinks (StreamingLLM)
LONG_CONTEXT = ("recompute", "rolling", "sinks")


@dataclass
class GPTConfig:
    vocab_size: int = 4096  # tokens in the vocabulary (set from the dataset by train.py)
    block_size: int = 128  # longest context the model attends over
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads (query heads)
    n_embd: int = 192  # width of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: true)
    n_kv_head: int = 0  # key/value heads for grouped-query attention; 0 = n_head (plain multi-head)
    pos_emb: str = "rope"  # position embedding: 'rope' (rotary, Su et al. 2021) or 'learned' (GPT-2)
    rope_base: float = 10000.0  # rotary embedding base frequency (pos_emb = 'rope')
    norm: str = "layernorm"  # 'layernorm' (GPT-2) or 'rmsnorm'
    qk_norm: bool = False  # normalise queries and keys per head before attention
    activation: str = "relu2"  # MLP activation: 'relu2' (squared ReLU, So et al. 2021), 'gelu' (exact erf), 'gelu_tanh' (GPT-2's own) or 'swiglu'
    mlp_ratio: float = 4.0  # MLP hidden width as a multiple of n_embd ('swiglu' uses 2/3 of it, rounded)
    tie_embeddings: bool = True  # share the token embedding with the LM head (GPT-2: true)
    logit_softcap: float = 0.0  # cap logits smoothly at +-this value with tanh; 0 = off
    zero_init_proj: bool = False  # initialise the residual output projections to zero
    vocab_multiple: int = 64  # the embedding and head get vocab_size rounded up to a multiple of this many rows (GPU tensor-core shapes: GPT-2's 50,257 -> 50,304); the extra rows are never used; 1 = none

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{name} {what}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) > 0, name, "must be a positive integer")
        need(self.n_embd % self.n_head == 0, "n_embd", f"must be divisible by n_head ({self.n_head})")
        need(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        need(self.n_kv_head >= 0 and (self.n_kv_head == 0 or self.n_head % self.n_kv_head == 0), "n_kv_head",
             f"must be 0 or divide n_head ({self.n_head})")
        need(self.pos_emb in ("learned", "rope"), "pos_emb", "must be 'learned' or 'rope'")
        need(self.pos_emb != "rope" or (self.n_embd // self.n_head) % 2 == 0, "n_embd",
             "divided by n_head must be even for rotary embeddings")
        need(self.rope_base > 0, "rope_base", "must be positive")
        need(self.norm in ("layernorm", "rmsnorm"), "norm", "must be 'layernorm' or 'rmsnorm'")
        need(self.activation in ("gelu", "gelu_tanh", "relu2", "swiglu"), "activation",
             "must be 'gelu', 'gelu_tanh', 'relu2' or 'swiglu'")
        need(self.mlp_ratio > 0 and self.mlp_hidden >= 1, "mlp_ratio", "must be positive (an MLP at least 1 wide)")
        need(self.logit_softcap >= 0, "logit_softcap", "must be 0 (off) or positive")

    @classmethod
    def gpt2(cls, **changes) -> GPTConfig:
        """GPT-2 small (124M parameters) as nanoGPT builds it: 12 layers of 12 heads, 768 wide, a context
        of 1,024 and GPT-2's vocabulary of 50,257 tokens, with learned positions and a GELU MLP (the other
        options are GPT-2's already: LayerNorm with biases, a tied head).  ``changes`` override any of it,
        e.g. ``GPTConfig.gpt2(n_layer=24, n_head=16, n_embd=1024)`` for GPT-2 medium's shape."""
        return cls(**{**GPT2_SMALL, **changes})

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab(self) -> int:
        """Rows of the token embedding and the LM head: vocab_size rounded up to a multiple of vocab_multiple.

        A GPU's tensor cores run a matmul fastest when its sides are multiples of 8 elements in 16-bit
        formats, and of 64 best (tile quantisation: NVIDIA's matrix-multiplication performance guide); the head
        is the largest matmul of a small model (~30 % of GPT-2 small's matmul FLOPs), so nanoGPT pads GPT-2's
        50,257 to 50,304 and nanochat to a multiple of 64.  The padding rows are no
        tokens: ``GPT.head`` cuts their logits off before any softmax, loss or sample sees them."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP; SwiGLU has three matrices instead of two, so 2/3 of it keeps the size."""
        ratio = self.mlp_ratio * (2 / 3 if self.activation == "swiglu" else 1)
        return round(ratio * self.n_embd)


GPT2_SMALL = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, pos_emb="learned",
                  activation="gelu")  # GPTConfig.gpt2(): what differs from the defaults


# --------------------------------------------------------------------------- building blocks


class RMSNorm(nn.RMSNorm):
    """RMSNorm (Zhang & Sennrich 2019): x / rms(x) * gain, i.e. LayerNorm without the centring and the
    bias; as good in practice (Llama, modded-nanogpt).  The gain is cast to the input's dtype, so
    under bf16 autocast torch's fused kernel still applies."""

    def __init__(self, dim: int):
        super().__init__(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


class _KeepMaskDropout(torch.autograd.Function):
    """x * keep / (1 - p), with ``keep`` drawn as 16 random bits per element against a threshold."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        n = x.numel()
        bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_(-2**31, 2**31)  # 32 random bits each
        keep = bits.view(torch.int16)[:n].view(x.shape) >= round(65536 * p) - 32768  # P(keep) = 1 - p
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


class Dropout(nn.Dropout):
    """Inverted dropout (Srivastava et al. 2014): while training, zero each element with probability p
    and scale the others by 1/(1-p), so nothing changes at evaluation.

    On a CPU, eagerly, torch's Bernoulli sampling (random floats, then a comparison) is slow enough to be
    a large part of a small model's step; drawing 16 random bits per element and comparing them with a
    threshold gives the same mask distribution (p rounded to a multiple of 1/65536) at a fraction of the
    cost.  On a GPU, and inside torch.compile (which fuses its own), it is F.dropout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, training=True)
        return _KeepMaskDropout.apply(x, self.p)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    """LayerNorm (GPT-2) or RMSNorm, as configured."""
    return RMSNorm(dim) if config.norm == "rmsnorm" else nn.LayerNorm(dim, bias=config.bias)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021).

    Each pair of channels (i, i + d/2) of a query or key at position p is rotated by the angle
    p * base^(-2i/d).  A rotation keeps lengths, and q_m . k_n then depends only on m - n, so
    attention sees relative positions and there is no position table to learn.  Real arithmetic,
    not complex numbers, so torch.compile can fuse it.  The cos/sin tables cover block_size
    positions and are not saved in checkpoints (they are recomputed).  A rolling KV cache rotates
    tokens past block_size at their positions in the text (only distances matter, and in its window
    they stay below block_size); the tables grow for those positions, their angles computed in
    float64 so that a position of many thousands is as exact as one inside the context.
    """

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        self.head_dim, self.base = head_dim, base
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (max_len, hd/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def grow(self, length: int) -> None:
        """Extend the tables to at least ``length`` positions (doubling, so a long sample grows them rarely)."""
        old = self.cos.size(0)
        inv_freq = (self.base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)).double()
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, even when sampling in inference mode
            angles = torch.outer(torch.arange(old, max(length, 2 * old), dtype=torch.float64), inv_freq)
            self.cos = torch.cat((self.cos, angles.cos().to(self.cos)))  # (new length, hd/2)
            self.sin = torch.cat((self.sin, angles.sin().to(self.sin)))

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Rotate x (B, heads, T, hd) whose first token is at position ``start``."""
        T = x.size(-2)
        if start + T > self.cos.size(0):
            self.grow(start + T)
        return self.rotate(x, self.cos[start:start + T], self.sin[start:start + T])

    def turn(self, x: torch.Tensor, by: int) -> torch.Tensor:
        """Rotate every token of x (B, heads, T, hd) on by ``by`` positions: rotations in a plane add, so a
        key rotated at position p becomes the key rotated at p + by."""
        if by >= self.cos.size(0):
            self.grow(by + 1)
        return self.rotate(x, self.cos[by:by + 1], self.sin[by:by + 1])

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, heads, T, hd) with each channel pair (i, i + hd/2) rotated by the angle whose cos/sin are given."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, hd/2) or (1, hd/2), broadcast over batch and heads
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, for incremental decoding.

    One preallocated tensor per layer for keys and one for values, (B, kv_heads, block_size, head_dim),
    created on the first write with that write's dtype and device (so autocast just works), plus
    ``length``: how many tokens the cache has seen (the position of the next one).  Each attention
    layer writes the keys/values of its new tokens and attends over what the cache holds; ``GPT``
    advances ``length`` once all layers ran.  Keys are stored after QK-norm and rotation, i.e.
    exactly what attention consumed.

    A plain cache holds block_size tokens and refuses more: nanoGPT's exact semantics past the
    context (each step sees the last block_size tokens as if fed from scratch) need the window
    recomputed, because the keys of deeper layers depend on every earlier token of the window.

    A rolling cache (``rolling=True``, rotary positions only) goes on one token at a time and evicts
    the oldest: each new token attends to the keys and values of the most recent block_size tokens as
    they were computed when those tokens were new, and nothing is recomputed.  That is sliding-window
    attention as Mistral uses it (Jiang et al. 2023), whose layers still pass information from
    further back.  Evicting the window's first tokens can hurt a model trained with full attention,
    which parks attention on them ("attention sinks", StreamingLLM, Xiao et al. 2023); with
    ``sinks=k`` the first k tokens are never evicted and the window rolls over the other slots.
    Positions: inside the rolling window the distance from the newest token to each key equals their
    distance in the text, below block_size as in training, and RoPE sees only distances, so keys
    rotated at their text positions when written stay right.  StreamingLLM assigns positions by place
    in the cache, so a sink sits just before the window, its distance to the query below block_size;
    the sinks are the only keys whose distance then changes as the text grows, so they alone are
    turned on by the offset every step (``Rotary.turn``), from their keys as first written.
    """

    def __init__(self, n_layer: int, block_size: int, rolling: bool = False, sinks: int = 0):
        if not 0 <= sinks < block_size or (sinks and not rolling):
            raise ValueError(f"sinks must be 0, or below block_size ({block_size}) in a rolling cache, got {sinks}")
        self.n_layer, self.block_size, self.rolling, self.sinks = n_layer, block_size, rolling, sinks
        self.clear()

    def clear(self) -> None:
        """Forget every token (a prefill starts over)."""
        self.k: list[torch.Tensor | None] = [None] * self.n_layer
        self.v: list[torch.Tensor | None] = [None] * self.n_layer
        self.sink_k: list[torch.Tensor | None] = [None] * self.n_layer  # the sinks' keys as first written
        self.length = 0

    def can_take(self, T: int) -> bool:
        """Whether T more tokens fit: up to block_size in all, then (rolling) one at a time."""
        return self.length + T <= self.block_size or (self.rolling and T == 1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               rotary: Rotary | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, kv_heads, T, hd) of the tokens at positions [length, length + T); return every
        key/value the new tokens attend to (B, kv_heads, min(length + T, block_size), hd)."""
        B, H, T, D = k.shape
        S, end = self.block_size, self.length + T
        if not self.can_take(T):
            raise ValueError(f"KV cache holds {S} positions; cannot write up to {end}"
                             + (" (past them, one token at a time)" if self.rolling else ""))
        if self.k[layer] is None:
            self.k[layer] = k.new_empty(B, H, S, D)
            self.v[layer] = v.new_empty(B, H, S, D)
        if end <= S:  # filling up: slot = position
            self.k[layer][:, :, self.length:end] = k
            self.v[layer][:, :, self.length:end] = v
            return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, kv_heads, end, hd)
        # full: the new token takes the slot of the oldest one that is not a sink (a ring over slots
        # sinks..S-1); slot order does not matter, since one query attends to all slots without a mask
        slot = self.sinks + (self.length - self.sinks) % (S - self.sinks)
        self.k[layer][:, :, slot] = k[:, :, 0]
        self.v[layer][:, :, slot] = v[:, :, 0]
        if self.sinks and rotary is not None:
            # by place in the cache the query is at S - 1 and sink i at i; the query was rotated at its
            # text position (length), so sink i goes to i + length - (S - 1)
            if self.sink_k[layer] is None:
                self.sink_k[layer] = self.k[layer][:, :, :self.sinks].clone()  # (B, kv_heads, sinks, hd)
            self.k[layer][:, :, :self.sinks] = rotary.turn(self.sink_k[layer], self.length - (S - 1))
        return self.k[layer], self.v[layer]  # (B, kv_heads, S, hd)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention in its efficient form.

    One fused projection ``c_attn`` computes queries, keys and values (in that order) for all heads
    at once; heads are split by view/transpose (no Python loop, no copies), and
    ``F.scaled_dot_product_attention`` applies the scaled softmax with the causal mask without
    materialising a T x T mask, so flash / memory-efficient kernels run where the device has them.
    Options: grouped-query attention (Ainslie et al. 2023; fewer key/value heads, each shared by
    n_head / n_kv_head query heads), QK-norm (Henry et al. 2020, Dehghani et al. 2023; RMS-normalise
    each head's query and key, with a learned gain, so logits cannot blow up), rotary positions.
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.n_head, self.kv_heads, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.layer_idx = layer_idx  # which slot of a KVCache is ours
        kv_dim = self.kv_heads * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)  # Q, K, V
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.q_norm = RMSNorm(self.head_dim) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim) if config.qk_norm else None
        self.rotary = Rotary(self.head_dim, config.block_size, config.rope_base) if config.pos_emb == "rope" else None
        self.dropout = config.dropout
        self.resid_dropout = Dropout(config.dropout)
        # SDPA broadcasts shared key/value heads itself (torch >= 2.5); only ask for it when grouped
        self.sdpa_kwargs = {"enable_gqa": True} if self.kv_heads != self.n_head else {}

    def qkv(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, n_head, T, hd), keys and values (B, kv_heads, T, hd) for x (B, T, C) at positions start..."""
        B, T, C = x.shape
        kv_dim = self.kv_heads * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, hd)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv_heads, T, hd)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, kv_heads, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:  # after the norm, so the rotation is the last thing that touches q, k
            q, k = self.rotary(q, start), self.rotary(k, start)
        return q.to(v.dtype), k.to(v.dtype), v  # norms may have promoted to float32 under autocast

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.shape
        start = cache.length if cache is not None else 0
        q, k, v = self.qkv(x, start)
        mask = None
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v, self.rotary)  # (B, kv_heads, min(start + T, block_size), hd)
            if start > 0 and T > 1:  # several new queries after cached keys: query i sees keys <= start + i
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
        # with no cache, or a cache filled from empty, the plain causal mask is right; a single new
        # query after cached keys (a rolling cache's whole window included) may see all of them, so it
        # needs no mask at all
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=start == 0,
                                           dropout_p=self.dropout if self.training else 0.0, **self.sdpa_kwargs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The position-wise feed-forward network: widen, non-linearity, project back.

    'gelu': the exact (erf) GELU (Hendrycks & Gimpel 2016), as nanoGPT uses.  'gelu_tanh': its tanh
    approximation, which GPT-2 trained with (transformers' 'gelu_new'): it differs by < 1e-3 and, on
    CPUs, is the slower kernel, but an imported GPT-2 computes exactly what it learned with it.  'relu2': relu(x)^2 (Primer, So et al. 2021), cheaper and
    faster-learning.  'swiglu': silu(a) * b (Shazeer 2020); ``c_fc`` produces both halves [a, b], and
    the hidden width is 2/3 of the usual so the parameter count stays about the same.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.activation = config.activation
        hidden = config.mlp_hidden
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.activation == "swiglu" else hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, hidden) or (B, T, 2 * hidden) for swiglu
        if self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value  # (B, T, hidden)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """A transformer block with pre-normalisation (GPT-2): x + attn(norm(x)), then x + mlp(norm(x)).

    Normalising the branch inputs, not the residual stream, keeps a clean identity path through the
    depth of the network, so gradients stay well scaled and training is stable (Xiong et al. 2020).
    """

    def __init__(self, config: GPTConfig, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------- the model


VOCAB_ROWS = ("transformer.wte.weight", "lm_head.weight")  # the weights with a row per token (and padding)


def fit_vocab_rows(state_dict: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """``state_dict`` with its token embedding and LM head cut or zero-padded to ``rows`` rows: GPT-2's 50,257
    into a padded model's 50,304, a model into another ``vocab_multiple``, or a padded model back to its real
    vocabulary (an export).  Rows past the real vocabulary are never used, so nothing else changes."""
    out = dict(state_dict)
    for name in VOCAB_ROWS:
        w = state_dict.get(name)
        if w is not None and w.size(0) != rows:
            out[name] = w[:rows] if w.size(0) > rows else torch.cat([w, w.new_zeros(rows - w.size(0), *w.shape[1:])])
    return out


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V) -> (B,).

    temperature 0 is greedy (argmax, no randomness); top_k keeps the k most likely tokens (None or 0 =
    all); top_p keeps the smallest set of most likely tokens whose probability reaches p (nucleus
    sampling, Holtzman et al. 2020; None or 1.0 = all).  ``generator`` makes the draw reproducible.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the more likely tokens
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the first token always stays
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


class GPT(nn.Module):
    """A decoder-only transformer language model with GPT-2's structure and parameter names."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_emb == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(drop=Dropout(config.dropout),
                       h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                       ln_f=make_norm(config, config.n_embd))
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        for m in (self.transformer.wte, self.lm_head):
            # zero rows up to GPTConfig.padded_vocab; built at the real size first, so that the random stream,
            # and with it every initial weight, is an unpadded model's
            padding = m.weight.new_zeros(config.padded_vocab - config.vocab_size, config.n_embd)
            m.weight = nn.Parameter(torch.cat([m.weight.detach(), padding]))  # (padded_vocab, C)
        self.transformer.wte.num_embeddings = self.lm_head.out_features = config.padded_vocab
        if config.tie_embeddings:
            # one matrix both reads tokens in and scores them out (Press & Wolf 2017): fewer
            # parameters, and rare tokens' input embeddings get gradient from every output step
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        # GPT-2: each residual branch's output projection is scaled down by 1/sqrt(2 * n_layer) so the
        # residual stream's variance does not grow with depth; modded-nanogpt starts them at zero, so
        # every block begins as the identity
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            weight = module.weight
            if module is self.transformer.wte or module is self.lm_head:
                weight = weight.detach()[:self.config.vocab_size]  # the real rows; the padding stays zero
            nn.init.normal_(weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ---- forward

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final normalised hidden states (B, T, C) for tokens idx (B, T), continuing ``cache`` if given."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        rolling = cache is not None and cache.rolling
        if rolling and "wpe" in self.transformer:
            raise ValueError("a rolling KV cache needs rotary positions (pos_emb='rope'): learned position "
                             "embeddings have no position past block_size")
        if start + T > self.config.block_size and not rolling:
            raise ValueError(f"cannot forward a sequence of {start + T} tokens: "
                             f"block_size is only {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, cache)
        if cache is not None:
            cache.length += T
        return self.transformer.ln_f(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) of the real vocabulary from hidden states (..., C); soft-capped as cap * tanh(logits / cap)
        if set (Gemma 2).  The padding rows' logits (GPTConfig.padded_vocab) are cut off here, so no softmax, loss
        or sample ever counts them, and their rows of the head get no gradient."""
        logits = self.lm_head(x)  # (..., padded_vocab)
        if logits.size(-1) != self.config.vocab_size:
            logits = logits[..., :self.config.vocab_size]  # (..., V)
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap else logits

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) at every position, and with targets (B, T) the mean cross-entropy
        (positions whose target is -1 are ignored)."""
        logits = self.head(self.hidden_states(idx, cache))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # ---- counting

    @property
    def padding_weights(self) -> int:
        """Weights in each padding part of the embedding and the head (GPTConfig.padded_vocab): never used."""
        return (self.config.padded_vocab - self.config.vocab_size) * self.config.n_embd

    def num_params(self) -> int:
        """All parameters, the tied embedding/head matrix once, position embeddings included; the padding
        rows of the embedding and the head (GPTConfig.vocab_multiple) left out, since no token uses them."""
        padding = self.padding_weights * (1 if self.config.tie_embeddings else 2)
        return sum(p.numel() for p in self.parameters()) - padding

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token, PaLM's convention (Chowdhery et al. 2022, app. B).

        6 * N + 12 * n_layer * n_embd * T, where N counts the weights of every matrix multiply: the
        Linear layers of the blocks and the LM head (the tied token embedding counts there, once).
        Lookups (token and position embeddings as such), biases and norm gains are left out, and so are
        the head's padding rows (GPTConfig.padded_vocab): a GPU computes them, but they are the hardware's
        FLOPs, not the model's, so MFU credits a padded model only with what it needs and compares fairly
        with an unpadded one.  The attention term is Q K^T and A V over a context of T = block_size (or
        ``seq_len``), counted for the full T x T square as PaLM does, although causal kernels may skip the
        masked half.
        """
        n_matmul = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear)) - self.padding_weights
        T = seq_len or self.config.block_size
        return 6 * n_matmul + 12 * self.config.n_layer * self.config.n_embd * T

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every parameter exactly once, by the role that decides its optimizer settings.

        - "matrix": 2-D weights inside the blocks (attention and MLP): weight decay, Muon's domain;
        - "embedding": the token embedding (also the head when tied) and the position embedding;
        - "head": the LM head when untied (empty when tied);
        - "scalar": 1-D parameters, i.e. norm gains and biases: no weight decay.
        """
        groups: dict[str, list[nn.Parameter]] = {"matrix": [], "embedding": [], "head": [], "scalar": []}
        for name, p in self.named_parameters():  # a tied parameter appears once, as transformer.wte.weight
            if p.ndim < 2:
                groups["scalar"].append(p)
            elif name.startswith("transformer.h."):
                groups["matrix"].append(p)
            elif name.startswith(("transformer.wte.", "transformer.wpe.")):
                groups["embedding"].append(p)
            elif name.startswith("lm_head."):
                groups["head"].append(p)
            else:
                raise AssertionError(f"parameter {name} has no optimizer group")
        return groups

    def qkv_rows(self) -> dict[nn.Parameter, tuple[int, int, int]]:
        """Each block's fused projection ``c_attn.weight`` -> its rows as the three matrices it stacks (Q, K, V;
        K and V narrower with grouped-query attention), for an optimizer that treats them apart (Muon's
        train.muon_split_qkv)."""
        rows = (self.config.n_embd, *2 * [self.config.kv_heads * self.config.head_dim])
        return {block.attn.c_attn.weight: rows for block in self.transformer.h}

    # ---- generation

    def new_cache(self, long_context: str = "recompute", sink_tokens: int = 4) -> KVCache:
        """A KV cache for generation, by what it does past block_size (``long_context``):

        - 'recompute': nanoGPT's exact semantics, every step as if the last block_size tokens were fed
          from scratch, so past the context the window is recomputed for every token;
        - 'rolling': a rolling cache of the last block_size tokens, nothing recomputed (Mistral's
          sliding window);
        - 'sinks': the same, keeping the first ``sink_tokens`` tokens (StreamingLLM's attention sinks).

        See ``KVCache`` for why.  Models with learned positions always get 'recompute'.
        """
        if long_context not in LONG_CONTEXT:
            raise ValueError(f"long_context must be one of {', '.join(LONG_CONTEXT)}, got {long_context!r}")
        rolling = long_context != "recompute" and self.config.pos_emb == "rope"
        sinks = sink_tokens if rolling and long_context == "sinks" else 0
        if long_context == "sinks" and not 0 < sink_tokens < self.config.block_size:
            raise ValueError(f"sink_tokens must be between 1 and block_size - 1 ({self.config.block_size - 1}), "
                             f"got {sink_tokens}")
        return KVCache(self.config.n_layer, self.config.block_size, rolling, sinks)

    def next_logits(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, V) of the token after idx (B, n): one step of generation.

        If ``cache`` has seen idx[:, :-1] and can take one more token, only the newest token is fed
        (decode).  Otherwise the last block_size tokens are fed from scratch (nanoGPT's crop), into the
        cache if one is given (prefill).  So without a cache every step recomputes the window; with a
        plain cache the prompt is prefilled once, and past block_size, where a plain cache cannot grow,
        the window is recomputed every step (exactly nanoGPT's semantics); a rolling cache decodes on.
        """
        if cache is not None and cache.length == idx.size(1) - 1 and cache.can_take(1):
            x = self.hidden_states(idx[:, -1:], cache)  # decode: only the newest token, (B, 1, C)
        else:
            if cache is not None:
                cache.clear()
            x = self.hidden_states(idx[:, -self.config.block_size:], cache)  # (B, min(n, block_size), C)
        return self.head(x[:, -1, :])  # (B, V): the head only where it is needed

    @torch.no_grad()
    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None,
                        generator: torch.Generator | None = None, use_cache: bool = True,
                        long_context: str = "recompute", sink_tokens: int = 4) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens new tokens, one column (B,) at a time, continuing idx (B, T).

        The prompt (its last block_size tokens) is prefilled once into a KV cache; then each step
        feeds only the newest token and computes the LM head only at the last position
        (``next_logits``).  ``long_context`` says what happens once the sequence outgrows block_size
        (``new_cache``): 'recompute' keeps nanoGPT's exact semantics, each step as if the last
        block_size tokens were fed from scratch, so the window is recomputed for every token;
        'rolling' and 'sinks' keep a rolling cache and recompute nothing (rotary models only).
        ``use_cache=False`` recomputes the window at every step, as nanoGPT's generate does (the
        reference the cache is tested against).  All rows of a batch share one cache and evict
        alike.  Put the model in eval() first if it has dropout.
        """
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be a (batch, time) tensor with at least one token, got shape {tuple(idx.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k is not None and top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 or None = off), got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 or None = off), got {top_p}")
        cache = self.new_cache(long_context, sink_tokens) if use_cache else None
        for _ in range(max_new_tokens):
            logits = self.next_logits(idx, cache)  # (B, V)
            next_token = sample_next(logits, temperature, top_k, top_p, generator)  # (B,)
            idx = torch.cat((idx, next_token[:, None]), dim=1)
            yield next_token

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True,
                 long_context: str = "recompute", sink_tokens: int = 4) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens).
        See ``generate_stream`` for the semantics; temperature 0 is greedy."""
        new = [t[:, None] for t in self.generate_stream(idx, max_new_tokens, temperature, top_k, top_p,
                                                        generator, use_cache, long_context, sink_tokens)]
        return torch.cat([idx, *new], dim=1)
