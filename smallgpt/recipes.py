"""Measured recipes: what a run should change with its budget of training time.

``train.budget_rule`` names a rule here; :func:`apply_budget_rule` sets what it chooses for
``train.max_seconds`` before the run starts, and the start of the run prints it.  A rule is data, one
row per range of budgets, so the measurements that chose it (docs/cpu-race.md) can be checked against
it line by line, and ``tools/race.py`` can run every candidate on the same corpora.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smallgpt.cli import toml_value

if TYPE_CHECKING:
    from smallgpt.config import Config

Rule = list[tuple[float, list[dict[str, Any]]]]  # [(budgets below this many seconds, groups of settings)]

# What a recipe should change with its time budget: rule -> [(budgets below this many seconds, settings)],
# the first row that fits applies.  'text' is config/text-cpu.toml's, chosen on four corpora of different kinds
# (docs/cpu-race.md; tools/race.py --race.rules=...): in a minute or two there is no time to overfit, and
# dropout only slows a CPU down; from five minutes on the recipe as written (Muon, dropout 0.2).  AdamW from
# 450 s (the rule of 2026-12-01, chosen on one novel) ended within 0.01 bpb of Muon at ten minutes but reached
# nanoGPT's result 4x later, and a long budget must not make the early curve worse.
# A row holds groups of settings that go together: a group applies whole, or (if the command line gave any
# of its settings) not at all.
BUDGET_RULES: dict[str, Rule] = {
    "text": [
        (150.0, [{"model.dropout": 0.0}]),
        (float("inf"), []),
    ],
}


def rule_groups(rule: Rule, seconds: float) -> list[dict[str, Any]]:
    """The groups of settings ``rule`` chooses for a budget of ``seconds``: the first row that fits."""
    return next(groups for below, groups in rule if seconds < below)


def apply_budget_rule(cfg: Config) -> str | None:
    """Set what ``train.budget_rule`` chooses for ``train.max_seconds`` (but what the command line gave);
    returns the line that says so, or None when there is no rule."""
    rule = cfg.train.budget_rule
    if not rule:
        return None
    seconds = cfg.train.max_seconds
    if seconds <= 0:
        return f"budget rule '{rule}': no time budget (train.max_seconds=0), so the recipe as written"
    groups = rule_groups(BUDGET_RULES[rule], seconds)
    chosen, kept = {}, []
    for group in groups:
        given = [k for k in group if k in cfg.on_command_line]
        if given:
            kept += given
        else:
            chosen.update(group)
    for key, value in chosen.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    cfg.validate()
    what = ", ".join(f"{k}={toml_value(v)}" for k, v in chosen.items()) or "the recipe as written"
    return (f"budget rule '{rule}' for {seconds:g} s: {what}"
            + (f" (the command line's {', '.join(kept)} kept, with what goes with it)" if kept else ""))


NO_DROPOUT = {"model.dropout": 0.0}
# The rules the text recipe's was chosen among, on several corpora (tools/race.py --race.rules=...; each with and
# without weight averaging: docs/cpu-race.md).
CANDIDATE_RULES: dict[str, Rule] = {
    "written": [(float("inf"), [])],  # config/text-cpu.toml as written at every budget (no rule)
    "text": BUDGET_RULES["text"],
    "adamw450": [(150.0, [NO_DROPOUT]), (450.0, []),  # the rule of 2026-12-01
                 (float("inf"), [{"train.optimizer": "adamw", "train.learning_rate": 3e-3, "train.min_lr": 3e-4}])],
    "muon": [(150.0, [NO_DROPOUT]), (float("inf"), [])],  # Muon at every budget
    "muon-decay50": [(150.0, [NO_DROPOUT]), (450.0, []), (float("inf"), [{"train.decay_fraction": 0.5}])],
}
