"""Prepare a corpus: ``python prepare.py [CONFIG.toml] [--data.key=value ...] [--force]``.

Writes, in ``data.dir``: ``train.bin`` and ``val.bin`` (flat token ids, uint16 when the vocabulary
fits, else uint32), ``meta.json`` and, for a trained or given BPE, its ``.tiktoken`` rank file.
train.py prepares its corpus by itself when it must; this script does only that step, e.g. on each
machine of a multi-node job.  The pipeline is ``smallgpt/pipeline.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from model import GPTConfig
from smallgpt.cli import Settings, parse_args, run_main
from smallgpt.config import DataConfig
from smallgpt.pipeline import prepare

SUMMARY = ("Prepare a text corpus: train.bin, val.bin and meta.json in data.dir, with a tokenizer (trained BPE by "
           "default).\nAn existing dataset with the same settings is reused; --force rebuilds it.")


@dataclass
class PrepareSettings(Settings):
    data: DataConfig = field(default_factory=DataConfig)
    model: GPTConfig = field(default_factory=GPTConfig)  # block_size only: each split must hold one window


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, PrepareSettings, "prepare.py", SUMMARY, flags=("force:data.force",))
    prepare(cfg.data, min_tokens=cfg.model.block_size + 1)  # as train.py will ask of it
    return 0


if __name__ == "__main__":
    run_main(main)
