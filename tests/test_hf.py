"""hf.py and export.py against transformers itself: GPT-2 directories in, every exportable option out
(equal logits within 1e-5 in fp32, identical greedy generations), tokenizers with tiktoken's ids, and
one-line refusals of what has no exact counterpart.  transformers is a test dependency only."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the network
transformers = pytest.importorskip("transformers", reason="transformers is a test dependency (requirements-dev.txt)")
transformers.logging.set_verbosity_error()
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel  # noqa: E402

from smallgpt import hf  # noqa: E402
from smallgpt import pretrained  # noqa: E402
from smallgpt import tokenizer as tok  # noqa: E402
import train  # noqa: E402
from smallgpt.cli import parse_args  # noqa: E402
from smallgpt.config import Config  # noqa: E402
from smallgpt.errors import UserError  # noqa: E402
from model import GPT, MLP, GPTConfig  # noqa: E402
from helpers import ENV, PRODUCT, argv, imports, write_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32)


def randomize(module: torch.nn.Module, seed: int = 1) -> None:
    """Noise on every parameter, so zero biases and unit gains cannot hide a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def assert_same_model(ours: GPT, theirs: torch.nn.Module, block_size: int) -> None:
    """Logits within 1e-5 in fp32 on random tokens, and the same greedy continuation."""
    ours.eval(), theirs.eval()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, ours.config.vocab_size, (2, block_size), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs(idx).logits, atol=1e-5, rtol=0)
    prompt, new = idx[:, :5], block_size - 5
    theirs.generation_config.eos_token_id = None  # a fixed length: never stop early
    want = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new, do_sample=False,
                           pad_token_id=0)
    assert torch.equal(ours.generate(prompt, new, temperature=0), want)


def save_hf_gpt2(directory: Path, tie: bool = True, **config) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(**{"vocab_size": 97, "n_positions": 24, "n_embd": 32, "n_layer": 2, "n_head": 4,
                                      "bos_token_id": 0, "eos_token_id": 0, "tie_word_embeddings": tie, **config}))
    randomize(m)
    m.save_pretrained(directory)
    return m.eval()


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message and message
    return message


def test_gelu_tanh_is_gpt2s_gelu():
    mlp = MLP(GPTConfig.gpt2(**TINY, activation="gelu_tanh"))
    x = torch.randn(3, 5, 32)
    h = x @ mlp.c_fc.weight.T + mlp.c_fc.bias
    gpt2 = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))  # GPT-2's own formula
    torch.testing.assert_close(mlp(x), gpt2 @ mlp.c_proj.weight.T + mlp.c_proj.bias, atol=1e-5, rtol=1e-4)


def test_the_product_never_imports_transformers():
    for name in PRODUCT:
        assert not {"transformers", "tokenizers", "huggingface_hub"} & imports(ROOT / name), name


# --------------------------------------------------------------------------- GPT-2 in


@pytest.mark.parametrize("tie, act", [(True, "gelu_new"), (False, "gelu"), (True, "gelu_pytorch_tanh")])
def test_import_a_gpt2_directory(tmp_path, tie, act):
    theirs = save_hf_gpt2(tmp_path, tie=tie, activation_function=act)
    source = pretrained.load_source(str(tmp_path), "train.init_from")
    assert source.is_gpt2 and source.config.tie_embeddings == tie
    assert source.config.activation == ("gelu" if act == "gelu" else "gelu_tanh")
    assert_same_model(source.model(), theirs, 24)


def test_import_a_hub_style_pytorch_model_bin(tmp_path):
    """The hub's GPT-2 files: GPT2Model names (no 'transformer.'), causal-mask buffers, a pickle-free torch.load."""
    theirs = save_hf_gpt2(tmp_path / "saved")
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_text((tmp_path / "saved" / "config.json").read_text())
    sd = {k.removeprefix("transformer."): v for k, v in theirs.state_dict().items() if k != "lm_head.weight"}
    sd |= {f"h.{i}.attn.bias": torch.ones(1, 1, 24, 24).tril() for i in range(2)}
    torch.save(sd, hub / "pytorch_model.bin")
    assert_same_model(pretrained.load_source(str(hub / "config.json"), "eval.checkpoint").model(), theirs, 24)


def test_import_a_sharded_directory(tmp_path):
    torch.manual_seed(0)
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4))
    randomize(theirs)
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    assert_same_model(pretrained.load_source(str(tmp_path), "eval.checkpoint").model(), theirs, 24)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "llama"}, "holds a 'llama' model"),
    ({"activation_function": "gelu_fast"}, "activation_function 'gelu_fast'"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
])
def test_import_refuses_what_model_py_does_not_compute(tmp_path, change, message):
    save_hf_gpt2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | change))
    with pytest.raises(UserError) as e:
        pretrained.load_source(str(tmp_path), "train.init_from")
    assert message in one_line(e)


def test_import_without_weights_is_refused(tmp_path):
    save_hf_gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(UserError) as e:
        pretrained.load_source(str(tmp_path), "train.init_from").weights()
    assert "no weights" in one_line(e)


def test_size_names_come_from_the_local_cache_only(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    repo = cache / "models--openai-community--gpt2"
    theirs = save_hf_gpt2(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    source = pretrained.load_source("gpt2", "train.init_from")
    assert source.path == repo / "snapshots" / "0123abc"
    assert_same_model(source.model(), theirs, 24)
    with pytest.raises(UserError) as e:  # at once: no download, no waiting on a network
        pretrained.load_source("gpt2-medium", "train.init_from")
    message = one_line(e)
    assert "not in the Hugging Face cache" in message and str(cache) in message
    assert "hf download openai-community/gpt2-medium" in message


# --------------------------------------------------------------------------- out


EXPORTS = [  # options beyond TINY -> the architecture they export to
    ({}, "GPT2LMHeadModel"),
    ({"activation": "gelu_tanh", "bias": False, "tie_embeddings": False, "n_kv_head": 2}, "GPT2LMHeadModel"),
    ({"activation": "relu2"}, "GPT2LMHeadModel"),
    ({"pos_emb": "rope", "activation": "relu2"}, "GPTNeoXForCausalLM"),  # the defaults: python train.py
    ({"pos_emb": "rope", "activation": "gelu_tanh", "n_kv_head": 1, "bias": False, "tie_embeddings": False,
      "rope_base": 500.0}, "GPTNeoXForCausalLM"),
    ({"pos_emb": "rope", "norm": "rmsnorm", "activation": "swiglu", "n_kv_head": 2}, "LlamaForCausalLM"),
    ({"pos_emb": "rope", "norm": "rmsnorm", "activation": "relu2", "tie_embeddings": False}, "LlamaForCausalLM"),
    ({"pos_emb": "rope", "activation": "swiglu", "bias": False}, "LlamaForCausalLM"),  # LayerNorm as RMSNorm
    ({"pos_emb": "rope", "norm": "rmsnorm", "activation": "swiglu", "qk_norm": True, "bias": False, "n_kv_head": 2},
     "Qwen3ForCausalLM"),
    ({"pos_emb": "rope", "activation": "relu2", "qk_norm": True, "bias": False}, "Qwen3ForCausalLM"),  # text-cpu
]


def export_and_load(model: GPT, eot_id: int, out: Path) -> torch.nn.Module:
    hf.write_hf_dir(out, hf.to_hf(model, eot_id), {}, overwrite=False)
    return AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.parametrize("options, architecture", EXPORTS, ids=lambda x: x if isinstance(x, str) else None)
def test_export_is_exact(tmp_path, options, architecture):
    torch.manual_seed(0)
    ours = GPT(GPTConfig.gpt2(**TINY, **options))
    randomize(ours)
    theirs = export_and_load(ours, 0, tmp_path / "hf")
    assert type(theirs).__name__ == architecture
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == [architecture]
    assert_same_model(ours, theirs, 24)


def test_a_padded_model_exports_its_real_vocabulary_and_imports_back_padded(tmp_path):
    """97 tokens in 128 rows (model.vocab_multiple): transformers gets the 97, with the same logits; read back,
    the model is padded again, its padding zero, and computes the same."""
    torch.manual_seed(0)
    ours = GPT(GPTConfig.gpt2(**TINY))
    randomize(ours)  # the padding rows too: whatever they hold, no token uses them
    assert ours.lm_head.weight.shape == (128, 32)
    theirs = export_and_load(ours, 0, tmp_path / "hf")
    assert theirs.config.vocab_size == 97 and theirs.transformer.wte.weight.shape == (97, 32)
    assert_same_model(ours, theirs, 24)
    config, sd = hf.read_gpt2(tmp_path / "hf")
    assert (config.vocab_size, config.padded_vocab) == (97, 128) and sd["lm_head.weight"].shape == (128, 32)
    assert (sd["transformer.wte.weight"][97:] == 0).all()
    back = GPT(config)
    back.load_state_dict(sd)
    assert_same_model(back, theirs, 24)


@pytest.mark.parametrize("options, option", [
    ({"logit_softcap": 30.0}, "model.logit_softcap=30"),
    ({"norm": "rmsnorm"}, "model.norm=rmsnorm with model.pos_emb=learned"),
    ({"qk_norm": True}, "model.qk_norm=true with model.pos_emb=learned"),
    ({"activation": "swiglu"}, "model.activation=swiglu with model.pos_emb=learned"),
    ({"pos_emb": "rope", "norm": "rmsnorm", "activation": "gelu"}, "model.activation=gelu with model.norm=rmsnorm"),
    ({"pos_emb": "rope", "activation": "swiglu"}, "model.norm=layernorm with model.bias=true"),
    ({"pos_emb": "rope", "norm": "rmsnorm", "qk_norm": True, "activation": "swiglu"},
     "model.bias=true with model.qk_norm=true"),
])
def test_export_refuses_what_transformers_cannot_compute(options, option):
    with pytest.raises(UserError) as e:
        hf.architecture(GPTConfig.gpt2(**TINY, **options))
    assert one_line(e).startswith(f"cannot export {option}")


@pytest.mark.parametrize("name, architecture", [("", "gpt_neox"), ("text-cpu.toml", "qwen3"),
                                                ("smoke.toml", "gpt_neox"), ("nanogpt-cpu.toml", "gpt2"),
                                                ("gpt2-124m.toml", "gpt2")])
def test_the_recipes_export(name, architecture):
    """The README's recipe table: every recipe of config/ exports (finetune.toml exports as its source does)."""
    args = [str(ROOT / "config" / name)] if name else []  # no file: the defaults, python train.py
    assert hf.architecture(parse_args(args, Config, "train.py").model) == architecture


def test_the_speedrun_recipe_is_refused_by_export_in_one_line():
    """The README's recipe table says so: its soft-capped logits have no transformers architecture."""
    with pytest.raises(UserError, match="soft-capping|softcap"):
        hf.architecture(parse_args([str(ROOT / "config" / "gpt2-speedrun.toml")], Config, "train.py").model)


# --------------------------------------------------------------------------- tokenizers


def mixed_text(n_chars: int = 6000, seed: int = 0) -> str:
    """Prose, code, numbers, contractions, scripts and emoji, and every kind of whitespace run."""
    pieces = ["Hello world", "don't", "I'LL", "they've", "12345", "3.14159", "1,000,000", "日本語のテキスト",
              "👍🏽", "café naïve", "Привет мир", "مرحبا", "e\u0301", "def f(x):\n    return x**2\n", "ÀÉÎÕÜ", "ﬁ",
              "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "٣٤٥", "Ⅻ", "½", "!!!", "...", "'s", "x = [1, 2, 3]  # comment", "<|endoftext|>",
              "    ", "\t\t", "\n\n\n", "\r\n", "  \n  ", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c", "\x85"]
    rng, text = random.Random(seed), ""
    while len(text) < n_chars:
        text += rng.choice(pieces) + rng.choice(["", " ", "  ", "\n", "   \n", "\t"])
    return text + "   "


def assert_same_ids(enc: tiktoken.Encoding, directory: Path) -> None:
    for name, content in hf.tokenizer_files(enc, 64).items():
        (directory / name).write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    theirs = AutoTokenizer.from_pretrained(directory)
    text = mixed_text()
    ids = enc.encode(text, allowed_special="all")
    assert theirs(text)["input_ids"] == ids
    assert theirs.decode(ids) == text


def test_exported_tokenizer_gives_tiktokens_ids_for_a_trained_bpe(tmp_path):
    chunks = tok.count_chunks([(ROOT / "README.md").read_text(), mixed_text(seed=1)], progress=False)
    spec = tok.bpe_spec(chunks, 1000, tmp_path, progress=False)
    assert_same_ids(tok.load_tokenizer(spec, tmp_path), tmp_path)


def test_exported_tokenizer_gives_tiktokens_ids_for_bytes(tmp_path):
    assert_same_ids(tok.load_tokenizer(tok.bytes_spec(), tmp_path), tmp_path)


def test_exported_tokenizer_gives_tiktokens_ids_for_gpt2(tmp_path, gpt2_rank_file):
    spec = tok.file_spec(gpt2_rank_file, tmp_path)
    assert spec["name"] == "r50k_base"
    assert_same_ids(tok.load_tokenizer(spec, tmp_path), tmp_path)


# --------------------------------------------------------------------------- export.py on trained runs


@pytest.mark.parametrize("recipe", [
    {"model.pos_emb": "rope", "model.activation": "relu2"},  # the main job's options
    {"model.pos_emb": "rope", "model.activation": "relu2", "model.qk_norm": "true", "model.bias": "false"},  # text-cpu
])
def test_a_trained_run_exports_and_loads_in_transformers(tmp_path, recipe):
    src = write_corpus(tmp_path / "text.txt", 20_000, seed=3)
    run = tmp_path / "run"
    data = {"data.source": str(src), "data.tokenizer": "bpe", "data.vocab_size": "300", "data.dir": str(tmp_path / "ds")}
    train.main(argv(data, run, **{k.replace(".", "__"): v for k, v in recipe.items()}))
    out = hf.export_run(str(run))
    assert out == tmp_path / "run-hf"
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    source = pretrained.load_source(str(run), "export.checkpoint")
    assert_same_model(source.model(), AutoModelForCausalLM.from_pretrained(out), 32)
    enc = source.encoding("bpe")
    text = src.read_text()[:3000] + mixed_text(2000)
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == enc.encode(text, allowed_special="all")
    with pytest.raises(UserError, match="already exists and is not empty"):
        hf.export_run(str(run))
    hf.export_run(str(run / "ckpt.pt"), overwrite=True)


def test_export_refusal_is_one_line_exit_2(tmp_path):
    data = {"data.source": str(write_corpus(tmp_path / "text.txt", 20_000, seed=3)), "data.tokenizer": "bytes",
            "data.dir": str(tmp_path / "ds")}
    train.main(argv(data, tmp_path / "run", train__max_iters=2, model__logit_softcap=30.0))
    done = subprocess.run([sys.executable, str(ROOT / "export.py"), f"--export.checkpoint={tmp_path / 'run'}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: cannot export model.logit_softcap=30")
    assert not (tmp_path / "run-hf").exists()
