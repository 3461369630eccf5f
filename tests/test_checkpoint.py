"""checkpoint.py: atomic writes that survive a kill, pickle-free reads, clear errors on bad files."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from smallgpt.checkpoint import (FORMAT, RESUME, check_resumable, find_checkpoint, load_checkpoint,
                                 model_from_checkpoint, save_checkpoint, strip_wrapper_prefixes)
from smallgpt.errors import UserError
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(vocab_size=40, block_size=8, n_layer=1, n_head=2, n_embd=16)


def state(step: int, numel: int = 10) -> dict:
    """A checkpoint-shaped dict whose tensor says which step wrote it."""
    return {"format": FORMAT, "model": {"w": torch.full((numel,), float(step))}, "model_config": {},
            "tokenizer": {"kind": "bytes"}, "step": step, "rng": {"torch": torch.get_rng_state()},
            "config": {"train": {"out_dir": "out", "lr": 1e-3}}, "scaler": None}


def temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    s = state(7)
    save_checkpoint(path, s)
    back = load_checkpoint(path)
    assert back["step"] == 7 and back["scaler"] is None and back["config"] == s["config"]
    assert torch.equal(back["model"]["w"], s["model"]["w"])
    assert torch.equal(back["rng"]["torch"], s["rng"]["torch"])
    save_checkpoint(path, state(8))  # replacing an existing file
    assert load_checkpoint(path)["step"] == 8
    assert temp_files(tmp_path) == []


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state(1))

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(path, state(2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert temp_files(tmp_path) == []


def test_unwritable_destination_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot write checkpoint .*missing"):
        save_checkpoint(tmp_path / "missing" / "ckpt.pt", state(1))


CHILD = textwrap.dedent("""
    import io, sys, time, torch
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from smallgpt.checkpoint import save_checkpoint
    path, step, mode = Path(sys.argv[1]), 0, sys.argv[3]
    real_save = torch.save

    def save_half_then_hang(obj, f):  # a write in progress, frozen where the kill will find it
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        f.flush()
        print("midway", flush=True)
        time.sleep(60)

    while True:
        step += 1
        if mode == "midway" and step == 2:
            torch.save = save_half_then_hang
        save_checkpoint(path, {"format": 1, "model": {"w": torch.full((1_000_000,), float(step))},
                               "model_config": {}, "tokenizer": {}, "step": step})
        if step == 1:
            print("ready", flush=True)
""")


def kill_writer(path: Path, mode: str, delay: float = 0.0) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(ROOT), mode], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == b"ready"
        if mode == "midway":
            assert child.stdout.readline().strip() == b"midway"
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()


def test_sigkill_mid_write_keeps_the_old_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    kill_writer(path, "midway")  # killed with half of step 2 written
    assert load_checkpoint(path)["step"] == 1
    assert len(temp_files(tmp_path)) == 1  # SIGKILL leaves no chance to clean up ...
    save_checkpoint(path, state(99))  # ... so the next save removes what a killed writer left
    assert load_checkpoint(path)["step"] == 99
    assert temp_files(tmp_path) == []


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys, torch
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from smallgpt.checkpoint import save_checkpoint
    from smallgpt.cli import run_main
    path = Path(sys.argv[1])

    def main(argv):
        save_checkpoint(path, {"format": 1, "model": {"w": torch.zeros(10)}, "model_config": {}, "tokenizer": {},
                               "step": 1})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # as a full disk would
        save_checkpoint(path, {"format": 1, "model": {"w": torch.zeros(1_000_000)}, "model_config": {},
                               "tokenizer": {}, "step": 2})
    run_main(main)
""")


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: cannot write checkpoint")
    assert "File too large" in done.stderr and "previous checkpoint is intact" in done.stderr
    assert load_checkpoint(path)["step"] == 1
    assert temp_files(tmp_path) == []


def test_only_a_dead_writers_temporary_files_are_swept(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from smallgpt import safefiles as locks
        mine = tmp_path / f".ckpt.pt.{locks.HOST}.{live.pid}.tmp"  # a live writer's file in flight
        other = tmp_path / ".ckpt.pt.some-other-host.1.tmp"  # a process of another machine: unknowable
        dead = tmp_path / f".ckpt.pt.{locks.HOST}.{2**22 + 12345}.tmp"  # no such pid
        for p in (mine, other, dead):
            p.write_bytes(b"partial")
        save_checkpoint(path, state(3))
        assert mine.exists() and other.exists() and not dead.exists()
    finally:
        live.kill()
        live.wait()


def test_sigkill_at_an_arbitrary_moment_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    kill_writer(path, "loop", delay=0.2)  # rewriting a 4 MB checkpoint in a loop
    ckpt = load_checkpoint(path)
    assert ckpt["step"] >= 1 and torch.all(ckpt["model"]["w"] == ckpt["step"])  # one whole write, not a mix


@pytest.mark.parametrize("content, message", [
    (None, "truncated or corrupt"),  # the first half of a real checkpoint
    (b"", "truncated or corrupt"),
    (b"not a checkpoint at all\n" * 20, "truncated or corrupt"),
], ids=["half", "empty", "text"])
def test_corrupt_files_are_user_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ckpt.pt"
    if content is None:
        save_checkpoint(path, state(1, numel=1000))
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


class Payload:
    """Stands for any object a malicious checkpoint could smuggle in through pickle."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "model": {}, "model_config": {}, "tokenizer": {}, "x": Payload()}, path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_checkpoint(path)


@pytest.mark.parametrize("obj, message", [
    ([1, 2, 3], "not a smallgpt checkpoint"),
    ({"model": {}}, "not a smallgpt checkpoint"),
    ({"format": FORMAT + 1, "model": {}}, "format 2"),
    ({"format": FORMAT, "model": {}, "tokenizer": {}}, "lacks model_config"),
])
def test_wrong_layout_is_a_user_error(tmp_path: Path, obj, message: str) -> None:
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match=message):
        load_checkpoint(path)


def test_required_keys_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state(1))
    with pytest.raises(UserError, match="lacks optimizer"):
        load_checkpoint(path, require=("step", "optimizer"))
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_find_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match=f"no checkpoint in {run}; train one with python train.py --train.out_dir={run}"):
        find_checkpoint(run)
    with pytest.raises(UserError, match="does not exist"):
        find_checkpoint(tmp_path / "elsewhere")
    save_checkpoint(run / "ckpt.pt", state(1))
    assert find_checkpoint(str(run)) == run / "ckpt.pt"
    save_checkpoint(run / "best.pt", state(1))
    assert find_checkpoint(run) == run / "best.pt"  # the best-val model is the one to sample
    assert find_checkpoint(run / "ckpt.pt") == run / "ckpt.pt"  # a file is taken as given


def test_model_from_checkpoint_strips_compile_and_ddp_prefixes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GPTConfig.gpt2(**TINY)
    model = GPT(config).eval()
    wrapped = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    assert set(strip_wrapper_prefixes(wrapped)) == set(model.state_dict())
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"format": FORMAT, "model": wrapped, "model_config": dataclasses.asdict(config),
                           "tokenizer": {}})
    loaded = model_from_checkpoint(load_checkpoint(path))
    assert not loaded.training
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_model_from_checkpoint_rejects_mismatched_weights() -> None:
    config = GPTConfig.gpt2(**TINY)
    weights = GPT(config).state_dict()
    other = dict(TINY, n_embd=32)
    with pytest.raises(UserError, match="do not fit"):
        model_from_checkpoint({"model": weights, "model_config": other})
    with pytest.raises(UserError, match="model_config does not fit"):
        model_from_checkpoint({"model": weights, "model_config": dict(TINY, no_such_option=1)})


def test_resuming_a_run_from_before_the_padded_vocabulary_names_the_setting(tmp_path: Path) -> None:
    """A model_config without vocab_multiple is an unpadded model's: a resume that would pad it is refused,
    naming the setting that resumes it (--model.vocab_multiple=1)."""
    before = {k: v for k, v in dataclasses.asdict(GPTConfig.gpt2(**TINY, vocab_multiple=1)).items()
              if k != "vocab_multiple"}
    ckpt = {**{k: None for k in RESUME}, "model_config": before, "dataset": {"fingerprint": "f"}, "tokenizer": {},
            "config": {"train": {"optimizer": "adamw"}}}
    now = {"model": dataclasses.asdict(GPTConfig.gpt2(**TINY)), "train": {"optimizer": "adamw"}}
    with pytest.raises(UserError, match=r"model.vocab_multiple: checkpoint 1, now 64"):
        check_resumable(ckpt, tmp_path / "ckpt.pt", now, {"fingerprint": "f", "dir": "d"}, {})
    check_resumable(ckpt, tmp_path / "ckpt.pt", {**now, "model": {**now["model"], "vocab_multiple": 1}},
                    {"fingerprint": "f", "dir": "d"}, {})
