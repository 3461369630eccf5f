"""Generating text with a trained GPT: the I/O around ``model.GPT.generate_stream``.

sample.py, train.py's closing sample and the interactive prompt loop call it.  The sampling itself
(KV cache, temperature, top-k, top-p, seeded generator) is the model's; this module does the rest:

* **Prompt.**  Taken literally: ``--sample.prompt='Once upon'``.  No backslash escapes
  are interpreted on the command line (a Windows path or a regex stays as typed); for
  several lines use a TOML string (``prompt = "Dear Sir,\\n"``), your shell's ``$'a\\nb'``,
  or ``FILE:path`` to read the prompt from a UTF-8 file.  ``<|endoftext|>`` in a prompt
  is the document separator the model was trained with; an empty prompt starts a fresh
  document.  A prompt longer than the model's context keeps its tail, with a warning.
* **Output.**  Each sample is the prompt followed by its continuation.  Sample 1 streams
  token by token; with ``num_samples > 1`` the others (generated in the same batch) are
  printed when the batch ends, each sample followed by a ``---------------`` line.  A
  sample ends at ``<|endoftext|>`` (not printed) or after ``max_new_tokens``; the batch
  stops as soon as every sample has ended.
* **Past the context.**  ``sample.long_context`` says what happens once a sample outgrows
  block_size: 'sinks' (the default) and 'rolling' keep a rolling KV cache, so long samples run at
  cache speed; 'recompute' is nanoGPT's exact semantics, the window recomputed for every token
  (``model.KVCache`` says why each).  When it ends, the speed is printed on stderr.
* **UTF-8.**  A byte-level tokenizer may split one character over several tokens; each
  sample has its own incremental UTF-8 decoder, so a character is printed only once all
  of its bytes have arrived, and the streamed text equals the decoded whole.
"""
from __future__ import annotations

import codecs
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

import tiktoken
import torch

from model import GPT
from smallgpt import hardware
from smallgpt.checkpoint import find_checkpoint, load_checkpoint, model_from_checkpoint
from smallgpt.config import SampleConfig
from smallgpt.errors import UserError
from smallgpt.tokenizer import load_tokenizer

SEPARATOR = "---------------"


def read_prompt(prompt: str) -> str:
    """The prompt text: the setting itself, or the contents of the file named after ``FILE:``."""
    if not prompt.startswith("FILE:"):
        return prompt
    path = Path(prompt[len("FILE:"):]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--sample.prompt: prompt file {path} not found; give an existing file after FILE:") from None
    except UnicodeDecodeError:
        raise UserError(f"--sample.prompt: prompt file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise UserError(f"--sample.prompt: cannot read prompt file {path}: {e.strerror or e}") from None


def encode_prompt(enc: tiktoken.Encoding, text: str, block_size: int) -> tuple[list[int], bool]:
    """Token ids to start from (at most ``block_size``, the tail kept) and whether the prompt was cut."""
    ids = enc.encode(text, allowed_special="all") or [enc.eot_token]  # empty: the start of a document
    return ids[-block_size:], len(ids) > block_size


def token_bytes(enc: tiktoken.Encoding, token: int) -> bytes:
    """The bytes of one token; none for an id past the tokenizer's vocabulary (a padded embedding row)."""
    try:
        return enc.decode_single_token_bytes(token)
    except KeyError:
        return b""


def stream_samples(columns: Iterable[torch.Tensor], enc: tiktoken.Encoding, num_samples: int,
                   out: TextIO | None = None) -> list[str]:
    """Decode a batch of samples a token column at a time; write sample 0 to ``out`` as it grows.

    ``columns`` yields the new token of every sample, shape (num_samples,), step by step.  A sample
    ends at its first ``<|endoftext|>``; the loop stops once every sample has ended.  Returns the
    decoded continuation of each sample (without the end token).
    """
    decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(num_samples)]
    pieces: list[list[str]] = [[] for _ in range(num_samples)]
    ended = [False] * num_samples

    def emit(i: int, text: str) -> None:
        pieces[i].append(text)
        if i == 0 and out is not None and text:
            out.write(text)
            out.flush()

    for column in columns:
        for i, token in enumerate(column.tolist()):  # one device-to-host copy per step
            if ended[i]:
                continue
            if token == enc.eot_token:
                ended[i] = True
                emit(i, decoders[i].decode(b"", final=True))
            else:
                emit(i, decoders[i].decode(token_bytes(enc, token)))
        if all(ended):
            break
    for i in range(num_samples):
        if not ended[i]:
            emit(i, decoders[i].decode(b"", final=True))  # bytes of a cut-off character become U+FFFD
    return ["".join(p) for p in pieces]


def sampling_dtype(setting: str, ckpt: dict, device: torch.device) -> torch.dtype:
    """``sample.dtype``; 'auto' is the precision the checkpoint's run trained in (as 'auto' chose it there),
    where this device has it (a run trained in float16 on a GPU samples in float32 on a CPU)."""
    if setting != "auto":
        return hardware.pick_dtype(setting, device, key="sample.dtype")
    trained = ckpt.get("precision") or ckpt.get("config", {}).get("train", {}).get("dtype", "auto")
    try:
        return hardware.pick_dtype(trained, device)
    except UserError:
        return hardware.pick_dtype("auto", device)


@dataclass
class Generation:
    texts: list[str]  # the continuation of each sample
    new_tokens: int  # steps generated (the batch stops once every sample has ended)
    seconds: float  # wall time of the generation, prefill included


def generate(model: GPT, enc: tiktoken.Encoding, ids: list[int], s: SampleConfig, device: torch.device,
             out: TextIO | None = None) -> Generation:
    """``s.num_samples`` continuations of the token ids ``ids``, generated as one batch with ``s``'s
    temperature, top-k, top-p, seed and long-context mode; sample 0 streams to ``out``.  Put the model
    in eval() first."""
    check_for_model(s, model)
    idx = torch.tensor([ids] * s.num_samples, dtype=torch.long, device=device)  # (num_samples, T)
    generator = torch.Generator(device=device).manual_seed(s.seed)
    steps = 0

    def counted(columns: Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
        nonlocal steps
        for column in columns:
            steps += 1
            yield column

    start = time.perf_counter()
    with torch.inference_mode():
        columns = model.generate_stream(idx, s.max_new_tokens, temperature=s.temperature, top_k=s.top_k or None,
                                        top_p=s.top_p if s.top_p < 1.0 else None, generator=generator,
                                        long_context=s.long_context, sink_tokens=s.sink_tokens)
        texts = stream_samples(counted(columns), enc, s.num_samples, out)
    return Generation(texts, steps, time.perf_counter() - start)


def generate_texts(model: GPT, enc: tiktoken.Encoding, ids: list[int], s: SampleConfig, device: torch.device,
                   out: TextIO | None = None) -> list[str]:
    """The continuations of :func:`generate`."""
    return generate(model, enc, ids, s, device, out).texts


def speed_line(g: Generation, model: GPT, prompt_tokens: int, s: SampleConfig) -> str:
    """How fast it went, and what generation did past the context if it got there."""
    batch = f" x {s.num_samples} samples" if s.num_samples > 1 else ""
    past = (f"; past the context of {model.config.block_size}: {describe_long_context(model, s)}"
            if prompt_tokens + g.new_tokens > model.config.block_size else "")
    return (f"{g.new_tokens} new tokens{batch} in {g.seconds:.2f} s: "
            f"{g.new_tokens * s.num_samples / max(g.seconds, 1e-9):,.1f} tokens/s{past}")


def check_for_model(s: SampleConfig, model: GPT) -> None:
    """The settings that depend on the model, checked before anything is printed."""
    if s.long_context == "sinks" and s.sink_tokens >= model.config.block_size:
        raise UserError(f"--sample.sink_tokens: must be below the model's block_size ({model.config.block_size}), "
                        f"got {s.sink_tokens}")


def describe_long_context(model: GPT, s: SampleConfig) -> str:
    """What generation did past block_size, in words."""
    if model.config.pos_emb != "rope" or s.long_context == "recompute":
        return "the window recomputed every token" + (" (learned positions)" if s.long_context != "recompute" else "")
    if s.long_context == "rolling":
        return "a rolling KV cache"
    return f"a rolling KV cache keeping {s.sink_tokens} sink tokens"


class Sampler:
    """A checkpoint loaded once for sampling: its model on its device, its tokenizer and its precision.

    ``checkpoint`` is a run directory (its best.pt, else ckpt.pt) or a checkpoint file; every check that
    can fail is made here, before the first token."""

    def __init__(self, s: SampleConfig, checkpoint: str):
        self.s = s
        self.path = find_checkpoint(checkpoint)
        self.device = hardware.pick_device(s.device, key="sample.device")
        ckpt = load_checkpoint(self.path)
        self.dtype = sampling_dtype(s.dtype, ckpt, self.device)
        step, best = ckpt.get("step"), ckpt.get("best_val_loss")
        known = isinstance(step, int) and isinstance(best, float) and math.isfinite(best)
        self.described = f"{self.path}" + (f" (step {step}, best val loss {best:.4f})" if known else "")
        self.model = model_from_checkpoint(ckpt, self.device)
        rank_file = ckpt["tokenizer"].get("file")
        if rank_file and not (self.path.parent / rank_file).is_file():
            raise UserError(f"the tokenizer file {rank_file} is missing beside {self.path}; copy it there from the run "
                            "or dataset directory the checkpoint came from")
        self.enc = load_tokenizer(ckpt["tokenizer"], self.path.parent)
        check_for_model(s, self.model)

    def __call__(self, text: str, out: TextIO, seed: int | None = None) -> list[str]:
        """``num_samples`` continuations of ``text``, sample 1 streamed to ``out`` after the prompt, the others
        after it; the speed on stderr.  Returns each sample, prompt included.  ``seed``: instead of sample.seed."""
        s = self.s if seed is None else dataclasses.replace(self.s, seed=seed)
        block_size = self.model.config.block_size
        ids, cut = encode_prompt(self.enc, text, block_size)
        if cut:
            print(f"warning: the prompt is longer than the model's context of {block_size} tokens; "
                  "only its tail is used", file=sys.stderr)
            text = self.enc.decode(ids, errors="replace")  # echo what the model actually sees
        out.write(text)
        with hardware.autocast(self.device, self.dtype):
            g = generate(self.model, self.enc, ids, s, self.device, out)
        samples = [text + c for c in g.texts]
        if s.num_samples == 1:
            out.write("\n")
        else:
            out.write(f"\n{SEPARATOR}\n")
            for t in samples[1:]:
                out.write(f"{t}\n{SEPARATOR}\n")
        out.flush()
        print(speed_line(g, self.model, len(ids), s), file=sys.stderr)  # after the text, so a terminal shows it apart
        return samples


def sample(s: SampleConfig, checkpoint: str, out: TextIO) -> list[str]:
    """Generate ``s.num_samples`` samples of ``s.prompt`` from ``checkpoint``, streaming the first to ``out``;
    returns the full texts."""
    text = read_prompt(s.prompt)  # every check before the slow part
    sampler = Sampler(s, checkpoint)
    print(f"sampling from {sampler.described}", file=sys.stderr)
    return sampler(text, out)


def interactive(s: SampleConfig, checkpoint: str, out: TextIO, lines: TextIO) -> int:
    """A prompt loop: read a line of ``lines``, stream its continuation to ``out``, repeat; the model is
    loaded once.  An empty line or the end of the input ends it; Ctrl-C stops the sample being written,
    not the loop (at the prompt it ends the loop).  Each prompt is a new text (a base model keeps no
    conversation); prompt ``n`` is sampled with seed ``sample.seed + n``, so a session is reproducible.
    Returns the number of prompts answered."""
    sampler = Sampler(s, checkpoint)
    print(f"sampling from {sampler.described}; type a prompt and press Enter (an empty line ends)", file=sys.stderr)
    turns = 0
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        try:
            line = lines.readline()
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return turns
        if not line.strip("\r\n"):  # an empty line, or the end of the input
            return turns
        try:
            sampler(line.rstrip("\r\n"), out, seed=s.seed + turns)
        except KeyboardInterrupt:
            out.write("\n")
            out.flush()
            print("(stopped)", file=sys.stderr)
        turns += 1
