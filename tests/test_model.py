"""model.py: GPTConfig validation, the GPT (GPT-2 defaults), generation with the KV cache, every option."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers import spread
from model import VOCAB_ROWS, GPT, MLP, CausalSelfAttention, GPTConfig, KVCache, fit_vocab_rows, sample_next

V = 64
TINY = dict(vocab_size=V, block_size=16, n_layer=2, n_head=4, n_embd=32)
# every option on at once (dropout aside)
ALL_ON = dict(TINY, bias=False, n_kv_head=2, pos_emb="rope", norm="rmsnorm", qk_norm=True, activation="relu2",
              tie_embeddings=False, logit_softcap=15.0, zero_init_proj=True)
VARIANTS = {
    "gpt2": TINY,
    "rope": dict(TINY, pos_emb="rope"),
    "swiglu-gqa1": dict(TINY, activation="swiglu", n_kv_head=1),
    "all-on": ALL_ON,
}


def tiny(**overrides) -> GPT:
    return GPT(GPTConfig.gpt2(**{**TINY, **overrides})).eval()


def train_steps(model: GPT, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> list[float]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def random_batch(batch: int = 4, T: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.randint(0, V, (batch, T + 1), generator=torch.Generator().manual_seed(1))
    return data[:, :-1], data[:, 1:]


# --------------------------------------------------------------------------- GPTConfig


@pytest.mark.parametrize("field,value,extra", [
    ("vocab_size", 0, {}), ("block_size", -1, {}), ("block_size", 2.5, {}), ("n_layer", 0, {}),
    ("n_head", 0, {}), ("n_embd", 0, {}), ("n_embd", 30, {"n_head": 4}),
    ("dropout", 1.0, {}), ("dropout", -0.1, {}),
    ("n_kv_head", 3, {"n_head": 4}), ("n_kv_head", -1, {}),
    ("pos_emb", "alibi", {}), ("n_embd", 24, {"n_head": 8, "pos_emb": "rope"}),  # odd head_dim
    ("rope_base", 0.0, {}), ("norm", "batchnorm", {}), ("activation", "tanh", {}),
    ("mlp_ratio", 0.0, {}), ("logit_softcap", -1.0, {}), ("vocab_multiple", 0, {}),
])
def test_config_rejects_bad_values_naming_the_field(field, value, extra):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        GPTConfig.gpt2(**{**TINY, **extra, field: value})


def test_config_defaults_are_the_main_jobs_model_and_the_preset_is_gpt2():
    c = GPTConfig()  # what python train.py trains
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.pos_emb, c.activation) == (6, 6, 192, 128, "rope", "relu2")
    g = GPTConfig.gpt2()
    assert (g.vocab_size, g.block_size, g.n_layer, g.n_head, g.n_embd) == (50257, 1024, 12, 12, 768)
    assert (g.pos_emb, g.norm, g.activation, g.qk_norm, g.tie_embeddings, g.logit_softcap, g.zero_init_proj,
            g.kv_heads, g.bias) == ("learned", "layernorm", "gelu", False, True, 0.0, False, g.n_head, True)
    assert GPTConfig.gpt2(n_layer=2).n_layer == 2 and GPTConfig.gpt2(n_layer=2).n_embd == 768


# --------------------------------------------------------------------------- the GPT


def test_gpt2_small_has_124_439_808_parameters():
    config = GPTConfig.gpt2()
    with torch.device("meta"):
        model = GPT(config)
    assert model.num_params() == 124_439_808
    names = {n for n, _ in model.named_parameters()}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.ln_1.weight",
            "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.bias", "transformer.h.11.ln_2.bias",
            "transformer.h.0.mlp.c_fc.weight", "transformer.h.0.mlp.c_proj.weight", "transformer.ln_f.weight"} <= names
    assert "lm_head.weight" in model.state_dict()
    # PaLM's 6N + 12 L C T, N = the matmul weights: per layer 12 C^2, plus the (tied) head V C
    n_matmul = 12 * 12 * 768 ** 2 + 50257 * 768
    assert model.flops_per_token() == 6 * n_matmul + 12 * 12 * 768 * 1024


def test_gpt2_initialisation():
    model = GPT(GPTConfig.gpt2(vocab_size=1000, block_size=64, n_layer=4, n_head=4, n_embd=256))
    h = model.transformer.h[0]
    assert h.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert h.mlp.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert h.attn.c_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(2 * 4), rel=0.05)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (h.attn.c_attn.bias == 0).all() and (h.ln_1.weight == 1).all()


def test_tied_weights_share_storage():
    model = tiny()
    assert model.transformer.wte.weight is model.lm_head.weight
    assert model.transformer.wte.weight.data_ptr() == model.lm_head.weight.data_ptr()
    train_steps(model, *random_batch(), steps=1)
    assert torch.equal(model.transformer.wte.weight, model.lm_head.weight)  # still one matrix after a step


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_at_initialisation_is_ln_vocab(variant):
    model = GPT(GPTConfig.gpt2(**{**VARIANTS[variant], "vocab_size": 512}))
    x, y = torch.randint(0, 512, (2, 4, 16))
    _, loss = model(x, y)
    assert loss.item() == pytest.approx(math.log(512), abs=0.05)


def test_forward_shapes_and_ignored_targets():
    model = tiny()
    x, y = random_batch(batch=3, T=10)
    logits, loss = model(x)
    assert logits.shape == (3, 10, V) and loss is None
    y_masked = y.clone()
    y_masked[:, :5] = -1
    _, loss_masked = model(x, y_masked)
    expected = F.cross_entropy(logits[:, 5:].reshape(-1, V), y[:, 5:].reshape(-1))
    torch.testing.assert_close(loss_masked, expected)


def test_longer_than_block_size_is_a_value_error():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("variant", ["gpt2", "all-on"])
def test_memorises_one_tiny_batch(variant):
    model = GPT(GPTConfig.gpt2(**VARIANTS[variant]))
    losses = train_steps(model, *random_batch(), steps=80)
    assert losses[-1] < 0.1 * losses[0] and losses[-1] < 0.3, losses[::10]


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpt_is_causal(variant):
    model = GPT(GPTConfig.gpt2(**VARIANTS[variant])).eval()
    x, _ = random_batch(batch=2, T=12)
    logits, _ = model(x)
    for t in (0, 5, 10):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % V
        logits2, _ = model(changed)
        torch.testing.assert_close(logits2[:, :t + 1], logits[:, :t + 1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(logits2[:, t + 1:], logits[:, t + 1:])


def test_param_groups_partition_the_parameters():
    for variant in ("gpt2", "all-on"):
        model = GPT(GPTConfig.gpt2(**VARIANTS[variant]))
        groups = model.param_groups()
        ids = [id(p) for g in groups.values() for p in g]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert all(p.ndim == 2 for p in groups["matrix"]) and all(p.ndim == 1 for p in groups["scalar"])
        assert any(p is model.transformer.wte.weight for p in groups["embedding"])
        assert (len(groups["head"]) == 1) == (not model.config.tie_embeddings)
        assert sum(p.numel() for g in groups.values() for p in g) == model.num_params()


# --------------------------------------------------------------------------- the KV cache and generation


@pytest.mark.parametrize("variant", VARIANTS)
def test_chunked_prefill_through_the_cache_equals_one_forward(variant):
    """Feeding 3, 1, 5, 1 and 6 tokens onto a growing cache (multi-token chunks need the offset causal
    mask) gives the logits of one forward pass over the whole sequence."""
    model = GPT(GPTConfig.gpt2(**VARIANTS[variant])).eval()
    x, _ = random_batch(batch=2, T=16)
    full, _ = model(x)
    cache, pieces, start = KVCache(model.config.n_layer, model.config.block_size), [], 0
    for n in (3, 1, 5, 1, 6):
        logits, _ = model(x[:, start:start + n], cache=cache)
        pieces.append(logits)
        start += n
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="block_size"):
        model(x[:, :1], cache=cache)  # the cache is full


def nanogpt_generate(model: GPT, idx: torch.Tensor, steps: int) -> torch.Tensor:
    """nanoGPT's generation loop (greedy): crop to block_size, full forward, last position."""
    for _ in range(steps):
        logits, _ = model(idx[:, -model.config.block_size:])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_generation_equals_uncached_past_block_size(variant):
    model = spread(GPT(GPTConfig.gpt2(**VARIANTS[variant]))).eval()
    prompt = torch.randint(0, V, (2, 5))
    n = 30  # block_size 16: the window slides for the last 19 steps
    greedy = model.generate(prompt, n, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, n, temperature=0, use_cache=False))
    assert torch.equal(greedy, nanogpt_generate(model, prompt, n))
    assert len(set(greedy[:, 5:].flatten().tolist())) > 3  # a real test: the output varies
    for seed in (0, 1):
        cached = model.generate(prompt, n, top_k=20, generator=torch.Generator().manual_seed(seed))
        uncached = model.generate(prompt, n, top_k=20, generator=torch.Generator().manual_seed(seed),
                                  use_cache=False)
        assert torch.equal(cached, uncached)
    long_prompt = torch.randint(0, V, (1, 40))  # longer than block_size: cropped like nanoGPT
    assert torch.equal(model.generate(long_prompt, 5, temperature=0), nanogpt_generate(model, long_prompt, 5))


def test_same_seed_same_sample():
    model = tiny()
    prompt = torch.zeros(3, 1, dtype=torch.long)
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(42))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(42))
    c = model.generate(prompt, 20, generator=torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 21) and torch.equal(a[:, :1], prompt)


def test_generate_stream_yields_the_columns_of_generate():
    model = tiny()
    prompt = torch.randint(0, V, (2, 4))
    columns = list(model.generate_stream(prompt, 7, generator=torch.Generator().manual_seed(0)))
    assert len(columns) == 7 and all(c.shape == (2,) for c in columns)
    full = model.generate(prompt, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.stack(columns, dim=1), full[:, 4:])
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_sampling_filters():
    logits = torch.log(torch.tensor([[0.05, 0.5, 0.3, 0.15]])).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, temperature=0), torch.ones(2000, dtype=torch.long))
    assert (sample_next(logits, top_k=1, generator=gen) == 1).all()
    assert set(sample_next(logits, top_k=2, generator=gen).tolist()) == {1, 2}
    assert set(sample_next(logits, top_p=0.7, generator=gen).tolist()) == {1, 2}  # 0.5 < 0.7 <= 0.8
    assert (sample_next(logits, top_p=1e-6, generator=gen) == 1).all()
    assert set(sample_next(logits, top_k=0, top_p=1.0, generator=gen).tolist()) == {0, 1, 2, 3}  # both off
    counts = torch.bincount(sample_next(logits, generator=gen), minlength=4) / 2000
    torch.testing.assert_close(counts, torch.tensor([0.05, 0.5, 0.3, 0.15]), atol=0.04, rtol=0)
    # low temperature sharpens towards the argmax
    assert (sample_next(logits, temperature=0.05, generator=gen) == 1).float().mean() > 0.95


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
                                    dict(max_new_tokens=-1)])
def test_generate_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        tiny().generate(torch.zeros(1, 1, dtype=torch.long), **{"max_new_tokens": 3, **kwargs})


# --------------------------------------------------------------------------- options


def test_rope_scores_depend_only_on_relative_position():
    model = tiny(pos_emb="rope")
    assert "wpe" not in model.transformer
    attn = model.transformer.h[0].attn
    x = torch.randn(2, 6, 32)
    q0, k0, _ = attn.qkv(x, start=0)
    q5, k5, _ = attn.qkv(x, start=5)  # the same tokens, every position shifted by 5
    assert not torch.allclose(q0, q5)
    torch.testing.assert_close(q0 @ k0.transpose(-2, -1), q5 @ k5.transpose(-2, -1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(q0.norm(dim=-1), q5.norm(dim=-1))  # a rotation keeps lengths
    assert tiny(pos_emb="rope").num_params() == tiny().num_params() - 16 * 32  # no position table


def test_rmsnorm():
    model = tiny(norm="rmsnorm")
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    x = torch.randn(2, 5, 32) * 7 + 3
    y = model.transformer.h[0].ln_1(x)
    torch.testing.assert_close(y.square().mean(-1), torch.ones(2, 5), atol=1e-4, rtol=0)  # unit RMS, not centred
    assert not torch.allclose(y.mean(-1), torch.zeros(2, 5), atol=1e-2)
    assert model.num_params() == tiny().num_params() - (2 * 2 + 1) * 32  # norms lose their biases


@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_qk_norm_gives_unit_rms_queries_and_keys_per_head(pos_emb):
    attn = tiny(qk_norm=True, pos_emb=pos_emb).transformer.h[0].attn
    q, k, v = attn.qkv(torch.randn(2, 6, 32) * 5)
    for t in (q, k):  # (B, heads, T, hd): every head's vector has RMS 1 (L2 norm sqrt(hd))
        torch.testing.assert_close(t.square().mean(-1), torch.ones(t.shape[:-1]), atol=1e-4, rtol=0)
    assert not torch.allclose(v.square().mean(-1), torch.ones(v.shape[:-1]), atol=0.1)  # values untouched


@pytest.mark.parametrize("activation,act", [
    ("gelu", lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))),
    ("relu2", lambda h: torch.clamp(h, min=0) ** 2),
    ("swiglu", lambda h: h[..., :h.shape[-1] // 2] * torch.sigmoid(h[..., :h.shape[-1] // 2]) * h[..., h.shape[-1] // 2:]),
])
def test_mlp_activations(activation, act):
    config = GPTConfig.gpt2(**TINY, activation=activation)
    mlp = MLP(config)
    hidden = 85 if activation == "swiglu" else 128  # 2/3 of 4 * 32, so the parameter count stays ~the same
    assert mlp.c_fc.out_features == (2 * hidden if activation == "swiglu" else hidden)
    assert mlp.c_proj.in_features == hidden
    x = torch.randn(3, 5, 32)
    expected = act(x @ mlp.c_fc.weight.T + mlp.c_fc.bias) @ mlp.c_proj.weight.T + mlp.c_proj.bias
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_grouped_query_attention(n_kv_head):
    config = GPTConfig.gpt2(**TINY, n_kv_head=n_kv_head)
    attn = CausalSelfAttention(config)
    hd = 32 // 4
    assert attn.c_attn.out_features == 32 + 2 * n_kv_head * hd
    assert GPT(config).num_params() < tiny().num_params()
    # GQA is multi-head attention whose key/value heads are shared: copy each K/V head to the query
    # heads of its group and plain attention computes the same thing
    full = CausalSelfAttention(GPTConfig.gpt2(**TINY))
    with torch.no_grad():
        w, b = attn.c_attn.weight, attn.c_attn.bias
        q_w, k_w, v_w = w.split([32, n_kv_head * hd, n_kv_head * hd])
        q_b, k_b, v_b = b.split([32, n_kv_head * hd, n_kv_head * hd])
        group = 4 // n_kv_head

        def expand(t):  # (kv_heads * hd, ...) -> (n_head * hd, ...)
            return t.view(n_kv_head, hd, *t.shape[1:]).repeat_interleave(group, dim=0).reshape(32, *t.shape[1:])

        full.c_attn.weight.copy_(torch.cat([q_w, expand(k_w), expand(v_w)]))
        full.c_attn.bias.copy_(torch.cat([q_b, expand(k_b), expand(v_b)]))
        full.c_proj.load_state_dict(attn.c_proj.state_dict())
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x), full(x), atol=1e-5, rtol=1e-4)


def test_untied_head():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert untied.num_params() == tied.num_params() + V * 32
    train_steps(untied, *random_batch(), steps=1)
    assert not torch.equal(untied.lm_head.weight, untied.transformer.wte.weight)


def test_logit_softcap():
    model = tiny(logit_softcap=5.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(100)  # raw logits far beyond the cap
    x, _ = random_batch()
    logits, _ = model(x)
    raw = model.lm_head(model.hidden_states(x))
    assert raw.abs().max() > 10
    assert logits.abs().max() <= 5.0
    torch.testing.assert_close(logits, 5.0 * torch.tanh(raw / 5.0))


# --------------------------------------------------------------------------- the padded vocabulary

REAL = 97  # a vocabulary that is no multiple of 64: padded to 128 rows


def padded(**overrides) -> GPT:
    """A model of REAL tokens whose embedding and head have 128 rows, the padding rows' logits forced so large
    that, were they counted, they would win every softmax and every sample: the final norm's bias shifts every
    hidden state by 10 in each channel, and the padding rows of the head are all ones, so their logits are
    about 10 x 32 where the real ones are about 1."""
    model = tiny(vocab_size=REAL, **overrides)
    assert model.config.padded_vocab == 128 and model.lm_head.weight.shape == (128, 32)
    with torch.no_grad():
        model.transformer.ln_f.bias.fill_(10.0)
        model.lm_head.weight[REAL:] = 1.0
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_a_padded_models_loss_is_the_unpadded_computation_over_the_real_vocabulary(tie):
    model = padded(tie_embeddings=tie, logit_softcap=0.0 if tie else 15.0).train()
    x = torch.randint(0, REAL, (3, 16), generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, REAL, (3, 16), generator=torch.Generator().manual_seed(3))
    logits, loss = model(x, y)
    assert logits.shape == (3, 16, REAL)
    raw = model.hidden_states(x) @ model.lm_head.weight[:REAL].T  # (B, T, REAL): the real rows only
    if not tie:
        raw = 15.0 * torch.tanh(raw / 15.0)
    torch.testing.assert_close(loss, F.cross_entropy(raw.reshape(-1, REAL), y.reshape(-1)), atol=1e-6, rtol=1e-6)
    unpadded = GPT(GPTConfig.gpt2(**{**TINY, "vocab_size": REAL, "vocab_multiple": 1, "tie_embeddings": tie,
                                     "logit_softcap": model.config.logit_softcap}))
    unpadded.load_state_dict(fit_vocab_rows(model.state_dict(), REAL))
    torch.testing.assert_close(unpadded.train()(x, y)[1], loss, atol=1e-6, rtol=1e-6)
    loss.backward()
    for w in (model.lm_head.weight, model.transformer.wte.weight):  # the padding rows get no gradient
        assert (w.grad[REAL:] == 0).all() and (w.grad[:REAL] != 0).any()


def test_sampling_never_yields_a_padding_id():
    model = padded()
    prompt = torch.randint(0, REAL, (4, 3), generator=torch.Generator().manual_seed(0))
    assert model.lm_head(model.hidden_states(prompt)).argmax(-1).ge(REAL).all()  # the padding would win
    for kwargs in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=2.0, top_k=0, top_p=1.0),
                   dict(temperature=1.0, top_k=200), dict(temperature=1.0, top_p=0.99)):
        out = model.generate(prompt, 40, generator=torch.Generator().manual_seed(1), **kwargs)
        assert out.max() < REAL, kwargs


def test_the_padding_is_in_no_count_and_the_init_is_an_unpadded_models():
    torch.manual_seed(0)
    a = GPT(GPTConfig.gpt2(**{**TINY, "vocab_size": REAL, "vocab_multiple": 1, "tie_embeddings": False}))
    torch.manual_seed(0)
    b = GPT(GPTConfig.gpt2(**{**TINY, "vocab_size": REAL, "tie_embeddings": False}))
    assert a.num_params() == b.num_params() and a.flops_per_token() == b.flops_per_token()
    assert sum(p.numel() for p in b.parameters()) == b.num_params() + 2 * (128 - REAL) * 32
    sa, sb = a.state_dict(), fit_vocab_rows(b.state_dict(), REAL)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the same random stream: the same initial weights
    assert all((b.state_dict()[k][REAL:] == 0).all() for k in VOCAB_ROWS)


def test_zero_init_proj_starts_at_zero_and_still_learns():
    model = tiny(zero_init_proj=True)
    projections = [b.attn.c_proj.weight for b in model.transformer.h] + [b.mlp.c_proj.weight for b in model.transformer.h]
    assert all((w == 0).all() for w in projections)
    losses = train_steps(model, *random_batch(), steps=30)
    assert losses[-1] < 0.5 * losses[0]
    assert all((w != 0).any() for w in projections)


def test_every_option_at_once_trains():
    model = GPT(GPTConfig.gpt2(**ALL_ON, dropout=0.1))
    x, y = random_batch()
    losses = train_steps(model, x, y, steps=40)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])  # eval: dropout off, deterministic


def test_cpu_dropout_keeps_1_minus_p_scales_and_is_seeded():
    """model.Dropout's bit-mask path: the mask's rate, the inverted scaling, its gradient, the seed."""
    from model import Dropout
    d = Dropout(0.2).train()
    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    y = d(x)
    kept = (y != 0).float()
    assert abs(kept.mean().item() - 0.8) < 0.005  # 200,000 draws: a standard error of 0.0009
    assert torch.equal(y[y != 0], torch.full_like(y[y != 0], 1.25))
    y.sum().backward()
    assert torch.equal(x.grad, kept * 1.25)
    torch.manual_seed(0)
    assert torch.equal(d(torch.ones(400, 500)), y.detach())  # the global generator, reseeded: the same mask
    assert torch.equal(d.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
