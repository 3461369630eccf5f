"""The command line every script shares: ``python SCRIPT.py [CONFIG.toml] [--section.key=value ...]``.

A script is steered by a TOML file (data, never executed) plus ``--section.key=value`` overrides.
Each section is a dataclass; the comment after each field is its one-line doc, which ``--help``
prints.  A script says which sections it reads by a :class:`Settings` dataclass whose fields are
those sections (train.py's is ``smallgpt.config.Config``; a tool defines its own beside its code), so

* a setting of a section the script does not read is refused on the command line, like an unknown
  one (``sample.py --bench.repeats=3`` is a mistake, not a no-op);
* a TOML file may hold sections of other scripts (one experiment file serves train.py and
  sample.py), which are skipped; a section no script of the project reads is refused;
* a run directory stores exactly what the run read (``config.toml``, and the checkpoint's copy).

A user's mistake is an ``errors.UserError``; :func:`run_main` turns it into one line on stderr and
exit code 2, never a traceback.  This module imports neither torch nor the model, so a script that
needs neither (plot.py) starts at once.
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
from pathlib import Path
from typing import Any, Callable, TypeVar

from smallgpt.errors import UserError

# Every section a TOML file of this project may hold, and the commands that read it; a section named
# nowhere here is a typo.  The tools' own sections are defined beside their code.
PROJECT_SECTIONS = {
    "data": "prepare.py, train.py, eval.py", "model": "train.py", "train": "train.py, sample.py",
    "sample": "sample.py, train.py", "eval": "eval.py", "export": "export.py", "plot": "plot.py, tools/race.py",
    "bench": "tools/bench", "race": "tools/race.py", "longcontext": "tools/longcontext.py",
    "corpora": "tools/corpora.py", "gpu_check": "tools/gpu_check.py",
}
HIDDEN = {("model", "vocab_size")}  # set from the dataset, never by the user


def need(ok: bool, key: str, what: str) -> None:
    """A range check of one setting: a UserError naming it as the command line spells it."""
    if not ok:
        raise UserError(f"--{key}: {what}")


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

    def to_toml(self, notes: dict[str, str] | None = None) -> str:
        """The resolved settings as TOML text (saved beside every run); ``notes`` ('section.key' -> text) are
        written as a comment after their setting, e.g. what an 'auto' setting chose."""
        notes, out = notes or {}, []
        for name, values in self.to_dict().items():
            out.append(f"[{name}]")
            out += [f"{k} = {toml_value(v)}" + (f"  # {notes[f'{name}.{k}']}" if f"{name}.{k}" in notes else "")
                    for k, v in values.items()]
            out.append("")
        return "\n".join(out)


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
    command = prog if prog.startswith("python ") else f"python {prog}"  # a script, or a tool run as a module
    out = [f"usage: {command} [CONFIG.toml] [--section.key=value ...]", "", summary, "",
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
