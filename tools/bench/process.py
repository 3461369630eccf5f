"""Bench part process: whole training processes as a user runs them, beside nanoGPT's own train.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from smallgpt import curves
from smallgpt.config import DataConfig
from smallgpt.pipeline import prepare
from smallgpt.errors import UserError
from tools.bench.common import ROOT, BenchSettings, table
from tools.bench.prepare import stdlib_text

NANOGPT_RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
                  "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
                  "--n_embd=128", "--dropout=0.0"]  # its README's CPU recipe, less the steps (bench.process_steps)
DEFAULT_OPTIONS = ["--model.pos_emb=rope", "--model.activation=relu2"]  # this project's defaults (config.py)


def timed_process(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Wall seconds of a whole process, start-up included, and its output; a failure is an error."""
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise UserError(f"{' '.join(cmd[:3])} ... failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds, done.stdout + done.stderr


def nanogpt_val_loss(output: str) -> float | None:
    """The last 'step N: train loss X, val loss Y' nanoGPT's train.py printed."""
    found = re.findall(r"step \d+: train loss [\d.]+, val loss ([\d.]+)", output)
    return float(found[-1]) if found else None


def our_val_loss(run_dir: Path) -> float | None:
    evals = [r for r in curves.read_records(run_dir / curves.METRICS) if "val_loss" in r]
    return evals[-1]["val_loss"] if evals else None


def part_process(cfg: BenchSettings, device: torch.device, say: Callable[[str], None]) -> dict:
    """nanoGPT's CPU recipe as whole processes, start-up, evaluation, checkpoints and compile counted:
    nanoGPT's own train.py (a checkout given by bench.nanogpt) beside ``python train.py
    config/nanogpt-cpu.toml``, the same steps, evaluations (every 250 steps, 20 batches of each split)
    and a checkpoint whenever val improves; ours with GPT-2's options and with this project's defaults,
    and compiled from a cold and from a warm cache.  Data preparation is done once, before the clock."""
    b, steps = cfg.bench, cfg.bench.process_steps
    res: dict[str, Any] = {"steps": steps, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        text = d / "input.txt"
        if b.process_text:
            shutil.copyfile(Path(b.process_text).expanduser(), text)
        else:
            text.write_text(stdlib_text(1_100_000), encoding="utf-8")
        ours = [sys.executable, str(ROOT / "train.py"), str(ROOT / "config" / "nanogpt-cpu.toml"),
                f"--data.source={text}", f"--data.dir={d / 'data'}", f"--train.max_iters={steps}",
                f"--train.lr_decay_iters={steps}", "--train.sample_at_end=false"]
        prepare(DataConfig(source=str(text), tokenizer="bytes", dir=str(d / "data")), progress=False)
        runs: dict[str, tuple[list[str], dict]] = {}
        if b.nanogpt:
            src = Path(b.nanogpt).expanduser()
            if not (src / "train.py").is_file():
                raise UserError(f"--bench.nanogpt={b.nanogpt} has no train.py; give a checkout of karpathy/nanoGPT")
            shutil.copytree(src, d / "nanogpt", ignore=shutil.ignore_patterns(".git", "out*"))
            shutil.copyfile(text, d / "nanogpt" / "data" / "shakespeare_char" / "input.txt")
            timed_process([sys.executable, "prepare.py"], d / "nanogpt" / "data" / "shakespeare_char")
            runs["nanoGPT's train.py"] = ([sys.executable, "train.py", *NANOGPT_RECIPE, f"--max_iters={steps}",
                                          f"--lr_decay_iters={steps}", f"--out_dir={d / 'out-nanogpt'}"], {})
        runs["train.py, GPT-2's options"] = (ours + [f"--train.out_dir={d / 'gpt2'}"], {})
        runs["train.py, default options"] = (ours + DEFAULT_OPTIONS + [f"--train.out_dir={d / 'default'}"], {})
        cache = {"TORCHINDUCTOR_CACHE_DIR": str(d / "inductor")}  # a cache of its own: cold, then warm
        for warmth in ("cold", "warm"):
            runs[f"train.py, default options, compiled ({warmth} cache)"] = (
                ours + DEFAULT_OPTIONS + ["--train.compile=true", f"--train.out_dir={d / ('compiled-' + warmth)}"],
                cache)
        bar = tqdm(total=len(runs), desc="process", unit="run", file=sys.stderr, leave=False)
        for name, (cmd, env) in runs.items():
            say(f"process: {name}, {steps} steps ...")
            seconds, output = timed_process(cmd, d / "nanogpt" if name.startswith("nanoGPT") else ROOT, env)
            out_dir = Path(next(a.split("=", 1)[1] for a in cmd if a.startswith(("--train.out_dir=", "--out_dir="))))
            loss = nanogpt_val_loss(output) if name.startswith("nanoGPT") else our_val_loss(out_dir)
            compile_s = next((r["compile_seconds"] for r in curves.read_records(out_dir / curves.METRICS)
                              if "compile_seconds" in r), None) if not name.startswith("nanoGPT") else None
            res["runs"][name] = {"seconds": seconds, "val_loss": loss, "compile_seconds": compile_s}
            bar.update(1)
        bar.close()
    base = res["runs"].get("nanoGPT's train.py")
    rows = [[name, f"{r['seconds']:.1f}", f"{base['seconds'] / r['seconds']:.2f}x" if base else "-",
             "-" if r["compile_seconds"] is None else f"{r['compile_seconds']:.1f}",
             "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"] for name, r in res["runs"].items()]
    say(table(f"process: nanoGPT's CPU recipe, {steps} steps, whole processes ({device})",
              ["run", "wall s", "vs nanoGPT", "compile s", f"val loss at {steps}"], rows,
              ["wall s: the whole process, start-up, evaluations (every 250 steps, 20 batches per split), "
               "checkpoints and compile included; data prepared once before",
               "val loss: nats per character (nanoGPT) or per byte (train.py, bytes): the same on ASCII text"]
              + ([] if base else ["nanoGPT's own train.py: give a checkout with --bench.nanogpt=PATH"])))
    return res


# --------------------------------------------------------------------------- main
