"""Every setting of every script, and the one command line they share.

A run is steered by a TOML file (data, never executed) plus ``--section.key=value``
overrides.  The sections are typed dataclasses; the comment after each field is
its one-line doc, which ``--help`` prints.  ``[model]`` is ``model.GPTConfig``
itself (less ``vocab_size``, which comes from the dataset), so a model option
exists in exactly one place.

A user's mistake is a :class:`UserError`; :func:`run_main` turns it into one line
on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import sys
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from model import GPTConfig


class UserError(Exception):
    """A mistake the user can fix: reported as one line, exit code 2."""


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    source: str | list[str] = "python-stdlib"  # text file, directory, glob, list of them, http(s) URL, or 'python-stdlib'
    tokenizer: str = "bpe"  # 'bytes', 'bpe' (trained on the corpus), a tiktoken name ('gpt2', ...) or a .tiktoken file
    vocab_size: int = 4096  # vocabulary size of a trained 'bpe' tokenizer (257 or more; above 65536 tokens are stored as uint32)
    val_fraction: float = 0.1  # fraction of the corpus, taken from its end, held out for validation
    dir: str = ""  # dataset directory; empty: data/<source>-<tokenizer>
    sha256: str = ""  # expected sha256 of an http(s) source (required for URLs)
    bpe_train_bytes: int = 8_000_000  # BPE is trained on an evenly spread sample of this many bytes of the corpus
    force: bool = False  # rebuild the dataset even if one with the same settings exists
    threads: int = 0  # threads that encode the corpus in parallel; 0 = one per CPU core


@dataclass
class TrainConfig:
    out_dir: str = "out"  # run directory: checkpoints, metrics.jsonl, config.toml
    device: str = "auto"  # 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:1', 'mps'
    dtype: str = "auto"  # 'auto' (bf16 on GPUs that support it, else fp16; fp32 on cpu), 'float32', 'bfloat16', 'float16'
    compile: str = "auto"  # torch.compile: 'true', 'false', or 'auto' (when the run is long enough to pay the compile back)
    seed: int = 1337  # seed for weights, data order and dropout
    batch_size: int = 16  # sequences per micro-batch (per process)
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step, summed over all processes
    max_iters: int = 1_000_000  # optimizer steps to train for (the run also stops at max_seconds)
    max_seconds: float = 480.0  # budget of training time in seconds (evaluation excluded); 0 = none. When set, the schedule follows time
    optimizer: str = "adamw"  # 'adamw', or 'muon' (orthogonalised momentum for 2-D hidden weights, AdamW for the rest)
    learning_rate: float = 1e-3  # peak AdamW learning rate
    min_lr: float = 1e-4  # learning rate at the end of the decay
    muon_lr: float = 0.02  # peak Muon learning rate (optimizer = 'muon')
    muon_momentum: float = 0.95  # Muon momentum
    muon_weight_decay: float = 0.0  # decoupled weight decay of the Muon-trained matrices (optimizer = 'muon')
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    weight_decay: float = 0.1  # AdamW weight decay, applied to 2-D weights only
    schedule: str = "wsd"  # 'cosine' (warmup, cosine decay) or 'wsd' (warmup, stable, linear decay)
    warmup_iters: int = 20  # linear warmup steps
    lr_decay_iters: int = 5000  # steps over which the cosine decays to min_lr (independent of max_iters)
    decay_fraction: float = 0.3  # 'wsd': the final fraction of the run spent decaying to min_lr
    grad_clip: float = 1.0  # clip the gradient norm to this; 0 = off
    eval_interval: int = 100  # evaluate every this many steps (and at the end)
    eval_iters: int = 10  # batches per evaluation (always the same windows)
    log_interval: int = 10  # write a metrics record every this many steps
    checkpoint_interval: int = 200  # write ckpt.pt every this many steps (and at the end)
    resume: bool = False  # continue the run in out_dir from its ckpt.pt
    overwrite: bool = False  # allow a new run to replace a finished run in out_dir
    sample_at_end: bool = True  # print a short sample when training ends


@dataclass
class SampleConfig:
    checkpoint: str = ""  # run directory or checkpoint file; empty: train.out_dir
    prompt: str = "\n"  # the text to continue, or FILE:path to read it from a file
    num_samples: int = 1  # samples generated together as one batch
    max_new_tokens: int = 500  # tokens to generate per sample
    temperature: float = 0.8  # softmax temperature; 0 = greedy
    top_k: int = 200  # keep only the k most likely tokens; 0 = off
    top_p: float = 1.0  # nucleus sampling: keep the smallest set of tokens with this much probability; 1 = off
    seed: int = 1337  # random seed: the same seed gives the same text
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'mps'


@dataclass
class BenchConfig:
    parts: str = "train,attention,sample,prepare"  # comma-separated parts to run
    repeats: int = 5  # timed repetitions per figure (the median is reported)
    warmup: int = 2  # untimed repetitions before timing
    train_steps: int = 20  # training part: optimizer steps per timed round (GPU: also the GPT-2 steps' minimum)
    run_steps: int = 2000  # training part: the run length over which compile time is spread (nanoGPT's recipe)
    gpt2_steps: int = 3  # training part: timed steps of the GPT-2-small MFU figure, after one warm-up; 0 = skip it
    gpt2_block: int = 0  # training part: GPT-2 small's block size; 0 = 256 on a CPU, 1024 on a GPU
    gpt2_batch: int = 0  # training part: GPT-2 small's batch size; 0 = 4 on a CPU, 16 on a GPU
    candidates: bool = True  # training part: also time what train.py does not choose (compile flipped, 1 thread, bf16)
    attn_batch: int = 8  # attention part: batch size
    attn_seq: int = 1024  # attention part: sequence length
    attn_embd: int = 768  # attention part: width
    attn_heads: int = 12  # attention part: heads
    attn_sweep: str = "256,512,1024,2048,4096"  # attention part: sequence lengths of the sweep (batch 1)
    sample_tokens: int = 500  # sampling part: new tokens per measurement
    sample_blocks: str = "64,256"  # sampling part: block sizes
    prepare_mb: float = 20.0  # prepare part: megabytes of text encoded
    json: str = "bench.json"  # where the figures are written as JSON
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    threads: int = 0  # CPU threads of torch (torch.set_num_threads); 0 = torch's default, one per core
    memory: bool = True  # measure peak memory (on a CPU each figure in a fresh process: a few seconds each)
    slow_seconds: float = 1.0  # a figure whose single run takes longer gets at most 3 timed runs (marked *)


@dataclass
class RaceConfig:
    budgets: str = "60"  # comma-separated budgets of training time in seconds, one run per variant each
    seeds: int = 3  # runs per variant and budget (medians are reported)
    variants: str = "all"  # comma-separated variant names, or 'all' (see race.py)
    target_bpb: float = 2.205  # report when val bits per byte first reached this (nanoGPT's CPU recipe, 175 s)
    jobs: int = 1  # runs at a time, the cores split evenly between them (2 on 2 cores: each run on one thread)
    eval_interval: int = 25  # steps between evaluations (evaluation time is not counted as training time)
    out_dir: str = "out-race"  # where the runs are written
    json: str = "race.json"  # where the figures are written


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": GPTConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "bench": BenchConfig,
    "race": RaceConfig,
}
HIDDEN = {("model", "vocab_size")}  # set from the dataset, never by the user


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    # the CPU default model (python train.py); GPTConfig's own defaults are GPT-2's
    model: GPTConfig = field(default_factory=lambda: GPTConfig(n_layer=6, n_head=6, n_embd=192, block_size=128,
                                                               pos_emb="rope", activation="relu2"))
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    race: RaceConfig = field(default_factory=RaceConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if (name, k) not in HIDDEN}
                for name in SECTIONS}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, Any]], origin: str = "config") -> "Config":
        cfg = cls()
        for name, values in d.items():
            if name not in SECTIONS:
                raise UserError(f"{origin}: unknown section [{name}]; known sections: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise UserError(f"{origin}: '{name}' must be a section [{name}], not a value")
            for key, value in values.items():
                set_value(cfg, name, key, value, origin)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in SECTIONS:
            section = getattr(self, name)
            try:
                # GPTConfig validates itself in __post_init__; re-run it on the final values
                setattr(self, name, dataclasses.replace(section))
            except ValueError as e:
                raise UserError(f"[{name}] {e}") from None
        _check(self)


def _check(cfg: Config) -> None:
    """Range checks of the non-model sections: one message naming the key."""
    d, t, s, b = cfg.data, cfg.train, cfg.sample, cfg.bench

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise UserError(f"--{key}: {what}")

    need(0.0 < d.val_fraction < 1.0, "data.val_fraction", f"must be between 0 and 1 (exclusive), got {d.val_fraction}")
    need(257 <= d.vocab_size <= 1 << 20, "data.vocab_size", f"must be at least 257, got {d.vocab_size}")
    need(d.bpe_train_bytes > 0, "data.bpe_train_bytes", "must be positive")
    need(d.threads >= 0, "data.threads", "must be 0 (one per CPU core) or more")
    need(t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}")
    need(t.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be at least 1")
    need(t.max_iters >= 0, "train.max_iters", "must be 0 or more")
    need(t.max_seconds >= 0, "train.max_seconds", "must be 0 (no limit) or more")
    need(t.learning_rate > 0, "train.learning_rate", f"must be positive, got {t.learning_rate}")
    need(0 <= t.min_lr <= t.learning_rate, "train.min_lr", "must be between 0 and train.learning_rate")
    need(t.muon_lr > 0, "train.muon_lr", "must be positive")
    need(0 <= t.muon_momentum < 1, "train.muon_momentum", "must be in [0, 1)")
    need(t.muon_weight_decay >= 0, "train.muon_weight_decay", "must be 0 or more")
    need(0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1", "beta1 and beta2 must be in [0, 1)")
    need(t.weight_decay >= 0, "train.weight_decay", "must be 0 or more")
    need(t.optimizer in ("adamw", "muon"), "train.optimizer", f"must be 'adamw' or 'muon', got {t.optimizer!r}")
    need(t.schedule in ("cosine", "wsd"), "train.schedule", f"must be 'cosine' or 'wsd', got {t.schedule!r}")
    need(t.warmup_iters >= 0, "train.warmup_iters", "must be 0 or more")
    need(t.lr_decay_iters >= 1, "train.lr_decay_iters", "must be at least 1")
    need(0 <= t.decay_fraction <= 1, "train.decay_fraction", "must be between 0 and 1")
    need(t.grad_clip >= 0, "train.grad_clip", "must be 0 (off) or more")
    for key in ("eval_interval", "eval_iters", "log_interval", "checkpoint_interval"):
        need(getattr(t, key) >= 1, f"train.{key}", "must be at least 1")
    need(t.compile in ("auto", "true", "false"), "train.compile", f"must be 'auto', 'true' or 'false', got {t.compile!r}")
    need(t.dtype in ("auto", "float32", "bfloat16", "float16"), "train.dtype",
         f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {t.dtype!r}")
    need(s.num_samples >= 1, "sample.num_samples", "must be at least 1")
    need(s.max_new_tokens >= 0, "sample.max_new_tokens", "must be 0 or more")
    need(s.temperature >= 0, "sample.temperature", f"must be 0 (greedy) or more, got {s.temperature}")
    need(s.top_k >= 0, "sample.top_k", "must be 0 (off) or more")
    need(0 < s.top_p <= 1, "sample.top_p", f"must be in (0, 1], got {s.top_p}")
    need(cfg.race.seeds >= 1 and cfg.race.eval_interval >= 1, "race.seeds", "seeds and eval_interval must be at least 1")
    need(cfg.race.jobs >= 1, "race.jobs", "must be at least 1")
    try:
        ok = all(float(x) > 0 for x in cfg.race.budgets.split(",") if x.strip())
    except ValueError:
        ok = False
    need(ok, "race.budgets", f"must be comma-separated positive numbers of seconds, got {cfg.race.budgets!r}")
    need(b.repeats >= 1 and b.warmup >= 0, "bench.repeats", "repeats must be at least 1 and warmup 0 or more")
    parts = [p.strip() for p in b.parts.split(",") if p.strip()]
    need(bool(parts) and all(p in ("train", "attention", "sample", "prepare") for p in parts), "bench.parts",
         f"must be a comma-separated list of train, attention, sample, prepare; got {b.parts!r}")
    for key in ("attn_sweep", "sample_blocks"):
        value = getattr(b, key)
        need(all(v.strip().isdigit() and int(v) > 0 for v in value.split(",") if v.strip()), f"bench.{key}",
             f"must be comma-separated positive whole numbers, got {value!r}")
    for key in ("train_steps", "run_steps", "attn_batch", "attn_seq", "attn_embd", "attn_heads"):
        need(getattr(b, key) >= 1, f"bench.{key}", "must be at least 1")
    need(b.attn_embd % b.attn_heads == 0, "bench.attn_embd", f"must be divisible by bench.attn_heads ({b.attn_heads})")
    for key in ("gpt2_steps", "gpt2_block", "gpt2_batch", "threads", "sample_tokens"):
        need(getattr(b, key) >= 0, f"bench.{key}", "must be 0 or more")
    need(b.prepare_mb > 0, "bench.prepare_mb", "must be positive")
    need(b.slow_seconds > 0, "bench.slow_seconds", "must be positive")
    need(b.device in ("auto", "cpu", "cuda") or b.device.startswith("cuda:"), "bench.device",
         f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {b.device!r}")


# --------------------------------------------------------------------------- typed values


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str, origin: str) -> Any:
    """Check (TOML) or parse (command line, where value is a str) one value against its declared type."""
    from_cli = origin == "command line" and isinstance(value, str)
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # str | list[str]
        if isinstance(value, list) and list[str] in args:
            return _coerce(value, list[str], key, origin)
        return _coerce(value, args[0], key, origin)
    if typing.get_origin(tp) is list:
        if from_cli:
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{origin}: {key} must be a list of strings, got {value!r}")
        return value
    if tp is bool:
        if from_cli:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
        if isinstance(value, bool):
            return value
        raise UserError(f"{origin}: {key} must be true or false, got {value!r}")
    if tp is int:
        if from_cli:
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{origin}: {key} must be a whole number, got {value!r}")
    if tp is float:
        if from_cli:
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{origin}: {key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{origin}: {key} must be a string (in quotes), got {value!r}")
    raise TypeError(f"unsupported setting type {tp!r} for {key}")  # a programming error, not the user's


def set_value(cfg: Config, section: str, key: str, value: Any, origin: str) -> None:
    cls = SECTIONS[section]
    types_ = _field_types(cls)
    if key not in types_ or (section, key) in HIDDEN:
        known = [k for k in types_ if (section, k) not in HIDDEN]
        hint = _closest(key, known)
        raise UserError(f"{origin}: unknown setting {section}.{key}" + (f" (did you mean {section}.{hint}?)" if hint else "")
                        + "; see --help")
    setattr(getattr(cfg, section), key, _coerce(value, types_[key], f"{section}.{key}", origin))


def _closest(key: str, known: list[str]) -> str | None:
    import difflib
    m = difflib.get_close_matches(key, known, n=1)
    return m[0] if m else None


# --------------------------------------------------------------------------- docs for --help


def field_docs(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class source: its one-line doc."""
    src = textwrap.dedent(inspect.getsource(cls))
    lines = src.splitlines()
    docs = {}
    for node in ast.parse(src).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.end_lineno - 1]
            docs[node.target.id] = line.split("  # ", 1)[1].strip() if "  # " in line else ""
    return docs


def help_text(prog: str, sections: tuple[str, ...], summary: str) -> str:
    out = [f"usage: python {prog} [CONFIG.toml] [--section.key=value ...]", "", summary, "",
           "Settings come from the defaults below, then CONFIG.toml, then the command line.",
           "Booleans take true/false; lists take comma-separated values on the command line."]
    defaults = Config()
    for name in sections:
        cls = SECTIONS[name]
        docs = field_docs(cls)
        types_ = _field_types(cls)
        out += ["", f"[{name}]"]
        for f in dataclasses.fields(cls):
            if (name, f.name) in HIDDEN:
                continue
            tp = types_[f.name]
            tname = getattr(tp, "__name__", str(tp)) if not typing.get_args(tp) else str(tp)
            default = getattr(getattr(defaults, name), f.name)
            out.append(f"  --{name}.{f.name}={toml_value(default)}  ({tname})")
            out.append(f"      {docs.get(f.name, '')}")
    return "\n".join(out)


# --------------------------------------------------------------------------- command line


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} not found; give the path of a .toml file (see config/)")
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text") from None


def parse_args(argv: list[str], prog: str, sections: tuple[str, ...], summary: str,
               flags: tuple[str, ...] = ()) -> Config:
    """``[CONFIG.toml] [--section.key=value ...]`` to a validated :class:`Config`.

    ``flags`` are bare switches a script accepts as shorthands, e.g. ``--force`` for ``--data.force=true``
    is passed as ``("force:data.force",)``.
    """
    shorthand = dict(f.split(":", 1) for f in flags)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(prog, sections, summary))
        for flag, key in shorthand.items():
            print(f"\n  --{flag}  is short for --{key}=true")
        raise SystemExit(0)
    cfg_file, overrides = None, []
    for a in argv:
        if a.startswith("--"):
            body = a[2:]
            if body in shorthand:
                body = shorthand[body] + "=true"
            if "=" not in body or "." not in body.split("=", 1)[0]:
                raise UserError(f"bad argument {a!r}: settings are written --section.key=value (see --help)")
            k, v = body.split("=", 1)
            overrides.append((k, v))
        elif cfg_file is None:
            cfg_file = a
        else:
            raise UserError(f"unexpected argument {a!r}: give at most one config file, then --section.key=value settings")
    cfg = Config.from_dict(load_toml(cfg_file), origin=cfg_file) if cfg_file else Config()
    for k, v in overrides:
        section, key = k.split(".", 1)
        if section not in SECTIONS:
            raise UserError(f"unknown section in --{k}; known sections: {', '.join(SECTIONS)}")
        set_value(cfg, section, key, v, "command line")
    cfg.validate()
    return cfg


def toml_value(v: Any) -> str:
    """One value in TOML's spelling."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # JSON's string escapes are valid TOML


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text, saved beside every run."""
    out = []
    for name, values in cfg.to_dict().items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        out.append("")
    return "\n".join(out)


def run_main(main: Callable[[list[str]], int | None]) -> None:
    """Run a script's main; a UserError becomes one line on stderr and exit code 2."""
    try:
        code = main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `python sample.py | head`: the reader left, which is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    raise SystemExit(code or 0)
