"""Train a GPT: ``python train.py [CONFIG.toml] [--section.key=value ...]``.

With no arguments it prepares the default corpus (the running Python's standard library, if not
prepared yet), trains a small model sized for a laptop CPU for 8 minutes, and prints a sample.  The
same command runs on a GPU (bf16, torch.compile) and on many through ``torchrun``
(DistributedDataParallel), with no edits; ``--train.resume=true`` continues a run exactly.  The run
itself is ``smallgpt/trainer.py``; the settings and their defaults ``smallgpt/config.py``.
"""
from __future__ import annotations

import os

from smallgpt.cli import parse_args, run_main
from smallgpt.config import Config
from smallgpt.recipes import apply_budget_rule
from smallgpt.trainer import train

SUMMARY = "Train a GPT on a corpus (prepared first if needed); resumable, on CPU, GPU or many GPUs via torchrun."


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, Config, "train.py", SUMMARY)
    rule = apply_budget_rule(cfg)
    if rule and int(os.environ.get("RANK", "0")) == 0:
        print(rule)
    train(cfg)
    return 0


if __name__ == "__main__":
    run_main(main)
