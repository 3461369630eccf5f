"""race.py: every variant is a valid config differing from the recipe, and runs are read correctly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import png_size
from smallgpt.cli import parse_args
from smallgpt.errors import UserError
from smallgpt.plots import PlotConfig
from tools import race

RECIPE = str(Path(__file__).resolve().parents[1] / "config" / "text-cpu.toml")


def test_every_variant_is_a_valid_config_that_differs_from_the_recipe():
    recipe = parse_args([RECIPE], race.RaceSettings, "race.py")
    for name, settings in race.variants(recipe).items():
        cfg = parse_args([RECIPE, *race.overrides(settings)], race.RaceSettings, "race.py")
        changed = {f"{s}.{k}" for s in ("data", "model", "train")
                   for k, v in vars(getattr(cfg, s)).items() if getattr(getattr(recipe, s), k) != v}
        assert (changed == set()) == (name == "recipe"), name
        assert changed <= set(settings), name  # only what the variant names


def test_read_run_takes_last_eval_and_first_time_at_target(tmp_path):
    records = [
        {"step": 0, "train_seconds": 0.0, "val_loss": 7.0, "val_bpb": 3.0, "train_bpb": 3.0},
        {"step": 10, "loss": 5.0, "lr": 1e-3, "tokens_per_s": 100.0, "train_seconds": 1.0},
        {"step": 10, "train_seconds": 1.0, "val_loss": 5.0, "val_bpb": 2.1, "train_bpb": 2.0},
        {"step": 20, "loss": 4.0, "lr": 1e-3, "tokens_per_s": 300.0, "train_seconds": 2.0},
        {"step": 20, "train_seconds": 2.0, "val_loss": 5.2, "val_bpb": 2.2, "train_bpb": 1.9},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    got = race.read_run(tmp_path, target=2.205)
    assert got["val_bpb"] == 2.2 and got["best_val_bpb"] == 2.1 and got["steps"] == 20
    assert got["seconds_to_target"] == 1.0 and got["tokens_per_s"] == 200.0
    assert race.read_run(tmp_path, target=1.0)["seconds_to_target"] is None


def test_unknown_variant_is_a_users_error():
    with pytest.raises(UserError, match="unknown nope"):
        race.main([RECIPE, "--race.variants=recipe,nope"])


def test_a_tiny_race_two_at_a_time_writes_every_run(tmp_path, capsys):
    """End to end on a tiny corpus: two variants, one seed, two runs at once, a 1-second budget."""
    corpus = tmp_path / "text.txt"
    corpus.write_text("It is a truth universally acknowledged, that a single man in possession "
                      "of a good fortune, must be in want of a wife.\n" * 200)
    out = tmp_path / "race.json"
    race.main([RECIPE, f"--data.source={corpus}", "--data.vocab_size=300", f"--data.dir={tmp_path / 'data'}",
               "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2", "--model.block_size=16",
               "--train.batch_size=4", "--train.eval_iters=1", "--race.budgets=1", "--race.seeds=1",
               "--race.variants=recipe,qk_norm", "--race.jobs=2", "--race.eval_interval=5",
               f"--race.out_dir={tmp_path / 'runs'}", f"--race.json={out}"])
    got = json.loads(out.read_text())
    assert set(got) == {"recipe@1", "qk_norm@1"}
    assert all(r["threads"] >= 1 and r["steps"] > 0 and r["val_bpb"] > 0 for r in got.values())
    assert (tmp_path / "runs" / "qk_norm-1s-seed0" / "metrics.jsonl").exists()
    table = capsys.readouterr().out
    assert "| recipe: — |" in table and "| qk_norm: `model.qk_norm=false` |" in table


def test_tuning_the_budget_rule_on_several_corpora_against_a_baseline(tmp_path, capsys, monkeypatch):
    """Two corpora, two candidate rules (which agree at 1 s: run once), with and without the observed EMA,
    each a ratio to a tiny baseline recipe; the pick and its table; a second race reuses the finished runs."""
    monkeypatch.chdir(tmp_path)  # the corpora's datasets go to data/ here
    corpora = []
    for name, line in (("prose", "It is a truth universally acknowledged, that a single man must want a wife.\n"),
                       ("code", "def f(x):\n    return [i * x for i in range(10) if i % 2]\n")):
        (tmp_path / f"{name}.txt").write_text(line * 300)
        corpora.append(str(tmp_path / f"{name}.txt"))
    baseline = tmp_path / "baseline.toml"
    baseline.write_text('[data]\ntokenizer = "bytes"\n[model]\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\n'
                        '[train]\nmax_iters = 6\nmax_seconds = 0.0\neval_interval = 3\neval_iters = 1\nbatch_size = 4\n'
                        f'compile = "false"\nout_dir = "{tmp_path / "unused"}"\n')
    out = tmp_path / "race.json"
    args = [RECIPE, "--data.vocab_size=300", "--model.n_layer=1", "--model.n_embd=32", "--model.n_head=2",
            "--model.block_size=16", "--train.batch_size=4", "--train.eval_iters=1", "--race.budgets=1",
            "--race.seeds=1", f"--race.corpora={','.join(corpora)}", "--race.rules=text,muon", "--race.jobs=2",
            f"--race.baseline={baseline}", "--race.eval_interval=10", "--race.eval_early=2",
            "--race.average=ema", f"--race.out_dir={tmp_path / 'runs'}", f"--race.json={out}"]
    race.main(args)
    got = json.loads(out.read_text())
    assert set(got["baseline"]) == {"prose", "code"} and all(b["val_bpb"] > 0 for b in got["baseline"].values())
    assert set(got["cells"]) == {f"{c}|1|{n}" for c in ("prose", "code") for n in ("text", "muon", "text+ema", "muon+ema")}
    cell = got["cells"]["prose|1|muon"]
    assert cell["ratio"] == pytest.approx(cell["val_bpb"] / got["baseline"]["prose"]["val_bpb"])
    assert got["cells"]["prose|1|text"]["val_bpb"] == cell["val_bpb"]  # the two rules agree at 1 s: one run
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["code-1s-dropout=0.0-seed0", "code-baseline-seed0", "prose-1s-dropout=0.0-seed0",
                    "prose-baseline-seed0"]
    assert got["picks"]["1"]["chosen"] in {"text", "muon", "text+ema", "muon+ema"}
    said = capsys.readouterr()
    assert "**1 s** (median of 1 seeds; chosen:" in said.out and "| `text+ema` = `muon+ema` |" in said.out
    race.main(args)
    assert json.loads(out.read_text())["cells"] == got["cells"] and capsys.readouterr().err.count("reused") == 4


def test_the_pick_keeps_the_fast_start_and_the_tolerance():
    """A candidate that ends best but reaches the baseline's result 4x later is passed over for one within
    0.01 bpb that starts fast; one that loses more than 0.01 on a corpus is passed over too."""
    def cell(corpus, rule, bpb, hit):
        return {"corpus": corpus, "budget_s": 600.0, "rule": rule, "average": "", "settings": {}, "val_bpb": bpb,
                "seeds": [bpb], "seconds_to_baseline": hit, "ratio": bpb / 2.0}
    cells = {f"{c}|600|{r}": cell(c, r, bpb, hit) for c, r, bpb, hit in [
        ("a", "slow", 1.500, 40.0), ("b", "slow", 1.800, 30.0),
        ("a", "fast", 1.506, 10.0), ("b", "fast", 1.805, 12.0),
        ("a", "lossy", 1.497, 10.0), ("b", "lossy", 1.830, 10.0)]}
    got = race.pick(cells, 600.0)
    assert got["chosen"] == "fast" and got["within_tolerance"]
    assert got["scores"]["slow"]["start_slower"] == pytest.approx(4.0)
    assert got["scores"]["lossy"]["worst_loss"] == pytest.approx(0.030)
    assert race.pick(cells, 600.0, slower=5.0)["chosen"] == "slow"  # by the loss alone AdamW's kind would win


# --------------------------------------------------------------------------- the chart


def synthetic_race(path: Path, budget: float, seeds: int) -> dict:
    """tools/race.py's layout: 'variant@budget' -> median figures and the per-seed runs."""
    base = {"recipe": 1.80, "dropout": 1.70, "tokenizer=bytes": 2.60}
    settings = {"recipe": {}, "dropout": {"model.dropout": 0.0}, "tokenizer=bytes": {"data.tokenizer": "bytes"}}
    results = {}
    for name, v in base.items():
        runs = [{"val_bpb": v + 0.01 * (i - 1) * (budget / 60), "steps": 100} for i in range(seeds)]
        vals = sorted(r["val_bpb"] for r in runs)
        results[f"{name}@{budget:g}"] = {"variant": name, "budget_s": budget, "settings": settings[name],
                                         "threads": 1, "runs": runs, "val_bpb": vals[len(vals) // 2]}
    path.write_text(json.dumps(results))
    return results


def test_race_chart_draws_each_variant_with_its_seed_spread(tmp_path, capsys):
    r60 = synthetic_race(tmp_path / "race.json", 60.0, seeds=3)
    r600 = synthetic_race(tmp_path / "race-600.json", 600.0, seeds=1)
    del r600["dropout@600"]  # a variant not run at one budget
    (tmp_path / "race-600.json").write_text(json.dumps(r600))
    assert race.main([f"--race.chart={tmp_path / 'race.json'},{tmp_path / 'race-600.json'}"]) == 0
    out = tmp_path / "race.png"  # beside the (first) race.json
    assert capsys.readouterr().out.splitlines()[-1] == str(out)
    assert png_size(out) == (1000, 560) and out.stat().st_size < 100_000

    fig, spreads = race.draw_race({**r60, **r600}, PlotConfig())
    got = {(s.variant, s.budget_s): (s.median, s.lo, s.hi, s.seeds) for s in spreads}
    assert set(got) == {("recipe", 60), ("dropout", 60), ("tokenizer=bytes", 60), ("recipe", 600),
                        ("tokenizer=bytes", 600)}
    assert got[("dropout", 60)] == pytest.approx((1.70, 1.69, 1.71, 3))
    assert got[("recipe", 600)] == pytest.approx((1.70, 1.70, 1.70, 1))
    assert len(fig.axes) == 2  # one panel per budget
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["recipe", "dropout=0.0", "tokenizer=bytes"]
    medians = [line.get_gid() for line in fig.axes[1].get_lines() if (line.get_gid() or "").startswith("median:")]
    assert sorted(medians) == ["median:recipe", "median:tokenizer=bytes"]

    with pytest.raises(UserError, match="repeats recipe@60"):
        race.chart([str(tmp_path / "race.json"), str(tmp_path / "race.json")], PlotConfig())
    with pytest.raises(UserError, match="is not a race.json"):
        race.chart([str(tmp_path / "race.json"), str(tmp_path)], PlotConfig())
