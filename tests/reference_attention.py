"""The attention lineage, from the encoder-decoder RNNs to the efficient causal multi-head attention.

Each class is a small, deliberately plain ``nn.Module`` that adds one idea to the one before it; the
tests transplant weights down the chain to prove that each step computes what the previous one did,
ending at ``model.CausalSelfAttention``.  The self-attention classes follow Raschka's "Build a Large
Language Model (From Scratch)", chapter 3; the RNN classes follow PyTorch's seq2seq tutorial
(Bahdanau et al. 2015).  Every self-attention class keeps its last attention weights in
``attn_weights`` (detached) so the tests can inspect them.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- before transformers


class EncoderRNN(nn.Module):
    """Embeds the source tokens and runs a GRU over them; its outputs are the keys attention looks at."""

    def __init__(self, input_size: int, hidden_size: int, dropout_p: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) -> outputs (B, S, H), final hidden state (1, B, H)."""
        return self.gru(self.dropout(self.embedding(src)))


class BahdanauAttention(nn.Module):
    """Additive attention (Bahdanau et al. 2015): score(q, k) = v . tanh(W_q q + W_k k), softmaxed over
    the source positions; the decoder no longer squeezes the whole source into one fixed vector."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.W_query = nn.Linear(hidden_size, hidden_size)
        self.W_key = nn.Linear(hidden_size, hidden_size)
        self.v = nn.Linear(hidden_size, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, 1, H), keys (B, S, H) -> context (B, 1, H), weights (B, 1, S)."""
        scores = self.v(torch.tanh(self.W_query(query) + self.W_key(keys)))  # (B, S, 1)
        weights = F.softmax(scores.transpose(1, 2), dim=-1)  # (B, 1, S)
        return weights @ keys, weights


class AttnDecoderRNN(nn.Module):
    """A GRU decoder that, at every output step, attends over all encoder outputs with its previous
    hidden state as the query and feeds [embedding of the previous token, context] to the GRU."""

    def __init__(self, hidden_size: int, output_size: int, dropout_p: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def step(self, token: torch.Tensor, hidden: torch.Tensor, encoder_outputs: torch.Tensor):
        """One decoding step: token (B, 1), hidden (1, B, H) -> logits (B, 1, V), hidden, weights (B, 1, S)."""
        embedded = self.dropout(self.embedding(token))  # (B, 1, H)
        context, weights = self.attention(hidden.transpose(0, 1), encoder_outputs)  # (B, 1, H), (B, 1, S)
        output, hidden = self.gru(torch.cat((embedded, context), dim=2), hidden)
        return self.out(output), hidden, weights

    def forward(self, encoder_outputs: torch.Tensor, encoder_hidden: torch.Tensor,
                target: torch.Tensor | None = None, max_len: int | None = None, sos_token: int = 0):
        """Decode from the encoder's outputs (B, S, H) and final hidden state (1, B, H).

        With ``target`` (B, L) the previous *true* token is fed at each step (teacher forcing);
        without, the previous *predicted* token, for ``max_len`` (default S) steps.
        Returns log-probabilities (B, L, V), the last hidden state and the attention weights (B, L, S).
        """
        B = encoder_outputs.size(0)
        steps = target.size(1) if target is not None else (max_len or encoder_outputs.size(1))
        token = torch.full((B, 1), sos_token, dtype=torch.long, device=encoder_outputs.device)
        hidden, logits, weights = encoder_hidden, [], []
        for i in range(steps):
            step_logits, hidden, w = self.step(token, hidden, encoder_outputs)
            logits.append(step_logits)
            weights.append(w)
            token = target[:, i:i + 1] if target is not None else step_logits.argmax(-1)
        return F.log_softmax(torch.cat(logits, dim=1), dim=-1), hidden, torch.cat(weights, dim=1)


# --------------------------------------------------------------------------- self-attention


class SimpleSelfAttention(nn.Module):
    """Self-attention with no trainable weights: each token's output is a mix of all tokens, weighted by
    the softmax of its dot products with them, softmax(X X^T) X.  Input (T, d) or (B, T, d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(x @ x.transpose(-2, -1), dim=-1)  # (..., T, T)
        self.attn_weights = weights.detach()
        return weights @ x


class SelfAttentionV1(nn.Module):
    """Adds trainable query, key and value projections (d_in, d_out), and scales the scores by
    sqrt(d_out) so the softmax does not saturate as the width grows."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries, keys, values = x @ self.W_query, x @ self.W_key, x @ self.W_value  # (..., T, d_out)
        weights = torch.softmax(queries @ keys.transpose(-2, -1) / keys.shape[-1] ** 0.5, dim=-1)
        self.attn_weights = weights.detach()
        return weights @ values


class SelfAttentionV2(nn.Module):
    """The same computation with ``nn.Linear`` projections: better initialisation, optional biases
    (their weights are the transposes of V1's matrices)."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (..., T, d_out)
        weights = torch.softmax(queries @ keys.transpose(-2, -1) / keys.shape[-1] ** 0.5, dim=-1)
        self.attn_weights = weights.detach()
        return weights @ values


class CausalAttention(nn.Module):
    """Adds the causal mask (a token may not look at later tokens, so a language model can be trained
    on every position at once), dropout on the attention weights, and batched input (B, T, d_in)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, qkv_bias: bool = False):
        super().__init__()
        self.d_out = d_out
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[-2]
        queries, keys, values = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out)
        scores = queries @ keys.transpose(-2, -1)  # (B, T, T)
        scores = scores.masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        self.attn_weights = weights.detach()
        return self.dropout(weights) @ values


class MultiHeadAttentionWrapper(nn.Module):
    """Several independent causal attention heads side by side, outputs concatenated
    (width num_heads * d_out): each head can attend to something different."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = nn.ModuleList(CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                                   for _ in range(num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([head(x) for head in self.heads], dim=-1)  # (B, T, num_heads * d_out)
        self.attn_weights = torch.stack([head.attn_weights for head in self.heads], dim=1)  # (B, h, T, T)
        return out


class MultiHeadAttention(nn.Module):
    """The heads computed together: one projection per Q, K, V of width d_out split into num_heads heads
    of d_out / num_heads by view/transpose (one batched matmul instead of a loop over heads), and an
    output projection ``out_proj`` that mixes the heads."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, T, d_out) -> (B, num_heads, T, head_dim)
            return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

        queries, keys, values = heads(self.W_query(x)), heads(self.W_key(x)), heads(self.W_value(x))
        scores = queries @ keys.transpose(2, 3)  # (B, num_heads, T, T)
        scores = scores.masked_fill(self.mask.bool()[:T, :T], -torch.inf)
        weights = torch.softmax(scores / keys.shape[-1] ** 0.5, dim=-1)
        self.attn_weights = weights.detach()
        context = (self.dropout(weights) @ values).transpose(1, 2).reshape(B, T, self.d_out)  # (B, T, d_out)
        return self.out_proj(context)
