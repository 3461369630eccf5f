"""Bits per byte of a model on any text: ``python eval.py [CONFIG.toml] [--eval.key=value] [--data.source=TEXT]``.

    python eval.py --eval.checkpoint=out --data.source=their.txt
    python eval.py --eval.checkpoint=gpt2 --data.source=their.txt
    python eval.py --eval.checkpoint=out-a,out-b --data.source=their.txt   # an ensemble

(for a GPT-2 directory without vocab.json, where tiktoken cannot download 'gpt2', add
``--data.tokenizer=path/to/r50k_base.tiktoken``).  How the text is read and scored (strided windows,
ensembles) is ``smallgpt/evaluation.py``.  The last line on stdout is one JSON object: ``bpb``,
``loss`` (nats per token), ``tokens`` (scored), ``bytes`` (UTF-8 bytes of the scored tokens), and what
was measured how.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from smallgpt.cli import Settings, parse_args, run_main
from smallgpt.config import DataConfig
from smallgpt.evaluation import EvalConfig, evaluate

SUMMARY = ("Bits per byte (and loss per token) of a run, a checkpoint or a Hugging Face GPT-2 on the text of\n"
           "data.source, tokenized with the model's own tokenizer, in strided windows (see eval.py).\n"
           "The last line on stdout is a JSON object with bpb, loss, tokens and bytes.")


@dataclass
class EvalSettings(Settings):
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)  # source (the text) and tokenizer (must be the model's)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, EvalSettings, "eval.py", SUMMARY)
    print(json.dumps(evaluate(cfg.eval, cfg.data)))
    return 0


if __name__ == "__main__":
    run_main(main)
