"""A model's bits per byte on any text, or its HellaSwag accuracy: ``python eval.py [CONFIG.toml] [--eval.key=value] [--data.key=value]``.

    python eval.py --eval.checkpoint=out --data.source=their.txt
    python eval.py --eval.checkpoint=gpt2 --data.source=their.txt
    python eval.py --eval.checkpoint=out-a,out-b --data.source=their.txt   # an ensemble
    python eval.py --eval.task=hellaswag --eval.checkpoint=out --eval.data=hellaswag_val.jsonl

(for a GPT-2 directory without vocab.json, where tiktoken cannot download 'gpt2', add
``--data.tokenizer=path/to/r50k_base.tiktoken``).  How the text is read and scored (strided windows,
ensembles) is ``smallgpt/evaluation.py``; HellaSwag (its data, formatting and normalisation) is
``smallgpt/hellaswag.py``.  The last line on stdout is one JSON object: for bits per byte ``bpb``,
``loss`` (nats per token), ``tokens`` (scored), ``bytes`` (UTF-8 bytes of the scored tokens); for
HellaSwag ``acc``, ``acc_norm``, ``items``; and what was measured how.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from smallgpt.cli import Settings, need, parse_args, run_main
from smallgpt.config import DataConfig
from smallgpt.evaluation import EvalConfig, evaluate

SUMMARY = ("Bits per byte (and loss per token) of a run, a checkpoint or a Hugging Face GPT-2 on the text of\n"
           "data.source, tokenized with the model's own tokenizer, in strided windows (see eval.py); or, with\n"
           "--eval.task=hellaswag, its HellaSwag accuracy on the items of eval.data (smallgpt/hellaswag.py).\n"
           "The last line on stdout is a JSON object: bpb, loss, tokens and bytes; or acc, acc_norm and items.")


@dataclass
class EvalSettings(Settings):
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: DataConfig = field(default_factory=DataConfig)  # source (the text of bpb) and tokenizer (must be the model's)

    def validate(self) -> None:
        super().validate()
        # the command line only: a TOML file that also serves train.py may hold its [data] source
        need(self.eval.task == "bpb" or "data.source" not in self.on_command_line, "data.source",
             f"is the text of eval.task=bpb; {self.eval.task} reads eval.data")


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, EvalSettings, "eval.py", SUMMARY)
    print(json.dumps(evaluate(cfg.eval, cfg.data)))
    return 0


if __name__ == "__main__":
    run_main(main)
