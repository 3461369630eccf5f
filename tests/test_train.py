"""train.py and hardware.py: the whole run on tiny models over a tiny corpus made here.

Covers: prepare -> train -> sample end to end; metrics.jsonl records; stateless, fixed data windows;
exact resume after SIGKILL; the 2-process gloo DDP run matching 1 process; non-finite loss; refusing
to clobber or mis-resume a run; bad input and bad settings (one line, exit 2); the compile rule.
"""
from __future__ import annotations

import json
import math
import random
import resource
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

from smallgpt import hardware
from smallgpt import speed
import train
from smallgpt.checkpoint import load_checkpoint, model_from_checkpoint
from smallgpt.cli import parse_args
from smallgpt.config import Config
from smallgpt.errors import UserError
from smallgpt.dataset import open_dataset
from smallgpt.tokenizer import load_tokenizer
from helpers import ENV, ROOT, argv, bytes_corpus, losses, records, write_corpus
from smallgpt.batches import Batches
from smallgpt.distributed import Proc, local_accumulation
from smallgpt.safefiles import DirLock
from smallgpt.step import TrainStep
from smallgpt.trainer import Trainer

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine two spinning OpenMP
    threads can make a step 100x slower; subprocesses get OMP_NUM_THREADS=1 (ENV) to match."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)




@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """A ~40 KB corpus prepared with the bytes tokenizer, shared by the tests of this module."""
    return bytes_corpus(tmp_path_factory.mktemp("corpus"))


# --------------------------------------------------------------------------- the main path


def test_prepare_train_sample_end_to_end(tmp_path, capsys):
    """A BPE dataset is prepared, a model trained on it, and the run directory is complete and usable."""
    src = write_corpus(tmp_path / "text.txt", 30_000, seed=1)
    out = tmp_path / "run"
    args = argv({"data.source": str(src), "data.tokenizer": "bpe", "data.vocab_size": "300",
                 "data.dir": str(tmp_path / "ds")}, out, train__max_iters=40, train__eval_interval=20,
                train__sample_at_end="true", sample__max_new_tokens=40)
    assert train.main(args) == 0
    printed = capsys.readouterr().out
    assert "best val" in printed and "a sample" in printed and len(printed.split("---\n", 1)[1].strip()) > 0

    assert {"ckpt.pt", "best.pt", "metrics.jsonl", "config.toml", "tokenizer.tiktoken"} <= {p.name for p in out.iterdir()}
    recs = records(out)
    evals = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 40 and ckpt["tokens_seen"] == 40 * 4 * 32
    assert ckpt["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert ckpt["tokenizer"]["file"] == "tokenizer.tiktoken" and ckpt["dataset"]["fingerprint"]

    # the saved config is the resolved one; the checkpoint samples with the run directory's own tokenizer
    saved = Config.from_dict(tomllib.loads((out / "config.toml").read_text()))
    assert saved.to_dict() == parse_args(args, Config, "train.py").to_dict()
    enc = load_tokenizer(ckpt["tokenizer"], out)
    model = model_from_checkpoint(load_checkpoint(out / "best.pt"))
    ids = model.generate(torch.tensor([[enc.eot_token]]), 20, temperature=0,
                         generator=torch.Generator().manual_seed(0))
    assert ids.shape == (1, 21) and isinstance(enc.decode(ids[0, 1:].tolist()), str)


def test_metrics_records(data, tmp_path):
    """The record fields of CONVENTIONS.md; bits per byte from the dataset's byte counts."""
    out = tmp_path / "run"
    train.main(argv(data, out, train__log_interval=5))
    recs = records(out)
    train_recs = [r for r in recs if "loss" in r]
    eval_recs = [r for r in recs if "val_loss" in r]
    assert [r["step"] for r in train_recs] == [5, 10, 15, 20]
    assert all(set(r) == {"step", "loss", "lr", "tokens_per_s", "train_seconds", "mfu"} for r in train_recs)
    assert all(set(r) == {"step", "train_seconds", "val_loss", "val_bpb", "train_loss", "train_bpb", "eval_seconds"}
               for r in eval_recs)
    assert train_recs[-1]["train_seconds"] >= train_recs[0]["train_seconds"] > 0
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in train_recs)
    ds = open_dataset(data["data.dir"])
    for r in eval_recs:
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / math.log(2) / ds.bytes_per_token("val"))
    assert train_recs[0]["lr"] == pytest.approx(3e-3 * 5 / 6)  # step index 4 of a 5-step warmup


def test_data_windows_are_stateless_and_eval_windows_fixed(data):
    ds = open_dataset(data["data.dir"])
    a = Batches(ds.train, ds.val, 32, 4, eval_iters=3, seed=7, device=torch.device("cpu"))
    b = Batches(ds.train, ds.val, 32, 4, eval_iters=3, seed=7, device=torch.device("cpu"))
    x, y = a.train(5, 1)
    assert x.shape == y.shape == (4, 32) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(x, b.train(5, 1)[0])  # a pure function of (seed, step, micro-batch)
    assert not torch.equal(x, a.train(5, 2)[0]) and not torch.equal(x, a.train(6, 1)[0])
    assert torch.equal(a.eval("val", 2)[0], b.eval("val", 2)[0]) and torch.equal(a.eval("val", 2)[0], a.eval("val", 2)[0])
    assert int(a.eval_offsets["val"].max()) <= len(ds.val) - 33


def test_muon_wsd_time_budget(data, tmp_path):
    """Muon trains; with max_seconds the run stops on time and the wsd schedule ends at min_lr."""
    out = tmp_path / "run"
    train.main(argv(data, out, train__optimizer="muon", train__schedule="wsd", train__max_seconds=1.5,
                    train__max_iters=10**6, train__min_lr=3e-4, train__eval_interval=10**6))
    recs = [r for r in records(out) if "loss" in r]
    evals = [r for r in records(out) if "val_loss" in r]
    # train_seconds is logged unrounded, so the stopping rule reads exactly: the first step at or past the budget
    assert recs[-2]["train_seconds"] < 1.5 <= recs[-1]["train_seconds"]
    lrs = [r["lr"] for r in recs[5:]]  # after the warmup: stable, then decaying with the clock
    assert lrs[0] == pytest.approx(3e-3) and all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1.5e-3
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5


# --------------------------------------------------------------------------- resume


def test_resume_after_sigkill_is_bitwise_exact(data, tmp_path):
    """Kill a run (SIGKILL) once a checkpoint exists; the resumed run's losses equal an uninterrupted run's."""
    steps = 120
    ref, out = tmp_path / "ref", tmp_path / "killed"
    train.main(argv(data, ref, train__max_iters=steps, train__eval_interval=40))
    cmd = [sys.executable, str(ROOT / "train.py"), *argv(data, out, train__max_iters=steps, train__eval_interval=40)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "ckpt.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(random.uniform(0.0, 0.1))  # kill at some arbitrary point after the first checkpoint
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = load_checkpoint(out / "ckpt.pt")["step"]
    assert 0 < killed_at < steps

    assert train.main(argv(data, out, train__max_iters=steps, train__eval_interval=40, train__resume="true")) == 0
    got, want = losses(out), losses(ref)
    assert list(got) == list(want)  # every step exactly once: the records after the checkpoint were dropped
    assert got == want  # bitwise
    assert load_checkpoint(out / "ckpt.pt")["step"] == steps


@pytest.mark.parametrize("settings", [
    dict(train__optimizer="adamw"), dict(train__optimizer="muon"),
    dict(train__optimizer="muon", train__muon_split_qkv="true", train__embedding_lr=0.01, train__head_lr=0.002,
         train__scalar_lr=0.005, model__tie_embeddings="false")],
                         ids=["adamw", "muon", "muon-split-qkv-per-group-rates"])
def test_resume_continues_and_extends(data, tmp_path, settings):
    """A finished run resumed with a larger max_iters continues exactly where a longer run would be."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    train.main(argv(data, ref, train__max_iters=20, **settings))
    train.main(argv(data, out, train__max_iters=12, **settings))
    train.main(argv(data, out, train__max_iters=20, train__resume="true", **settings))
    got, want = losses(out), losses(ref)
    assert set(got) - set(want) == {(12, "eval")}  # the first run's final evaluation
    assert all(got[k] == want[k] for k in want)
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 20 and ckpt["train_seconds"] > 0


def test_refuses_to_clobber_or_misresume(data, tmp_path):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=10))
    before = snapshot(out)
    with pytest.raises(UserError, match=r"--train.resume=true to continue it, --train.overwrite=true"):
        train.main(argv(data, out, train__max_iters=10))
    with pytest.raises(UserError, match=r"model settings differ \(model.n_embd: checkpoint 32, now 48\)"):
        train.main(argv(data, out, model__n_embd=48, train__resume="true"))
    with pytest.raises(UserError, match="optimizer 'adamw', not 'muon'"):
        train.main(argv(data, out, train__optimizer="muon", train__resume="true"))
    other = tmp_path / "other.txt"
    write_corpus(other, 20_000, seed=5)
    with pytest.raises(UserError, match="dataset .* differs"):
        train.main(argv({**data, "data.source": str(other), "data.dir": str(tmp_path / "other")}, out,
                        train__resume="true"))
    assert snapshot(out) == before  # nothing was touched
    train.main(argv(data, out, train__max_iters=5, train__overwrite="true"))
    assert load_checkpoint(out / "ckpt.pt")["step"] == 5


def test_resume_of_a_run_directory_without_a_checkpoint_starts_it(data, tmp_path, capsys):
    """A run killed before its first checkpoint left a directory to continue: --train.resume=true starts it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("# what a killed start leaves\n")
    assert train.main(argv(data, out, train__max_iters=5, train__resume="true")) == 0
    assert "holds no checkpoint yet: starting the run from step 0" in capsys.readouterr().err
    assert load_checkpoint(out / "ckpt.pt")["step"] == 5 and records(out)[0]["step"] == 0


def test_the_run_directory_and_its_lock_exist_before_any_probe(data, tmp_path, monkeypatch):
    """Made and locked (with its config) before the dataset is opened and before any speed probe or compile
    decision: a kill in that time leaves a run to resume, and a second run is refused at once."""
    out, seen = tmp_path / "run", []

    def checked(real):
        def probe(*args, **kwargs):
            seen.append(sorted(p.name for p in out.iterdir()))
            with pytest.raises(UserError, match="in use by another process"):  # flock: per open file, so also here
                DirLock(out / ".lock", "the run", "").acquire()
            return real(*args, **kwargs)
        return probe

    for module, name in ((hardware, "quick_peak"), (speed, "compile_pays")):
        monkeypatch.setattr(module, name, checked(getattr(module, name)))
    peak = []  # MFU's peak is measured when the first record needs it, not at the start
    monkeypatch.setattr(hardware, "peak_flops", lambda *a, real=hardware.peak_flops: peak.append(
        (out / "metrics.jsonl").exists()) or real(*a))
    assert train.main(argv(data, out, train__max_iters=2, train__dtype="auto", train__compile="auto")) == 0
    assert seen and all(names == [".lock", "config.toml"] for names in seen)  # the probes that ran (some are cached)
    assert peak == [True]


def test_a_failed_start_removes_the_run_directory_it_made(data, tmp_path):
    with pytest.raises(UserError, match="is too small"):
        train.main(argv(data, tmp_path / "run", model__block_size=100_000))
    assert not (tmp_path / "run").exists()


def test_a_kill_right_after_the_start_leaves_a_run_that_resumes(data, tmp_path):
    out = tmp_path / "run"
    proc = start_run(data, out, train__max_iters=5)
    deadline = time.time() + 120
    while not (out / "config.toml").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert train.main(argv(data, out, train__max_iters=5, train__resume="true")) == 0
    assert load_checkpoint(out / "ckpt.pt")["step"] == 5


def test_what_auto_chose_is_written_into_the_config_and_the_metrics(data, tmp_path):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=2, train__compile="auto", train__dtype="auto"))
    chosen = records(out)[0]["chosen"]
    assert chosen["train.dtype"].startswith(("float32 (auto", "bfloat16 (auto")) and chosen["train.compile"].startswith("false")
    text = (out / "config.toml").read_text()
    assert f'dtype = "auto"  # chose {chosen["train.dtype"]}' in text
    assert f'compile = "auto"  # chose {chosen["train.compile"]}' in text
    assert tomllib.loads(text)["train"]["dtype"] == "auto"  # a comment: the file is the same config


def test_resume_from_a_truncated_checkpoint_is_refused(data, tmp_path):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=10))
    (out / "ckpt.pt").write_bytes((out / "ckpt.pt").read_bytes()[:5000])
    before = snapshot(out)
    with pytest.raises(UserError, match="truncated or corrupt"):
        train.main(argv(data, out, train__max_iters=20, train__resume="true"))
    assert snapshot(out) == before


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=10))
    kept = {n: (out / n).read_bytes() for n in ("ckpt.pt", "best.pt")}
    with pytest.raises(UserError, match="non-finite|loss became (nan|inf)") as e:
        train.main(argv(data, out, train__max_iters=30, train__learning_rate=1e30, train__resume="true",
                        train__eval_interval=1000, train__checkpoint_interval=1000))
    assert "--train.learning_rate" in str(e.value) and "intact" in str(e.value)
    assert {n: (out / n).read_bytes() for n in kept} == kept


# --------------------------------------------------------------------------- distributed


def test_ddp_two_processes_match_one(data, tmp_path):
    """torchrun, 2 CPU processes (gloo), global batch 2 x 4: the same losses as 1 process with 2 micro-batches."""
    one, two = tmp_path / "one", tmp_path / "two"
    settings = dict(train__gradient_accumulation_steps=2, train__max_iters=12, train__eval_interval=6,
                    train__checkpoint_interval=6)
    train.main(argv(data, one, **settings))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), *argv(data, two, **settings)]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = losses(one), losses(two)
    assert list(a) == list(b)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert load_checkpoint(two / "ckpt.pt")["step"] == 12


def test_ddp_with_a_time_budget_stops_every_process_together(data, tmp_path):
    """With train.max_seconds the processes agree on each step's time (their mean), so they stop after the same
    step and schedule alike: a rank that stopped alone would leave the other waiting in a collective."""
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
           *argv(data, out, train__max_seconds=1.0, train__max_iters=10**6, train__eval_interval=10**6,
                 train__schedule="wsd", train__optimizer="muon")]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    recs = [r for r in records(out) if "loss" in r]
    assert recs[-2]["train_seconds"] < 1.0 <= recs[-1]["train_seconds"]


CONFIGS = sorted((ROOT / "config").glob("*.toml"))


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_divides_over_any_number_of_processes(path, world):
    accum = parse_args([str(path)], Config, "train.py").train.gradient_accumulation_steps
    local = local_accumulation(accum, world)
    assert local >= 1 and accum <= local * world < accum + world  # the smallest equal share that covers it
    assert local * world == accum or accum % world  # unchanged whenever it divides


def tiny_overrides(data: dict[str, str], out: Path) -> list[str]:
    """A shipped config shrunk to seconds: its optimizer, schedule and accumulation, a tiny model and corpus (the
    module's dataset, as it was split), on the CPU (gloo: two processes on one GPU would be two NCCL ranks on one
    card)."""
    return [f"--{k}={v}" for k, v in {**data, "data.val_fraction": 0.1, "train.device": "cpu", "model.n_layer": 1,
                                       "model.n_head": 2, "model.n_embd": 32, "model.block_size": 16,
                                       "train.batch_size": 2, "train.max_iters": 2,
                                       "train.max_seconds": 0, "train.eval_interval": 2, "train.eval_iters": 1,
                                       "train.checkpoint_interval": 2, "train.compile": "false",
                                       "train.dtype": "float32", "train.sample_at_end": "false",
                                       "train.out_dir": str(out)}.items()]


@pytest.fixture(scope="module")
def tiny_source(data, tmp_path_factory) -> Path:
    """A tiny trained run, for the configs that fine-tune (train.init_from)."""
    out = tmp_path_factory.mktemp("source") / "run"
    train.main(tiny_overrides(data, out)[:-1] + [f"--train.out_dir={out}"])
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_torchrun_two_processes_run_every_shipped_config(data, tmp_path, path, tiny_source):
    overrides = tiny_overrides(data, tmp_path / "run")
    if parse_args([str(path)], Config, "train.py").train.init_from:  # its shape comes from the source
        overrides = [a for a in overrides if not a.startswith("--model.")] + [f"--train.init_from={tiny_source}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "train.py"), str(path), *overrides]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    # the ranks' own lines first (torchrun's summary of a failure buries them)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines()
                                           if "torch/distributed/" not in line)[-3000:]
    accum = parse_args([str(path)], Config, "train.py").train.gradient_accumulation_steps
    assert ("does not divide over 2 processes" in done.stdout) == (accum % 2 == 1)
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"] == 2


DIFFERENT_DATA = """
import sys, types
sys.path.insert(0, sys.argv[1])
from smallgpt.cli import run_main
from smallgpt.distributed import check_same_data, join_process_group, process_and_device
proc, device = process_and_device("cpu")
join_process_group(proc, device)
ds = types.SimpleNamespace(fingerprint=("a" if proc.rank == 0 else "b") * 16, dir=f"data-of-rank-{proc.rank}")
run_main(lambda argv: check_same_data(ds, proc, device))
"""


def test_processes_with_different_datasets_refuse_to_train(tmp_path):
    script = tmp_path / "different.py"
    script.write_text(DIFFERENT_DATA)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(ROOT)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("error: the processes' datasets differ") == 2  # every rank says so, none trains


# --------------------------------------------------------------------------- faults


def snapshot(out: Path) -> dict[str, bytes]:
    """The run directory's files, but its lock file (which says who held it last)."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file() and p.name != ".lock"}


def start_run(data: dict[str, str], out: Path, **settings) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), *argv(data, out, **settings)]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, out: Path, step: int) -> None:
    """Until the run has logged a training record of at least ``step`` (or died)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists():
            lines = (out / "metrics.jsonl").read_text().splitlines()
            if any(json.loads(line).get("step", -1) >= step and "loss" in json.loads(line) for line in lines[:-1]):
                return
        time.sleep(0.02)
    raise AssertionError(f"the run did not reach step {step}: {proc.poll()}")


def test_a_second_run_into_a_run_in_progress_is_refused(data, tmp_path):
    out = tmp_path / "run"
    first = start_run(data, out, train__max_iters=10**6, train__checkpoint_interval=5)
    try:
        wait_for_step(first, out, 10)
        first.send_signal(signal.SIGSTOP)  # hold it still, so its files can be compared
        while Path(f"/proc/{first.pid}/stat").read_text().split(") ")[1][0] != "T":  # the signal has landed
            time.sleep(0.001)
        before = snapshot(out)
        for extra in ({"train__resume": "true"}, {"train__overwrite": "true"}):
            with pytest.raises(UserError, match=rf"run directory .* is in use by another process \(pid {first.pid} "):
                train.main(argv(data, out, **extra))
        assert snapshot(out) == before  # the first run's files are untouched
    finally:
        first.kill()
        first.wait()
    train.main(argv(data, out, train__max_iters=30, train__resume="true"))  # the lock died with its holder
    assert load_checkpoint(out / "ckpt.pt")["step"] == 30


def test_a_full_disk_while_training_is_one_line_and_leaves_no_temporary_file(data, tmp_path):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=10))

    def small_disk():  # files may not grow past 50 kB: the checkpoint no longer fits, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    done = subprocess.run([sys.executable, str(ROOT / "train.py"),
                           *argv(data, out, train__max_iters=20, train__resume="true")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, preexec_fn=small_disk)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write checkpoint") and "File too large" in last
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out / "ckpt.pt")["step"] == 10  # the previous checkpoint is whole


@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_an_infinite_gradient_never_reaches_the_weights_or_a_checkpoint(data, tmp_path, monkeypatch, clip):
    real = TrainStep._forward_backward

    def poisoned(self, step, i):
        loss = real(self, step, i)
        if step == 6:  # the 7th step: its loss is finite, its gradient is not
            self.params[0].grad.fill_(float("inf"))
        return loss

    monkeypatch.setattr(TrainStep, "_forward_backward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(UserError, match="the gradient norm became inf at step 7 and that step was not applied"):
        train.main(argv(data, out, train__checkpoint_interval=1, train__grad_clip=clip))
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 6 and all(torch.isfinite(w).all() for w in ckpt["model"].values())


ENDLESS = dict(train__max_iters=10**6, train__checkpoint_interval=10**6, train__eval_interval=10**6)


def signalled_run(data: dict[str, str], out: Path, signum: int, at_step: int) -> tuple[int, str, str]:
    """An endless run sent ``signum`` once it has logged step ``at_step``: (exit code, stdout, stderr)."""
    run = start_run(data, out, **ENDLESS)
    try:
        wait_for_step(run, out, at_step)
        run.send_signal(signum)
        said, err = run.communicate(timeout=120)
    finally:
        run.kill()
    return run.returncode, said, err


def test_ctrl_c_writes_a_checkpoint_and_the_run_resumes_exactly(data, tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    code, _, err = signalled_run(data, out, signal.SIGINT, 20)
    assert code == 130, err[-2000:]
    step = load_checkpoint(out / "ckpt.pt")["step"]
    assert step >= 20 and f"holds step {step}; continue the run" in err and "Traceback" not in err
    settings = {**ENDLESS, "train__max_iters": step + 10}
    train.main(argv(data, ref, **settings))
    train.main(argv(data, out, train__resume="true", **settings))
    got, want = losses(out), losses(ref)
    assert got == want  # bitwise, every step once


def test_sigterm_is_a_graceful_stop_too(data, tmp_path):
    code, said, err = signalled_run(data, tmp_path / "run", signal.SIGTERM, 10)
    assert code == 143 and "SIGTERM: stopping after this step" in said and "holds step" in err
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt")["step"] >= 10


def test_a_second_ctrl_c_stops_at_once(data, tmp_path):
    cfg = parse_args(argv(data, tmp_path / "run"), Config, "train.py")
    trainer = Trainer(cfg, Proc(), torch.device("cpu"))
    try:
        previous = signal.signal(signal.SIGINT, trainer._on_interrupt)
        trainer._on_interrupt(signal.SIGINT, None)  # the first: finish the step, save, stop
        assert trainer.interrupted and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, previous)
    finally:
        trainer.close()


# --------------------------------------------------------------------------- bad input


def test_block_size_larger_than_the_data(data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="block_size"):
        train.main(argv(data, out, model__block_size=8192, model__n_embd=32))
    assert not out.exists()


def test_missing_dataset(tmp_path):
    with pytest.raises(UserError, match="not found|does not exist|no such|missing"):
        train.main(argv({"data.source": str(tmp_path / "nope.txt"), "data.tokenizer": "bytes",
                         "data.dir": str(tmp_path / "ds")}, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arg, message", [
    ("--train.batch_size=abc", "train.batch_size must be a whole number"),
    ("--train.learning_rate=-1", "train.learning_rate: must be positive"),
    ("--train.dtype=float16", "float16 needs a CUDA GPU"),  # argv runs on the CPU, GPU or not
    ("--train.device=cuda", "no CUDA GPU"),
])
def test_bad_settings_in_process(data, tmp_path, arg, message):
    if "cuda" in arg and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match=message):
        train.main([*argv(data, tmp_path / "run"), arg])
    assert not (tmp_path / "run").exists()


def test_unknown_setting_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--train.max_iter=5",
                           f"--train.out_dir={tmp_path / 'run'}"], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "train.max_iter" in done.stderr and "did you mean train.max_iters" in done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- hardware and the compile rule


def test_hardware_choices():
    cpu = torch.device("cpu")
    assert hardware.pick_dtype("auto", cpu) == torch.float32
    assert hardware.pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert hardware.peak_flops(cpu, torch.float32) > 1e9  # a measured matmul, cached per process
    assert hardware.peak_flops(cpu, torch.float32) == hardware.peak_flops(cpu, torch.float32)
    if not torch.cuda.is_available():
        assert hardware.pick_device("auto").type in ("cpu", "mps")
    with pytest.raises(UserError, match="unknown device"):
        hardware.pick_device("tpu9")


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200 NVL", 835e12), ("NVIDIA H200", 989e12), ("NVIDIA GH200 480GB", 989e12),
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A10", 125e12), ("NVIDIA A10G", 70e12), ("NVIDIA RTX A1000", None), ("Tesla T4", 65e12),
    ("NVIDIA T400 4GB", None), ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("Tesla V100-SXM2-16GB", 125e12),
    ("NVIDIA H800", 989e12), ("NVIDIA H800 PCIe", 756e12), ("NVIDIA GB200", 2500e12), ("NVIDIA B200", 2250e12),
    ("NVIDIA H20", None),
])
def test_gpu_peaks_match_whole_model_names(name, peak):
    assert hardware.gpu_peak(name) == peak


def test_a_gpu_without_a_table_entry_is_probed_with_a_matmul_that_fills_it():
    assert hardware.probe_shape(torch.device("cuda", 0)) == (8192, 10)
    assert hardware.probe_shape(torch.device("cpu")) == (hardware.PROBE_N, 3)


def test_bf16_only_where_the_gpu_has_it(monkeypatch):
    """A T4 or V100: current torch counts emulated bf16 as supported; auto must pick fp16, and bf16 is refused."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    gpu = torch.device("cuda", 0)
    assert hardware.pick_dtype("auto", gpu) == torch.float16
    with pytest.raises(UserError, match="Tesla T4 has no native bfloat16"):
        hardware.pick_dtype("bfloat16", gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert hardware.pick_dtype("auto", gpu) == torch.bfloat16


def test_compile_auto_rule():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    nothing = speed.StepTimes()
    assert speed.compile_pays("auto", cuda, 2000, 0.01, nothing)[0]
    assert not speed.compile_pays("auto", cpu, 2000, 0.08, nothing)[0]  # 16 s saved < an assumed cold compile
    assert speed.compile_pays("auto", cpu, 2000, 0.5, nothing)[0]  # 100 s saved repays even a cold compile
    cached = speed.StepTimes(cold_compile=14.0)  # compiled once: the next compile is from the cache
    assert speed.compile_pays("auto", cpu, 2000, 0.08, cached)[0]
    warm = speed.StepTimes(cold_compile=14.0, warm_compile=3.0, compiled_step=0.020, eager_step=0.027)
    assert speed.compile_pays("auto", cpu, 2000, 0.027, warm)[0]  # 14 s saved against a 3 s compile
    assert not speed.compile_pays("auto", cpu, 200, 0.027, warm)[0]  # 1.4 s saved: not worth 3 s
    slower = speed.StepTimes(warm_compile=3.0, compiled_step=0.030, eager_step=0.027)
    assert not speed.compile_pays("auto", cpu, 10**6, 0.027, slower)[0]  # a compiled step that is not faster
    assert speed.compile_pays("true", cpu, 1, 1.0, nothing)[0]
    assert not speed.compile_pays("false", cuda, 10**6, 1.0, nothing)[0]


def test_the_record_of_measurements_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    record = speed.Record({"model": "tiny", "batch": 4})
    assert record.times() == speed.StepTimes()
    record.update(cold_compile=2.5)
    record.update(eager_step=0.03)
    assert speed.Record({"batch": 4, "model": "tiny"}).times() == speed.StepTimes(cold_compile=2.5, eager_step=0.03)
    assert speed.Record({"model": "other", "batch": 4}).times() == speed.StepTimes()


def test_bf16_is_chosen_only_where_it_is_faster_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    calls = []

    def forward_backward(dtype):  # a CPU whose bf16 passes take half the time
        calls.append(dtype)
        time.sleep(0.02 if dtype == torch.float32 else 0.01)

    dtype, why = speed.faster_precision(forward_backward, speed.Record({"shape": 1}))
    assert dtype == torch.bfloat16 and "bf16 autocast ran" in why and len(calls) == 8
    assert speed.faster_precision(forward_backward, speed.Record({"shape": 1}))[0] == torch.bfloat16
    assert len(calls) == 8  # measured once per shape
    speed.Record({"shape": 2}).update(bf16_speedup=1.02)  # within the margin: float32
    assert speed.faster_precision(forward_backward, speed.Record({"shape": 2}))[0] == torch.float32


# --------------------------------------------------------------------------- config files


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")), ids=lambda p: p.name)
def test_config_files_are_valid(path):
    cfg = parse_args([str(path)], Config, "train.py")
    assert cfg.model.n_embd % cfg.model.n_head == 0


def test_gpt2_config_is_nanogpts_recipe():
    cfg = parse_args([str(ROOT / "config" / "gpt2-124m.toml")], Config, "train.py")
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.pos_emb, m.tie_embeddings) == (12, 12, 768, 1024, "learned", True)
    assert t.batch_size * t.gradient_accumulation_steps * m.block_size == 491_520
    assert (t.dtype, t.compile, cfg.data.tokenizer) == ("bfloat16", "true", "gpt2")


def test_the_speedrun_recipe_is_gpt2_small_trained_the_modern_way():
    cfg = parse_args([str(ROOT / "config" / "gpt2-speedrun.toml")], Config, "train.py")
    m, t = cfg.model, cfg.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, cfg.data.tokenizer) == (12, 12, 768, 1024, "gpt2")
    assert (m.pos_emb, m.qk_norm, m.activation, m.tie_embeddings, m.zero_init_proj, m.logit_softcap > 0,
            m.vocab_multiple) == ("rope", True, "relu2", False, True, True, 64)
    tokens_per_step = t.batch_size * t.gradient_accumulation_steps * m.block_size
    assert tokens_per_step == 524_288 and 2.9e9 < tokens_per_step * t.max_iters < 3.1e9
    assert (t.optimizer, t.muon_split_qkv, t.schedule, t.dtype, t.compile) == ("muon", True, "wsd", "bfloat16", "true")
    assert (t.muon_lr, t.embedding_lr, t.head_lr, t.scalar_lr, t.weight_decay) == (0.02, 0.3, 0.008, 0.04, 0.0)


@pytest.mark.parametrize("name", ["gpt2-124m.toml", "gpt2-speedrun.toml"])
def test_the_gpu_recipes_train_a_few_steps_on_the_cpu(name, tmp_path, gpt2_rank_file):
    """Each GPU recipe as written (its optimizer, rates, schedule, accumulation, options, GPT-2's tokenizer and
    padded vocabulary) at a tiny width, on the CPU, eager, in float32: the recipe runs before a GPU is rented."""
    out = tmp_path / "run"
    data = {"data.source": str(write_corpus(tmp_path / "text.txt", 20_000, seed=2)),
            "data.tokenizer": str(gpt2_rank_file), "data.dir": str(tmp_path / "data")}
    shape = {"model.n_layer": 1, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32, "train.batch_size": 2,
             "train.max_iters": 3, "train.warmup_iters": 1, "train.eval_interval": 3, "train.eval_iters": 1,
             "train.checkpoint_interval": 3, "train.device": "cpu", "train.compile": "false", "train.dtype": "float32",
             "train.sample_at_end": "false", "train.out_dir": str(out)}
    assert train.main([str(ROOT / "config" / name), *(f"--{k}={v}" for k, v in {**data, **shape}.items())]) == 0
    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 3 and ckpt["model_config"]["vocab_size"] == 50257
    assert ckpt["model"]["lm_head.weight"].shape == (50304, 32)  # 50,257 tokens in 50,304 rows
    evals = [v for (step, kind), v in losses(out).items() if kind == "eval"]
    assert all(math.isfinite(v) for v in evals)
    rates = sorted(g["lr"] for g in ckpt["optimizer"]["param_groups"])
    if name == "gpt2-speedrun.toml":  # after 3 steps of a 3-step run: each group's peak x the same multiplier
        peaks = sorted(g["initial_lr"] for g in ckpt["optimizer"]["param_groups"])
        assert peaks == [0.008, 0.02, 0.04, 0.3]
        assert any(g.get("split_rows") for g in ckpt["optimizer"]["param_groups"])
    else:
        assert len(rates) == 2


def test_help_lists_every_training_setting(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for key in ("--train.max_seconds=480.0", "--train.optimizer=", "--model.n_layer=6", "--data.tokenizer="):
        assert key in text


def test_eager_samples_a_compiled_model_without_its_compiled_blocks():
    """The closing sample of a compiled run runs the blocks eagerly (no recompile per KV-cache shape)."""
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    prompt = torch.randint(0, 64, (1, 4))
    expected = model.generate(prompt, 20, temperature=0.0)
    speed.compile_blocks(model)

    def refuse(*args, **kwargs):
        raise AssertionError("a compiled block ran inside speed.eager")

    compiled = [block._compiled_call_impl for block in model.transformer.h]
    assert all(c is not None for c in compiled)
    for block in model.transformer.h:
        block._compiled_call_impl = refuse
    with speed.eager(model):
        assert torch.equal(model.generate(prompt, 20, temperature=0.0), expected)  # past block_size too
    assert all(block._compiled_call_impl is refuse for block in model.transformer.h)  # restored after


def test_cuda_compiles_the_whole_model_and_a_cpu_its_blocks():
    """The selection only: a CPU here, so the CUDA branch is taken for a faked device; nn.Module.compile is lazy,
    so nothing compiles.  That the whole-model compile runs and is faster on a GPU is for tools/gpu_check."""
    from model import GPT, GPTConfig
    config = GPTConfig.gpt2(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16)
    names = list(GPT(config).state_dict())
    whole, regional = GPT(config), GPT(config)
    assert speed.compile_model(whole, torch.device("cuda", 0)) == "model"
    assert whole._compiled_call_impl is not None and all(b._compiled_call_impl is None for b in whole.transformer.h)
    assert speed.compile_model(regional, torch.device("cpu")) == "blocks"
    assert regional._compiled_call_impl is None and all(b._compiled_call_impl for b in regional.transformer.h)
    assert list(whole.state_dict()) == list(regional.state_dict()) == names  # checkpoints keep their names

    def refuse(*args, **kwargs):
        raise AssertionError("the compiled model ran inside speed.eager")

    whole._compiled_call_impl = refuse
    x = torch.randint(0, 64, (1, 8))
    with speed.eager(whole):
        whole(x)
    assert whole._compiled_call_impl is refuse


@pytest.mark.parametrize("optimizer", ["muon", "adamw"])
def test_a_step_reads_the_device_once(data, monkeypatch, optimizer):
    """A step waits for the device once: its loss and gradient norm come back in one read, and whether the norm is
    finite is decided on the host from that read.  A CPU has nothing asynchronous to lose, so this counts the reads
    that on a GPU are each a wait: item, tolist and a tensor's truth or number value."""
    from model import GPTConfig
    ds = open_dataset(data["data.dir"])
    t = parse_args(argv(data, Path("unused"), train__optimizer=optimizer), Config, "train.py").train
    batches = Batches(ds.train, ds.val, 32, 4, 2, 0, torch.device("cpu"))
    step = TrainStep(GPTConfig.gpt2(vocab_size=ds.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=32), t,
                     torch.device("cpu"), batches)
    step(0, 1.0)  # the first step makes the optimizer's state
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _real=real, _name=name: reads.append(_name) or _real(self, *a))
    result = step(1, 1.0)
    monkeypatch.undo()
    assert reads == ["tolist"]
    assert math.isfinite(result.loss) and result.seconds > 0 and result.grad_norm > 0


def fake_gpus(monkeypatch, count: int, **env: str) -> list:
    """torch.cuda as a machine with ``count`` GPUs would answer, and torchrun's variables ``env``."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return chosen


def test_more_processes_than_gpus_are_refused_naming_the_counts(monkeypatch):
    from smallgpt.distributed import process_and_device
    torchrun = dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2")
    fake_gpus(monkeypatch, 1, **torchrun)
    with pytest.raises(UserError, match=r"^2 processes on this node but 1 GPU\(s\): two ranks would share a GPU.*"
                                        r"--nproc_per_node=1.*--train.device=cpu"):
        process_and_device("auto")
    chosen = fake_gpus(monkeypatch, 2, **torchrun)
    proc, device = process_and_device("cuda")
    assert (proc.rank, proc.world_size, device, chosen) == (1, 2, torch.device("cuda", 1), [torch.device("cuda", 1)])
    chosen = fake_gpus(monkeypatch, 1, **torchrun, CUDA_VISIBLE_DEVICES="5")  # a launcher gave each process its GPU
    assert process_and_device("cuda")[1] == torch.device("cuda", 0)
    fake_gpus(monkeypatch, 8, RANK="9", WORLD_SIZE="16", LOCAL_RANK="1", LOCAL_WORLD_SIZE="9")  # a node of 9 on 8 GPUs
    with pytest.raises(UserError, match="^9 processes on this node but 8 GPU"):
        process_and_device("cuda")
    assert process_and_device("cpu")[1] == torch.device("cpu")  # gloo on the CPU: any number of processes


def test_the_refusal_is_one_line_and_exit_2(tmp_path):
    script = tmp_path / "two_on_one.py"
    script.write_text("import sys, torch\nsys.path.insert(0, sys.argv[1])\n"
                      "torch.cuda.is_available = lambda: True\ntorch.cuda.device_count = lambda: 1\n"
                      "from smallgpt.cli import run_main\nfrom smallgpt.distributed import process_and_device\n"
                      "run_main(lambda argv: process_and_device('cuda') and 0)\n")
    env = {k: v for k, v in ENV.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True, text=True, timeout=120,
                          env={**env, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: 2 processes on this node but 1 GPU(s)")


def test_the_closing_sample_runs_in_the_runs_precision(data, tmp_path, monkeypatch):
    """A bf16 run samples at its end under the run's bf16 autocast, as it trained (on a GPU: not in fp32)."""
    from smallgpt import trainer
    seen = []

    def generate_texts(model, enc, ids, settings, device):
        seen.append((torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)))
        return ["a sample"]

    monkeypatch.setattr(trainer, "generate_texts", generate_texts)
    assert train.main(argv(data, tmp_path / "run", train__max_iters=2, train__dtype="bfloat16",
                           train__sample_at_end="true")) == 0
    assert seen == [(True, torch.bfloat16)]
