"""Runs as pictures: ``python plot.py RUN [RUN ...] [--plot.key=value ...]``.

Each RUN is a run directory (``train.out_dir``); its learning curves (bits per byte against training
time and against tokens seen, the learning rate below) are drawn overlaid, one colour each, and each
run's verdict (still improving, flattened, overfitting: ``smallgpt/curves.py``) is printed.  The
image's path is the last line on stdout.  Drawing is ``smallgpt/plots.py``; it needs matplotlib.
A race of tools/race.py is drawn by ``python -m tools.race --race.chart=race.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smallgpt.cli import Settings, parse_args, run_main
from smallgpt.errors import UserError
from smallgpt.plots import PlotConfig, draw_runs, read_run, save, unique_labels

SUMMARY = """Draw runs as curves: python plot.py RUN [RUN ...], each RUN a run directory (train.out_dir).
Writes a PNG (or an SVG when --plot.out ends in .svg), 1000 x 560 pixels by default (a few tens of KB),
and prints its path last.  Needs matplotlib: pip install matplotlib."""


@dataclass
class PlotSettings(Settings):
    plot: PlotConfig = field(default_factory=PlotConfig)


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(what parse_args reads: at most one CONFIG.toml and the --settings, the RUN paths)."""
    settings = [a for a in argv if a.startswith("-") or (a.endswith(".toml") and Path(a).is_file())]
    return settings, [a for a in argv if a not in settings]


def plot(argv: list[str]) -> Path:
    settings, targets = split_argv(argv)
    cfg = parse_args(settings, PlotSettings, "plot.py", SUMMARY).plot
    if not targets:
        raise UserError("nothing to plot: give run directories (python plot.py out)")
    dirs = [Path(t) for t in targets]
    for p in dirs:
        if p.suffix == ".json" and p.is_file():
            raise UserError(f"{p} is a file, not a run directory; a race.json is drawn by "
                            f"python -m tools.race --race.chart={p}")
        if not p.is_dir():
            raise UserError(f"{p} not found; give a run directory (train.out_dir)")
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
