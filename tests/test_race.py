"""race.py: every variant is a valid config differing from the recipe, and runs are read correctly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from errors import UserError
from tools import race
from config import parse_args

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
