"""Runs as pictures: the learning curves of run directories, drawn with matplotlib (optional).

Each run directory's ``metrics.jsonl`` gives validation bits per byte (solid) and train bits per byte
(dashed, from the evaluations that measured it), drawn against training time (evaluation and
checkpoints excluded, as train.py counts it) and against tokens seen (the step times the run's tokens
per step, batch_size x block_size x gradient_accumulation_steps, read from its ``config.toml``), with
the learning rate on a panel of its own below (logarithmic when the runs' peaks differ by more than
LR_LOG_RATIO).  Several runs are overlaid, one colour each, labelled by directory name.  Bits per
byte, not loss, so runs with different tokenizers compare (a byte-level model and a BPE model of the
same text meet on one axis).  The best evaluation of each run is marked.

matplotlib is an optional dependency: the rest of the project never imports it, and this module only
once the input has been read (:func:`matplotlib_figure`).  It draws on a bare
``matplotlib.figure.Figure`` (the Agg renderer, no display, no global pyplot state); :func:`save`
writes PNG, or SVG for a name ending in .svg.  tools/race.py draws its chart with the same pieces.
"""
from __future__ import annotations

import io
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model import GPTConfig
from smallgpt.cli import need
from smallgpt.config import TrainConfig
from smallgpt.curves import METRICS, Curve, analyse, evaluations, read_records
from smallgpt.errors import UserError

INSTALL = "drawing needs matplotlib, which is not installed: pip install matplotlib"
X_AXES = ("time", "tokens", "both")
LR_LOG_RATIO = 4.0  # runs whose peak learning rates differ more than this share a logarithmic lr axis


@dataclass
class PlotConfig:
    out: str = ""  # image to write (.png, or .svg); empty: plot.png in the run directory (several runs: here)
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


# --------------------------------------------------------------------------- reading runs


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
    return (t.get("batch_size", TrainConfig.batch_size) * m.get("block_size", GPTConfig.block_size)
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


# --------------------------------------------------------------------------- drawing


@dataclass
class Series:
    """One line as drawn: which panel, which run, what it shows, and its points."""
    panel: str  # 'bpb-time', 'bpb-tokens', 'lr-time', 'lr-tokens'
    label: str  # the run's label
    kind: str  # 'val', 'train', 'lr'
    x: list[float]
    y: list[float]


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
