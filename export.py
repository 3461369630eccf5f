"""Export a run to a Hugging Face directory: ``python export.py [CONFIG.toml] [--export.key=value ...]``.

    python export.py --export.checkpoint=out --export.out_dir=out-hf

writes ``config.json``, ``model.safetensors``, ``tokenizer.json`` and ``tokenizer_config.json``, which
``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)``
load with no code of this project.  The model goes out in the transformers architecture that
computes exactly what it computes (GPT-2, GPT-NeoX, Llama or Qwen3; hf.py says which option maps
where and why), and the tokenizer is converted so that it encodes text to the same ids as tiktoken.
A model with an option none of them has is refused in one line, before anything is written.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import hf
from checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from config import Settings, need, parse_args, run_main
from tokenizer import load_tokenizer

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


def export(e: ExportConfig) -> Path:
    """Write the Hugging Face directory of ``e.checkpoint``; returns its path."""
    path = find_checkpoint(e.checkpoint)
    out = Path(e.out_dir).expanduser() if e.out_dir else path.parent.with_name(path.parent.resolve().name + "-hf")
    hf.check_out_dir(out, e.overwrite)  # before the slow part
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)
    enc = load_tokenizer(ckpt["tokenizer"], path.parent)
    converted = hf.to_hf(model, enc.eot_token)
    hf.write_hf_dir(out, converted, hf.tokenizer_files(enc, model.config.block_size), e.overwrite)
    print(f"export: {path} (step {ckpt.get('step', '?')}) as {converted.architecture}, tokenizer "
          f"{ckpt['tokenizer']['name']}, to {out}; load it with AutoModelForCausalLM.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained({str(out)!r})", file=sys.stderr)
    return out


def main(argv: list[str]) -> int:
    print(export(parse_args(argv, ExportSettings, "export.py", SUMMARY).export))
    return 0


if __name__ == "__main__":
    run_main(main)
