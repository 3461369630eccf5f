"""One prepared check of the GPU path: ``python -m tools.gpu_check [CONFIG.toml] [--gpu_check.KEY=VALUE ...]``.

Everything this project measured, it measured on CPUs.  This tool is what to run the first time a GPU is at
hand, once, on one H100 or H200, with no network, within 8 minutes (``gpu_check.budget``: the whole check stops
there, however its stages fare; it has not been timed on a GPU yet): it writes its figures to
``gpu_check.out`` (``summary.json``, ``summary.md``, and each stage's log), so that whoever runs it copies one
directory back.  Its stages, in order, each in a subprocess of its own with its own time cap (``CAPS``; and no
more than what is left of ``gpu_check.budget``); a stage that fails or runs out of time is recorded with the
end of its log, and the next one runs anyway:

* **env**: torch, CUDA, the card and its peak from hardware.py's table beside a measured 8192^3 bf16 matmul;
* **pytest**: the tests that need a GPU (``python -m pytest -q -m cuda``, tests/test_cuda.py);
* **prepare**: the corpus (the standard library's sources, or ``gpu_check.source``) with GPT-2's tokenizer when
  ``gpu_check.rank_file`` gives its rank file (else bytes), as ``prepare.py`` makes it;
* **speed**: GPT-2 small (124M) at nanoGPT bench.py's shape (12 x 1,024 tokens, no biases) in bf16, compiled,
  with the padded head (50,304 rows) and the unpadded one (50,257): ms, tokens/s and MFU of train.py's own step
  (tools/bench/train.py's ``training_figures``; one variant after the other, each saved once measured, so that
  a first compile slower than the cap leaves what was measured before it);
* **speed_eager**: the same shape eagerly in bf16, in fp32 (TF32 matmuls) and in fp16 with a GradScaler;
* **nanogpt**: nanoGPT's own ``bench.py`` (a checkout given as ``gpu_check.nanogpt``) at the same shape, then
  ours, in this one stage: the ratio of their times;
* **resume**: ``torchrun`` with one process training a small shape of config/gpt2-speedrun.toml in deterministic
  mode (train.deterministic), killed with SIGKILL after its first checkpoint and resumed: whether its loss curve
  is bit for bit the uninterrupted run's;
* **sample**: sampling tokens/s of the speedrun's model (untrained), each way of tools/bench/sample.py;
* **hellaswag**: ``python eval.py --eval.task=hellaswag`` on a few items (``gpu_check.hellaswag``, or made-up ones
  in its format, which show that it runs and nothing else) with the resume stage's model; where eval.py has no
  such task yet, "skipped: eval.task unavailable".

``--gpu_check.tiny=true`` shrinks every shape and step count so that the whole check runs in about a minute,
on a CPU too (``--gpu_check.device=cpu``; compiling is then off): that is how tests/test_gpu_check.py runs it, so
that the script is known to run before anyone spends GPU time on it.  The figures it writes are measurements of
the machine it ran on and nothing else.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from model import GPTConfig
from smallgpt import hardware
from smallgpt.checkpoint import LAST, load_checkpoint
from smallgpt.cli import Settings, comma_list, need, parse_args, run_main
from smallgpt.config import Config, DataConfig, TrainConfig
from smallgpt.curves import METRICS, read_records
from smallgpt.safefiles import atomic_write
from tools.bench.common import ROOT, BenchConfig, BenchSettings
from tools.bench.sample import part_sample
from tools.bench.train import GPT2_TRAIN, training_figures

SUMMARY = ("The GPU path checked in stages (tests, speed and MFU compiled and not, fp32/fp16, nanoGPT's bench.py, "
           "a killed and resumed torchrun, sampling, HellaSwag), each in its own subprocess with its own time cap; "
           "writes summary.json and summary.md to gpu_check.out.")
STAGES = ("env", "pytest", "prepare", "speed", "speed_eager", "nanogpt", "resume", "sample", "hellaswag")
# seconds each stage may take (full, tiny): estimates for one H100 (nanoGPT says GPT-2 small compiles in about a
# minute), not yet timed on one; gpu_check.budget bounds their sum. Tiny caps are for a loaded 2-core CPU
CAPS = {"env": (20, 60), "pytest": (120, 120), "prepare": (30, 60), "speed": (140, 90), "speed_eager": (45, 90),
        "nanogpt": (90, 60), "resume": (60, 120), "sample": (30, 60), "hellaswag": (20, 60)}
SPEEDRUN = ROOT / "config" / "gpt2-speedrun.toml"
DEADLINE_ENV = "GPU_CHECK_DEADLINE"  # when the parent kills a stage (epoch seconds): the stage's own subprocesses end sooner
NANOGPT_TIME = re.compile(r"time per iteration: ([\d.]+)ms(?:, MFU: ([\d.]+)%)?")


@dataclass
class GpuCheckConfig:
    out: str = "gpu-check"  # directory of summary.json, summary.md, each stage's log and its scratch files
    device: str = "auto"  # 'auto' (cuda where there is one, else cpu), 'cuda', 'cuda:N' or 'cpu'
    tiny: bool = False  # tiny shapes and a few steps: the whole check in about a minute, on a CPU too (its tests run it so)
    stages: str = ",".join(STAGES)  # the stages to run (comma-separated), always in the order of the module's list
    budget: float = 470.0  # seconds for the whole check; each stage gets its own cap or what is left, the smaller
    rank_file: str = ""  # GPT-2's rank file (r50k_base.tiktoken): the corpus is tokenized as GPT-2's with no network; empty: bytes
    source: str = ""  # the corpus (data.source); empty: the standard library's sources (tiny: the email package's)
    nanogpt: str = ""  # a checkout of karpathy/nanoGPT, whose bench.py the nanogpt stage runs; empty: that stage is skipped
    hellaswag: str = ""  # HellaSwag's validation items (JSON Lines); empty: a few made-up items in its format
    hellaswag_items: int = 40  # items of gpu_check.hellaswag scored
    stage: str = ""  # internal: run this one stage here and write its result (the check's own subprocesses)

    def check(self) -> None:
        names = comma_list(self.stages)
        need(bool(names) and all(n in STAGES for n in names), "gpu_check.stages",
             f"must be a comma-separated list of {', '.join(STAGES)}; got {self.stages!r}")
        need(self.stage in ("", *STAGES), "gpu_check.stage", f"must be one of {', '.join(STAGES)}")
        need(self.budget > 0, "gpu_check.budget", "must be positive")
        need(self.hellaswag_items >= 1, "gpu_check.hellaswag_items", "must be at least 1")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "gpu_check.device",
             f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")


@dataclass
class GpuCheckSettings(Settings):
    gpu_check: GpuCheckConfig = field(default_factory=GpuCheckConfig)


# --------------------------------------------------------------------------- a stage's surroundings


@dataclass
class Ctx:
    """What a stage runs with: the settings, the device, the directories, and when it will be stopped."""
    cfg: GpuCheckConfig
    device: torch.device
    out: Path
    deadline: float

    @property
    def tiny(self) -> bool:
        return self.cfg.tiny

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def work(self) -> Path:
        return self.out / "work"

    def left(self, margin: float = 3.0) -> float:
        """Seconds this stage has left, less ``margin`` for writing its result."""
        return max(1.0, self.deadline - time.time() - margin)

    def data(self) -> dict[str, str]:
        """The [data] settings of the corpus every stage that trains shares (prepared by the prepare stage)."""
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        source = self.cfg.source or (str(stdlib / "email" / "*.py") if self.tiny else "python-stdlib")
        return {"data.source": source, "data.tokenizer": self.cfg.rank_file or "bytes",
                "data.dir": str(self.work / "data")}

    def save(self, result: dict) -> None:
        """This stage's result, as far as it got: what the check reads, even if it stops the stage after this."""
        atomic_write(self.out / "stages" / f"{self.cfg.stage}.json", json.dumps(result, indent=1, default=str) + "\n")

    def run(self, cmd: list[str], cwd: Path = ROOT, share: float = 1.0) -> subprocess.CompletedProcess:
        """``cmd`` with its output in this stage's log (and returned), stopped at ``share`` of the time left."""
        print("$", " ".join(cmd), flush=True)
        try:
            done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=share * self.left())
        except subprocess.TimeoutExpired as e:
            print(_text(e.stdout), _text(e.stderr), sep="\n", flush=True)
            raise OutOfTime(f"{Path(cmd[1]).name if len(cmd) > 1 else cmd[0]} ran out of time") from None
        print(done.stdout, done.stderr, sep="\n", flush=True)
        return done


class OutOfTime(RuntimeError):
    """A stage's subprocess was stopped at its share of the stage's time: the stage is recorded as a timeout."""


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return hardware.pick_device(name, key="gpu_check.device")


def line(text: str) -> str:
    """The last non-empty line of ``text``."""
    return next((s.strip() for s in reversed(text.splitlines()) if s.strip()), "")


# --------------------------------------------------------------------------- the stages


def stage_env(ctx: Ctx) -> dict:
    dev = ctx.device
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                            "device": str(dev), "name": hardware.device_name(dev), "cores": os.cpu_count(),
                            "gpus": torch.cuda.device_count() if ctx.cuda else 0}
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip()
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    n, repeats = hardware.probe_shape(dev)
    probe = hardware.MatmulProbe(dev, dtype, n)
    for _ in range(repeats + 1):
        probe()
    probe.times.pop(0)
    info["probe"] = {"n": n, "dtype": str(dtype).removeprefix("torch."), "flops": probe.peak_flops}
    info["table_peak"] = hardware.gpu_peak(info["name"]) if ctx.cuda else None
    table = f"table's dense bf16 peak {info['table_peak'] / 1e12:,.0f} TFLOP/s, " if info["table_peak"] else ""
    return {"status": "ok", **info,
            "summary": f"{info['name']} ({info['gpus']} GPU(s)), torch {info['torch']}, CUDA {info['cuda']}; {table}"
                       f"the fastest {n}^3 {info['probe']['dtype']} matmul {probe.peak_flops / 1e12:,.1f} TFLOP/s"}


def stage_pytest(ctx: Ctx) -> dict:
    done = ctx.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"])
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line(done.stdout))}
    return {"status": "ok" if done.returncode == 0 else "failed", "returncode": done.returncode, "counts": counts,
            "summary": line(done.stdout)}


def stage_prepare(ctx: Ctx) -> dict:
    done = ctx.run([sys.executable, "prepare.py", str(SPEEDRUN), *(f"--{k}={v}" for k, v in ctx.data().items())])
    if done.returncode != 0:
        return {"status": "failed", "summary": line(done.stderr)}
    meta = json.loads((ctx.work / "data" / "meta.json").read_text(encoding="utf-8"))
    return {"status": "ok", "meta": meta, "summary": line(done.stderr) or line(done.stdout)}


def speed_shape(ctx: Ctx) -> tuple[GPTConfig, int]:
    """GPT-2 small at nanoGPT bench.py's shape (12 x 1,024 tokens, no biases), and the batch; tiny: 2 x 64 wide."""
    if ctx.tiny:
        return GPTConfig.gpt2(dropout=0.0, bias=False, n_layer=2, n_head=2, n_embd=64, block_size=64), 4
    return GPTConfig.gpt2(dropout=0.0, bias=False), 12


def speed_settings(ctx: Ctx, batch: int, **changes) -> TrainConfig:
    """train.py's settings of nanoGPT's GPT-2 recipe (AdamW) at this shape; compiling is off for a tiny CPU check."""
    settings = {**GPT2_TRAIN, "batch_size": batch, "gradient_accumulation_steps": 1, "max_iters": 10**6,
                "max_seconds": 0.0, "device": str(ctx.device), "compile": "true", **changes}
    if ctx.tiny and not ctx.cuda:
        settings["compile"] = "false"
    return TrainConfig(**settings)


def figures(ctx: Ctx, variants: dict[str, tuple[GPTConfig, TrainConfig]], note: str = "") -> dict:
    """training_figures of each of ``variants`` (a model and train settings each) in turn, the result saved after
    each, so that a stage stopped at its cap (a slow first compile) keeps what it measured."""
    rounds, steps, warmup = (2, 2, 1) if ctx.tiny else (3, 10, 2)
    out: dict[str, dict] = {}
    result = {"status": "partial", "figures": out}
    for name, (mcfg, t) in variants.items():
        out.update(training_figures(mcfg, {name: t}, ctx.device, rounds, steps, warmup, 1000))
        result["summary"] = "; ".join(describe(k, f) for k, f in out.items()) + note
        ctx.save(result)
    return {**result, "status": "ok", "shape": dataclasses.asdict(next(iter(variants.values()))[0])}


def describe(name: str, f: dict) -> str:
    compiled = "" if f["compiled"] or "compiled" not in name else " (not compiled: a tiny CPU check)"
    return (f"{name}{compiled}: {f['tokens_per_s']:,.0f} tok/s, {f['ms_per_step']:.1f} ms/step, MFU "
            f"{100 * f['mfu']:.1f} %" + (f" (compile {f['compile_s']:.0f} s)" if f["compiled"] else ""))


def stage_speed(ctx: Ctx) -> dict:
    mcfg, batch = speed_shape(ctx)
    t = speed_settings(ctx, batch, dtype="bfloat16")
    result = figures(ctx, {"bf16 compiled, padded head": (mcfg, t),
                           "bf16 compiled, unpadded head": (dataclasses.replace(mcfg, vocab_multiple=1), t)})
    padded, unpadded = result["figures"].values()
    ratio = padded["tokens_per_s"] / unpadded["tokens_per_s"]
    return {**result, "batch": batch, "padded_over_unpadded": ratio,
            "summary": result["summary"] + f"; padded / unpadded {ratio:.3f}x"}


def stage_speed_eager(ctx: Ctx) -> dict:
    mcfg, batch = speed_shape(ctx)
    variants = {"bf16 eager": speed_settings(ctx, batch, dtype="bfloat16", compile="false"),
                "fp32 (TF32 matmuls) eager": speed_settings(ctx, batch, dtype="float32", compile="false")}
    if ctx.cuda:
        variants["fp16 + GradScaler eager"] = speed_settings(ctx, batch, dtype="float16", compile="false")
    return figures(ctx, {k: (mcfg, t) for k, t in variants.items()}, "" if ctx.cuda else "; fp16 needs CUDA: not run")


def stage_nanogpt(ctx: Ctx) -> dict:
    if not ctx.cfg.nanogpt:
        return {"status": "skipped: no gpu_check.nanogpt (a checkout of karpathy/nanoGPT)", "summary": ""}
    repo = Path(ctx.cfg.nanogpt).expanduser()
    if not (repo / "bench.py").is_file():
        return {"status": f"failed: {repo} has no bench.py", "summary": ""}
    mcfg, batch = speed_shape(ctx)
    args = [f"--batch_size={batch}", f"--block_size={mcfg.block_size}", "--real_data=False",
            f"--compile={ctx.cuda}", f"--dtype={'bfloat16' if ctx.cuda else 'float32'}", f"--device={ctx.device.type}"]
    done = ctx.run([sys.executable, "bench.py", *args], cwd=repo, share=0.6)
    found = NANOGPT_TIME.search(done.stdout)
    if done.returncode != 0 or not found:
        return {"status": "failed: nanoGPT's bench.py gave no time per iteration", "summary": line(done.stderr)}
    theirs_ms = float(found[1])
    ours = figures(ctx, {"ours": (mcfg, speed_settings(ctx, batch, dtype="bfloat16" if ctx.cuda else "float32"))})
    ours = ours["figures"]["ours"]
    ratio = theirs_ms / ours["ms_per_step"]
    same = "" if not ctx.tiny else " (tiny: nanoGPT's bench.py is always 12 x 768, ours is not: plumbing only)"
    return {"status": "ok", "nanogpt_ms_per_step": theirs_ms, "nanogpt_mfu_vs_a100": found[2], "ours": ours,
            "nanogpt_over_ours": ratio,
            "summary": f"nanoGPT bench.py {theirs_ms:.1f} ms/step, ours {ours['ms_per_step']:.1f} ms/step: "
                       f"{ratio:.2f}x nanoGPT's speed{same}"}


def resume_args(ctx: Ctx, out: Path) -> list[str]:
    """torchrun with one process training a small shape of the speedrun recipe, deterministic, into ``out``."""
    steps, every = (40, 10) if ctx.tiny else (120, 40)
    layers, width, context, batch = (1, 32, 32, 4) if ctx.tiny else (4, 256, 256, 8)
    shape = {"model.n_layer": layers, "model.n_head": max(2, width // 64), "model.n_embd": width,
             "model.block_size": context, "train.batch_size": batch}
    settings = {**ctx.data(), **shape, "train.device": ctx.device.type, "train.deterministic": "true",
                "train.compile": "false", "train.gradient_accumulation_steps": 1, "train.max_iters": steps,
                "train.warmup_iters": 5, "train.checkpoint_interval": every, "train.eval_interval": every,
                "train.eval_iters": 2, "train.log_interval": 1, "train.sample_at_end": "false",
                "train.dtype": "bfloat16" if ctx.cuda else "float32", "train.out_dir": str(out)}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "train.py",
            str(SPEEDRUN), *(f"--{k}={v}" for k, v in settings.items())]


def losses(out: Path) -> dict[tuple[int, str], float]:
    """Every training loss and validation loss of a run directory, by (step, kind)."""
    return {(r["step"], "train" if "loss" in r else "val"): r.get("loss", r.get("val_loss"))
            for r in read_records(out / METRICS) if "loss" in r or "val_loss" in r}


def stage_resume(ctx: Ctx) -> dict:
    ref, killed = ctx.work / "resume-ref", ctx.work / "resume-killed"
    for d in (ref, killed):
        shutil.rmtree(d, ignore_errors=True)
    if ctx.run(resume_args(ctx, ref), share=0.4).returncode != 0:
        return {"status": "failed: the uninterrupted run failed", "summary": ""}
    with open(ctx.out / "stages" / "resume-killed.log", "w") as log:
        run = subprocess.Popen(resume_args(ctx, killed), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               process_group=0)  # torchrun and its worker: one group, killed together
        until = time.time() + 0.4 * ctx.left()
        while not (killed / LAST).exists() and run.poll() is None and time.time() < until:
            time.sleep(0.005)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    if run.returncode != -signal.SIGKILL or not (killed / LAST).exists():
        return {"status": "failed: the run ended before it could be killed", "summary": f"exit {run.returncode}"}
    killed_at = load_checkpoint(killed / LAST)["step"]
    if ctx.run(resume_args(ctx, killed) + ["--train.resume=true"]).returncode != 0:
        return {"status": "failed: the resumed run failed", "summary": ""}
    got, want = losses(killed), losses(ref)
    diff = max((abs(got[k] - v) for k, v in want.items() if k in got), default=float("nan"))
    exact = set(want) <= set(got) and all(got[k] == v for k, v in want.items())
    verdict = ("bit for bit the uninterrupted run's" if exact
               else f"not the uninterrupted run's: max |difference| {diff:.3g}")
    steps = max(step for step, _ in want)
    return {"status": "ok" if exact else "failed: the resumed losses differ", "exact": exact, "killed_at": killed_at,
            "steps": steps, "compared": len(want), "max_abs_difference": diff,
            "summary": f"SIGKILL after the checkpoint of step {killed_at} of {steps}, resumed: {len(want)} losses "
                       f"{verdict} (train.deterministic, {'bf16' if ctx.cuda else 'fp32'})"}


def stage_sample(ctx: Ctx) -> dict:
    model = parse_args([str(SPEEDRUN)], Config, "train.py").model
    bench = BenchConfig(sample_tokens="128", sample_blocks="1024", sample_batch="1,8", repeats=2, warmup=1,
                        slow_seconds=30.0)
    if ctx.tiny:
        model = dataclasses.replace(model, n_layer=1, n_head=2, n_embd=32, block_size=32)
        bench = dataclasses.replace(bench, sample_tokens="16", sample_blocks="32", sample_batch="1", repeats=1,
                                    warmup=0)
    settings = BenchSettings(bench=bench, model=model, data=DataConfig(tokenizer=ctx.cfg.rank_file or "bytes"),
                             train=TrainConfig(dtype="bfloat16" if ctx.cuda else "float32"))
    runs = part_sample(settings, ctx.device, print)["runs"]
    words = [f"batch {r['batch']}: KV cache {r['recompute']['tokens_per_s']:,.0f} tok/s, uncached "
             f"{r['uncached']['tokens_per_s']:,.0f}" for r in runs]
    return {"status": "ok", "runs": runs,
            "summary": f"the speedrun's model (untrained), block {runs[0]['block']}, {runs[0]['new_tokens']} new "
                       "tokens: " + "; ".join(words)}


HELLASWAG_MADE_UP = [  # HellaSwag's fields, invented text: the machinery runs, the score means nothing
    ("Making tea", "A man fills a kettle with water.", "He",
     ["puts it on the stove and waits.", "throws the kettle out of the window.", "paints the kettle blue.",
      "sings to the water."], 0),
    ("Riding a bike", "A girl climbs onto a bicycle.", "She",
     ["eats the handlebars.", "pedals down the street.", "folds the bicycle into a box.", "reads the tyres."], 1),
    ("Washing dishes", "A woman stands at the sink with dirty plates.", "She",
     ["hangs the plates on a tree.", "sells the plates to a dog.", "scrubs each plate with a sponge.",
      "buries the plates in sand."], 2),
    ("Playing guitar", "A boy sits down with a guitar.", "He",
     ["uses the guitar as a boat.", "feeds the guitar some bread.", "mails the guitar to the moon.",
      "strums a few chords and tunes a string."], 3),
]


def hellaswag_items(ctx: Ctx) -> Path:
    """gpu_check.hellaswag_items of gpu_check.hellaswag, or the made-up items, as a JSON Lines file."""
    path = ctx.work / "hellaswag.jsonl"
    if ctx.cfg.hellaswag:
        with open(Path(ctx.cfg.hellaswag).expanduser(), encoding="utf-8") as f:
            lines = [s for _, s in zip(range(ctx.cfg.hellaswag_items), f)]
    else:  # tiny mode's model has a context of a few dozen bytes: its items are cut to fit
        cut = (lambda text: text[:12]) if ctx.cfg.tiny else (lambda text: text)
        lines = [json.dumps({"ind": i, "activity_label": label, "ctx_a": a, "ctx_b": b, "ctx": cut(f"{a} {b}"),
                             "endings": [cut(e) for e in endings], "label": answer, "split": "val",
                             "split_type": "indomain", "source_id": f"made-up-{i}"}) + "\n"
                 for i, (label, a, b, endings, answer) in enumerate(HELLASWAG_MADE_UP)]
    atomic_write(path, "".join(lines))
    return path


def stage_hellaswag(ctx: Ctx) -> dict:
    run = ctx.work / "resume-ref"
    if not (run / LAST).exists():
        return {"status": "skipped: no model (the resume stage's run directory is missing)", "summary": ""}
    helped = ctx.run([sys.executable, "eval.py", "--help"], share=0.3)
    if "--eval.task=" not in helped.stdout or "hellaswag" not in helped.stdout:
        return {"status": "skipped: eval.task unavailable", "summary": "eval.py has no --eval.task=hellaswag here"}
    items = hellaswag_items(ctx)
    done = ctx.run([sys.executable, "eval.py", f"--eval.checkpoint={run}", "--eval.task=hellaswag",
                    f"--eval.data={items}", f"--eval.device={ctx.device.type}"])
    if done.returncode != 0:
        return {"status": "failed", "summary": line(done.stderr)}
    record = json.loads(line(done.stdout))
    made_up = "" if ctx.cfg.hellaswag else " (made-up items: the machinery runs, the score means nothing)"
    scores = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k.startswith("acc") and isinstance(v, (int, float)))
    return {"status": "ok", "record": record, "summary": f"{scores or line(done.stdout)} on {items.name}{made_up}"}


STAGE_FUNCS: dict[str, Callable[[Ctx], dict]] = {
    "env": stage_env, "pytest": stage_pytest, "prepare": stage_prepare, "speed": stage_speed,
    "speed_eager": stage_speed_eager, "nanogpt": stage_nanogpt, "resume": stage_resume, "sample": stage_sample,
    "hellaswag": stage_hellaswag}


# --------------------------------------------------------------------------- the check


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: a stage's subprocess and everything it started, torchrun's
    workers included, which may sit in process groups of their own (Linux's /proc; else the process group)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(sid, signal.SIGKILL)
        except OSError:
            pass
        return
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass


def child_argv(cfg: GpuCheckConfig) -> list[str]:
    """The settings of a stage's subprocess, which runs in the repository's root: this check's, paths absolute."""
    def value(key: str, v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if key in ("out", "rank_file", "nanogpt", "hellaswag", "source") and v and Path(v).expanduser().exists():
            return str(Path(v).expanduser().resolve())
        return str(v)
    return [f"--gpu_check.{k}={value(k, v)}" for k, v in dataclasses.asdict(cfg).items() if k != "stage"]


def run_stage(name: str, argv: list[str], out: Path, cap: float) -> dict:
    """Stage ``name`` in a subprocess of its own (a session of its own, so that all it starts is stopped with
    it), stopped after ``cap`` seconds; its result, or what went wrong."""
    log_path, result_path = out / "stages" / f"{name}.log", out / "stages" / f"{name}.json"
    result_path.unlink(missing_ok=True)
    t0 = time.time()
    env = {**os.environ, DEADLINE_ENV: str(t0 + cap)}
    with open(log_path, "w") as log:
        child = subprocess.Popen([sys.executable, "-m", "tools.gpu_check", *argv, f"--gpu_check.stage={name}"],
                                 cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            child.wait(timeout=cap)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        kill_session(child.pid)
        child.wait()
    seconds = time.time() - t0
    tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
    if result_path.exists():
        result = json.loads(result_path.read_text(encoding="utf-8"))
        if timed_out:  # what it saved before it was stopped
            result["status"] = f"timeout: stopped after its cap of {cap:.0f} s ({result['status']})"
    elif timed_out:
        result = {"status": f"timeout: stopped after its cap of {cap:.0f} s", "summary": line("\n".join(tail))}
    else:
        result = {"status": f"failed: exit {child.returncode}", "summary": line("\n".join(tail))}
    return {"stage": name, "seconds": round(seconds, 1), "cap": round(cap, 1), **result,
            **({"log_tail": tail} if not str(result["status"]).startswith(("ok", "skipped")) else {})}


def markdown(report: dict) -> str:
    rows = ["| stage | status | seconds (cap) | result |", "| --- | --- | --- | --- |"]
    for r in report["stages"]:
        cell = str(r.get("summary", "")).replace("|", "/")
        rows.append(f"| {r['stage']} | {r['status']} | {r['seconds']:.0f} ({r['cap']:.0f}) | {cell} |")
    tiny = " (tiny: shapes and steps shrunk, not figures to quote)" if report["tiny"] else ""
    head = [f"# GPU check: {report['device_name']}", "",
            f"`python -m tools.gpu_check {' '.join(report['argv'])}`, {report['started']}, "
            f"{report['total_seconds']:.0f} s in all{tiny}.",
            "Every figure below was measured by this run on this machine.", ""]
    return "\n".join(head + rows) + "\n"


def check(cfg: GpuCheckConfig, argv: list[str]) -> dict:
    """Every stage of ``cfg.stages`` in turn, within ``cfg.budget``; the summary, written after each stage."""
    device = pick_device(cfg.device)
    out = Path(cfg.out).expanduser().resolve()
    (out / "stages").mkdir(parents=True, exist_ok=True)
    stage_argv = child_argv(dataclasses.replace(cfg, out=str(out)))
    t0 = time.time()
    report = {"device": str(device), "device_name": hardware.device_name(device), "tiny": cfg.tiny, "argv": argv,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "settings": dataclasses.asdict(cfg), "stages": []}
    wanted = set(comma_list(cfg.stages))
    for name in (s for s in STAGES if s in wanted):
        left = t0 + cfg.budget - time.time()
        cap = min(CAPS[name][cfg.tiny], left)
        if left < 5:
            result = {"stage": name, "seconds": 0.0, "cap": max(left, 0.0), "summary": "",
                      "status": "skipped: nothing left of gpu_check.budget"}
        else:
            print(f"gpu_check: {name} (at most {cap:.0f} s) ...", flush=True)
            result = run_stage(name, stage_argv, out, cap)
        print(f"gpu_check: {name}: {result['status']}; {result.get('summary', '')}", flush=True)
        report["stages"].append(result)
        report["total_seconds"] = time.time() - t0
        atomic_write(out / "summary.json", json.dumps(report, indent=1, default=str) + "\n")
        atomic_write(out / "summary.md", markdown(report))
    print(f"gpu_check: wrote {out / 'summary.json'} and {out / 'summary.md'}")
    return report


def stage_main(cfg: GpuCheckConfig) -> None:
    """In a stage's own subprocess: run it and write its result."""
    if cfg.tiny:  # the MFU probe of a CPU (training_figures') shrinks with the rest: a tiny check's figures are no figures
        hardware.PROBE_N = 256
    out = Path(cfg.out)
    ctx = Ctx(cfg, pick_device(cfg.device), out, float(os.environ.get(DEADLINE_ENV, time.time() + 600)))
    ctx.work.mkdir(parents=True, exist_ok=True)
    try:
        result = STAGE_FUNCS[cfg.stage](ctx)
    except OutOfTime as e:
        result = {"status": f"timeout: {e}", "summary": str(e)}
    ctx.save(result)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, GpuCheckSettings, "python -m tools.gpu_check", SUMMARY).gpu_check
    if cfg.stage:
        stage_main(cfg)
        return 0
    check(cfg, argv)
    return 0


if __name__ == "__main__":
    run_main(main)
