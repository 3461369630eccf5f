"""Runs as pictures: ``python plot.py RUN [RUN ...] [--plot.key=value ...]``, or ``python plot.py race.json``.

**Runs.**  Each RUN is a run directory (``train.out_dir``).  Its ``metrics.jsonl`` gives validation
bits per byte (solid) and train bits per byte (dashed, from the evaluations that measured it), drawn
against training time (evaluation and checkpoints excluded, as train.py counts it) and against tokens
seen (the step times the run's tokens per step, batch_size x block_size x gradient_accumulation_steps,
read from its ``config.toml``), with the learning rate on a panel of its own below (logarithmic when
the runs' peaks differ by more than LR_LOG_RATIO).  Several runs are overlaid, one colour each,
labelled by directory name.  Bits per byte, not loss, so runs with
different tokenizers compare (a byte-level model and a BPE model of the same text meet on one axis).
The best evaluation of each run is marked, and its verdict (curves.py: still improving, flattened,
overfitting) printed.

**A race.**  The ``race.json`` that tools/race.py writes becomes one panel per time budget: each
variant's median val bits per byte as a dot, the spread over its seeds (min..max) as an error bar, the
recipe's median as a dashed line; green left of it (better), red right (worse).  Several race.json
files (say, a 60-s race with 3 seeds and a 600-s race with 1) are drawn side by side.

matplotlib is an optional dependency: the rest of the project never imports it, and this script
only once the input has been read.  It draws on a bare ``matplotlib.figure.Figure`` (the Agg
renderer, no display, no global pyplot state).  The image is written as PNG, or as SVG when
``--plot.out`` ends in .svg, and its path is the last line on stdout.
"""
from __future__ import annotations

import io
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import Settings, TrainConfig, default_model, need, parse_args, run_main
from curves import METRICS, Curve, analyse, evaluations, read_records
from errors import UserError

SUMMARY = """Draw runs as curves (python plot.py RUN [RUN ...]) or a race as a chart (python plot.py race.json).
RUN is a run directory (train.out_dir); race.json is what tools/race.py writes.  Writes a PNG (or an SVG
when --plot.out ends in .svg), 1000 x 560 pixels by default (a few tens of KB), and prints its path last.
Needs matplotlib: pip install matplotlib."""
INSTALL = "plot.py needs matplotlib, which is not installed: pip install matplotlib"
X_AXES = ("time", "tokens", "both")
LR_LOG_RATIO = 4.0  # runs whose peak learning rates differ more than this share a logarithmic lr axis
BETTER, WORSE, RECIPE = "tab:green", "tab:red", "black"  # race: a variant against the recipe


@dataclass
class PlotConfig:
    out: str = ""  # image to write (.png, or .svg); empty: plot.png in the run directory (several runs: here), race.png beside a race.json
    x: str = "both"  # x axis of the curves: 'time' (seconds of training), 'tokens' (tokens seen) or 'both' side by side
    train: bool = True  # also draw train bits per byte (dashed) where the evaluations measured it
    log_y: bool = False  # logarithmic bits-per-byte axis
    ymax: float = 0.0  # top of the bits-per-byte axis; 0 = automatic (above the curves after step 0, which may be cut off)
    labels: list[str] = field(default_factory=list)  # one label per run, in order (comma-separated); empty: each run directory's name
    title: str = ""  # a title over the figure; empty: none
    width: int = 1000  # image width in pixels (1000 x 560 at dpi 100: a PNG of a few tens of KB)
    height: int = 560  # image height in pixels
    dpi: int = 100  # dots per inch: the size of text and lines against the image (the image stays width x height)

    def check(self) -> None:
        need(self.x in X_AXES, "plot.x", f"must be one of {', '.join(X_AXES)}, got {self.x!r}")
        need(self.out == "" or Path(self.out).suffix.lower() in (".png", ".svg"), "plot.out",
             f"must end in .png or .svg, got {self.out!r}")
        need(self.ymax >= 0, "plot.ymax", "must be 0 (automatic) or more")
        need(200 <= self.width <= 10000 and 200 <= self.height <= 10000, "plot.width",
             "width and height must be between 200 and 10000 pixels")
        need(20 <= self.dpi <= 1000, "plot.dpi", "must be between 20 and 1000")


@dataclass
class PlotSettings(Settings):
    plot: PlotConfig = field(default_factory=PlotConfig)


# --------------------------------------------------------------------------- reading the input


@dataclass
class Run:
    """One run directory, read: its evaluation and training records and its tokens per optimizer step."""
    path: Path
    label: str
    evals: list[dict[str, Any]]
    trains: list[dict[str, Any]]
    tokens_per_step: int | None  # None without a config.toml
    curve: Curve


def tokens_per_step(run_dir: Path) -> int | None:
    """batch_size x block_size x gradient_accumulation_steps from the run's resolved config (TOML: data)."""
    path = run_dir / "config.toml"
    if not path.is_file():
        return None
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is not valid TOML; it should be the config train.py saved for the run") from None
    t, m = cfg.get("train", {}), cfg.get("model", {})
    return (t.get("batch_size", TrainConfig.batch_size) * m.get("block_size", default_model().block_size)
            * t.get("gradient_accumulation_steps", TrainConfig.gradient_accumulation_steps))


def read_run(run_dir: Path, label: str) -> Run:
    path = run_dir / METRICS
    if not path.is_file():
        raise UserError(f"{run_dir} has no {METRICS}, so it is not a run directory; give the train.out_dir of a run")
    records = read_records(path)
    evals = evaluations(records)
    if not evals:
        what = "is empty" if not records else "has no evaluation yet"
        raise UserError(f"{path} {what}; plot the run once it has evaluated (train.py evaluates at step 0)")
    return Run(run_dir, label, evals, [r for r in records if "lr" in r], tokens_per_step(run_dir), analyse(evals))


def unique_labels(paths: list[Path]) -> list[str]:
    """Each directory's name; where two share one, as many parent directories as tell them apart."""
    parts = [p.resolve().parts for p in paths]
    distinct = list(dict.fromkeys(parts))
    names = {}
    for p in distinct:
        n = 1
        while n < len(p) and any(q != p and q[-n:] == p[-n:] for q in distinct):
            n += 1
        names[p] = Path(*p[-n:]).as_posix()
    seen: dict[str, int] = {}  # the same directory given twice
    out = []
    for p in parts:
        seen[names[p]] = seen.get(names[p], 0) + 1
        out.append(names[p] if seen[names[p]] == 1 else f"{names[p]} ({seen[names[p]]})")
    return out


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


# --------------------------------------------------------------------------- drawing


@dataclass
class Series:
    """One line as drawn: which panel, which run, what it shows, and its points."""
    panel: str  # 'bpb-time', 'bpb-tokens', 'lr-time', 'lr-tokens'
    label: str  # the run's label
    kind: str  # 'val', 'train', 'lr'
    x: list[float]
    y: list[float]


@dataclass
class Spread:
    """One variant at one budget in a race chart: the median of its seeds and their range."""
    budget_s: float
    variant: str
    median: float
    lo: float
    hi: float
    seeds: int


def matplotlib_figure(cfg: PlotConfig):
    """A bare Figure of the configured size; the one place matplotlib is imported."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(INSTALL) from None
    return Figure(figsize=(cfg.width / cfg.dpi, cfg.height / cfg.dpi), dpi=cfg.dpi, layout="constrained")


def time_unit(seconds: float) -> tuple[float, str]:
    """Seconds for short runs, minutes or hours for long ones, so the ticks are round numbers."""
    if seconds > 3 * 3600:
        return 3600.0, "h"
    if seconds > 1200:
        return 60.0, "min"
    return 1.0, "s"


def run_colors(n: int) -> list:
    from matplotlib import colormaps
    palette = colormaps["tab10" if n <= 10 else "tab20"].colors
    return [palette[i % len(palette)] for i in range(n)]


def bpb_limits(runs: list[Run], cfg: PlotConfig) -> tuple[float, float]:
    """The bits-per-byte axis: from below the lowest point to above the highest after step 0 (the
    untrained model's evaluation, often several times the rest, would squash every curve flat)."""
    keys = ["val_bpb"] + ["train_bpb"] * cfg.train
    all_ = [r[k] for run in runs for r in run.evals for k in keys if r.get(k) is not None]
    later = [r[k] for run in runs for r in (run.evals[1:] if len(run.evals) > 1 else run.evals)
             for k in keys if r.get(k) is not None]
    lo, hi = min(all_), cfg.ymax or max(later)
    if cfg.log_y:
        return lo / 1.03, hi * 1.03
    pad = 0.04 * (hi - lo) or 0.05 * hi or 0.1
    return lo - pad, hi + pad


def draw_runs(runs: list[Run], cfg: PlotConfig):
    """The curves of ``runs``; returns (the Figure, the Series drawn)."""
    fig = matplotlib_figure(cfg)  # first: without matplotlib, the one line that says how to install it
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    axes_x = ["time", "tokens"] if cfg.x == "both" else [cfg.x]
    missing = [run.label for run in runs if run.tokens_per_step is None]
    if "tokens" in axes_x and missing:
        raise UserError(f"run {missing[0]} has no config.toml, so its tokens seen are unknown; "
                        "plot it against time with --plot.x=time")
    grid = fig.add_gridspec(2, len(axes_x), height_ratios=[3, 1])
    colors = run_colors(len(runs))
    unit, unit_name = time_unit(max(r["train_seconds"] for run in runs for r in run.evals))
    series: list[Series] = []
    bottom, top = bpb_limits(runs, cfg)
    peaks = [max(r["lr"] for r in run.trains) for run in runs if run.trains]
    lr_log = len(peaks) > 1 and max(peaks) > LR_LOG_RATIO * min(peaks)  # else the smaller schedule lies flat
    for col, xname in enumerate(axes_x):
        ax = fig.add_subplot(grid[0, col])
        ax_lr = fig.add_subplot(grid[1, col], sharex=ax)

        def xs(records: list[dict[str, Any]], run: Run) -> list[float]:
            if xname == "time":
                return [r["train_seconds"] / unit for r in records]
            return [r["step"] * run.tokens_per_step for r in records]

        for run, color in zip(runs, colors):
            pieces = [("val", ax, run.evals, "val_bpb", dict(lw=1.8)),
                      ("lr", ax_lr, run.trains, "lr", dict(lw=1.2))]
            if cfg.train:
                pieces.append(("train", ax, [r for r in run.evals if r.get("train_bpb") is not None], "train_bpb",
                               dict(lw=1.0, ls="--", alpha=0.8)))
            for kind, target, records, key, style in pieces:
                if not records:
                    continue
                s = Series(f"{'lr' if kind == 'lr' else 'bpb'}-{xname}", run.label, kind, xs(records, run),
                           [r[key] for r in records])
                target.plot(s.x, s.y, color=color, gid=f"{kind}:{run.label}", **style)
                series.append(s)
            best = next(r for r in run.evals if r["step"] == run.curve.best_step)
            ax.plot(xs([best], run), [best["val_bpb"]], "o", color=color, ms=5, gid=f"best:{run.label}")
        if cfg.log_y:
            ax.set_yscale("log")
        ax.set_ylim(bottom, top)
        ax.set_title(f"against {'training time' if xname == 'time' else 'tokens seen'}", fontsize=10)
        ax.tick_params(labelbottom=False)
        ax_lr.set_xlabel(f"training time ({unit_name})" if xname == "time" else "tokens seen")
        if xname == "tokens":
            ax_lr.xaxis.set_major_formatter(EngFormatter(sep=""))
        if lr_log:
            ax_lr.set_yscale("log")
        else:
            ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if col == 0:
            ax.set_ylabel("bits per byte")
            ax_lr.set_ylabel("learning rate")
        for a in (ax, ax_lr):
            a.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, lw=1.8, label=run.label) for run, c in zip(runs, colors)]
    handles += [Line2D([], [], color="0.35", lw=1.8, label="val"),
                Line2D([], [], color="0.35", lw=1.0, ls="--", label="train")] * cfg.train
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8,
               frameon=False)  # below the panels: it never hides a curve
    if cfg.title:
        fig.suptitle(cfg.title)
    return fig, series


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


def save(fig, out: Path, dpi: int) -> None:
    """PNG (quantized to a 256-colour palette: the lines lose nothing and the file a half or more) or
    SVG (text as text); no timestamp or version is written, so the same figures give the same file."""
    import matplotlib

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".svg":
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "smallgpt"}):
            fig.savefig(out, format="svg", dpi=dpi, metadata={"Date": None, "Creator": None})
        return
    from PIL import Image  # matplotlib's own dependency

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(256).save(out, format="PNG", optimize=True)


# --------------------------------------------------------------------------- the command


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(what parse_args reads: at most one CONFIG.toml and the --settings, the RUN / race.json paths)."""
    settings = [a for a in argv if a.startswith("-") or (a.endswith(".toml") and Path(a).is_file())]
    return settings, [a for a in argv if a not in settings]


def plot(argv: list[str]) -> Path:
    settings, targets = split_argv(argv)
    cfg = parse_args(settings, PlotSettings, "plot.py", SUMMARY).plot
    if not targets:
        raise UserError("nothing to plot: give run directories (python plot.py out) or a race.json")
    paths = [Path(t) for t in targets]
    for p in paths:
        if not p.exists():
            raise UserError(f"{p} not found; give a run directory (train.out_dir) or a race.json of tools/race.py")
    dirs = [p for p in paths if p.is_dir()]
    if dirs and len(dirs) < len(paths):
        raise UserError("give either run directories or race.json files, not both")

    if not dirs:
        results: dict[str, dict[str, Any]] = {}
        for p in paths:
            race = read_race(p)
            if race is None:
                raise UserError(f"{p} is neither a run directory nor a race.json written by tools/race.py")
            twice = [key for key in race if key in results]
            if twice:
                raise UserError(f"{p} repeats {twice[0]} of an earlier race.json; give each budget once")
            results.update(race)
        out = Path(cfg.out) if cfg.out else paths[0].with_suffix(".png")
        fig, _ = draw_race(results, cfg)
    else:
        labels = cfg.labels or unique_labels(dirs)
        if len(labels) != len(dirs):
            raise UserError(f"--plot.labels gives {len(labels)} labels for {len(dirs)} run{'s' * (len(dirs) != 1)}; "
                            "give one per run")
        runs = [read_run(p, label) for p, label in zip(dirs, labels)]
        out = Path(cfg.out) if cfg.out else (dirs[0] / "plot.png" if len(dirs) == 1 else Path("plot.png"))
        fig, _ = draw_runs(runs, cfg)
        for run in runs:
            print(f"{run.label}: {run.curve.describe()}")
    save(fig, out, cfg.dpi)
    return out


def main(argv: list[str]) -> int:
    print(plot(argv))
    return 0


if __name__ == "__main__":
    run_main(main)
