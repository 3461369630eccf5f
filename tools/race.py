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

**The chart.**  ``--race.chart=race.json`` draws a race.json instead of racing (several, comma-separated,
side by side: say a 60-s race with 3 seeds and a 600-s race with 1): one panel per time budget, each
variant's median val bits per byte as a dot, the spread over its seeds (min..max) as an error bar, the
recipe's median as a dashed line; green left of it (better), red right (worse).  ``[plot]`` sets the
image (``--plot.out``, its size); it needs matplotlib.
"""
from __future__ import annotations

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
from smallgpt.plots import PlotConfig, matplotlib_figure, save

ROOT = Path(__file__).resolve().parents[1]

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

    def check(self) -> None:
        need(self.seeds >= 1 and self.eval_interval >= 1, "race.seeds", "seeds and eval_interval must be at least 1")
        need(self.jobs >= 1, "race.jobs", "must be at least 1")
        try:
            ok = all(float(x) > 0 for x in self.budgets.split(",") if x.strip())
        except ValueError:
            ok = False
        need(ok, "race.budgets", f"must be comma-separated positive numbers of seconds, got {self.budgets!r}")


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


# --------------------------------------------------------------------------- the race


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, RaceSettings, "python -m tools.race", SUMMARY)
    r = cfg.race
    if r.chart:
        print(chart(comma_list(r.chart), cfg.plot))
        return 0
    config_file = next((a for a in argv if not a.startswith("--")), None)
    passed = [a for a in argv if a.startswith("--") and not a.startswith("--race.")]
    table = variants(cfg)
    chosen = list(table) if r.variants == "all" else comma_list(r.variants)
    unknown = [v for v in chosen if v not in table]
    if unknown:
        raise UserError(f"--race.variants: unknown {', '.join(unknown)}; choose from {', '.join(table)}")
    budgets = [float(b) for b in r.budgets.split(",") if b.strip()]

    t0 = time.perf_counter()
    prepare(cfg.data, min_tokens=cfg.model.block_size + 1)  # once, outside every timed run
    print(f"race: dataset {dataset_dir(cfg.data)} ready in {time.perf_counter() - t0:.1f}s (not counted below)",
          file=sys.stderr)
    out_root = Path(r.out_dir)
    threads = max(1, (os.cpu_count() or 1) // r.jobs)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if r.jobs > 1 else {})}
    runs = [(name, budget, seed) for name in chosen for budget in budgets for seed in range(r.seeds)]

    def run_one(key: tuple[str, float, int]) -> dict:
        name, budget, seed = key
        run_dir = out_root / f"{name}-{budget:g}s-seed{seed}"
        cmd = [sys.executable, str(ROOT / "train.py"), *([config_file] if config_file else []), *passed,
               *overrides(table[name]), f"--train.max_seconds={budget:g}", f"--train.seed={1337 + seed}",
               f"--train.out_dir={run_dir}", "--train.overwrite=true", "--train.sample_at_end=false",
               "--train.max_iters=100000000", f"--train.eval_interval={r.eval_interval}",
               "--train.checkpoint_interval=100000000"]
        print(f"race: {name}, {budget:g}s, seed {seed}", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        if done.returncode != 0:
            raise UserError(f"run {run_dir} failed: {done.stderr.strip().splitlines()[-1]}")
        return read_run(run_dir, r.target_bpb)

    if r.jobs > 1:
        print(f"race: {r.jobs} runs at a time, {threads} thread(s) each", file=sys.stderr)
    pool = ThreadPoolExecutor(max_workers=r.jobs)  # its threads only wait on subprocesses
    try:
        got = dict(zip(runs, pool.map(run_one, runs)))
    finally:
        pool.shutdown(cancel_futures=True)  # after a failed run, start no more
    results: dict[str, dict] = {}
    for name in chosen:
        for budget in budgets:
            per_seed = [got[(name, budget, seed)] for seed in range(r.seeds)]
            res = results[result_key(name, budget)] = {
                "variant": name, "budget_s": budget, "settings": table[name], "threads": threads,
                "runs": per_seed,
                **{k: median_or_none([x[k] for x in per_seed])
                   for k in ("val_bpb", "best_val_bpb", "train_bpb", "seconds_to_target", "tokens_per_s", "steps")}}
            print(f"{name:>20} {budget:>6g}s  val {res['val_bpb']:.4f} bpb (best {res['best_val_bpb']:.4f}), "
                  f"{res['tokens_per_s'] or 0:,.0f} tok/s, {res['steps']:.0f} steps"
                  + (f", reached {r.target_bpb} bpb at {res['seconds_to_target']}s" if r.target_bpb > 0 else ""),
                  flush=True)
    Path(r.json).write_text(json.dumps(results, indent=1))
    print(markdown_table(results, r.target_bpb))
    print(f"race: figures in {r.json}; draw them with python -m tools.race --race.chart={r.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
