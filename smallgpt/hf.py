"""The Hugging Face door: GPT-2 weights in, this project's models out, tiktoken tokenizers as tokenizer.json.

Three conversions, each proven against transformers itself in tests/test_hf.py (equal logits, equal
greedy generations, equal token ids), none of which imports transformers:

* **In: a Hugging Face GPT-2 directory** (``config.json`` with ``model.safetensors`` or
  ``pytorch_model.bin``, as ``save_pretrained`` or a hub download writes them) becomes a
  ``model.GPT``.  The parameter names are the same (model.py keeps GPT-2's); GPT-2's ``Conv1D``
  layers store their weights transposed, (in, out), so those four are transposed.  OpenAI's sizes by
  name (``gpt2`` ... ``gpt2-xl``) are looked up in the local Hugging Face cache only: this module
  never downloads, and says in one line how to get them when they are not there.
* **Out: a model of this project** becomes a directory that ``AutoModelForCausalLM.from_pretrained``
  loads with no code of ours, in the one architecture transformers ships that computes exactly the
  same function (:func:`architecture`):

  ================================================  ===================  ==============================
  our options                                       transformers         how
  ================================================  ===================  ==============================
  learned positions, LayerNorm, GELU / ReLU^2       GPT2LMHeadModel      Conv1D weights transposed
  rotary, LayerNorm, GELU / ReLU^2                  GPTNeoXForCausalLM   sequential residual, Q/K/V
                                                                         interleaved per head
  rotary, RMSNorm, SwiGLU / ReLU^2                  LlamaForCausalLM     ReLU^2 as a gate: see below
  the same with QK-norm                             Qwen3ForCausalLM     per-head q/k RMSNorm
  ================================================  ===================  ==============================

  Three identities make more of the option space exact:

  - **Grouped-query attention as multi-head** (GPT-2 and GPT-NeoX have no GQA): each key/value head
    is repeated for the query heads of its group, which is what attention does with it anyway.
  - **ReLU^2 as a gated MLP** (Llama and Qwen3 gate theirs): act(gate(x)) * up(x) with act = ReLU
    and gate = up = c_fc is relu(a) * a = relu(a)^2, bit for bit.
  - **LayerNorm as RMSNorm** (Llama and Qwen3 have only RMSNorm; needed for this project's text
    recipe: LayerNorm with QK-norm).  LayerNorm is RMSNorm of the mean-centred vector, and every
    LayerNorm of a pre-norm transformer ignores the mean of the residual stream, so centring
    everything written to the stream (token embeddings, each block's output projection) changes
    no output and makes the stream's mean zero, where LayerNorm *is* RMSNorm: the "computational
    invariance" of SliceGPT (Ashkboos et al. 2024).  The head then needs the uncentred embedding,
    so a tied model is exported untied.  It takes LayerNorm without biases (RMSNorm has none).

  A missing bias is a zero bias; a QK-norm whose epsilon differs from the architecture's one
  epsilon is matched by scaling the query/key projections (RMSNorm(s q, s^2 eps) = RMSNorm(q, eps)).
  Anything else (logit soft-capping, GELU with RMSNorm, ...) is refused in one line naming the option.
* **Tokenizers**: a tiktoken ``Encoding`` (this project's BPE, bytes, or GPT-2's ranks) becomes a
  ``tokenizer.json`` of the ``tokenizers`` library that encodes text to the same ids (:func:`tokenizer_files`).

Weights are read and written with safetensors: Hugging Face's format, which holds only tensors (no
pickle, so loading runs no code) and is memory-mapped.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch

from model import GPT, GPTConfig, fit_vocab_rows
from smallgpt.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from smallgpt.errors import UserError
from smallgpt.tokenizer import EOT, load_tokenizer

GPT2_SIZES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
              "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # stored (in, out)
BUFFERS = (".attn.bias", ".attn.masked_bias")  # GPT-2's causal-mask buffers in old checkpoints: not weights
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# transformers' names of our activations (ACT2FN); 'gelu_pytorch_tanh' is the very op model.py runs, the
# same function as GPT-2's 'gelu_new'
HF_ACTIVATION = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu2": "relu2"}
GPT2_ACTIVATION = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu2": "relu2"}
BLOCK = re.compile(r"transformer\.h\.(\d+)\.(.+)")


def safetensors_torch():
    """safetensors.torch, imported only where weights are read or written."""
    try:
        import safetensors.torch
    except ImportError:
        raise UserError("the safetensors package is missing; install the requirements: "
                        "pip install -r requirements.txt") from None
    return safetensors.torch


# --------------------------------------------------------------------------- finding a directory


def hub_cache() -> Path:
    """The Hugging Face hub cache, where huggingface_hub puts downloads: HF_HUB_CACHE, else HF_HOME/hub,
    else ~/.cache/huggingface/hub (XDG_CACHE_HOME respected), as huggingface_hub resolves it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def cached_snapshot(name: str) -> Path | None:
    """The newest complete snapshot of OpenAI's ``name`` in the hub cache (under its current or its
    legacy repository name), or None."""
    cache = hub_cache()
    for repo in (GPT2_SIZES[name], name):
        root = cache / f"models--{repo.replace('/', '--')}"
        ref = root / "refs" / "main"
        candidates = [root / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
        if (root / "snapshots").is_dir():
            candidates += sorted((root / "snapshots").iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        for snap in candidates:
            if is_hf_dir(snap) and any((snap / f).is_file() for f in WEIGHT_FILES):
                return snap
    return None


def resolve_gpt2(name: str, key: str) -> Path:
    """OpenAI's GPT-2 ``name`` in the local cache; never a download: if it is not there, say how to get it."""
    snap = cached_snapshot(name)
    if snap is None:
        repo = GPT2_SIZES[name]
        raise UserError(f"--{key}={name}: {name} is not in the Hugging Face cache ({hub_cache()}); where there is "
                        f"network, run `hf download {repo} config.json model.safetensors vocab.json` (huggingface_hub; older "
                        f"versions: huggingface-cli download), or give --{key} the directory of a local copy")
    return snap


# --------------------------------------------------------------------------- reading weights


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face directory: model.safetensors, or pytorch_model.bin read with
    torch.load(weights_only=True) (no code runs), either possibly sharded with an index file."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, AttributeError):
                raise UserError(f"{path} is not a valid weight index (no weight_map); download it again") from None
            files = [directory / s for s in shards]
        else:
            files = [path]
        tensors: dict[str, torch.Tensor] = {}
        for f in files:
            tensors.update(_read_weight_file(f))
        return tensors
    raise UserError(f"{directory} has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); "
                    "copy the whole model directory")


def _read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path} is missing (named by the weight index); download the model again")
    try:
        if path.suffix == ".safetensors":
            return safetensors_torch().load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever fails to parse is a bad file, not a bug here
        raise UserError(f"cannot read {path} ({type(e).__name__}: {str(e)[:120]}); download it again") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f"{path} is not a state dict of tensors")
    return sd


def read_config(directory: Path) -> dict[str, Any]:
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{directory}/config.json is missing or not JSON; give a Hugging Face model directory") from None
    if not isinstance(config, dict):
        raise UserError(f"{directory}/config.json is not a JSON object")
    return config


# --------------------------------------------------------------------------- GPT-2 in


def gpt2_config(hf: dict[str, Any], where: str) -> GPTConfig:
    """The GPTConfig of a transformers GPT2Config (as a dict); whatever model.py cannot compute exactly is refused."""
    if hf.get("model_type") != "gpt2":
        raise UserError(f"{where} holds a {hf.get('model_type')!r} model; this project imports GPT-2 "
                        "('gpt2') directories only")
    act = hf.get("activation_function", "gelu_new")
    checks = [(act in GPT2_ACTIVATION, f"activation_function {act!r} (model.py has {', '.join(GPT2_ACTIVATION)})"),
              (hf.get("layer_norm_epsilon", 1e-5) == 1e-5, "layer_norm_epsilon other than 1e-5"),
              (hf.get("scale_attn_weights", True), "scale_attn_weights = false"),
              (not hf.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx = true"),
              (not hf.get("add_cross_attention", False), "cross-attention")]
    for ok, what in checks:
        if not ok:
            raise UserError(f"{where}: this GPT-2 has {what}, which model.py does not compute; it cannot be imported")
    n_embd = hf.get("n_embd", 768)
    try:
        return GPTConfig(vocab_size=hf.get("vocab_size", 50257), block_size=hf.get("n_positions", 1024),
                         n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), n_embd=n_embd, dropout=0.0,
                         bias=True, pos_emb="learned", norm="layernorm", activation=GPT2_ACTIVATION[act],
                         mlp_ratio=(hf.get("n_inner") or 4 * n_embd) / n_embd,
                         tie_embeddings=hf.get("tie_word_embeddings", True))
    except ValueError as e:
        raise UserError(f"{where}/config.json describes no model model.py can build ({e})") from None


def gpt2_state_dict(tensors: dict[str, torch.Tensor], config: GPTConfig, where: str) -> dict[str, torch.Tensor]:
    """transformers' GPT2LMHeadModel (or GPT2Model) tensors under model.GPT's names, float32.

    The names match once the optional ``transformer.`` prefix is added; the Conv1D weights are
    transposed to nn.Linear's (out, in); a tied head, which save_pretrained leaves out, is the embedding;
    the embedding and head get the padding rows of ``config.padded_vocab`` (zeros, never used)."""
    sd = {}
    for key, value in tensors.items():
        name = key if key.startswith(("transformer.", "lm_head.")) else f"transformer.{key}"
        if name.endswith(BUFFERS):
            continue
        sd[name] = (value.t() if name.endswith(CONV1D) else value).float().contiguous()
    if config.tie_embeddings or "lm_head.weight" not in sd:
        sd["lm_head.weight"] = sd.get("transformer.wte.weight")
    names = set(_gpt_names(config))
    missing = [k for k in names if sd.get(k) is None]
    unexpected = [k for k in sd if k not in names]
    if missing or unexpected:
        raise UserError(f"{where}: the weights do not fit its config.json (missing {missing[:2]}, unexpected "
                        f"{unexpected[:2]}); download the model again")
    return fit_vocab_rows(sd, config.padded_vocab)


def _gpt_names(config: GPTConfig) -> list[str]:
    """model.GPT's parameter names for ``config``, without building the (possibly large) model."""
    with torch.device("meta"):
        return list(GPT(config).state_dict())


def read_gpt2(directory: Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A Hugging Face GPT-2 directory as (GPTConfig, state dict under model.GPT's names)."""
    config = gpt2_config(read_config(directory), str(directory))
    return config, gpt2_state_dict(read_weights(directory), config, str(directory))


def vocab_json_ranks(directory: Path) -> dict[bytes, int] | None:
    """The byte-level BPE of a directory's vocab.json as tiktoken ranks (GPT-2's ids are its merge ranks,
    which is how tiktoken built r50k_base from it), special tokens left out; None without a vocab.json."""
    path = directory / "vocab.json"
    if not path.is_file():
        return None
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
        byte = {c: b for b, c in bytes_to_unicode().items()}
        return {bytes(byte[c] for c in token): int(i) for token, i in vocab.items()
                if not (token.startswith("<|") and token.endswith("|>"))}
    except (ValueError, KeyError, AttributeError, TypeError):
        raise UserError(f"{path} is not a byte-level BPE vocabulary (GPT-2's vocab.json); download it again") from None


# --------------------------------------------------------------------------- out: which architecture


def refuse(option: str, why: str) -> None:
    raise UserError(f"cannot export {option}: transformers has no architecture that computes it exactly ({why}); "
                    "GPT-2, GPT-NeoX, Llama and Qwen3 are the targets, see hf.py")


def architecture(c: GPTConfig) -> str:
    """The transformers model type that computes exactly what ``c`` computes; otherwise a UserError naming the option."""
    if c.logit_softcap:
        refuse(f"model.logit_softcap={c.logit_softcap:g}", "none of them soft-caps logits")
    if c.pos_emb == "learned":
        if c.norm != "layernorm":
            refuse("model.norm=rmsnorm with model.pos_emb=learned", "learned positions are GPT-2's, which has LayerNorm")
        if c.qk_norm:
            refuse("model.qk_norm=true with model.pos_emb=learned", "GPT-2 has no QK-norm")
        if c.activation == "swiglu":
            refuse("model.activation=swiglu with model.pos_emb=learned", "GPT-2's MLP is not gated")
        return "gpt2"
    if c.norm == "layernorm" and not c.qk_norm and c.activation != "swiglu":
        return "gpt_neox"
    need = "model.qk_norm=true" if c.qk_norm else ("model.norm=rmsnorm" if c.norm == "rmsnorm" else "model.activation=swiglu")
    if c.activation not in ("swiglu", "relu2"):
        refuse(f"model.activation={c.activation} with {need}",
               "Llama's and Qwen3's MLPs are gated, and a gate reproduces only swiglu and relu2")
    if c.norm == "layernorm" and c.bias:
        refuse(f"model.norm=layernorm with model.bias=true and {need}",
               "Llama's and Qwen3's RMSNorm has no bias, so only a LayerNorm without bias converts")
    if c.qk_norm and c.bias:
        refuse("model.bias=true with model.qk_norm=true", "Qwen3's MLP has no biases")
    return "qwen3" if c.qk_norm else "llama"


# --------------------------------------------------------------------------- out: exact rewrites of the weights


def repeat_kv_heads(sd: dict[str, torch.Tensor], c: GPTConfig) -> None:
    """Grouped-query attention as plain multi-head attention: c_attn's K and V rows of each key/value
    head repeated for the n_head / n_kv_head query heads sharing it (query head i reads kv head i // groups)."""
    groups = c.n_head // c.kv_heads
    if groups == 1:
        return
    C, kv_dim = c.n_embd, c.kv_heads * c.head_dim
    for key in [k for k in sd if k.endswith(("attn.c_attn.weight", "attn.c_attn.bias"))]:
        q, k, v = sd[key].split([C, kv_dim, kv_dim])  # rows; a weight is (rows, C), a bias (rows,)
        rest = q.shape[1:]
        k, v = (t.view(c.kv_heads, c.head_dim, *rest).repeat_interleave(groups, dim=0).reshape(C, *rest) for t in (k, v))
        sd[key] = torch.cat([q, k, v])  # (3C, ...)


def zero_biases(sd: dict[str, torch.Tensor], suffixes: tuple[str, ...]) -> None:
    """A layer without a bias is the same layer with a zero bias: add them where the target always has one."""
    for key in [k for k in sd if k.endswith(".weight") and k.removesuffix(".weight").endswith(suffixes)]:
        sd.setdefault(key.removesuffix(".weight") + ".bias", torch.zeros(sd[key].shape[0]))


def center_residual_writes(sd: dict[str, torch.Tensor], c: GPTConfig) -> None:
    """Make every vector written to the residual stream mean-zero (see the module doc: LayerNorm as RMSNorm).

    The token embedding's rows and the output projections' columns (each a vector in the stream) lose
    their mean; the head keeps the uncentred embedding (``lm_head.weight``, untied from here on)."""
    sd["lm_head.weight"] = sd["lm_head.weight"].clone()
    sd["transformer.wte.weight"] = sd["transformer.wte.weight"] - sd["transformer.wte.weight"].mean(1, keepdim=True)
    for key in [k for k in sd if k.endswith(("attn.c_proj.weight", "mlp.c_proj.weight"))]:
        sd[key] = sd[key] - sd[key].mean(0, keepdim=True)  # (C_out, C_in): centre each output vector


def scale_qk(sd: dict[str, torch.Tensor], c: GPTConfig, s: float) -> None:
    """Scale queries and keys (their rows of c_attn) by s: after an RMSNorm of epsilon s^2 eps, the same as
    before an RMSNorm of epsilon eps, so a QK-norm matches an architecture with one epsilon for all norms."""
    C, kv_dim = c.n_embd, c.kv_heads * c.head_dim
    for key in [k for k in sd if k.endswith(("attn.c_attn.weight", "attn.c_attn.bias"))]:
        w = sd[key].clone()
        w[:C + kv_dim] *= s
        sd[key] = w


# --------------------------------------------------------------------------- out: one function per architecture


def _common(c: GPTConfig, eot_id: int) -> dict[str, Any]:
    return {"vocab_size": c.vocab_size, "bos_token_id": eot_id, "eos_token_id": eot_id, "torch_dtype": "float32"}


def _gpt2(model: GPT, sd: dict[str, torch.Tensor], eot_id: int) -> tuple[dict, dict]:
    c = model.config
    repeat_kv_heads(sd, c)
    zero_biases(sd, ("ln_1", "ln_2", "ln_f", "c_attn", "c_proj", "c_fc"))
    tensors = {k: (v.t() if k.endswith(CONV1D) else v) for k, v in sd.items()
               if not (k == "lm_head.weight" and c.tie_embeddings)}
    config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", **_common(c, eot_id),
              "n_positions": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
              "n_inner": c.mlp_hidden, "activation_function": HF_ACTIVATION[c.activation],
              "layer_norm_epsilon": model.transformer.ln_f.eps, "tie_word_embeddings": c.tie_embeddings,
              "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout}
    return config, tensors


NEOX_BLOCK = {"ln_1": "input_layernorm", "attn.c_attn": "attention.query_key_value", "attn.c_proj": "attention.dense",
              "ln_2": "post_attention_layernorm", "mlp.c_fc": "mlp.dense_h_to_4h", "mlp.c_proj": "mlp.dense_4h_to_h"}


def _gpt_neox(model: GPT, sd: dict[str, torch.Tensor], eot_id: int) -> tuple[dict, dict]:
    """GPT-NeoX with use_parallel_residual = false is GPT-2's block with rotary positions, but its fused
    projection is laid out per head, [q_h, k_h, v_h] for each head h, not [Q, K, V]."""
    c = model.config
    repeat_kv_heads(sd, c)
    zero_biases(sd, ("ln_1", "ln_2", "ln_f", "mlp.c_fc", "mlp.c_proj"))  # GPT-NeoX always has these
    H, hd = c.n_head, c.head_dim
    tensors = {"gpt_neox.embed_in.weight": sd["transformer.wte.weight"],
               "gpt_neox.final_layer_norm.weight": sd["transformer.ln_f.weight"],
               "gpt_neox.final_layer_norm.bias": sd["transformer.ln_f.bias"]}
    if not c.tie_embeddings:
        tensors["embed_out.weight"] = sd["lm_head.weight"]
    for key, value in sd.items():
        m = BLOCK.fullmatch(key)
        if not m:
            continue
        module, kind = m[2].rsplit(".", 1)
        if module == "attn.c_attn":  # (3, H, hd, ...) -> (H, 3, hd, ...)
            value = value.view(3, H, hd, *value.shape[1:]).transpose(0, 1).reshape(value.shape)
        tensors[f"gpt_neox.layers.{m[1]}.{NEOX_BLOCK[module]}.{kind}"] = value
    config = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", **_common(c, eot_id),
              "hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": H,
              "intermediate_size": c.mlp_hidden, "hidden_act": HF_ACTIVATION[c.activation],
              "max_position_embeddings": c.block_size, "layer_norm_eps": model.transformer.ln_f.eps,
              "rotary_pct": 1.0, "rotary_emb_base": c.rope_base, "use_parallel_residual": False,
              "attention_bias": c.bias, "tie_word_embeddings": c.tie_embeddings,
              "hidden_dropout": c.dropout, "attention_dropout": c.dropout}
    return config, tensors


def _llama(model: GPT, sd: dict[str, torch.Tensor], eot_id: int, qwen3: bool = False) -> tuple[dict, dict]:
    """Llama (and Qwen3, which adds the per-head q/k RMSNorm before the rotation, as model.py applies it)."""
    c = model.config
    eps = model.transformer.ln_f.eps
    tied = c.tie_embeddings
    if c.norm == "layernorm":
        center_residual_writes(sd, c)
        tied = False
    if c.qk_norm:
        scale_qk(sd, c, math.sqrt(eps / model.transformer.h[0].attn.q_norm.eps))
    C, kv_dim = c.n_embd, c.kv_heads * c.head_dim
    tensors = {"model.embed_tokens.weight": sd["transformer.wte.weight"], "model.norm.weight": sd["transformer.ln_f.weight"]}
    if not tied:
        tensors["lm_head.weight"] = sd["lm_head.weight"]
    for i in range(c.n_layer):
        p, out = f"transformer.h.{i}.", f"model.layers.{i}."
        tensors[out + "input_layernorm.weight"] = sd[p + "ln_1.weight"]
        tensors[out + "post_attention_layernorm.weight"] = sd[p + "ln_2.weight"]
        if c.qk_norm:
            tensors[out + "self_attn.q_norm.weight"] = sd[p + "attn.q_norm.weight"]
            tensors[out + "self_attn.k_norm.weight"] = sd[p + "attn.k_norm.weight"]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            q, k, v = sd[f"{p}attn.c_attn.{kind}"].split([C, kv_dim, kv_dim])
            fc = sd[f"{p}mlp.c_fc.{kind}"]
            gate, up = fc.chunk(2) if c.activation == "swiglu" else (fc, fc)  # relu2: relu(a) * a
            parts = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                     "self_attn.o_proj": sd[f"{p}attn.c_proj.{kind}"], "mlp.gate_proj": gate, "mlp.up_proj": up,
                     "mlp.down_proj": sd[f"{p}mlp.c_proj.{kind}"]}
            tensors.update({f"{out}{name}.{kind}": t.clone() for name, t in parts.items()})
    config = {"architectures": ["Qwen3ForCausalLM" if qwen3 else "LlamaForCausalLM"],
              "model_type": "qwen3" if qwen3 else "llama", **_common(c, eot_id),
              "hidden_size": C, "intermediate_size": c.mlp_hidden, "num_hidden_layers": c.n_layer,
              "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim,
              "hidden_act": "silu" if c.activation == "swiglu" else "relu", "max_position_embeddings": c.block_size,
              "rms_norm_eps": eps, "rope_theta": c.rope_base, "attention_bias": c.bias,
              "tie_word_embeddings": tied, "attention_dropout": c.dropout}
    if qwen3:
        config["use_sliding_window"] = False
    else:
        config["mlp_bias"] = c.bias
    return config, tensors


EXPORTERS = {"gpt2": _gpt2, "gpt_neox": _gpt_neox, "llama": _llama,
             "qwen3": lambda model, sd, eot_id: _llama(model, sd, eot_id, qwen3=True)}


@dataclass
class HFModel:
    """A model as transformers will read it: config.json's contents and model.safetensors' tensors."""
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def architecture(self) -> str:
        return self.config["architectures"][0]


def to_hf(model: GPT, eot_id: int) -> HFModel:
    """``model`` in the transformers architecture that computes the same function (refused when there is none)."""
    kind = architecture(model.config)
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in model.state_dict().items()}
    sd = fit_vocab_rows(sd, model.config.vocab_size)  # the padding rows are no tokens: transformers gets the real ones
    config, tensors = EXPORTERS[kind](model, sd, eot_id)
    return HFModel(config, {k: v.contiguous() for k, v in tensors.items()})


# --------------------------------------------------------------------------- tokenizers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (its encoder.py; Radford et al. 2019): the
    alphabet in which byte-level BPE vocabularies and merges are written in tokenizer.json."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def onig_pattern(pat_str: str) -> str:
    """A tiktoken split pattern for the ``tokenizers`` library, whose Oniguruma reads ``x{1,3}+`` as
    (x{1,3})+ rather than a possessive x{1,3}: the possessive mark on a counted repeat is dropped, which
    is safe because the repeat ends its alternative, so nothing could backtrack into it."""
    return re.sub(r"(\{\d+(?:,\d*)?\})\+", r"\1", pat_str)


def tokenizer_json(enc: tiktoken.Encoding) -> dict[str, Any]:
    """A tiktoken Encoding as a tokenizers BPE that encodes text to the same ids.

    tiktoken merges, within each chunk of the split pattern, the adjacent pair whose concatenation
    has the lowest rank, and takes a chunk that is itself a token whole.  The BPE below does the same:
    the merges are every split (a, b) of every token into two tokens, in the order of the token's rank,
    so a pair's priority is its result's rank; ``ignore_merges`` takes whole-token chunks directly.
    """
    ranks = enc._mergeable_ranks
    char = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(char[x] for x in b)

    merges = []
    for token, _ in sorted(ranks.items(), key=lambda item: item[1]):
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [f"{text(a)} {text(b)}" for a, b in sorted(splits, key=lambda ab: (ranks[ab[0]], ranks[ab[1]]))]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for s, i in sorted(enc._special_tokens.items())],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": onig_pattern(enc._pat_str)}, "behavior": "Isolated", "invert": False},
            byte_level]},
        "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {text(t): r for t, r in ranks.items()}, "merges": merges},
    }


def tokenizer_files(enc: tiktoken.Encoding, max_length: int) -> dict[str, dict[str, Any]]:
    """tokenizer.json and tokenizer_config.json: what AutoTokenizer.from_pretrained reads.  The class is
    the generic PreTrainedTokenizerFast, so no BOS is added (a Llama tokenizer would add one) and decoding
    gives the text back as it was."""
    eot = EOT if EOT in enc._special_tokens else None
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}
    if eot is not None:
        config |= {"bos_token": eot, "eos_token": eot}
    return {"tokenizer.json": tokenizer_json(enc), "tokenizer_config.json": config}


# --------------------------------------------------------------------------- writing a directory


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write over a file, or over a directory with files in it unless asked to."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--export.out_dir={out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} already exists and is not empty; pass --export.overwrite=true to replace it, "
                        "or choose another --export.out_dir")


def write_hf_dir(out: Path, hf: HFModel, tokenizer: dict[str, dict[str, Any]], overwrite: bool) -> None:
    """config.json, model.safetensors and the tokenizer files, written to a temporary directory beside
    ``out`` and renamed into place, so an interrupted export never leaves a directory that looks complete."""
    check_out_dir(out, overwrite)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "config.json").write_text(json.dumps(hf.config, indent=2) + "\n", encoding="utf-8")
        safetensors_torch().save_file(hf.tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, content in tokenizer.items():
            (tmp / name).write_text(json.dumps(content, ensure_ascii=False, indent=1 if name != "tokenizer.json" else None)
                                    + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}); choose a writable --export.out_dir") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- a run out


def export_run(checkpoint: str, out_dir: str = "", overwrite: bool = False) -> Path:
    """Write the Hugging Face directory of a run or checkpoint (``out_dir``, empty: the run directory's name
    + '-hf'); returns its path.  ``overwrite``: replace a directory that holds files already."""
    path = find_checkpoint(checkpoint)
    out = Path(out_dir).expanduser() if out_dir else path.parent.with_name(path.parent.resolve().name + "-hf")
    check_out_dir(out, overwrite)  # before the slow part
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    enc = load_tokenizer(ckpt["tokenizer"], path.parent)
    converted = to_hf(model, enc.eot_token)
    write_hf_dir(out, converted, tokenizer_files(enc, model.config.block_size), overwrite)
    print(f"export: {path} (step {ckpt.get('step', '?')}) as {converted.architecture}, tokenizer "
          f"{ckpt['tokenizer']['name']}, to {out}; load it with AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained({str(out)!r})", file=sys.stderr)
    return out
