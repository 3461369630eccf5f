"""Export a run to a Hugging Face directory: ``python export.py [CONFIG.toml] [--export.key=value ...]``.

    python export.py --export.checkpoint=out --export.out_dir=out-hf

writes ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``tokenizer_config.json``, which
``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``
load with no code of this project.  The model goes out in the transformers architecture that
computes exactly what it computes (GPT-2, GPT-NeoX, Llama or Qwen3; smallgpt/hf.py says which option maps
where and why), and the tokenizer is converted so that it encodes text to the same ids as tiktoken.
A model with an option none of them has is refused in one line, before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from smallgpt.cli import Settings, need, parse_args, run_main
from smallgpt.hf import export_run

SUMMARY = ("Export a run (directory or checkpoint file) to a Hugging Face directory that transformers'\n"
           "AutoModelForCausalLM and AutoTokenizer load with no code of this project.")


@dataclass
class ExportConfig:
    checkpoint: str = "out"  # a run directory (its best.pt, else ckpt.pt) or a checkpoint file
    out_dir: str = ""  # the Hugging Face directory to write; empty: the run directory's name + '-hf'
    overwrite: bool = False  # replace out_dir if it already holds files

    def check(self) -> None:
        need(bool(self.checkpoint), "export.checkpoint", "is empty; give a run directory or a checkpoint file")


@dataclass
class ExportSettings(Settings):
    export: ExportConfig = field(default_factory=ExportConfig)


def main(argv: list[str]) -> int:
    e = parse_args(argv, ExportSettings, "export.py", SUMMARY).export
    print(export_run(e.checkpoint, e.out_dir, e.overwrite))
    return 0


if __name__ == "__main__":
    run_main(main)
