"""The CPU race: how good a model does each option buy in a fixed budget of training time?

``python tools/race.py [CONFIG.toml] [--race.KEY=VALUE ...]`` trains the config's recipe and one variant
per option, each differing from the recipe in that option alone, for each time budget in
``race.budgets`` and each of ``race.seeds`` seeds, then prints the median val bits per byte of each
(variant, budget) and the training time at which the recipe first reached ``race.target_bpb``.

Each run is ``train.py`` in a subprocess with ``--train.max_seconds`` set, so the schedule ends with
the budget; ``train_seconds`` excludes evaluation and checkpoints, and preparing the corpus happens
once up front and is reported apart.  Example (the README's ablation table):

    python tools/race.py config/text-cpu.toml --data.source=pride-and-prejudice.txt \\
        --race.budgets=60 --race.seeds=3

Runs are sequential by default, so a full table takes variants x budgets x seeds x (budget + ~15 s).
``--race.jobs=2`` runs two at a time with half the cores each (``OMP_NUM_THREADS``): twice the
runs per hour, and every run still gets the same share of the machine, but each is timed on fewer
threads than a lone ``train.py`` would use, so its tokens/s (and bits per byte) are those of a
smaller machine.  Never run a race beside other work: it would time the neighbour.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the core's modules live at the repository's top level

from config import Config, comma_list, need, parse_args, run_main, toml_value  # noqa: E402
from curves import METRICS, evaluations, read_records  # noqa: E402
from errors import UserError  # noqa: E402
from prepare import dataset_dir, prepare  # noqa: E402

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
    """train.py's settings (passed on to every run) and [race]."""
    race: RaceConfig = field(default_factory=RaceConfig)


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
    """The figures as the README's ablation table: one row per variant, a column pair per budget."""
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


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, RaceSettings, "tools/race.py", SUMMARY)
    r = cfg.race
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
    print(f"race: figures in {r.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
