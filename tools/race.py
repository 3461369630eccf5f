"""The CPU race: how good a model does each option buy in a fixed budget of training time?

``python -m tools.race [CONFIG.toml] [--race.KEY=VALUE ...]`` trains the config's recipe and one variant
per option, each differing from the recipe in that option alone, for each time budget in
``race.budgets`` and each of ``race.seeds`` seeds, then prints the median val bits per byte of each
(variant, budget) and the training time at which the recipe first reached ``race.target_bpb``.

Each run is ``train.py`` in a subprocess with ``--train.max_seconds`` set, so the schedule ends with
the budget; ``train_seconds`` excludes evaluation and checkpoints, and preparing the corpus happens
once up front and is reported apart.  Example (the ablation table of docs/cpu-race.md):

    python -m tools.race config/text-cpu.toml --data.source=pride-and-prejudice.txt \\
        --race.budgets=60 --race.seeds=3

Runs are sequential by default, so a full table takes variants x budgets x seeds x (budget + ~15 s).
``--race.jobs=2`` runs two at a time with half the cores each (``OMP_NUM_THREADS``): twice the
runs per hour, and every run still gets the same share of the machine, but each is timed on fewer
threads than a lone ``train.py`` would use, so its tokens/s (and bits per byte) are those of a
smaller machine.  Never run a race beside other work: it would time the neighbour.

**Tuning the budget rule** (``--race.rules=text,muon,...``, candidates of smallgpt/recipes.py): each candidate
rule, resolved at each budget (candidates that agree at a budget share one run), on each corpus of
``race.corpora`` (``python -m tools.corpora`` builds them) and each seed, with the weight averaging of
``race.average`` observed in the same runs (the average leaves the trained weights as they are, and the
runs evaluate both, so every candidate is reported with and without it); the ``race.baseline`` recipe
(nanoGPT's) runs once per corpus and seed, and every figure is also a ratio to its result there, with the
training time at which the candidate first reached it.  For each budget the race picks the candidate
with the lowest median ratio over the corpora among those that lose at most 0.01 bpb on any corpus
against the best candidate there and reach the baseline's result at most 1.5 times later than the
candidate that reaches it first, on every corpus (a long budget must keep the fast start).  Finished
runs are reused (``race.reuse``): a long race can stop and go on, one budget at a time.  The command of docs/cpu-race.md's tables:

    python -m tools.race config/text-cpu.toml --race.corpora=novel,quotations,vimdoc,german \\
        --race.rules=text,muon,muon-decay50 --race.budgets=60,300,600 --race.seeds=2 --race.jobs=2 \\
        --race.eval_interval=100 --race.json=race-rules.json

**The chart.**  ``--race.chart=race.json`` draws a race.json instead of racing (several, comma-separated,
side by side: say a 60-s race with 3 seeds and a 600-s race with 1): one panel per time budget, each
variant's median val bits per byte as a dot, the spread over its seeds (min..max) as an error bar, the
recipe's median as a dashed line; green left of it (better), red right (worse).  ``[plot]`` sets the
image (``--plot.out``, its size); it needs matplotlib.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smallgpt.cli import comma_list, need, parse_args, run_main, toml_value
from smallgpt.config import Config
from smallgpt.curves import METRICS, evaluations, read_records
from smallgpt.dataset import dataset_dir
from smallgpt.errors import UserError
from smallgpt.pipeline import prepare
from smallgpt.recipes import CANDIDATE_RULES, rule_groups
from smallgpt.safefiles import atomic_write
from smallgpt.plots import PlotConfig, matplotlib_figure, save

ROOT = Path(__file__).resolve().parents[1]
RACE_COMMAND = ".race-command"  # in a finished run's directory: the command that ran it

SUMMARY = "Ablate the model and optimizer options in fixed budgets of training time (val bits per byte)."


@dataclass
class RaceConfig:
    budgets: str = "60"  # comma-separated budgets of training time in seconds, one run per variant each
    seeds: int = 3  # runs per variant and budget (medians are reported)
    variants: str = "all"  # comma-separated variant names, or 'all' (see race.py)
    target_bpb: float = 0.0  # also report the training time at which val bits per byte first reached this; 0 = off
    jobs: int = 1  # runs at a time, the cores split evenly between them (2 on 2 cores: each run on one thread)
    eval_interval: int = 25  # steps between evaluations (evaluation time is not counted as training time)
    out_dir: str = "out-race"  # where the runs are written
    json: str = "race.json"  # where the figures are written
    chart: str = ""  # draw these race.json files (comma-separated) as a chart instead of racing; --plot.out names the image
    corpora: str = ""  # run every variant on each of these (comma-separated: names of tools/corpora.py in corpora_dir, or text files); empty: data.source
    corpora_dir: str = "data/corpora"  # where python -m tools.corpora wrote the corpora named in race.corpora
    rules: str = ""  # tune the budget rule instead of ablating: these candidate rules (comma-separated; smallgpt/recipes.py CANDIDATE_RULES)
    baseline: str = "config/nanogpt-cpu.toml"  # rules: the recipe every corpus's figures are a ratio to (its own steps and settings); empty: none
    average: str = "ema"  # rules: weight averaging observed in every run ('' or 'ema'/'lawa'): each candidate is reported with and without it
    reuse: bool = True  # a run finished by an earlier race with the same command is read, not run again (a long race can stop and go on)
    eval_early: int = 5  # rules: also evaluate every this many steps before step race.eval_interval (when the baseline's result is first reached)

    def check(self) -> None:
        need(self.seeds >= 1 and self.eval_interval >= 1, "race.seeds", "seeds and eval_interval must be at least 1")
        need(self.jobs >= 1, "race.jobs", "must be at least 1")
        try:
            ok = all(float(x) > 0 for x in self.budgets.split(",") if x.strip())
        except ValueError:
            ok = False
        need(ok, "race.budgets", f"must be comma-separated positive numbers of seconds, got {self.budgets!r}")
        unknown = [name for name in comma_list(self.rules) if name not in CANDIDATE_RULES]
        need(not unknown, "race.rules", f"unknown rule {', '.join(unknown)}; the candidates are {', '.join(CANDIDATE_RULES)}")
        need(self.average in ("", "ema", "lawa"), "race.average", f"must be '', 'ema' or 'lawa', got {self.average!r}")
        need(self.eval_early >= 0, "race.eval_early", "must be 0 (off) or more")


@dataclass
class RaceSettings(Config):
    """train.py's settings (passed on to every run), [race], and [plot] for its chart."""
    race: RaceConfig = field(default_factory=RaceConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)


def variants(cfg: RaceSettings) -> dict[str, dict[str, object]]:
    """Each option flipped against the recipe: name -> the settings that differ from ``cfg``."""
    m, t = cfg.model, cfg.train
    other_opt = ({"train.optimizer": "adamw", "train.learning_rate": 3e-3, "train.min_lr": 3e-4}
                 if t.optimizer == "muon" else {"train.optimizer": "muon"})
    return {
        "recipe": {},
        "optimizer": other_opt,
        "schedule": {"train.schedule": "cosine" if t.schedule == "wsd" else "wsd"},
        "pos_emb": {"model.pos_emb": "learned" if m.pos_emb == "rope" else "rope"},
        "activation=gelu": {"model.activation": "gelu"} if m.activation != "gelu" else {"model.activation": "relu2"},
        "activation=swiglu": {"model.activation": "swiglu"} if m.activation != "swiglu" else {"model.activation": "relu2"},
        "norm": {"model.norm": "layernorm" if m.norm == "rmsnorm" else "rmsnorm"},
        "qk_norm": {"model.qk_norm": not m.qk_norm},
        "n_kv_head": {"model.n_kv_head": 0 if m.n_kv_head else max(1, m.n_head // 2)},
        "tie_embeddings": {"model.tie_embeddings": not m.tie_embeddings},
        "logit_softcap": {"model.logit_softcap": 0.0 if m.logit_softcap else 30.0},
        "zero_init_proj": {"model.zero_init_proj": not m.zero_init_proj},
        "dropout": {"model.dropout": 0.0 if m.dropout else 0.1},
        "tokenizer=bytes": {"data.tokenizer": "bytes", "data.dir": ""},
    }


def assignments(settings: dict[str, object]) -> list[str]:
    """``section.key=value`` as the command line spells each setting (strings unquoted)."""
    return [f"{k}={toml_value(v).strip(chr(34))}" for k, v in settings.items()]


def overrides(settings: dict[str, object]) -> list[str]:
    return [f"--{a}" for a in assignments(settings)]


def result_key(variant: str, budget: float) -> str:
    """How the figures of one variant at one budget are keyed in race.json."""
    return f"{variant}@{budget:g}"


def read_run(run_dir: Path, target: float) -> dict[str, float | None]:
    records = read_records(run_dir / METRICS)
    evals = evaluations(records)
    trains = [r for r in records if "tokens_per_s" in r]
    hit = next((r["train_seconds"] for r in evals if r["val_bpb"] <= target), None) if target > 0 else None
    return {"val_bpb": evals[-1]["val_bpb"], "best_val_bpb": min(r["val_bpb"] for r in evals),
            "train_bpb": evals[-1].get("train_bpb"), "steps": evals[-1]["step"],
            "train_seconds": evals[-1]["train_seconds"], "seconds_to_target": hit,
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in trains) if trains else None}


def median_or_none(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def markdown_table(results: dict[str, dict], target: float) -> str:
    """The figures as the ablation table of docs/cpu-race.md: one row per variant, a column pair per budget."""
    budgets = sorted({res["budget_s"] for res in results.values()})
    names = list(dict.fromkeys(res["variant"] for res in results.values()))
    head = ["variant (one change from the recipe)"]
    for b in budgets:
        seeds = max(len(res["runs"]) for res in results.values() if res["budget_s"] == b)
        head += [f"val bpb at {b:g} s ({f'median of {seeds}' if seeds > 1 else '1 seed'})", "Δ"]
    head += [f"reached {target} bpb at"] * (target > 0) + ["tokens/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        settings = next(v["settings"] for v in results.values() if v["variant"] == name)
        row = [f"{name}: " + (", ".join(f"`{a}`" for a in assignments(settings)) or "—")]
        for b in budgets:
            res, base = results.get(result_key(name, b)), results.get(result_key("recipe", b))
            row.append(f"{res['val_bpb']:.3f}" if res else "not run")
            row.append(f"{res['val_bpb'] - base['val_bpb']:+.3f}" if res and base else "")
        first = results.get(result_key(name, budgets[0]))  # time to target and speed: the shortest budget
        if target > 0:
            hit = first["seconds_to_target"] if first else None
            row.append("" if not first else f"{hit:.1f} s" if hit is not None else f"not in {budgets[0]:g} s")
        row.append(f"{first['tokens_per_s']:,.0f}" if first and first["tokens_per_s"] else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the chart


BETTER, WORSE, RECIPE = "tab:green", "tab:red", "black"  # a variant against the recipe
RACE_KEYS = {"variant", "budget_s", "runs", "val_bpb"}


def read_race(path: Path) -> dict[str, dict[str, Any]] | None:
    """A race.json's results (tools/race.py's layout: 'variant@budget' -> figures), or None if the file is not one."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    ok = (isinstance(results, dict) and results
          and all(isinstance(r, dict) and RACE_KEYS <= set(r) and isinstance(r["runs"], list)
                  for r in results.values()))
    return results if ok else None


@dataclass
class Spread:
    """One variant at one budget in a race chart: the median of its seeds and their range."""
    budget_s: float
    variant: str
    median: float
    lo: float
    hi: float
    seeds: int


def variant_label(res: dict[str, Any]) -> str:
    """'dropout=0.0' for the variant 'dropout' that sets model.dropout = 0.0: the name and what it sets."""
    name, settings = res["variant"], res.get("settings") or {}
    if "=" in name or not settings:
        return name
    return f"{name}={json.dumps(next(iter(settings.values()))).strip(chr(34))}"


def draw_race(results: dict[str, dict[str, Any]], cfg: PlotConfig):
    """One panel per budget: each variant's median val bits per byte and its seed spread; returns
    (the Figure, the Spreads drawn)."""
    fig = matplotlib_figure(cfg)
    budgets = sorted({r["budget_s"] for r in results.values()})
    names = list(dict.fromkeys(r["variant"] for r in results.values()))
    labels = {r["variant"]: variant_label(r) for r in results.values()}
    axes = fig.subplots(1, len(budgets), sharey=True, squeeze=False)[0]
    spreads: list[Spread] = []
    for ax, budget in zip(axes, budgets):
        here = {r["variant"]: r for r in results.values() if r["budget_s"] == budget}
        recipe = here.get("recipe")
        if recipe:
            ax.axvline(recipe["val_bpb"], color=RECIPE, ls="--", lw=1, alpha=0.6)
        seeds = 0
        for y, name in enumerate(names):
            res = here.get(name)
            if res is None:
                continue
            runs = [r["val_bpb"] for r in res["runs"] if r.get("val_bpb") is not None] or [res["val_bpb"]]
            s = Spread(budget, name, res["val_bpb"], min(runs), max(runs), len(runs))
            seeds = max(seeds, s.seeds)
            color = RECIPE if name == "recipe" or not recipe else BETTER if s.median < recipe["val_bpb"] else WORSE
            bar = ax.errorbar([s.median], [y], xerr=[[s.median - s.lo], [s.hi - s.median]], fmt="o", color=color,
                              ms=5, elinewidth=1.5, capsize=3)
            bar.lines[0].set_gid(f"median:{name}")
            ax.annotate(f"{s.median:.3f}", (s.hi, y), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=7, color="0.25")
            spreads.append(s)
        for y, name in enumerate(names):
            if name not in here:
                ax.annotate("not run", (0.98, y), xycoords=("axes fraction", "data"), ha="right", va="center",
                            fontsize=7, color="0.5")
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi + 0.08 * (hi - lo))  # room for the figures' text
        spread_of = f"median, min-max of {seeds} seeds" if seeds > 1 else "1 seed"
        ax.set_title(f"{budget:g} s of training ({spread_of})", fontsize=10)
        ax.set_xlabel("val bits per byte (lower is better)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), [labels[n] for n in names], fontsize=8)
    axes[0].invert_yaxis()  # the recipe (first) on top
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], color=c, marker="o", ls=ls, lw=1, label=label) for c, ls, label in (
        (RECIPE, "--", "the recipe (dashed: its median)"), (BETTER, "", "better than the recipe"),
        (WORSE, "", "worse"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    if cfg.title:
        fig.suptitle(cfg.title)
    return fig, spreads


def chart(files: list[str], cfg: PlotConfig) -> Path:
    """Draw race.json ``files`` side by side; returns the image's path (--plot.out, else beside the first)."""
    results: dict[str, dict[str, Any]] = {}
    for name in files:
        p = Path(name)
        race = read_race(p) if p.is_file() else None
        if race is None:
            raise UserError(f"--race.chart: {p} is not a race.json written by tools/race.py")
        twice = [key for key in race if key in results]
        if twice:
            raise UserError(f"--race.chart: {p} repeats {twice[0]} of an earlier race.json; give each budget once")
        results.update(race)
    out = Path(cfg.out) if cfg.out else Path(files[0]).with_suffix(".png")
    fig, _ = draw_race(results, cfg)
    save(fig, out, cfg.dpi)
    return out


# --------------------------------------------------------------------------- the runs


def corpus_sources(r: RaceConfig, source: str | list[str]) -> dict[str, str | list[str]]:
    """name -> data.source of each corpus the race runs on: race.corpora (a name of tools/corpora.py found in
    race.corpora_dir, or a text file), else the config's own data.source."""
    if not r.corpora:
        return {"": source}
    out = {}
    for item in comma_list(r.corpora):
        path = Path(item) if Path(item).is_file() else Path(r.corpora_dir) / f"{item}.txt"
        if not path.is_file():
            raise UserError(f"--race.corpora: no corpus {item!r} (neither a file nor {path}); build the corpora "
                            f"with python -m tools.corpora --corpora.out_dir={r.corpora_dir}")
        out[Path(item).stem if Path(item).is_file() else item] = str(path)
    return out


class Runner:
    """train.py in subprocesses, ``race.jobs`` at a time with the cores split between them."""

    def __init__(self, cfg: RaceSettings, argv: list[str]):
        r = self.r = cfg.race
        self.config_file = next((a for a in argv if not a.startswith("--")), None)
        self.passed = [a for a in argv if a.startswith("--") and not a.startswith(("--race.", "--plot."))]
        self.threads = max(1, (os.cpu_count() or 1) // r.jobs)
        self.env = {**os.environ, **({"OMP_NUM_THREADS": str(self.threads)} if r.jobs > 1 else {})}
        self.out_root = Path(r.out_dir)
        if r.jobs > 1:
            print(f"race: {r.jobs} runs at a time, {self.threads} thread(s) each", file=sys.stderr)

    def train(self, run_dir: Path, args: list[str], baseline: str = "") -> Path:
        """One run into ``run_dir`` (replaced): the race's config and the command line's settings, then ``args``;
        or the ``baseline`` config and ``args`` alone."""
        given = [baseline] if baseline else [*([self.config_file] if self.config_file else []), *self.passed]
        cmd = [sys.executable, str(ROOT / "train.py"), *given, *args,
               f"--train.out_dir={run_dir}", "--train.overwrite=true", "--train.sample_at_end=false"]
        said = json.dumps({"command": cmd[1:], "threads": self.threads})  # what decides the run's figures
        if self.r.reuse and (run_dir / RACE_COMMAND).is_file() and (run_dir / RACE_COMMAND).read_text() == said:
            print(f"race: {run_dir.name} (done already: reused)", file=sys.stderr, flush=True)
            return run_dir
        print(f"race: {run_dir.name}", file=sys.stderr, flush=True)
        (run_dir / RACE_COMMAND).unlink(missing_ok=True)
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env)
        if done.returncode != 0:
            raise UserError(f"run {run_dir} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        (run_dir / RACE_COMMAND).write_text(said)  # written last: only a finished run is reused
        return run_dir

    def map(self, fn, items: list) -> list:
        """``fn`` over ``items``, race.jobs at a time; after a failed run no further run starts."""
        pool = ThreadPoolExecutor(max_workers=self.r.jobs)  # its threads only wait on subprocesses
        try:
            return list(pool.map(fn, items))
        finally:
            pool.shutdown(cancel_futures=True)


def budget_args(budget: float, seed: int, r: RaceConfig) -> list[str]:
    return [f"--train.max_seconds={budget:g}", f"--train.seed={1337 + seed}", "--train.max_iters=100000000",
            f"--train.eval_interval={r.eval_interval}", "--train.checkpoint_interval=100000000"]


def prepared(cfg: RaceSettings, source: str | list[str]) -> str:
    """The dataset of ``source`` with the race's [data] settings, prepared once, outside every timed run."""
    data = dataclasses.replace(cfg.data, source=source, dir="" if cfg.race.corpora else cfg.data.dir)
    t0 = time.perf_counter()
    prepare(data, min_tokens=cfg.model.block_size + 1)
    print(f"race: dataset {dataset_dir(data)} ready in {time.perf_counter() - t0:.1f}s (not counted below)",
          file=sys.stderr)
    return str(dataset_dir(data))


# --------------------------------------------------------------------------- the ablation


def ablate(cfg: RaceSettings, runner: Runner) -> dict[str, dict]:
    """Every variant (one option flipped against the recipe) at every budget, seed and corpus."""
    r = cfg.race
    table = variants(cfg)
    chosen = list(table) if r.variants == "all" else comma_list(r.variants)
    unknown = [v for v in chosen if v not in table]
    if unknown:
        raise UserError(f"--race.variants: unknown {', '.join(unknown)}; choose from {', '.join(table)}")
    budgets = [float(b) for b in r.budgets.split(",") if b.strip()]
    corpora = corpus_sources(r, cfg.data.source)
    data = {name: ["--data.source=" + str(src), f"--data.dir={prepared(cfg, src)}"] if name else []
            for name, src in corpora.items()}
    runs = [(corpus, name, budget, seed) for corpus in corpora for name in chosen for budget in budgets
            for seed in range(r.seeds)]

    def run_one(key: tuple[str, str, float, int]) -> dict:
        corpus, name, budget, seed = key
        settings = table[name] if "data.dir" not in table[name] or not corpus else \
            {k: v for k, v in table[name].items() if k != "data.dir"}  # a corpus's variant prepares its own
        run_dir = runner.out_root / f"{corpus + '-' if corpus else ''}{name}-{budget:g}s-seed{seed}"
        args = [*data[corpus], *overrides(settings), *budget_args(budget, seed, r)]
        return read_run(runner.train(run_dir, args), r.target_bpb)

    got = dict(zip(runs, runner.map(run_one, runs)))
    results: dict[str, dict] = {}
    for corpus in corpora:
        for name in chosen:
            for budget in budgets:
                per_seed = [got[(corpus, name, budget, seed)] for seed in range(r.seeds)]
                key = (f"{corpus}:" if corpus else "") + result_key(name, budget)
                res = results[key] = {
                    "variant": name, "budget_s": budget, "settings": table[name], "threads": runner.threads,
                    "runs": per_seed, **({"corpus": corpus} if corpus else {}),
                    **{k: median_or_none([x[k] for x in per_seed])
                       for k in ("val_bpb", "best_val_bpb", "train_bpb", "seconds_to_target", "tokens_per_s", "steps")}}
                print(f"{key:>30} val {res['val_bpb']:.4f} bpb (best {res['best_val_bpb']:.4f}), "
                      f"{res['tokens_per_s'] or 0:,.0f} tok/s, {res['steps']:.0f} steps"
                      + (f", reached {r.target_bpb} bpb at {res['seconds_to_target']}s" if r.target_bpb > 0 else ""),
                      flush=True)
    for corpus in corpora:
        if corpus:
            print(f"\n{corpus}:")
        print(markdown_table({k: v for k, v in results.items() if v.get("corpus", "") == corpus}, r.target_bpb))
    return results


# --------------------------------------------------------------------------- tuning the budget rule


def curve(run_dir: Path) -> list[tuple[float, float, float]]:
    """(training seconds, val bpb of the trained weights, val bpb of what the run keeps) at every evaluation;
    the two differ only once weight averaging has started."""
    return [(e["train_seconds"], e.get("trained_val_bpb", e["val_bpb"]), e["val_bpb"])
            for e in evaluations(read_records(run_dir / METRICS))]


def first_reached(points: list[tuple[float, float, float]], target: float) -> float | None:
    """The training time of the first evaluation of the trained weights at or below ``target`` bpb."""
    return next((t for t, trained, _ in points if trained <= target), None)


def tune(cfg: RaceSettings, runner: Runner) -> dict[str, Any]:
    """Every candidate rule on every corpus at every budget and seed, each with and without weight averaging
    (observed in the same run: the average leaves the trained weights as they are, and the run evaluates both),
    as ratios to the baseline recipe on that corpus; and the rule each budget picks."""
    r = cfg.race
    names, budgets = comma_list(r.rules), [float(b) for b in r.budgets.split(",") if b.strip()]
    corpora = corpus_sources(r, cfg.data.source)
    data = {name: [f"--data.source={src}", f"--data.dir={prepared(cfg, src)}"] for name, src in corpora.items()}
    observe = [f"--train.average={r.average}"] if r.average else []
    # the runs: each distinct setting a budget resolves to, once (candidates often agree at a budget)
    distinct: dict[tuple[float, str], dict] = {}
    for budget in budgets:
        for name in names:
            settings = {k: v for g in rule_groups(CANDIDATE_RULES[name], budget) for k, v in g.items()}
            distinct.setdefault((budget, json.dumps(settings, sort_keys=True)), settings)
    labels = {key: f"{budget:g}s-" + ("-".join(f"{k.split('.')[1]}={v}" for k, v in s.items()) or "recipe")
              for key, s in distinct.items() for budget in [key[0]]}
    runs = [("run", corpus, key, seed) for corpus in corpora for key in distinct for seed in range(r.seeds)]
    if r.baseline:
        runs = [("baseline", corpus, None, seed) for corpus in corpora for seed in range(r.seeds)] + runs

    def run_one(job: tuple) -> list[tuple[float, float, float]]:
        kind, corpus, key, seed = job
        if kind == "baseline":
            run_dir = runner.out_root / f"{corpus}-baseline-seed{seed}"
            return curve(runner.train(run_dir, [f"--data.source={corpora[corpus]}", f"--train.seed={1337 + seed}"],
                                      baseline=r.baseline))
        run_dir = runner.out_root / f"{corpus}-{labels[key]}-seed{seed}"
        args = [*data[corpus], *overrides(distinct[key]), *observe, *budget_args(key[0], seed, r),
                f"--train.eval_early={r.eval_early}", "--train.budget_rule="]
        return curve(runner.train(run_dir, args))

    got = dict(zip(runs, runner.map(run_one, runs)))
    base = {corpus: {"val_bpb": statistics.median(got[("baseline", corpus, None, s)][-1][1] for s in range(r.seeds)),
                     "train_seconds": statistics.median(got[("baseline", corpus, None, s)][-1][0]
                                                        for s in range(r.seeds))}
            for corpus in corpora} if r.baseline else {}
    cells: dict[str, dict] = {}  # 'corpus|budget|candidate' -> figures
    for corpus in corpora:
        for budget in budgets:
            for name in names:
                settings = {k: v for g in rule_groups(CANDIDATE_RULES[name], budget) for k, v in g.items()}
                key = (budget, json.dumps(settings, sort_keys=True))
                points = [got[("run", corpus, key, s)] for s in range(r.seeds)]
                for averaged in ([False, True] if r.average else [False]):
                    bpb = [p[-1][2 if averaged else 1] for p in points]
                    target = base.get(corpus, {}).get("val_bpb")
                    hits = [first_reached(p, target) for p in points] if target else []
                    cell = {"corpus": corpus, "budget_s": budget, "rule": name, "average": r.average if averaged else "",
                            "settings": settings, "val_bpb": statistics.median(bpb), "seeds": bpb,
                            "seconds_to_baseline": median_or_none(hits) if hits and None not in hits else None}
                    if target:
                        cell["ratio"] = cell["val_bpb"] / target
                    cells[f"{corpus}|{budget:g}|{candidate_name(name, cell['average'])}"] = cell
    picks = {f"{b:g}": pick(cells, b) for b in budgets}
    out = {"baseline": base, "cells": cells, "picks": picks, "threads": runner.threads, "seeds": r.seeds}
    print(rule_tables(out, list(corpora), budgets))
    return out


def candidate_name(rule: str, average: str) -> str:
    return f"{rule}+{average}" if average else rule


def pick(cells: dict[str, dict], budget: float, tolerance: float = 0.01, slower: float = 1.5) -> dict[str, Any]:
    """The candidate with the lowest median over corpora of its ratio to the baseline, among those that lose no
    more than ``tolerance`` bpb on any corpus against the best candidate there and keep the fast start: on no
    corpus do they reach the baseline's result more than ``slower`` times later than the candidate that reaches
    it first (people stop runs early, so a long budget must not make the early curve worse).  Else the lowest
    median, said."""
    here = [c for c in cells.values() if c["budget_s"] == budget]
    corpora = sorted({c["corpus"] for c in here})
    best = {corpus: min(c["val_bpb"] for c in here if c["corpus"] == corpus) for corpus in corpora}
    first = {corpus: min((c["seconds_to_baseline"] for c in here if c["corpus"] == corpus
                          and c["seconds_to_baseline"] is not None), default=None) for corpus in corpora}
    scores = {}
    for name in dict.fromkeys(candidate_name(c["rule"], c["average"]) for c in here):
        mine = [c for c in here if candidate_name(c["rule"], c["average"]) == name]
        ratios = [c.get("ratio", c["val_bpb"]) for c in mine]
        late = [float("inf") if c["seconds_to_baseline"] is None  # never reached, where another did
                else c["seconds_to_baseline"] / max(first[c["corpus"]], 1e-9)
                for c in mine if first[c["corpus"]] is not None]
        scores[name] = {"median_ratio": statistics.median(ratios),
                        "worst_loss": max(c["val_bpb"] - best[c["corpus"]] for c in mine),
                        "start_slower": max(late, default=1.0)}
    within = [n for n, s in scores.items() if s["worst_loss"] <= tolerance and s["start_slower"] <= slower]
    chosen = min(within or scores, key=lambda n: scores[n]["median_ratio"])
    return {"chosen": chosen, "within_tolerance": bool(within), "tolerance": tolerance, "slower": slower,
            "scores": scores}


def rule_tables(out: dict[str, Any], corpora: list[str], budgets: list[float]) -> str:
    """docs/cpu-race.md's tables: per budget, each candidate's val bpb on each corpus (median of the seeds),
    its ratio to the baseline there, the median ratio, the worst loss against the best candidate of a corpus,
    and when it first reached the baseline's result."""
    lines = []
    if out["baseline"]:
        lines += ["| corpus | baseline val bpb | its training time |", "|---|---|---|"]
        lines += [f"| {c} | {b['val_bpb']:.3f} | {b['train_seconds']:.1f} s |" for c, b in out["baseline"].items()]
    for budget in budgets:
        p = out["picks"][f"{budget:g}"]
        head = ["candidate", *[f"{c}: bpb (× baseline)" for c in corpora], "median ×", "worst loss",
                "reached the baseline's result at (× sooner)", "start × later"]
        lines += ["", f"**{budget:g} s** (median of {out['seeds']} seeds; chosen: `{p['chosen']}`"
                  + ("" if p["within_tolerance"] else ", none within the tolerances") + ")", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        same: dict[str, list[str]] = {}  # candidates that agree at this budget ran as one: one row
        for name in p["scores"]:
            c = out["cells"][f"{corpora[0]}|{budget:g}|{name}"]
            same.setdefault(json.dumps([c["settings"], c["average"]], sort_keys=True), []).append(name)
        for names in same.values():
            name, score = names[0], p["scores"][names[0]]
            row = [" = ".join(f"`{n}`" for n in names)]
            hits = []
            for corpus in corpora:
                c = out["cells"][f"{corpus}|{budget:g}|{name}"]
                row.append(f"{c['val_bpb']:.3f}" + (f" ({c['ratio']:.2f})" if "ratio" in c else ""))
                hit = c["seconds_to_baseline"]
                sooner = out["baseline"].get(corpus, {}).get("train_seconds")
                hits.append("—" if hit is None else f"{hit:.0f} s" + (f" ({sooner / hit:.0f}×)" if sooner and hit else ""))
            row += [f"{score['median_ratio']:.3f}", f"{score['worst_loss']:+.3f}", " / ".join(hits),
                    f"{score['start_slower']:.1f}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, RaceSettings, "python -m tools.race", SUMMARY)
    r = cfg.race
    if r.chart:
        print(chart(comma_list(r.chart), cfg.plot))
        return 0
    runner = Runner(cfg, argv)
    results = tune(cfg, runner) if r.rules else ablate(cfg, runner)
    atomic_write(Path(r.json), json.dumps(results, indent=1))
    how = "" if r.rules else f"; draw them with python -m tools.race --race.chart={r.json}"
    print(f"race: figures in {r.json}{how}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
