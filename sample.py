"""Write text with a trained GPT: ``python sample.py [CONFIG.toml] [--sample.key=value ...]``.

Loads the run's best checkpoint (or ``sample.checkpoint``) and the tokenizer saved beside it,
continues ``sample.prompt`` and streams the text to stdout as it is generated;
``--sample.interactive=true`` asks for prompts in a loop instead, the model loaded once.  What
happens to the prompt, the output, UTF-8 and text past the context is ``smallgpt/generation.py``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from smallgpt.cli import Settings, parse_args, run_main
from smallgpt.config import SampleConfig, TrainConfig
from smallgpt.generation import interactive, sample

SUMMARY = """Continue a prompt with a trained GPT, streaming the text to stdout.
The prompt is taken literally (no backslash escapes); give several lines in a TOML string or as FILE:path.
With num_samples > 1, sample 1 streams and the others print when the batch ends, each followed by a
'---------------' line.  Sampling uses the precision the run trained in and the checkpoint's tokenizer."""


@dataclass
class SampleSettings(Settings):
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # out_dir: the default checkpoint


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, SampleSettings, "sample.py", SUMMARY)
    checkpoint = cfg.sample.checkpoint or cfg.train.out_dir
    try:
        if cfg.sample.interactive:
            interactive(cfg.sample, checkpoint, sys.stdout, sys.stdin)
        else:
            sample(cfg.sample, checkpoint, sys.stdout)
    except BrokenPipeError:  # e.g. `python sample.py | head`: the reader has gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


if __name__ == "__main__":
    run_main(main)
