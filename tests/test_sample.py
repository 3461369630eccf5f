"""sample.py: seeded, streaming, UTF-8-safe sampling from a checkpoint, and one-line errors on bad input."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time
from contextlib import nullcontext
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch

from smallgpt import hardware
from smallgpt.checkpoint import FORMAT, save_checkpoint
from smallgpt.cli import run_main
from model import GPT, GPTConfig
from sample import main
from smallgpt.generation import SEPARATOR, stream_samples
from smallgpt.tokenizer import bytes_spec, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
BLOCK = 16
EOT = 256  # <|endoftext|> of the bytes tokenizer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding a tiny random GPT over the bytes tokenizer, as train.py would leave it."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    config = GPTConfig.gpt2(vocab_size=257, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    save_checkpoint(out / "ckpt.pt", {
        "format": FORMAT, "model": GPT(config).state_dict(), "model_config": dataclasses.asdict(config),
        "tokenizer": bytes_spec(), "step": 5, "best_val_loss": 5.5})
    return out


def test_a_checkpoint_from_before_the_padded_vocabulary_samples(capsys, tmp_path: Path) -> None:
    """A model_config without vocab_multiple was built unpadded (257 rows): it loads as such and samples."""
    torch.manual_seed(0)
    config = GPTConfig.gpt2(vocab_size=257, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, vocab_multiple=1)
    old = {k: v for k, v in dataclasses.asdict(config).items() if k != "vocab_multiple"}
    save_checkpoint(tmp_path / "ckpt.pt", {"format": FORMAT, "model": GPT(config).state_dict(), "model_config": old,
                                           "tokenizer": bytes_spec(), "step": 5, "best_val_loss": 5.5})
    out, _ = sample(capsys, tmp_path, "--sample.max_new_tokens=20", "--sample.prompt=ab", "--sample.temperature=0")
    assert out.startswith("ab") and len(out) > 2


def sample(capsys: pytest.CaptureFixture, run_dir: Path, *args: str) -> tuple[str, str]:
    """main() in this process: (stdout, stderr)."""
    assert main([f"--sample.checkpoint={run_dir}", "--sample.device=cpu", *args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def scripted(monkeypatch: pytest.MonkeyPatch, columns: list[list[int]], endless: bool = False) -> dict:
    """Make GPT.generate_stream yield the given token columns (then padding tokens if ``endless``)."""
    seen: dict = {"yielded": 0}

    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> Iterator[torch.Tensor]:
        seen["idx"], seen["kwargs"] = idx.tolist(), kwargs
        for col in columns:
            seen["yielded"] += 1
            yield torch.tensor(col)
        while endless:
            seen["yielded"] += 1
            yield torch.full((idx.shape[0],), ord("x"))

    monkeypatch.setattr(GPT, "generate_stream", generate_stream)
    return seen


def tokens(text: str) -> list[int]:
    return list(text.encode("utf-8"))  # the bytes tokenizer: one token per byte


# --------------------------------------------------------------------------- the model's own output


def test_same_seed_same_text(capsys, run_dir: Path) -> None:
    args = ("--sample.max_new_tokens=24", "--sample.temperature=1.0", "--sample.top_k=0", "--sample.prompt=ab")
    first, err = sample(capsys, run_dir, *args, "--sample.seed=7")
    again, _ = sample(capsys, run_dir, *args, "--sample.seed=7")
    other, _ = sample(capsys, run_dir, *args, "--sample.seed=8")
    assert first == again and first != other
    assert first.startswith("ab")
    assert f"sampling from {run_dir / 'ckpt.pt'} (step 5, best val loss 5.5000)" in err


def test_greedy_ignores_the_seed(capsys, run_dir: Path) -> None:
    args = ("--sample.max_new_tokens=16", "--sample.temperature=0", "--sample.prompt=hello")
    a, _ = sample(capsys, run_dir, *args, "--sample.seed=1")
    b, _ = sample(capsys, run_dir, *args, "--sample.seed=2")
    assert a == b and len(a) > len("hello\n")


def test_same_text_across_processes(capsys, run_dir: Path) -> None:
    """The command line, run as a user runs it, prints what main() prints: the seed fixes the text."""
    args = [f"--sample.checkpoint={run_dir}", "--sample.device=cpu", "--sample.max_new_tokens=16", "--sample.seed=3",
            "--sample.num_samples=2", "--sample.temperature=1.0"]
    result = subprocess.run([sys.executable, "sample.py", *args], cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert main(args) == 0
    assert result.stdout.decode("utf-8") == capsys.readouterr().out


def test_long_prompt_keeps_its_tail(capsys, run_dir: Path) -> None:
    prompt = "0123456789" + "abcdefghijklmnop"  # 26 bytes, the context is 16
    out, err = sample(capsys, run_dir, f"--sample.prompt={prompt}", "--sample.max_new_tokens=8")
    assert "warning: the prompt is longer than the model's context of 16 tokens" in err
    assert out.startswith("abcdefghijklmnop") and "0123456789" not in out


# --------------------------------------------------------------------------- prompt handling


@pytest.mark.parametrize("prompt, expected", [
    ("", [EOT]),  # an empty prompt starts a fresh document
    ("a<|endoftext|>b", [97, EOT, 98]),  # the document separator, as in training
    ("a\\nb", tokens("a\\nb")),  # taken literally: no escapes on the command line
])
def test_prompt_tokens(capsys, run_dir: Path, monkeypatch, prompt: str, expected: list[int]) -> None:
    seen = scripted(monkeypatch, [])
    out, _ = sample(capsys, run_dir, f"--sample.prompt={prompt}", "--sample.num_samples=2")
    assert seen["idx"] == [expected, expected]  # one batch of num_samples rows
    assert "<|endoftext|>" not in out or prompt == "a<|endoftext|>b"


def test_prompt_from_file(capsys, run_dir: Path, monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("Dear Sir,\nhé", encoding="utf-8")
    seen = scripted(monkeypatch, [[ord("!")]])
    out, _ = sample(capsys, run_dir, f"--sample.prompt=FILE:{tmp_path / 'p.txt'}")
    assert seen["idx"] == [tokens("Dear Sir,\nhé")]
    assert out == "Dear Sir,\nhé!\n"


def test_sampling_settings_reach_the_model(capsys, run_dir: Path, monkeypatch) -> None:
    seen = scripted(monkeypatch, [])
    sample(capsys, run_dir, "--sample.temperature=0.5", "--sample.top_k=0", "--sample.top_p=0.9")
    assert seen["kwargs"]["temperature"] == 0.5 and seen["kwargs"]["top_k"] is None
    assert seen["kwargs"]["top_p"] == 0.9 and isinstance(seen["kwargs"]["generator"], torch.Generator)
    sample(capsys, run_dir, "--sample.top_k=5", "--sample.top_p=1")
    assert seen["kwargs"]["top_k"] == 5 and seen["kwargs"]["top_p"] is None
    sample(capsys, run_dir, "--sample.long_context=sinks", "--sample.sink_tokens=2")
    assert seen["kwargs"]["long_context"] == "sinks" and seen["kwargs"]["sink_tokens"] == 2


def test_speed_is_reported_on_stderr(capsys, run_dir: Path) -> None:
    out, err = sample(capsys, run_dir, "--sample.max_new_tokens=20", "--sample.num_samples=2",
                      "--sample.prompt=ab", "--sample.long_context=rolling")
    last = err.strip().splitlines()[-1]
    assert last.startswith("20 new tokens x 2 samples in ") and " tokens/s" in last and "tokens/s" not in out
    # the run's model has learned positions: past the context it recomputes, whatever the setting
    assert last.endswith("past the context of 16: the window recomputed every token (learned positions)")


def test_rolling_cache_from_the_command_line(capsys, tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = GPTConfig.gpt2(vocab_size=257, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, pos_emb="rope")
    save_checkpoint(tmp_path / "ckpt.pt", {"format": FORMAT, "model": GPT(config).state_dict(),
                                           "model_config": dataclasses.asdict(config), "tokenizer": bytes_spec()})
    args = ("--sample.max_new_tokens=40", "--sample.temperature=0", "--sample.prompt=ab")
    rolling, err = sample(capsys, tmp_path, *args, "--sample.long_context=sinks", "--sample.sink_tokens=3")
    assert err.strip().endswith("past the context of 16: a rolling KV cache keeping 3 sink tokens")
    exact, _ = sample(capsys, tmp_path, *args, "--sample.long_context=recompute")
    assert rolling[:BLOCK] == exact[:BLOCK]  # inside the context: the same tokens (one byte each)


def test_sampling_precision_is_the_runs_unless_set(tmp_path, monkeypatch, capsys) -> None:
    """A run trained in bfloat16 samples in bfloat16 by default; one trained in float16 on a GPU samples in
    float32 on a CPU; --sample.dtype overrides."""
    seen = []
    monkeypatch.setattr(hardware, "autocast", lambda device, dtype: seen.append(dtype) or nullcontext())
    torch.manual_seed(0)
    config = GPTConfig.gpt2(vocab_size=257, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
    for trained in ("bfloat16", "float16"):
        (tmp_path / trained).mkdir()
        save_checkpoint(tmp_path / trained / "ckpt.pt", {
            "format": FORMAT, "model": GPT(config).state_dict(), "model_config": dataclasses.asdict(config),
            "tokenizer": bytes_spec(), "config": {"train": {"dtype": trained}}})
    for trained, args, want in (("bfloat16", [], torch.bfloat16), ("float16", [], torch.float32),
                                ("bfloat16", ["--sample.dtype=float32"], torch.float32)):
        sample(capsys, tmp_path / trained, "--sample.max_new_tokens=2", *args)
        assert seen[-1] == want, (trained, args)


# --------------------------------------------------------------------------- streaming and stopping


class Recorder:
    """A stdout that remembers every write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_streaming_never_splits_a_character() -> None:
    enc = load_tokenizer(bytes_spec(), Path("."))
    text = "aé😀z€"  # 1-, 2-, 4- and 3-byte characters, one byte per token
    out = Recorder()
    texts = stream_samples((torch.tensor([t]) for t in tokens(text)), enc, 1, out)
    assert out.writes == ["a", "é", "😀", "z", "€"]  # each character once all its bytes arrived
    assert texts == [text] == [enc.decode(tokens(text))]


def test_each_sample_has_its_own_decoder_and_stops_at_endoftext() -> None:
    enc = load_tokenizer(bytes_spec(), Path("."))
    first, second = tokens("😀ok") + [EOT] + tokens("never"), tokens("é") + [EOT]
    pulled = 0

    def columns() -> Iterator[torch.Tensor]:
        nonlocal pulled
        for i in range(100):
            pulled += 1
            yield torch.tensor([first[i] if i < len(first) else 0, second[i] if i < len(second) else 0])

    out = Recorder()
    assert stream_samples(columns(), enc, 2, out) == ["😀ok", "é"]
    assert "".join(out.writes) == "😀ok"  # only sample 1 streams
    assert pulled == len(tokens("😀ok")) + 1  # the batch stops once every sample has ended


def test_cut_off_character_becomes_a_replacement() -> None:
    enc = load_tokenizer(bytes_spec(), Path("."))
    assert stream_samples((torch.tensor([t]) for t in tokens("a😀")[:3]), enc, 1) == ["a\ufffd"]


def test_output_layout_of_several_samples(capsys, run_dir: Path, monkeypatch) -> None:
    rows = [tokens("hi") + [EOT], tokens("yo!") + [EOT]]
    seen = scripted(monkeypatch, [[rows[0][i] if i < 3 else ord("x"), rows[1][i]] for i in range(4)], endless=True)
    out, _ = sample(capsys, run_dir, "--sample.prompt=P:", "--sample.num_samples=2")
    assert out == f"P:hi\n{SEPARATOR}\nP:yo!\n{SEPARATOR}\n"
    assert seen["yielded"] == 4  # stopped when both had ended, not after max_new_tokens


def test_single_sample_stops_at_endoftext(capsys, run_dir: Path, monkeypatch) -> None:
    scripted(monkeypatch, [[t] for t in tokens("The end.") + [EOT]], endless=True)
    out, _ = sample(capsys, run_dir, "--sample.prompt=")
    assert out == "The end.\n"


# --------------------------------------------------------------------------- bad input


def fails(monkeypatch, capsys, *args: str) -> str:
    """Run the command line in this process; it must exit 2 with one line on stderr. Returns that line."""
    monkeypatch.setattr(sys, "argv", ["sample.py", "--sample.device=cpu", *args])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_bad_settings(monkeypatch, capsys, run_dir: Path) -> None:
    ck = f"--sample.checkpoint={run_dir}"
    assert "--sample.temperature: must be 0 (greedy) or more, got -1.0" in fails(monkeypatch, capsys, ck,
                                                                                  "--sample.temperature=-1")
    assert "--sample.top_p: must be in (0, 1], got 1.5" in fails(monkeypatch, capsys, ck, "--sample.top_p=1.5")
    assert "--sample.top_p" in fails(monkeypatch, capsys, ck, "--sample.top_p=0")
    assert "--sample.top_k" in fails(monkeypatch, capsys, ck, "--sample.top_k=-3")
    assert "sample.temperature must be a number" in fails(monkeypatch, capsys, ck, "--sample.temperature=hot")
    assert "--sample.num_samples" in fails(monkeypatch, capsys, ck, "--sample.num_samples=0")
    assert "--sample.long_context: must be one of 'recompute', 'rolling', 'sinks'" in fails(
        monkeypatch, capsys, ck, "--sample.long_context=sliding")
    assert "prompt file" in fails(monkeypatch, capsys, ck, "--sample.prompt=FILE:/no/such/prompt.txt")
    if not torch.cuda.is_available():
        assert "--sample.device" in fails(monkeypatch, capsys, ck, "--sample.device=cuda")


def test_missing_and_corrupt_checkpoints(monkeypatch, capsys, tmp_path: Path, run_dir: Path) -> None:
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert f"no checkpoint in {empty}; train one with python train.py --train.out_dir={empty}" in fails(
        monkeypatch, capsys, f"--sample.checkpoint={empty}")
    assert "does not exist" in fails(monkeypatch, capsys, f"--train.out_dir={tmp_path / 'never_trained'}")
    bad = tmp_path / "bad.pt"
    bad.write_bytes((run_dir / "ckpt.pt").read_bytes()[:3000])  # truncated
    assert "truncated or corrupt" in fails(monkeypatch, capsys, f"--sample.checkpoint={bad}")


def test_too_many_sinks_for_the_model(monkeypatch, capsys, run_dir: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--sample.checkpoint={run_dir}", "--sample.device=cpu",
                                      "--sample.long_context=sinks", "--sample.sink_tokens=16"])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    captured = capsys.readouterr()
    assert e.value.code == 2 and captured.out == ""  # refused before the prompt is echoed
    assert captured.err.splitlines()[-1] == "error: --sample.sink_tokens: must be below the model's block_size (16), got 16"


def test_missing_tokenizer_file(monkeypatch, capsys, tmp_path: Path) -> None:
    config = GPTConfig.gpt2(vocab_size=300, block_size=8, n_layer=1, n_head=1, n_embd=8)
    spec = {"kind": "bpe", "name": "bpe300", "file": "tokenizer.tiktoken", "vocab_size": 300, "eot_id": 299,
            "pat_str": bytes_spec()["pat_str"]}
    save_checkpoint(tmp_path / "best.pt", {"format": FORMAT, "model": GPT(config).state_dict(),
                                           "model_config": dataclasses.asdict(config), "tokenizer": spec})
    monkeypatch.setattr(sys, "argv", ["sample.py", f"--sample.checkpoint={tmp_path}"])
    with pytest.raises(SystemExit) as e:
        run_main(main)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.splitlines()[-1] == (
        f"error: the tokenizer file tokenizer.tiktoken is missing beside {tmp_path / 'best.pt'}; "
        "copy it there from the run or dataset directory the checkpoint came from")


def test_command_line_error_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "sample.py", f"--sample.checkpoint={tmp_path}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: no checkpoint in {tmp_path}; train one with python train.py --train.out_dir={tmp_path}\n"


# --------------------------------------------------------------------------- the prompt loop


def interactive(run_dir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "sample.py"), f"--sample.checkpoint={run_dir}", "--sample.device=cpu",
           "--sample.interactive=true", "--sample.temperature=0", *args]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})


def test_the_prompt_loop_loads_the_model_once_and_answers_each_line(capsys, run_dir: Path) -> None:
    """Driven through a pipe: each line is continued as sample.py would continue it as a prompt, with the
    seed of its turn; an empty line ends the loop, and so does the end of the input."""
    want = [sample(capsys, run_dir, "--sample.temperature=0", "--sample.max_new_tokens=12", f"--sample.prompt={p}",
                   f"--sample.seed={1337 + i}")[0] for i, p in enumerate(("ab", "cd"))]
    for ending in ("\n", ""):  # an empty line; the end of the input
        p = interactive(run_dir, "--sample.max_new_tokens=12")
        out, err = p.communicate(("ab\ncd\n" + ending + "never read\n" * (ending == "\n")).encode(), timeout=120)
        assert p.returncode == 0, err.decode()
        assert out.decode() == "".join(want)
        assert err.count(b"sampling from") == 1 and err.count(b"new tokens in") == 2


def test_ctrl_c_stops_the_sample_not_the_loop(run_dir: Path) -> None:
    """Samples that would not end by themselves, each stopped by Ctrl-C; the loop goes on to the next prompt."""
    p = interactive(run_dir, "--sample.max_new_tokens=1000000")
    out, err = bytearray(), bytearray()
    for stream, into in ((p.stdout, out), (p.stderr, err)):
        threading.Thread(target=lambda s=stream, b=into: [b.extend(c) for c in iter(lambda: s.read1(4096), b"")],
                         daemon=True).start()

    def wait_until(ready) -> None:
        deadline = time.monotonic() + 120
        while not ready():
            assert p.poll() is None and time.monotonic() < deadline, (p.poll(), bytes(err))
            time.sleep(0.01)

    try:
        for i, prompt in enumerate((b"ab\n", b"cd\n")):
            written = len(out)
            p.stdin.write(prompt)
            p.stdin.flush()
            wait_until(lambda: len(out) > written + 8)  # the sample is streaming
            p.send_signal(signal.SIGINT)
            wait_until(lambda: err.count(b"(stopped)") == i + 1)
        p.stdin.write(b"\n")  # an empty line ends the loop
        p.stdin.close()
        assert p.wait(timeout=120) == 0, bytes(err)
    finally:
        p.kill()
    assert err.count(b"sampling from") == 1 and b"Traceback" not in err
