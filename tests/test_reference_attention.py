"""The attention lineage: each step computes what the one before did, down to model.CausalSelfAttention."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from model import CausalSelfAttention, GPTConfig
from reference_attention import (AttnDecoderRNN, BahdanauAttention, CausalAttention, EncoderRNN,
                                 MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttentionV1, SelfAttentionV2,
                                 SimpleSelfAttention)

B, T, D_IN, D_OUT, HEADS = 2, 7, 12, 8, 4


def x_input(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, requires_grad=True)


def assert_same(out_a, out_b, x_a, x_b, atol=1e-5):
    """Outputs allclose, and so are the gradients of a common scalar with respect to the inputs."""
    torch.testing.assert_close(out_a, out_b, atol=atol, rtol=1e-4)
    w = torch.randn_like(out_a)
    (ga,) = torch.autograd.grad((out_a * w).sum(), x_a, retain_graph=True)
    (gb,) = torch.autograd.grad((out_b * w).sum(), x_b, retain_graph=True)
    torch.testing.assert_close(ga, gb, atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------- the transplant chain


def test_simple_self_attention_is_softmax_of_dot_products():
    x = torch.randn(T, D_IN)
    expected = torch.stack([sum(torch.softmax(x @ x[i], 0)[j] * x[j] for j in range(T)) for i in range(T)])
    torch.testing.assert_close(SimpleSelfAttention()(x), expected)
    xb = torch.randn(B, T, D_IN)  # batched: each sequence on its own
    torch.testing.assert_close(SimpleSelfAttention()(xb)[1], SimpleSelfAttention()(xb[1]))


def test_v1_equals_v2_with_transplanted_weights():
    v1, v2 = SelfAttentionV1(D_IN, D_OUT), SelfAttentionV2(D_IN, D_OUT)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):
            getattr(v1, name).copy_(getattr(v2, name).weight.T)
    x1 = x_input(B, T, D_IN)
    x2 = x1.detach().clone().requires_grad_()
    assert_same(v1(x1), v2(x2), x1, x2)
    xs = torch.randn(T, D_IN)  # an unbatched sequence works too
    torch.testing.assert_close(v1(xs), v2(xs), atol=1e-5, rtol=1e-4)
    # the parameter gradients correspond as well (V1's matrices are V2's weights transposed)
    v1(xs).square().sum().backward()
    v2(xs).square().sum().backward()
    torch.testing.assert_close(v1.W_query.grad, v2.W_query.weight.grad.T, atol=1e-5, rtol=1e-4)


def test_causal_attention_equals_v2_on_each_prefix():
    """Causal attention at position t is V2 attending over tokens 0..t only."""
    v2 = SelfAttentionV2(D_IN, D_OUT, qkv_bias=True)
    ca = CausalAttention(D_IN, D_OUT, context_length=16, dropout=0.0, qkv_bias=True)
    ca.load_state_dict(v2.state_dict(), strict=False)  # same W_query/W_key/W_value names
    x1 = x_input(B, T, D_IN)
    x2 = x1.detach().clone().requires_grad_()
    expected = torch.stack([v2(x2[:, :t + 1])[:, t] for t in range(T)], dim=1)
    assert_same(ca(x1), expected, x1, x2)


def test_wrapper_with_one_head_equals_causal_attention():
    ca = CausalAttention(D_IN, D_OUT, 16, 0.0)
    wrapper = MultiHeadAttentionWrapper(D_IN, D_OUT, 16, 0.0, num_heads=1)
    wrapper.heads[0].load_state_dict(ca.state_dict())
    x1 = x_input(B, T, D_IN)
    x2 = x1.detach().clone().requires_grad_()
    assert_same(wrapper(x1), ca(x2), x1, x2)
    assert MultiHeadAttentionWrapper(D_IN, D_OUT, 16, 0.0, num_heads=3)(x1).shape == (B, T, 3 * D_OUT)


def test_multihead_attention_equals_wrapper_with_identity_out_proj():
    head_dim = D_OUT // HEADS
    wrapper = MultiHeadAttentionWrapper(D_IN, head_dim, 16, 0.0, num_heads=HEADS, qkv_bias=True)
    mha = MultiHeadAttention(D_IN, D_OUT, 16, 0.0, num_heads=HEADS, qkv_bias=True)
    with torch.no_grad():
        for name in ("W_query", "W_key", "W_value"):  # head h owns rows h*hd:(h+1)*hd of the big projection
            getattr(mha, name).weight.copy_(torch.cat([getattr(h, name).weight for h in wrapper.heads]))
            getattr(mha, name).bias.copy_(torch.cat([getattr(h, name).bias for h in wrapper.heads]))
        mha.out_proj.weight.copy_(torch.eye(D_OUT))
        mha.out_proj.bias.zero_()
    x1 = x_input(B, T, D_IN)
    x2 = x1.detach().clone().requires_grad_()
    assert_same(mha(x1), wrapper(x2), x1, x2)
    torch.testing.assert_close(mha.attn_weights, wrapper.attn_weights)


def transplant_to_efficient(mha: MultiHeadAttention, n_embd: int, n_head: int) -> CausalSelfAttention:
    attn = CausalSelfAttention(GPTConfig.gpt2(vocab_size=16, block_size=16, n_layer=1, n_head=n_head, n_embd=n_embd))
    with torch.no_grad():
        attn.c_attn.weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight]))
        attn.c_attn.bias.copy_(torch.cat([mha.W_query.bias, mha.W_key.bias, mha.W_value.bias]))
        attn.c_proj.load_state_dict(mha.out_proj.state_dict())
    return attn


def test_efficient_attention_equals_multihead_attention():
    C = 16
    mha = MultiHeadAttention(C, C, 16, 0.0, num_heads=HEADS, qkv_bias=True)
    attn = transplant_to_efficient(mha, C, HEADS)
    x1 = x_input(B, T, C)
    x2 = x1.detach().clone().requires_grad_()
    out1, out2 = mha(x1), attn(x2)
    assert_same(out1, out2, x1, x2)
    # parameter gradients too: the fused c_attn gradient is the stacked Q, K, V gradients
    w = torch.randn_like(out1)
    (out1 * w).sum().backward()
    (out2 * w).sum().backward()
    fused = torch.cat([mha.W_query.weight.grad, mha.W_key.weight.grad, mha.W_value.weight.grad])
    torch.testing.assert_close(attn.c_attn.weight.grad, fused, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(attn.c_proj.weight.grad, mha.out_proj.weight.grad, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- properties


def causal_modules():
    C = 16
    mha = MultiHeadAttention(C, C, 16, 0.0, num_heads=HEADS)
    return {
        "CausalAttention": CausalAttention(C, D_OUT, 16, 0.0),
        "MultiHeadAttentionWrapper": MultiHeadAttentionWrapper(C, D_OUT, 16, 0.0, num_heads=2),
        "MultiHeadAttention": mha,
        "CausalSelfAttention": CausalSelfAttention(GPTConfig.gpt2(vocab_size=16, block_size=16, n_layer=1,
                                                             n_head=HEADS, n_embd=C)),
    }


@pytest.mark.parametrize("name", list(causal_modules()))
def test_causality(name):
    """Changing the tokens after position t never changes the outputs at positions <= t."""
    module = causal_modules()[name].eval()
    x = torch.randn(B, T, 16)
    out = module(x)
    for t in range(T - 1):
        changed = x.clone()
        changed[:, t + 1:] = torch.randn(B, T - t - 1, 16) * 3
        out2 = module(changed)
        torch.testing.assert_close(out2[:, :t + 1], out[:, :t + 1], atol=1e-6, rtol=1e-5)
        assert not torch.allclose(out2[:, t + 1:], out[:, t + 1:])  # and later outputs do see them


@pytest.mark.parametrize("make,causal", [
    (lambda: SimpleSelfAttention(), False),
    (lambda: SelfAttentionV1(D_IN, D_OUT), False),
    (lambda: SelfAttentionV2(D_IN, D_OUT), False),
    (lambda: CausalAttention(D_IN, D_OUT, 16, 0.0), True),
    (lambda: MultiHeadAttentionWrapper(D_IN, D_OUT, 16, 0.0, num_heads=3), True),
    (lambda: MultiHeadAttention(D_IN, D_OUT, 16, 0.0, num_heads=HEADS), True),
])
def test_attention_weights_are_distributions(make, causal):
    module = make()
    module(torch.randn(B, T, D_IN) * 0.3)
    w = module.attn_weights  # (B, [heads,] T, T)
    assert w.shape[-2:] == (T, T)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))
    above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    if causal:
        assert (w[..., above] == 0).all()
    else:
        assert (w[..., above] > 0).all()


def test_dropout_acts_on_attention_weights_only_in_training():
    ca = CausalAttention(D_IN, D_OUT, 16, dropout=0.5)
    x = torch.randn(B, T, D_IN)
    ca.eval()
    torch.testing.assert_close(ca(x), ca(x))
    ca.train()
    assert not torch.allclose(ca(x), ca(x))
    assert ca.attn_weights.sum(-1).allclose(torch.ones(B, T))  # the stored weights are before dropout


def test_bahdanau_weights_sum_to_one_over_source():
    attn = BahdanauAttention(16)
    query, keys = torch.randn(B, 1, 16), torch.randn(B, 9, 16)
    context, weights = attn(query, keys)
    assert context.shape == (B, 1, 16) and weights.shape == (B, 1, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, 1))
    torch.testing.assert_close(context, torch.einsum("bqs,bsh->bqh", weights, keys))


def test_bahdanau_encoder_decoder_learns_to_reverse_digits():
    """Reversing 5-digit strings needs attention to the mirror position: >= 90 % of held-out tokens right
    (greedy decoding, no teacher forcing) within a bounded number of steps (~2 s on 2 idle cores)."""
    S, H, SOS = 5, 64, 10
    enc, dec = EncoderRNN(10, H), AttnDecoderRNN(H, 11)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    held_out = torch.randint(0, 10, (500, S), generator=torch.Generator().manual_seed(1))

    def accuracy() -> float:
        with torch.no_grad():
            outputs, hidden = enc(held_out)
            log_probs, _, weights = dec(outputs, hidden, sos_token=SOS)
        assert weights.shape == (500, S, S)
        torch.testing.assert_close(weights.sum(-1), torch.ones(500, S))
        return (log_probs.argmax(-1) == held_out.flip(1)).float().mean().item()

    start, acc = time.perf_counter(), 0.0
    for step in range(1, 401):
        src = torch.randint(0, 10, (64, S), generator=gen)
        target = src.flip(1)
        outputs, hidden = enc(src)
        log_probs, _, _ = dec(outputs, hidden, target=target, sos_token=SOS)
        loss = F.nll_loss(log_probs.reshape(-1, 11), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            acc = accuracy()
            if acc >= 0.95:
                break
    assert acc >= 0.9, f"reversal accuracy {acc:.3f} after {step} steps ({time.perf_counter() - start:.1f} s)"
