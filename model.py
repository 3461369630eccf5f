"""A GPT in one file, built on one compact, efficient causal multi-head attention.

Imports only torch and the standard library.  (Work in progress: GPTConfig is final;
the modules follow.)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # tokens in the vocabulary (set from the dataset by train.py)
    block_size: int = 256  # longest context the model attends over
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads (query heads)
    n_embd: int = 384  # width of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches while training
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2: true)
    n_kv_head: int = 0  # key/value heads for grouped-query attention; 0 = n_head (plain multi-head)
    pos_emb: str = "learned"  # position embedding: 'learned' (GPT-2) or 'rope' (rotary)
    rope_base: float = 10000.0  # rotary embedding base frequency (pos_emb = 'rope')
    norm: str = "layernorm"  # 'layernorm' (GPT-2) or 'rmsnorm'
    qk_norm: bool = False  # normalise queries and keys per head before attention
    activation: str = "gelu"  # MLP activation: 'gelu' (GPT-2), 'relu2' (squared ReLU) or 'swiglu'
    mlp_ratio: float = 4.0  # MLP hidden width as a multiple of n_embd ('swiglu' uses 2/3 of it, rounded)
    tie_embeddings: bool = True  # share the token embedding with the LM head (GPT-2: true)
    logit_softcap: float = 0.0  # cap logits smoothly at +-this value with tanh; 0 = off
    zero_init_proj: bool = False  # initialise the residual output projections to zero

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ValueError(f"{name} {what}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
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
        need(self.activation in ("gelu", "relu2", "swiglu"), "activation", "must be 'gelu', 'relu2' or 'swiglu'")
        need(self.mlp_ratio > 0, "mlp_ratio", "must be positive")
        need(self.logit_softcap >= 0, "logit_softcap", "must be 0 (off) or positive")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head
