"""The GPU path on a GPU: what the CPU suite can only test for its choices (marked ``cuda``; they skip with a reason
where there is no CUDA GPU, and ``python -m tools.gpu_check`` runs them on one with ``pytest -m cuda``).

Covers: the padded vocabulary under bf16 autocast (loss, gradient, sampling); the whole-model compile against the
eager step; fp16 with a GradScaler; a bitwise resume in deterministic mode (train.deterministic); Muon's
Newton-Schulz in bf16; the peak MFU is measured against; more processes than GPUs refused with the real count.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import ENV, ROOT, argv, bytes_corpus, losses
from model import GPT, GPTConfig, fit_vocab_rows
from smallgpt import hardware
from smallgpt.batches import Batches
from smallgpt.checkpoint import load_checkpoint
from smallgpt.config import TrainConfig
from smallgpt.dataset import open_dataset
from smallgpt.errors import UserError
from smallgpt.optim import newton_schulz
from smallgpt.step import TrainStep

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
TINY = dict(vocab_size=97, block_size=32, n_layer=2, n_head=2, n_embd=64)  # 97 tokens in 128 rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return bytes_corpus(tmp_path_factory.mktemp("corpus"))


def test_a_padded_models_bf16_loss_is_the_unpadded_ones_and_its_padding_gets_no_gradient():
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2(**TINY, tie_embeddings=False)).to(CUDA)
    unpadded = GPT(GPTConfig.gpt2(**TINY, tie_embeddings=False, vocab_multiple=1)).to(CUDA)
    unpadded.load_state_dict(fit_vocab_rows(model.state_dict(), 97))
    x, y = torch.randint(0, 97, (2, 4, 32), device=CUDA)
    with torch.autocast("cuda", torch.bfloat16):
        _, loss = model(x, y)
        _, want = unpadded(x, y)
    torch.testing.assert_close(loss, want, atol=2e-2, rtol=0)
    loss.backward()
    assert (model.lm_head.weight.grad[97:] == 0).all() and (model.transformer.wte.weight.grad[97:] == 0).all()


def test_sampling_on_the_gpu_never_yields_a_padding_id():
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2(**TINY)).to(CUDA).eval()
    with torch.no_grad():
        model.transformer.ln_f.bias.fill_(10.0)
        model.lm_head.weight[97:] = 1.0  # the padding's logits would win everything, were they counted
    prompt = torch.randint(0, 97, (4, 3), device=CUDA)
    with torch.autocast("cuda", torch.bfloat16):
        out = model.generate(prompt, 64, temperature=1.0, generator=torch.Generator(device=CUDA).manual_seed(0))
    assert out.max().item() < 97


def tiny_step(ds, **train) -> TrainStep:
    t = TrainConfig(**{"optimizer": "muon", "batch_size": 4, "max_iters": 10, "max_seconds": 0.0, **train})
    batches = Batches(ds.train, ds.val, 32, 4, 2, t.seed, CUDA)
    return TrainStep(GPTConfig(**{**TINY, "vocab_size": ds.vocab_size}), t, CUDA, batches)


def test_the_whole_model_compiles_on_cuda_and_steps_like_the_eager_model(data):
    ds = open_dataset(data["data.dir"])
    compiled, eager = tiny_step(ds, compile="true", dtype="bfloat16"), tiny_step(ds, compile="false", dtype="bfloat16")
    assert compiled.compiled and "the whole model" in compiled.compile_reason
    assert compiled.model._compiled_call_impl is not None
    compiled.warm_up()
    a = [compiled(s, 1.0).loss for s in range(3)]
    b = [eager(s, 1.0).loss for s in range(3)]
    assert all(abs(x - y) < 0.05 for x, y in zip(a, b)), (a, b)


def test_float16_trains_with_a_grad_scaler(data, tmp_path):
    out = tmp_path / "run"
    assert subprocess.run([sys.executable, str(ROOT / "train.py"),
                           *argv(data, out, train__device="cuda", train__dtype="float16", train__max_iters=20)],
                          cwd=ROOT, env=ENV, timeout=300).returncode == 0
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["precision"] == "float16" and ckpt["scaler"] is not None
    evals = [v for (step, kind), v in losses(out).items() if kind == "eval"]
    assert evals[-1] < evals[0]


def test_a_deterministic_run_resumes_bitwise_on_the_gpu(data, tmp_path):
    """train.deterministic: 20 steps straight and 12 + a resume to 20 give the same losses, bit for bit, in bf16
    (flash attention's backward included); each run a process of its own, as a user's are."""
    def run(out, **settings) -> None:
        cmd = [sys.executable, str(ROOT / "train.py"),
               *argv(data, out, train__device="cuda", train__dtype="bfloat16", train__deterministic="true",
                     train__optimizer="muon", **settings)]
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    ref, out = tmp_path / "ref", tmp_path / "run"
    run(ref, train__max_iters=20)
    run(out, train__max_iters=12)
    run(out, train__max_iters=20, train__resume="true")
    got, want = losses(out), losses(ref)
    assert all(got[k] == want[k] for k in want)


def test_newton_schulz_in_bf16_on_the_gpu_is_the_cpus():
    torch.manual_seed(0)
    g = torch.randn(256, 128)
    a, b = newton_schulz(g), newton_schulz(g.to(CUDA)).cpu()
    assert F.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99


def test_the_peak_mfu_is_measured_against():
    bf16 = hardware.peak_flops(CUDA, torch.bfloat16)
    fp32 = hardware.peak_flops(CUDA, torch.float32)  # TF32, probed with an 8192^3 matmul: no table lists it
    assert 1e12 < fp32 < 5e15 and 1e12 < bf16 < 5e15


def test_more_processes_than_this_machines_gpus_are_refused(monkeypatch):
    from smallgpt.distributed import process_and_device
    n = torch.cuda.device_count()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for key, value in dict(RANK="0", WORLD_SIZE=str(n + 1), LOCAL_RANK="0", LOCAL_WORLD_SIZE=str(n + 1)).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=rf"^{n + 1} processes on this node but {n} GPU"):
        process_and_device("cuda")
