"""train.init_from (pretrained.py) and eval.py: fine-tuning a run or a Hugging Face GPT-2 keeps its shape
and tokenizer, changes its weights and resumes exactly after a kill; every refusal is one line; eval.py
scores every token of a text once and agrees with a direct computation and with transformers."""
from __future__ import annotations

import importlib
import json
import math
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from smallgpt import pretrained
from smallgpt import evaluation
from smallgpt.config import DataConfig
from smallgpt.ensemble import distillation_loss
from smallgpt.evaluation import EvalConfig
from smallgpt import tokenizer as tok
import train
from smallgpt.checkpoint import load_checkpoint
from smallgpt.errors import UserError
from helpers import ENV, argv, losses, write_corpus

eval_script = importlib.import_module("eval")  # eval.py; `import eval` would shadow the builtin
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A finished tiny run with a BPE trained on its text, and a second text to fine-tune on."""
    tmp = tmp_path_factory.mktemp("base")
    run = tmp / "run"
    data = {"data.source": str(write_corpus(tmp / "a.txt", 30_000, seed=0)), "data.tokenizer": "bpe",
            "data.vocab_size": "300", "data.dir": str(tmp / "ds-a")}
    train.main(argv(data, run, train__max_iters=20, model__pos_emb="learned"))
    return {"run": run, "text": write_corpus(tmp / "b.txt", 30_000, seed=7), "tmp": tmp, "data": data}


def finetune_args(base: dict, out: Path, **settings) -> list[str]:
    """A fine-tuning run of ``base``'s model on its second text; [model] holds only the ``model__`` settings
    given here (the shape is the source's)."""
    model = {k: v for k, v in settings.items() if k.startswith("model__")}
    args = argv({"data.source": str(base["text"]), "data.dir": str(out.parent / f"{out.name}-data")}, out,
                train__init_from=str(base["run"]), **{k: v for k, v in settings.items() if k not in model})
    return [a for a in args if not a.startswith("--model.")] + [f"--{k.replace('__', '.')}={v}" for k, v in model.items()]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_finetune_starts_from_the_weights_keeps_the_tokenizer_and_changes_the_weights(base, tmp_path):
    source = base["run"] / "best.pt"
    before = {p.name: p.read_bytes() for p in base["run"].iterdir()}
    zero, ft = tmp_path / "zero", tmp_path / "ft"
    assert train.main(finetune_args(base, zero, train__max_iters=0)) == 0
    assert all(torch.equal(weights(zero / "ckpt.pt")[k], v) for k, v in weights(source).items())  # step 0: the source

    assert train.main(finetune_args(base, ft, train__max_iters=10, model__dropout=0.1)) == 0
    ckpt = load_checkpoint(ft / "ckpt.pt")
    assert ckpt["step"] == 10 and ckpt["model_config"] == {**load_checkpoint(source)["model_config"], "dropout": 0.1}
    assert any(not torch.equal(ckpt["model"][k], v) for k, v in weights(source).items())  # it learned
    # the text was prepared with the source's own rank file, which the new run keeps
    assert (ft / "tokenizer.tiktoken").read_bytes() == (base["run"] / "tokenizer.tiktoken").read_bytes()
    assert tok.spec_identity(ckpt["tokenizer"], ft) == tok.spec_identity(load_checkpoint(source)["tokenizer"], base["run"])
    evals = [json.loads(line) for line in (ft / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert {p.name: p.read_bytes() for p in base["run"].iterdir()} == before  # the source is untouched


def test_finetune_resumes_exactly_after_a_kill(base, tmp_path):
    steps, ref, out = 120, tmp_path / "ref", tmp_path / "killed"
    settings = dict(train__max_iters=steps, train__eval_interval=40)
    train.main(finetune_args(base, ref, **settings))
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *finetune_args(base, out, **settings)],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "ckpt.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < load_checkpoint(out / "ckpt.pt")["step"] < steps
    assert train.main(finetune_args(base, out, train__resume="true", **settings)) == 0
    assert losses(out) == losses(ref)  # bitwise, every step once


def test_a_smaller_context_crops_the_position_table(base, tmp_path):
    train.main(finetune_args(base, tmp_path / "ft", train__max_iters=0) + ["--model.block_size=16"])
    ckpt = load_checkpoint(tmp_path / "ft" / "ckpt.pt")
    assert ckpt["model_config"]["block_size"] == 16
    assert torch.equal(ckpt["model"]["transformer.wpe.weight"], weights(base["run"] / "best.pt")["transformer.wpe.weight"][:16])


@pytest.mark.parametrize("extra, message", [
    (["--model.n_layer=3"], r"model.n_layer = 3 contradicts .*best.pt, whose n_layer is 2"),
    (["--model.pos_emb=rope"], r"model.pos_emb = 'rope' contradicts"),
    (["--model.block_size=64"], r"model.block_size = 64 is larger than the context of .* \(32\)"),
    (["--data.tokenizer=bytes"], r"--data.tokenizer=bytes is not the tokenizer of .*best.pt, which reads 'bpe300'"),
    (["--train.init_from=nowhere"], r"--train.init_from=nowhere: no such file or directory"),
])
def test_finetune_refusals(base, tmp_path, extra, message):
    out = tmp_path / "ft"
    with pytest.raises(UserError, match=message) as e:
        train.main(finetune_args(base, out) + extra)
    assert "\n" not in str(e.value)
    assert not out.exists()


def test_finetune_into_the_source_directory_is_refused(base):
    with pytest.raises(UserError, match="is the directory this run would write"):
        train.main(finetune_args(base, base["run"]))


def test_a_dataset_of_another_tokenizer_is_refused_naming_both(base, tmp_path):
    """An existing dataset given by --data.dir whose tokens are another tokenizer's."""
    source = pretrained.load_source(str(base["run"]), "train.init_from")
    other = tmp_path / "other.tiktoken"
    ranks = tok.parse_rank_file((base["run"] / "tokenizer.tiktoken").read_bytes(), "x")
    tok.write_rank_file(dict(list(ranks.items())[:280]), other)
    from smallgpt.dataset import open_dataset  # noqa: PLC0415
    from smallgpt.pipeline import prepare  # noqa: PLC0415
    ds = open_dataset(prepare(DataConfig(source=str(base["text"]), tokenizer=str(other), dir=str(tmp_path / "ds")),
                              progress=False))
    with pytest.raises(UserError, match=r"prepared with tokenizer 'other', but .*best.pt reads 'bpe300' tokens") as e:
        source.check_dataset(ds)
    assert "\n" not in str(e.value)


def test_a_refusal_on_the_command_line_is_one_line_exit_2(base, tmp_path, monkeypatch):
    env = {**ENV, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    for args, message in [(finetune_args(base, tmp_path / "ft") + ["--model.n_head=4"], "contradicts"),
                          (["--train.init_from=gpt2-xl", f"--train.out_dir={tmp_path / 'xl'}"], "not in the Hugging Face cache")]:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "ft").exists() and not (tmp_path / "xl").exists()



def evaluate(settings) -> dict:
    """eval.py's measurement of its settings (its [eval] and [data]), without progress bars."""
    return evaluation.evaluate(settings.eval, settings.data, progress=False)

# --------------------------------------------------------------------------- GPT-2 from Hugging Face


def test_finetune_a_hugging_face_gpt2(hf_gpt2, gpt2_rank_file, tmp_path):
    args = [f"--train.init_from={hf_gpt2}", f"--data.source={write_corpus(tmp_path / 't.txt', 20_000, 2)}",
            f"--data.dir={tmp_path / 'ds'}", f"--train.out_dir={tmp_path / 'ft'}", "--train.max_iters=3",
            "--train.batch_size=2", "--train.eval_iters=1", "--train.max_seconds=0", "--train.compile=false",
            "--train.sample_at_end=false", "--model.block_size=16"]
    with pytest.raises(UserError, match=r"--data.tokenizer=bytes is not the tokenizer of .*gpt2-tiny, which reads GPT-2's"):
        train.main(args + ["--data.tokenizer=bytes"])
    assert train.main(args + [f"--data.tokenizer={gpt2_rank_file}"]) == 0
    ckpt = load_checkpoint(tmp_path / "ft" / "ckpt.pt")
    assert ckpt["tokenizer"]["name"] == "r50k_base" and ckpt["model_config"]["activation"] == "gelu_tanh"
    assert ckpt["model_config"]["block_size"] == 16 and ckpt["model"]["transformer.wpe.weight"].shape == (16, 32)


def test_a_gpt2_directory_brings_its_own_tokenizer(hf_gpt2, gpt2_rank_file, tmp_path):
    """GPT-2's vocab.json (as the hub has it) is tiktoken's r50k_base: no data.tokenizer, no download."""
    from smallgpt import hf  # noqa: PLC0415
    ranks = tok.parse_rank_file(gpt2_rank_file.read_bytes(), "r50k")
    char = hf.bytes_to_unicode()
    vocab = {"".join(char[b] for b in token): rank for token, rank in ranks.items()} | {tok.EOT: 50256}
    (hf_gpt2 / "vocab.json").write_text(json.dumps(vocab))
    text = write_corpus(tmp_path / "t.txt", 5_000, 4)
    args = [f"--train.init_from={hf_gpt2}", f"--data.source={text}", f"--data.dir={tmp_path / 'data' / 'ds'}",
            f"--train.out_dir={tmp_path / 'ft'}", "--train.max_iters=1", "--train.batch_size=1", "--train.eval_iters=1",
            "--train.max_seconds=0", "--train.compile=false", "--train.sample_at_end=false"]
    assert train.main(args) == 0
    assert load_checkpoint(tmp_path / "ft" / "ckpt.pt")["tokenizer"]["name"] == "r50k_base"
    assert (tmp_path / "data" / "downloads" / "r50k_base.tiktoken").read_bytes() == gpt2_rank_file.read_bytes()
    record = evaluate(eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=str(hf_gpt2)),
                                                         DataConfig(source=str(text))))
    assert record["tokenizer"] == "r50k_base" and record["bytes"] == len(text.read_bytes())
    (hf_gpt2 / "vocab.json").write_text(json.dumps({**vocab, "Ġthe": 7}))  # another tokenizer
    with pytest.raises(UserError, match=r"vocab.json is not GPT-2's tokenizer"):
        train.main(args + [f"--train.out_dir={tmp_path / 'ft2'}"])


def test_eval_of_a_hugging_face_gpt2_equals_transformers_loss(hf_gpt2, gpt2_rank_file, tmp_path):
    transformers = pytest.importorskip("transformers")
    text = "It is a truth universally acknowledged, that a single man"
    (tmp_path / "t.txt").write_text(text)
    record = evaluate(eval_script.EvalSettings(
        EvalConfig(device="cpu", checkpoint=str(hf_gpt2)), DataConfig(source=str(tmp_path / "t.txt"),
                                                                             tokenizer=str(gpt2_rank_file))))
    enc = pretrained.load_source(str(hf_gpt2), "eval.checkpoint").encoding(str(gpt2_rank_file))
    ids = torch.tensor([[enc.eot_token] + enc.encode(text)])
    with torch.no_grad():
        want = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2).eval()(ids, labels=ids).loss.item()
    assert record["tokens"] == ids.shape[1] - 1 and record["bytes"] == len(text.encode())
    assert record["loss"] == pytest.approx(want, abs=1e-5)
    assert record["bpb"] == pytest.approx(want * record["tokens"] / math.log(2) / record["bytes"], rel=1e-6)


# --------------------------------------------------------------------------- eval.py


@pytest.mark.parametrize("n, block_size, stride", [(2, 8, 4), (9, 8, 4), (10, 8, 4), (100, 8, 4), (100, 8, 8),
                                                   (100, 8, 1), (37, 16, 5)])
def test_windows_score_every_token_once_with_enough_context(n, block_size, stride):
    scored = []
    for i, (b, first) in enumerate(evaluation.windows(n, block_size, stride)):
        targets = [j for j in range(b + 1 + first, b + block_size + 1) if j < n]
        assert i == 0 or all(j - b - 1 >= block_size - stride for j in targets)  # context before each target
        scored += targets
    assert scored == list(range(1, n))


def test_eval_equals_a_direct_computation(base, tmp_path):
    """A text within one window: the model's own loss over [<|endoftext|>] + the text; a longer one: every token."""
    source = pretrained.load_source(str(base["run"]), "eval.checkpoint")
    enc, model = source.encoding("bpe"), source.model()
    short = tmp_path / "short.txt"
    short.write_text("She said it was not so.")
    settings = eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=str(base["run"])),
                                       DataConfig(source=str(short)))
    record = evaluate(settings)
    ids = torch.tensor([[enc.eot_token] + enc.encode(short.read_text())])
    assert ids.shape[1] <= 32
    with torch.no_grad():
        want = F.cross_entropy(model(ids[:, :-1])[0][0], ids[0, 1:]).item()
    assert record["loss"] == pytest.approx(want, abs=1e-5) and record["tokens"] == ids.shape[1] - 1

    settings.data.source = str(base["text"])
    record = evaluate(settings)
    assert record["bytes"] == len(base["text"].read_bytes()) and record["stride"] == 16
    assert record["tokens"] == len(enc.encode(base["text"].read_text()))  # all of them (<|endoftext|> first)
    settings.eval.max_tokens, settings.eval.stride = 100, 32
    capped = evaluate(settings)
    assert capped["tokens"] == 100 and capped["windows"] == 4


def test_eval_of_an_ensemble_averages_the_members_probabilities(base, tmp_path):
    """Two runs on one dataset (so one tokenizer) scored as one: -log of the mean of their probabilities;
    a member with another tokenizer is refused in one line."""
    other = tmp_path / "other"
    train.main(argv(base["data"], other, train__max_iters=10, train__seed=7, model__pos_emb="learned"))
    short = tmp_path / "short.txt"
    short.write_text("She said it was not so, and he went away.")
    both = f"{base['run']},{other}"
    record = evaluate(eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=both),
                                                         DataConfig(source=str(short))))
    sources = [pretrained.load_source(str(d), "eval.checkpoint") for d in (base["run"], other)]
    enc = sources[0].encoding("bpe")
    ids = torch.tensor([[enc.eot_token] + enc.encode(short.read_text())])
    with torch.no_grad():
        p = torch.stack([s.model()(ids[:, :-1])[0][0].softmax(-1) for s in sources]).mean(0)  # (T, V)
    want = -p[torch.arange(ids.shape[1] - 1), ids[0, 1:]].log().mean().item()
    assert record["loss"] == pytest.approx(want, abs=1e-5) and record["tokens"] == ids.shape[1] - 1
    single = [evaluate(eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=str(d)),
                                                          DataConfig(source=str(short))))
              for d in (base["run"], other)]
    assert record["loss"] != single[0]["loss"] and record["model"] == f"{sources[0].path},{sources[1].path}"

    bytes_run = tmp_path / "bytes"
    train.main(argv({"data.source": str(base["text"]), "data.tokenizer": "bytes", "data.dir": str(tmp_path / "ds-b")},
                    bytes_run, train__max_iters=1, model__pos_emb="learned"))
    with pytest.raises(UserError, match="different tokenizers; an ensemble's members must share one") as e:
        evaluate(eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=f"{base['run']},{bytes_run}"),
                                                    DataConfig(source=str(short))))
    assert "\n" not in str(e.value)
    shorter = tmp_path / "shorter"
    train.main(argv(base["data"], shorter, train__max_iters=1, model__pos_emb="learned", model__block_size=16))
    with pytest.raises(UserError, match="context of 32 tokens and .* of 16; an ensemble's members must share one"):
        evaluate(eval_script.EvalSettings(EvalConfig(device="cpu", checkpoint=f"{base['run']},{shorter}"),
                                                    DataConfig(source=str(short))))


def test_eval_command_prints_json_last_and_refuses_in_one_line(base, tmp_path):
    cmd = [sys.executable, str(ROOT / "eval.py"), f"--eval.checkpoint={base['run']}", f"--data.source={base['text']}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"bpb", "loss", "tokens", "bytes"} <= set(record) and 0 < record["bpb"] < 8
    done = subprocess.run([*cmd, "--eval.checkpoint=nowhere"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    for bad, message in [("--data.tokenizer=bytes", "is not the tokenizer of"), ("--eval.stride=64", "at most the model's")]:
        with pytest.raises(UserError, match=message) as e:
            eval_script.main(cmd[2:] + [bad])
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- distillation (train.distill_from)


def test_the_distillation_objective_mixes_the_cross_entropy_with_the_kl_from_the_teachers_mean(base):
    teachers = [pretrained.load_source(str(base["run"]), "x").model(), pretrained.load_source(str(base["run"]), "x").model()]
    with torch.no_grad():
        for p in teachers[1].parameters():
            p.mul_(0.5)  # a second, different teacher
    torch.manual_seed(0)
    x, logits = torch.randint(0, 300, (2, 8)), torch.randn(2, 8, 300)
    y = torch.randint(0, 300, (2, 8))
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    got = distillation_loss(logits, ce, teachers, x, weight=0.3)
    with torch.no_grad():
        p_t = torch.stack([t(x)[0].softmax(-1) for t in teachers]).mean(0)  # (2, 8, V)
    kl = (p_t * (p_t.log() - logits.log_softmax(-1))).sum(-1).mean()
    assert got.item() == pytest.approx((0.7 * ce + 0.3 * kl).item(), rel=1e-5)


def test_a_distillation_run_learns_from_an_ensemble_and_logs_the_cross_entropy(base, tmp_path, capsys):
    other = tmp_path / "other"
    train.main(argv(base["data"], other, train__max_iters=10, train__seed=5, model__pos_emb="learned"))
    student = tmp_path / "student"
    capsys.readouterr()
    train.main(argv(base["data"], student, train__max_iters=10, train__distill_from=f"{base['run']},{other}",
                    train__distill_weight=0.5))
    assert "distilling from" in capsys.readouterr().out
    plain = tmp_path / "plain"
    train.main(argv(base["data"], plain, train__max_iters=10))
    distilled, alone = losses(student), losses(plain)
    assert distilled[(1, "train")] == pytest.approx(alone[(1, "train")], abs=1e-6)  # the same cross-entropy first
    assert distilled[(10, "train")] != alone[(10, "train")]  # then the teachers' gradients made a difference
    saved = tomllib.loads((student / "config.toml").read_text())
    assert saved["train"]["distill_from"] == f"{base['run']},{other}"


@pytest.mark.parametrize("setting, message", [
    ("train.distill_weight=0", "--train.distill_weight: must be more than 0 and at most 1"),
    ("train.distill_from=nowhere", "--train.distill_from=nowhere: no such file or directory"),
    ("model.block_size=64", "a teacher needs the student's vocabulary .* and at least its context"),
])
def test_distillation_refusals(base, tmp_path, setting, message):
    key, value = setting.split("=")
    settings = {"train__max_iters": 1, "train__distill_from": str(base["run"]), key.replace(".", "__"): value}
    with pytest.raises(UserError, match=message) as e:
        train.main(argv(base["data"], tmp_path / "s", **settings))
    assert "\n" not in str(e.value)


def test_a_teacher_of_another_tokenizer_is_refused(base, tmp_path):
    with pytest.raises(UserError, match="was prepared with tokenizer 'bytes'"):
        train.main(argv({"data.source": str(base["text"]), "data.tokenizer": "bytes", "data.dir": str(tmp_path / "d")},
                        tmp_path / "s", train__max_iters=1, train__distill_from=str(base["run"])))
