"""config.py: each script reads its own sections, refuses others' on the command line, and skips them in
a shared TOML file; typed values and one-line errors."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from smallgpt.cli import PROJECT_SECTIONS, parse_args
from smallgpt.config import Config
from smallgpt.errors import UserError
from prepare import PrepareSettings
from sample import SampleSettings
from tools.bench import BenchSettings
from tools.race import RaceSettings

ROOT = Path(__file__).resolve().parents[1]


def test_a_section_the_script_does_not_read_is_refused_on_the_command_line():
    with pytest.raises(UserError, match=r"sample.py does not read \[bench\] settings; it reads \[sample\], \[train\]"):
        parse_args(["--bench.repeats=3"], SampleSettings, "sample.py")
    with pytest.raises(UserError, match=r"has no section \[trian\]"):
        parse_args(["--trian.max_iters=3"], Config, "train.py")
    with pytest.raises(UserError, match=r"does not read \[sample\]"):
        parse_args(["--sample.seed=3"], PrepareSettings, "prepare.py")


def test_other_scripts_sections_in_a_file_are_skipped_and_unknown_ones_refused(tmp_path):
    shared = tmp_path / "exp.toml"
    shared.write_text('[data]\nvocab_size = 300\n[sample]\nseed = 7\n[bench]\nrepeats = 9\n[race]\nseeds = 2\n')
    assert parse_args([str(shared)], SampleSettings, "sample.py").sample.seed == 7
    assert parse_args([str(shared)], Config, "train.py").data.vocab_size == 300
    assert parse_args([str(shared)], BenchSettings, "bench.py").bench.repeats == 9
    assert parse_args([str(shared)], RaceSettings, "race.py").race.seeds == 2
    typo = tmp_path / "typo.toml"
    typo.write_text("[trian]\nmax_iters = 3\n")
    with pytest.raises(UserError, match=r"unknown section \[trian\]"):
        parse_args([str(typo)], Config, "train.py")
    bad_key = tmp_path / "key.toml"
    bad_key.write_text("[train]\nmax_iter = 3\n")
    with pytest.raises(UserError, match="did you mean train.max_iters"):
        parse_args([str(bad_key)], Config, "train.py")


def test_every_shipped_config_is_valid_for_every_script_that_takes_it():
    for path in sorted((ROOT / "config").glob("*.toml")):
        for settings, prog in ((Config, "train.py"), (SampleSettings, "sample.py"), (PrepareSettings, "prepare.py"),
                               (BenchSettings, "bench.py"), (RaceSettings, "race.py")):
            parse_args([str(path)], settings, prog)
        assert set(tomllib.loads(path.read_text())) <= set(PROJECT_SECTIONS), path.name


def test_a_run_stores_exactly_the_sections_train_reads():
    saved = tomllib.loads(Config().to_toml())
    assert list(saved) == ["data", "model", "train", "sample"]
    assert "vocab_size" not in saved["model"]  # it comes from the dataset
    assert Config.from_dict(saved).to_dict() == Config().to_dict()


@pytest.mark.parametrize("arg, message", [
    ("--train.max_iters=ten", "train.max_iters must be a whole number"),
    ("--train.compile=maybe", "train.compile: must be 'auto', 'true' or 'false'"),
    ("--model.n_head=5", r"\[model\] n_embd must be divisible by n_head"),
    ("--train.resume=maybe", "train.resume must be true or false"),
])
def test_typed_values(arg, message):
    with pytest.raises(UserError, match=message):
        parse_args([arg], Config, "train.py")
    cfg = parse_args(["--train.resume=true", "--data.source=a,b.txt", "--train.max_iters=1_000"], Config, "train.py")
    assert cfg.train.resume is True and cfg.data.sources == ["a,b.txt"] and cfg.train.max_iters == 1000


def test_foreign_section_from_the_command_line_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--bench.repeats=3"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "does not read [bench]" in done.stderr


@pytest.mark.parametrize("seconds, dropout", [(60, 0.0), (300, 0.2), (600, 0.2)])
def test_the_text_recipe_adapts_to_its_budget(seconds, dropout):
    from smallgpt.recipes import apply_budget_rule
    cfg = parse_args([str(ROOT / "config" / "text-cpu.toml"), f"--train.max_seconds={seconds}"], Config, "train.py")
    line = apply_budget_rule(cfg)
    assert line.startswith(f"budget rule 'text' for {seconds} s")
    assert (cfg.train.optimizer, cfg.model.dropout, cfg.train.average) == ("muon", dropout, "ema")
    assert cfg.train.learning_rate == 1e-2


def test_the_command_line_wins_over_the_budget_rule_group_by_group(monkeypatch):
    from smallgpt import recipes
    adamw = {"train.optimizer": "adamw", "train.learning_rate": 3e-3, "train.min_lr": 3e-4}
    monkeypatch.setitem(recipes.BUDGET_RULES, "text", [(150.0, [{"model.dropout": 0.0}]), (float("inf"), [adamw])])
    cfg = parse_args([str(ROOT / "config" / "text-cpu.toml"), "--train.max_seconds=600", "--train.optimizer=muon"],
                     Config, "train.py")
    assert "command line's train.optimizer kept" in recipes.apply_budget_rule(cfg)
    assert (cfg.train.optimizer, cfg.train.learning_rate) == ("muon", 1e-2)  # not AdamW's rate for Muon's run
    cfg = parse_args([str(ROOT / "config" / "text-cpu.toml"), "--train.max_seconds=60", "--model.dropout=0.1"],
                     Config, "train.py")
    recipes.apply_budget_rule(cfg)
    assert cfg.model.dropout == 0.1
    cfg = parse_args([str(ROOT / "config" / "text-cpu.toml"), "--train.max_seconds=0"], Config, "train.py")
    assert "no time budget" in recipes.apply_budget_rule(cfg) and cfg.model.dropout == 0.2
    assert recipes.apply_budget_rule(Config()) is None
