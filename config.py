"""Settings: the typed sections a training run reads, and the one command line every script shares.

A script is steered by a TOML file (data, never executed) plus ``--section.key=value`` overrides.
Each section is a dataclass; the comment after each field is its one-line doc, which ``--help``
prints.  A script says which sections it reads by a :class:`Settings` dataclass whose fields are
those sections (train.py's is :class:`Config`; a tool defines its own beside its code), so

* a setting of a section the script does not read is refused on the command line, like an unknown
  one (``sample.py --bench.repeats=3`` is a mistake, not a no-op);
* a TOML file may hold sections of other scripts (one experiment file serves train.py and
  sample.py), which are skipped; a section no script of the project reads is refused;
* a run directory stores exactly what the run read (``config.toml``, and the checkpoint's copy).

``[model]`` is ``model.GPTConfig`` itself (less ``vocab_size``, which comes from the dataset), so a
model option exists in exactly one place.  A user's mistake is an ``errors.UserError``;
:func:`run_main` turns it into one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
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
from typing import Any, Callable, TypeVar

from errors import UserError
from model import LONG_CONTEXT, GPTConfig

# Every section a TOML file of this project may hold, and the commands that read it; a section named
# nowhere here is a typo.  The tools' own sections are defined beside their code.
PROJECT_SECTIONS = {
    "data": "prepare.py, train.py, eval.py", "model": "train.py", "train": "train.py, sample.py",
    "sample": "sample.py, train.py", "eval": "eval.py", "export": "export.py", "plot": "plot.py",
    "bench": "tools/bench.py", "race": "tools/race.py", "longcontext": "tools/longcontext.py",
}
HIDDEN = {("model", "vocab_size")}  # set from the dataset, never by the user


def need(ok: bool, key: str, what: str) -> None:
    """A range check of one setting: a UserError naming it as the command line spells it."""
    if not ok:
        raise UserError(f"--{key}: {what}")


# --------------------------------------------------------------------------- the core's sections


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

    def check(self) -> None:
        need(0.0 < self.val_fraction < 1.0, "data.val_fraction",
             f"must be between 0 and 1 (exclusive), got {self.val_fraction}")
        need(257 <= self.vocab_size <= 1 << 20, "data.vocab_size", f"must be at least 257, got {self.vocab_size}")
        need(self.bpe_train_bytes > 0, "data.bpe_train_bytes", "must be positive")
        need(self.threads >= 0, "data.threads", "must be 0 (one per CPU core) or more")

    @property
    def sources(self) -> list[str]:
        """``source`` as a list, whether the user gave one item or several."""
        return [self.source] if isinstance(self.source, str) else list(self.source)


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
    distill_from: str = ""  # teachers: run directories or checkpoints of this project's models (comma-separated: an ensemble); the loss adds the KL divergence from their mean probabilities; empty = off
    distill_weight: float = 0.5  # the share of the loss that is the divergence from the teachers (distill_from); the rest is the cross-entropy
    init_from: str = ""  # empty: from scratch; else fine-tune a run directory or checkpoint, a Hugging Face GPT-2 directory, or gpt2, gpt2-medium, gpt2-large, gpt2-xl (local Hugging Face cache)
    sample_at_end: bool = True  # print a short sample when training ends
    budget_rule: str = ""  # '' (off) or 'text': choose the optimizer and dropout from max_seconds (settings given on the command line win; no effect without max_seconds)
    tensorboard: bool = False  # also write TensorBoard scalars to out_dir/tensorboard/ (needs: pip install tensorboard)

    def check(self) -> None:
        need(self.batch_size >= 1, "train.batch_size", f"must be at least 1, got {self.batch_size}")
        need(self.gradient_accumulation_steps >= 1, "train.gradient_accumulation_steps", "must be at least 1")
        need(self.max_iters >= 0, "train.max_iters", "must be 0 or more")
        need(self.max_seconds >= 0, "train.max_seconds", "must be 0 (no limit) or more")
        need(self.learning_rate > 0, "train.learning_rate", f"must be positive, got {self.learning_rate}")
        need(0 <= self.min_lr <= self.learning_rate, "train.min_lr", "must be between 0 and train.learning_rate")
        need(self.muon_lr > 0, "train.muon_lr", "must be positive")
        need(0 <= self.muon_momentum < 1, "train.muon_momentum", "must be in [0, 1)")
        need(self.muon_weight_decay >= 0, "train.muon_weight_decay", "must be 0 or more")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1", "beta1 and beta2 must be in [0, 1)")
        need(self.weight_decay >= 0, "train.weight_decay", "must be 0 or more")
        need(self.optimizer in ("adamw", "muon"), "train.optimizer", f"must be 'adamw' or 'muon', got {self.optimizer!r}")
        need(self.schedule in ("cosine", "wsd"), "train.schedule", f"must be 'cosine' or 'wsd', got {self.schedule!r}")
        need(self.warmup_iters >= 0, "train.warmup_iters", "must be 0 or more")
        need(self.lr_decay_iters >= 1, "train.lr_decay_iters", "must be at least 1")
        need(0 <= self.decay_fraction <= 1, "train.decay_fraction", "must be between 0 and 1")
        need(self.grad_clip >= 0, "train.grad_clip", "must be 0 (off) or more")
        need(0 < self.distill_weight <= 1, "train.distill_weight", "must be more than 0 and at most 1")
        for key in ("eval_interval", "eval_iters", "log_interval", "checkpoint_interval"):
            need(getattr(self, key) >= 1, f"train.{key}", "must be at least 1")
        need(self.compile in ("auto", "true", "false"), "train.compile",
             f"must be 'auto', 'true' or 'false', got {self.compile!r}")
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "train.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        need(self.budget_rule in ("", *BUDGET_RULES), "train.budget_rule",
             f"must be '' (off) or one of {', '.join(repr(r) for r in BUDGET_RULES)}, got {self.budget_rule!r}")


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
    dtype: str = "auto"  # 'auto' (the precision the run trained in, where this device has it), 'float32', 'bfloat16', 'float16'
    long_context: str = "sinks"  # past the context: 'sinks' (a rolling KV cache that keeps the first sink_tokens), 'rolling' (a rolling KV cache of the last block_size tokens) or 'recompute' (nanoGPT's exact window, recomputed for every token); learned positions always recompute
    sink_tokens: int = 4  # long_context = 'sinks': the first tokens kept in the rolling cache (StreamingLLM's attention sinks)

    def check(self) -> None:
        need(self.dtype in ("auto", "float32", "bfloat16", "float16"), "sample.dtype",
             f"must be 'auto', 'float32', 'bfloat16' or 'float16', got {self.dtype!r}")
        need(self.num_samples >= 1, "sample.num_samples", "must be at least 1")
        need(self.long_context in LONG_CONTEXT, "sample.long_context",
             f"must be one of {', '.join(repr(m) for m in LONG_CONTEXT)}, got {self.long_context!r}")
        need(self.sink_tokens >= 1, "sample.sink_tokens", "must be at least 1 (and below the model's block_size)")
        need(self.max_new_tokens >= 0, "sample.max_new_tokens", "must be 0 or more")
        need(self.temperature >= 0, "sample.temperature", f"must be 0 (greedy) or more, got {self.temperature}")
        need(self.top_k >= 0, "sample.top_k", "must be 0 (off) or more")
        need(0 < self.top_p <= 1, "sample.top_p", f"must be in (0, 1], got {self.top_p}")


# What a recipe should change with its time budget: rule -> [(budgets below this many seconds, settings)],
# the first row that fits applies.  'text' is config/text-cpu.toml's, measured on ~1 MB of English in the
# README's CPU race: in a minute or two there is no time to overfit, and dropout only slows a CPU down
# (no dropout won by 0.11 bpb at 60 s); around five minutes the recipe as written (Muon, dropout 0.2);
# from ten minutes on AdamW overtakes Muon (whose early lead is spent once the model overfits), and
# dropout stays (without it, +0.68 bpb at ten minutes).
# A row holds groups of settings that go together: a group applies whole, or (if the command line gave any
# of its settings) not at all.
BUDGET_RULES: dict[str, list[tuple[float, list[dict[str, Any]]]]] = {
    "text": [
        (150.0, [{"model.dropout": 0.0}]),
        (450.0, []),
        (float("inf"), [{"train.optimizer": "adamw", "train.learning_rate": 3e-3, "train.min_lr": 3e-4}]),
    ],
}


def apply_budget_rule(cfg: Config) -> str | None:
    """Set what ``train.budget_rule`` chooses for ``train.max_seconds`` (but what the command line gave);
    returns the line that says so, or None when there is no rule."""
    rule = cfg.train.budget_rule
    if not rule:
        return None
    seconds = cfg.train.max_seconds
    if seconds <= 0:
        return f"budget rule '{rule}': no time budget (train.max_seconds=0), so the recipe as written"
    groups = next(g for below, g in BUDGET_RULES[rule] if seconds < below)
    chosen, kept = {}, []
    for group in groups:
        given = [k for k in group if k in cfg.on_command_line]
        if given:
            kept += given
        else:
            chosen.update(group)
    for key, value in chosen.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    cfg.validate()
    what = ", ".join(f"{k}={toml_value(v)}" for k, v in chosen.items()) or "the recipe as written"
    return (f"budget rule '{rule}' for {seconds:g} s: {what}"
            + (f" (the command line's {', '.join(kept)} kept, with what goes with it)" if kept else ""))


def default_model() -> GPTConfig:
    """The CPU main job's model (``python train.py``); GPTConfig's own defaults are GPT-2's."""
    return GPTConfig(n_layer=6, n_head=6, n_embd=192, block_size=128, pos_emb="rope", activation="relu2")


def default_train() -> TrainConfig:
    """The CPU main job's training: Muon, which beat AdamW on the standard library's code by 0.075 bits per
    byte in the same 8 minutes (README, "The CPU race"); TrainConfig's own defaults are nanoGPT's AdamW."""
    return TrainConfig(optimizer="muon", learning_rate=1e-2, min_lr=1e-3)


# --------------------------------------------------------------------------- a script's settings

S = TypeVar("S", bound="Settings")


class Settings:
    """A script's settings: subclass it as a dataclass whose fields are the sections the script reads."""

    @classmethod
    def sections(cls) -> dict[str, type]:
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {k: v for k, v in dataclasses.asdict(getattr(self, name)).items() if (name, k) not in HIDDEN}
                for name in self.sections()}

    @classmethod
    def from_dict(cls: type[S], d: dict[str, Any], origin: str = "config") -> S:
        """Settings from a TOML document: sections this script reads are applied (unknown keys refused),
        other scripts' sections are skipped, a section of no script is refused."""
        settings = cls()
        mine = cls.sections()
        for name, values in d.items():
            if name not in mine and name not in PROJECT_SECTIONS:
                raise UserError(f"{origin}: unknown section [{name}]; the project's sections are "
                                f"{', '.join(f'[{s}]' for s in PROJECT_SECTIONS)}")
            if not isinstance(values, dict):
                raise UserError(f"{origin}: '{name}' must be a section [{name}], not a value")
            if name in mine:
                for key, value in values.items():
                    settings.set(name, key, value, origin)
        settings.validate()
        return settings

    def set(self, section: str, key: str, value: Any, origin: str) -> None:
        """One setting, checked (TOML) or parsed (command line) against its declared type."""
        cls = self.sections()[section]
        types_ = typing.get_type_hints(cls)
        if key not in types_ or (section, key) in HIDDEN:
            known = [k for k in types_ if (section, k) not in HIDDEN]
            hint = difflib.get_close_matches(key, known, n=1)
            raise UserError(f"{origin}: unknown setting {section}.{key}"
                            + (f" (did you mean {section}.{hint[0]}?)" if hint else "") + "; see --help")
        setattr(getattr(self, section), key, _coerce(value, types_[key], f"{section}.{key}", origin))
        self.given.add(f"{section}.{key}")
        if origin == "command line":
            self.on_command_line.add(f"{section}.{key}")

    @property
    def given(self) -> set[str]:
        """The settings a TOML file or the command line gave ('model.n_layer', ...), as opposed to defaults:
        a run fine-tuned from a model takes its shape, and refuses only a shape that was asked for."""
        return vars(self).setdefault("_given", set())

    @property
    def on_command_line(self) -> set[str]:
        """The settings the command line gave: they win over a budget rule (:func:`apply_budget_rule`)."""
        return vars(self).setdefault("_on_command_line", set())

    def validate(self) -> None:
        """Re-run every section's checks on its final values (GPTConfig checks itself when built)."""
        for name in self.sections():
            section = getattr(self, name)
            try:
                section = dataclasses.replace(section)
            except ValueError as e:
                raise UserError(f"[{name}] {e}") from None
            setattr(self, name, section)
            if hasattr(section, "check"):
                section.check()

    def to_toml(self) -> str:
        """The resolved settings as TOML text (saved beside every run)."""
        out = []
        for name, values in self.to_dict().items():
            out.append(f"[{name}]")
            out += [f"{k} = {toml_value(v)}" for k, v in values.items()]
            out.append("")
        return "\n".join(out)


@dataclass
class Config(Settings):
    """What a training run reads, and what its run directory keeps (config.toml, the checkpoint)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=default_model)
    train: TrainConfig = field(default_factory=default_train)
    sample: SampleConfig = field(default_factory=SampleConfig)


# --------------------------------------------------------------------------- typed values


def comma_list(text: str) -> list[str]:
    """The items of a comma-separated setting ('a, b,c' -> ['a', 'b', 'c']), stripped, empty ones dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


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


def toml_value(v: Any) -> str:
    """One value in TOML's spelling."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)  # JSON's string escapes are valid TOML


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


def help_text(settings: type[Settings], prog: str, summary: str) -> str:
    out = [f"usage: python {prog} [CONFIG.toml] [--section.key=value ...]", "", summary, "",
           "Settings come from the defaults below, then CONFIG.toml, then the command line.",
           "Booleans take true/false; lists take comma-separated values on the command line."]
    defaults = settings()
    for name, cls in settings.sections().items():
        docs, types_ = field_docs(cls), typing.get_type_hints(cls)
        out += ["", f"[{name}]"]
        for f in dataclasses.fields(cls):
            if (name, f.name) in HIDDEN:
                continue
            tp = types_[f.name]
            tname = getattr(tp, "__name__", str(tp)) if not typing.get_args(tp) else str(tp)
            out.append(f"  --{name}.{f.name}={toml_value(getattr(getattr(defaults, name), f.name))}  ({tname})")
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


def parse_args(argv: list[str], settings: type[S], prog: str, summary: str = "",
               flags: tuple[str, ...] = ()) -> S:
    """``[CONFIG.toml] [--section.key=value ...]`` to validated ``settings``.

    ``flags`` are bare switches a script accepts as shorthands, e.g. ``--force`` for ``--data.force=true``
    is passed as ``("force:data.force",)``.
    """
    shorthand = dict(f.split(":", 1) for f in flags)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(settings, prog, summary))
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
            overrides.append(body.split("=", 1))
        elif cfg_file is None:
            cfg_file = a
        else:
            raise UserError(f"unexpected argument {a!r}: give at most one config file, then --section.key=value settings")
    cfg = settings.from_dict(load_toml(cfg_file), origin=cfg_file) if cfg_file else settings()
    mine = settings.sections()
    for k, v in overrides:
        section, key = k.split(".", 1)
        if section not in mine:
            reads = ", ".join(f"[{s}]" for s in mine)
            what = f"does not read [{section}] settings" if section in PROJECT_SECTIONS else f"has no section [{section}]"
            raise UserError(f"--{k}: {prog} {what}; it reads {reads} (see --help)")
        cfg.set(section, key, v, "command line")
    cfg.validate()
    return cfg


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
