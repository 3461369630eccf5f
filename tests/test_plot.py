"""plot.py, curves.py and the TensorBoard log: pictures of tiny runs and of a synthetic race, checked by the
data drawn (not pixels); the learning-curve verdicts on synthetic records; TensorBoard's event files read
back, across a resume; the one-line errors (no metrics, no matplotlib, no tensorboard)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import plot
import train
from helpers import ENV, ROOT, argv, png_size, records, write_corpus
from smallgpt import curves, loggers
from smallgpt.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("corpus")
    return {"data.source": str(write_corpus(tmp / "corpus.txt", 20_000, seed=3)), "data.tokenizer": "bytes",
            "data.dir": str(tmp / "bytes")}


@pytest.fixture(scope="module")
def two_runs(data, tmp_path_factory) -> list[Path]:
    """Two tiny runs that share a directory name (a/run, b/run), of different lengths and batch sizes."""
    tmp = tmp_path_factory.mktemp("runs")
    a, b = tmp / "a" / "run", tmp / "b" / "run"
    assert train.main(argv(data, a, train__max_iters=20)) == 0
    assert train.main(argv(data, b, train__max_iters=30, train__batch_size=2, train__gradient_accumulation_steps=2)) == 0
    return [a, b]


# --------------------------------------------------------------------------- runs


def test_plot_of_two_runs_draws_one_line_per_run_and_writes_a_small_png(two_runs, tmp_path, capsys):
    out = tmp_path / "docs" / "curves.png"
    assert plot.main([*map(str, two_runs), f"--plot.out={out}"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == str(out)  # the path is the last line on stdout
    assert any(line.startswith("a/run: best val") for line in printed)
    assert png_size(out) == (1000, 560)  # the size --help states
    assert out.stat().st_size < 100_000

    cfg = plot.PlotConfig()
    runs = [plot.read_run(p, label) for p, label in zip(two_runs, plot.unique_labels(two_runs))]
    assert [r.label for r in runs] == ["a/run", "b/run"]
    assert [r.tokens_per_step for r in runs] == [4 * 32, 2 * 32 * 2]
    fig, series = plot.draw_runs(runs, cfg)
    for panel in ("bpb-time", "bpb-tokens", "lr-time", "lr-tokens"):
        kind = "lr" if panel.startswith("lr") else "val"
        assert sorted(s.label for s in series if s.panel == panel and s.kind == kind) == ["a/run", "b/run"]
    for run in runs:
        evals = [r for r in records(run.path) if "val_bpb" in r]
        val_tokens = next(s for s in series if s.panel == "bpb-tokens" and s.kind == "val" and s.label == run.label)
        assert val_tokens.x == [r["step"] * run.tokens_per_step for r in evals]
        assert val_tokens.y == [r["val_bpb"] for r in evals]
        val_time = next(s for s in series if s.panel == "bpb-time" and s.kind == "val" and s.label == run.label)
        assert val_time.x == [r["train_seconds"] for r in evals]  # seconds: a tiny run is short
        lr = next(s for s in series if s.panel == "lr-time" and s.label == run.label)
        assert lr.y == [r["lr"] for r in records(run.path) if "lr" in r]
    # the Figure holds what the series say: per bits-per-byte panel, one val and one train line per run
    bpb_axes = [ax for ax in fig.axes if ax.get_title().startswith("against")]
    assert len(bpb_axes) == 2
    for ax in bpb_axes:
        gids = [line.get_gid() for line in ax.get_lines()]
        assert sorted(g for g in gids if g.startswith("val:")) == ["val:a/run", "val:b/run"]
        assert sorted(g for g in gids if g.startswith("train:")) == ["train:a/run", "train:b/run"]


def test_plot_options_one_axis_labels_and_svg(two_runs, tmp_path):
    cfg = plot.PlotConfig(x="time", train=False, labels=["first", "second"])
    runs = [plot.read_run(p, label) for p, label in zip(two_runs, cfg.labels)]
    fig, series = plot.draw_runs(runs, cfg)
    assert {s.panel for s in series} == {"bpb-time", "lr-time"} and {s.kind for s in series} == {"val", "lr"}
    assert len(fig.axes) == 2 and {s.label for s in series} == {"first", "second"}

    out = tmp_path / "curves.svg"
    assert plot.plot([str(two_runs[0]), f"--plot.out={out}", "--plot.x=tokens", "--plot.log_y=true"]) == out
    assert out.read_text().lstrip().startswith("<?xml") and "<svg" in out.read_text()
    assert plot.plot([str(two_runs[0])]) == two_runs[0] / "plot.png"  # one run: beside its metrics
    with pytest.raises(UserError, match="gives 1 labels for 2 runs"):
        plot.plot([*map(str, two_runs), "--plot.labels=one"])


def test_unique_labels():
    assert plot.unique_labels([Path("x/out"), Path("y/out"), Path("z/other")]) == ["x/out", "y/out", "other"]
    assert plot.unique_labels([Path("/r/out"), Path("/r/out")]) == ["out", "out (2)"]


# --------------------------------------------------------------------------- a race


# --------------------------------------------------------------------------- one line, exit 2


def run_plot(*args: str, hide_matplotlib: bool = False) -> subprocess.CompletedProcess:
    code = ("import sys, runpy; sys.modules['matplotlib'] = None; sys.argv = ['plot.py', *sys.argv[1:]]; "
            "runpy.run_path('plot.py', run_name='__main__')") if hide_matplotlib else None
    cmd = [sys.executable, *(["-c", code] if code else ["plot.py"]), *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)


def test_no_metrics_and_no_matplotlib_are_one_line_and_exit_2(two_runs, tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_plot(str(tmp_path / "empty"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty'} has no metrics.jsonl, so it is not "
                                                "a run directory; give the train.out_dir of a run"]
    done = run_plot(str(two_runs[0]), hide_matplotlib=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "pip install matplotlib" in done.stderr

    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "metrics.jsonl").write_text("")
    (tmp_path / "notes.json").write_text('{"a": 1}')
    for target, message in ((tmp_path / "blank", "metrics.jsonl is empty"),
                            (tmp_path / "notes.json", "is a file, not a run directory; a race.json is drawn by"),
                            (tmp_path / "nowhere", "not found")):
        with pytest.raises(UserError, match=message):
            plot.plot([str(target)])
    with pytest.raises(UserError, match="nothing to plot"):
        plot.plot([])
    with pytest.raises(UserError, match="--plot.out: must end in .png or .svg"):
        plot.plot([str(two_runs[0]), "--plot.out=x.jpg"])


def test_the_core_imports_neither_matplotlib_nor_tensorboard_nor_wandb():
    code = ("import sys, train, plot, sample, prepare, eval, export, smallgpt.curves, smallgpt.loggers; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'tensorboard', 'wandb'}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the learning curve's verdict


def evals(val: list[float], train_bpb: list[float] | None = None) -> list[dict]:
    return [{"step": 10 * i, "train_seconds": float(i), "val_bpb": v,
             **({"train_bpb": train_bpb[i]} if train_bpb else {})} for i, v in enumerate(val)]


def test_curve_verdicts_on_synthetic_records():
    c = curves.analyse(evals([3.0, 2.0, 1.8, 1.7, 1.65]))
    assert (c.state, c.best_bpb, c.best_step, c.best_seconds) == ("still improving", 1.65, 40, 4.0)
    assert c.since_change == pytest.approx(1.65 - 2.0) and "still improving" in c.describe()

    c = curves.analyse(evals([3.0, 2.0, 1.5, 1.499, 1.502, 1.497, 1.503]))
    assert (c.state, c.since_step, c.evaluations) == ("flattened", 20, 4)
    assert "flattened from step 20" in c.describe()

    # val rises from its best for the last 3 evaluations by more than 0.01 while train keeps falling
    c = curves.analyse(evals([3.0, 2.0, 1.5, 1.52, 1.55, 1.6], [3.0, 1.9, 1.4, 1.3, 1.2, 1.1]))
    assert (c.state, c.best_step, c.since_step) == ("overfitting", 20, 20)
    assert c.since_change == pytest.approx(0.1) and c.train_change == pytest.approx(-0.3)
    assert "overfitting since step 20" in c.describe()
    # the same rise with train rising too is no overfitting
    assert curves.analyse(evals([3.0, 2.0, 1.5, 1.52, 1.55, 1.6], [3.0, 1.9, 1.4, 1.45, 1.5, 1.55])).state == "turned up"
    # one bad evaluation among the last three is noise, not a turn
    assert curves.analyse(evals([3.0, 2.0, 1.5, 1.52, 1.60, 1.505], [3, 2, 1.4, 1.3, 1.2, 1.1])).state == "flattened"
    assert curves.analyse(evals([3.0, 2.0, 1.5, 1.52, 1.49])).state == "still improving"
    assert "too few" in curves.analyse(evals([3.0])).describe()
    assert curves.analyse([]) is None


def test_closing_summary_prints_the_curve_and_the_plot_command(data, tmp_path, capsys):
    out = tmp_path / "run"
    train.main(argv(data, out, train__max_iters=20))
    printed = capsys.readouterr().out
    assert "val curve: best val " in printed and " at step 20 " in printed
    assert f"plot it: python plot.py {out}\n" in printed


def test_read_records_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "train_seconds": 0.0, "val_bpb": 3.0}\n{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert [r["step"] for r in curves.read_records(path)] == [0, 1]


# --------------------------------------------------------------------------- TensorBoard


def scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step shown twice"
        out[tag] = {e.step: e.value for e in events}
    return out


def test_tensorboard_holds_the_scalars_once_across_a_resume(data, tmp_path):
    """A run killed after step 20 whose last checkpoint was at step 10 is resumed: TensorBoard shows
    each step once, with the resumed run's values (purge_step), and every field of metrics.jsonl."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    tb = {"train__tensorboard": "true", "train__checkpoint_interval": 100}
    assert train.main(argv(data, out, train__max_iters=10, **tb)) == 0
    step10 = (out / "ckpt.pt").read_bytes()
    assert train.main(argv(data, out, train__max_iters=20, train__resume="true", **tb)) == 0
    (out / "ckpt.pt").write_bytes(step10)  # as if killed after step 20 with the last checkpoint at step 10
    assert train.main(argv(data, out, train__max_iters=30, train__resume="true", **tb)) == 0

    got = scalars(out)
    assert set(got) == set(loggers.TAGS.values())
    assert sorted(got["train/loss"]) == list(range(1, 31))
    assert sorted(got["eval/val_bpb"]) == [0, 10, 20, 30]
    for r in records(out):  # metrics.jsonl, cut back on resume, is the record of the final history
        for key, tag in loggers.TAGS.items():
            if key in r:
                assert got[tag][r["step"]] == pytest.approx(r[key], rel=1e-6), (tag, r["step"])

    # a new run over it (overwrite) starts a fresh log
    assert train.main(argv(data, out, train__max_iters=5, train__overwrite="true", **tb)) == 0
    assert sorted(scalars(out)["train/loss"]) == [1, 2, 3, 4, 5]


def test_tensorboard_missing_is_one_line_before_anything_slow(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    fresh = {**data, "data.dir": str(tmp_path / "never-prepared")}
    with pytest.raises(UserError, match="pip install tensorboard"):
        train.main(argv(fresh, tmp_path / "run", train__tensorboard="true"))
    assert not (tmp_path / "never-prepared").exists() and not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- Weights & Biases


def wandb_records(run_dir: Path) -> list:
    """Every record of the W&B runs in ``run_dir/wandb``, read back from the files offline mode writes:
    a 7-byte header (':W&B', magic, version), then LevelDB log records of 32 KiB blocks, each a protobuf."""
    pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
    out = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        data, pos, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:  # a header never straddles a block: the rest is padding
                pos += 32768 - pos % 32768
                continue
            _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
            if kind == 0:
                break
            if kind in (2, 3):  # the first and middle pieces of a long record
                pending += chunk
                continue
            record = pb.Record()
            record.ParseFromString(pending + chunk)
            out.append(record)
            pending = b""
    return out


def wandb_history(run_dir: Path) -> tuple[set[str], set[str], dict[str, dict[int, float]]]:
    """(run ids, run names, tag -> step -> value) of what the run logged to W&B."""
    ids, names, got = set(), set(), {}
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "run":
            ids.add(r.run.run_id)
            names.add(r.run.display_name)
        elif r.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            for tag, value in items.items():
                if not tag.startswith("_"):
                    got.setdefault(tag, {})[items["_step"]] = value
    return ids, names, got


def test_wandb_offline_logs_the_scalars_once_across_a_resume(data, tmp_path):
    """WANDB_MODE=offline, no network: the run's scalars as metrics.jsonl has them, one W&B run continued by
    the resume, named by --train.wandb_run."""
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    env = {**ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    wb = {"train__wandb_project": "smallgpt-tests", "train__wandb_run": "tiny", "train__checkpoint_interval": 10}
    for settings in ({"train__max_iters": 10}, {"train__max_iters": 20, "train__resume": "true"}):
        done = subprocess.run([sys.executable, "train.py", *argv(data, out, **wb, **settings)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    ids, names, got = wandb_history(out)
    assert len(ids) == 1 and names == {"tiny"}  # the resume continued the same W&B run
    assert set(got) == set(loggers.TAGS.values())
    assert sorted(got["train/loss"]) == list(range(1, 21)) and sorted(got["eval/val_bpb"]) == [0, 10, 20]
    for r in records(out):
        for key, tag in loggers.TAGS.items():
            if key in r:
                assert got[tag][r["step"]] == pytest.approx(r[key], rel=1e-6), (tag, r["step"])


def test_wandb_missing_is_one_line_before_anything_slow(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    fresh = {**data, "data.dir": str(tmp_path / "never-prepared")}
    with pytest.raises(UserError, match="pip install wandb"):
        train.main(argv(fresh, tmp_path / "run", train__wandb_project="p"))
    assert not (tmp_path / "never-prepared").exists() and not (tmp_path / "run").exists()
