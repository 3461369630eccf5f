"""HellaSwag (Zellers et al., *HellaSwag: Can a Machine Really Finish Your Sentence?*, ACL 2019): which of
four endings a model finds the likeliest continuation of a context.  ``eval.py --eval.task=hellaswag``.

    python eval.py --eval.task=hellaswag --eval.checkpoint=out --eval.data=hellaswag_val.jsonl
    python eval.py --eval.task=hellaswag --eval.checkpoint=gpt2 --eval.data=hellaswag_val.jsonl --eval.max_items=500
    python eval.py --eval.task=hellaswag --eval.checkpoint=out-a,out-b --eval.data=URL --eval.sha256=HEX   # an ensemble

**The data** (``eval.data``) is the official validation split, 10,042 items, what GPT-2 reproductions
report: https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl (from
github.com/rowanz/hellaswag), as a file or as that URL, which is downloaded once beside the datasets
(``data/downloads``) and checked by ``eval.sha256``, as ``data.source`` URLs are by ``data.sha256``
(this project does not record the file's sha256: take it, with ``sha256sum``, from a copy you trust).
One JSON object a line; this module reads ``ctx`` (a string), ``endings`` (four strings) and ``label``
(0-3; an int, or its digit as a string) and ignores the rest (``ind``, ``activity_label``, ``ctx_a``,
``ctx_b``, ``split``, ...).  The test split has no labels and is refused, as is any line that is not
such an item.  ``eval.max_items`` scores only the first items, for a quick run.

**What is scored: llm.c's completion style** (``dev/data/hellaswag.py`` of karpathy/llm.c, which
build-nanogpt and the GPT-2 reproductions that report HellaSwag beside their loss run as it is): the
context is the item's ``ctx`` as written, each ending is ``" " + ending``, the two tokenized apart
with the model's own tokenizer and joined (GPT-2's tokenizer starts a word with its space, so the
ending's first word is the token it would be in running text); no ``<|endoftext|>`` before the context (neither llm.c nor lm-eval-harness puts one;
an empty context is ``<|endoftext|>`` alone, lm-eval's rule, so the first ending token is predicted
from something).  Chosen over lm-eval-harness's formatting (``activity_label: ctx_a ctx_b.capitalize()``,
WikiHow's ``[title]`` artefacts and double spaces removed, in ``lm_eval/tasks/hellaswag/utils.py``)
because the runs this project is compared with report llm.c's figures; the two formattings give
different numbers for the same model (GPT-2 124M: acc_norm 29.55 % with llm.c's script, 31.14 % under
lm-eval, both as llm.c's script records them, not measured here), so compare a figure only with one
measured the same way.

**The scores.**  Each ending's log-probability is the sum over its tokens of log p(token | context and
the ending's tokens before it), all four candidates of an item in one forward pass (padded on the
right: a causal model's prediction at a position cannot see the padding after it; a mask keeps the
ending's positions).  ``acc``: the share of items whose right ending has the largest sum.
``acc_norm``: the same with each sum divided by the ending's number of tokens, llm.c's normalisation
(and llm.c's ``acc_norm``).  ``acc_norm_chars``: divided by the ending's length in characters (without
the space), lm-eval-harness's divisor (``len(choice)``), here over llm.c's formatting, so neither
reference's figure, but one whose divisor does not depend on the tokenizer.  A tie goes to the first
ending.  Random guessing scores 25 %.

**Contexts longer than the model's** (``block_size``): each candidate keeps its last ``block_size + 1``
tokens (the input is all but the last), so the start of the context is cut and every ending token is
still scored; the record counts such items as ``truncated``.  An ending that does not fit the context
with one token before it is refused (before any scoring), since part of it would go unscored.

**Ensembles** (comma-separated ``eval.checkpoint``): every token's probability is the mean of the
members' probabilities (``ensemble.mean_log_probs``, as for bits per byte), so an ending's score is the
ensemble's own log-probability as one language model.

The record (the JSON last line of eval.py): ``task``, ``acc``, ``acc_norm``, ``acc_norm_chars``,
``acc_norm_by`` ('tokens'), ``format`` ('llm.c'), ``items``, ``truncated``, ``model``, ``tokenizer``,
``data``, ``block_size``, ``dtype``, ``seconds``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import tiktoken
import torch
from tqdm import tqdm

from model import GPT
from smallgpt import tokenizer as tok
from smallgpt.corpus import download, is_url
from smallgpt.dataset import downloads_dir
from smallgpt.ensemble import target_log_probs
from smallgpt.errors import UserError

if TYPE_CHECKING:
    from smallgpt.config import DataConfig
    from smallgpt.evaluation import EvalConfig, Models

CHOICES = 4  # endings per item
FORMAT = "hellaswag_val.jsonl: one JSON object a line with ctx, endings (4 strings) and label (0-3)"


@dataclass
class Item:
    """One HellaSwag question: a context, its four candidate endings, and the index of the right one."""
    ctx: str
    endings: list[str]
    label: int


@dataclass
class Rendered:
    """An item as token ids: the context's, and each ending's (``" " + ending``)."""
    context: list[int]
    endings: list[list[int]]
    label: int
    chars: list[int]  # characters of each ending (without the space): lm-eval's divisor


def data_file(spec: str, sha256: str, downloads: Path) -> Path:
    """``eval.data`` as a local file: a URL downloaded (once) and checked by ``eval.sha256``; a file checked
    by it when given."""
    if is_url(spec):
        return download(spec, sha256, downloads, keys=("eval.data", "eval.sha256"))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--eval.data={spec}: no such file; give HellaSwag's hellaswag_val.jsonl, a file or its URL "
                        "with eval.sha256")
    if sha256 and (got := tok.file_sha256(path)) != sha256.lower():
        raise UserError(f"--eval.data: {path} has sha256 {got}, not {sha256}; check the file and eval.sha256")
    return path


def read_items(path: Path, max_items: int = 0) -> list[Item]:
    """The items of a HellaSwag JSON Lines file (blank lines skipped), the first ``max_items`` if not 0;
    anything else in it is a UserError naming the line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"--eval.data: {path} is not UTF-8 text; give HellaSwag's {FORMAT}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if max_items and len(items) == max_items:
            break
        if line.strip():
            items.append(parse_item(line, f"line {n} of {path}"))
    if not items:
        raise UserError(f"--eval.data: {path} has no items; give HellaSwag's {FORMAT}")
    return items


def parse_item(line: str, where: str) -> Item:
    """One line of the file as an Item, checked: what HellaSwag's own files hold."""
    try:
        d = json.loads(line)
    except json.JSONDecodeError:
        d = None
    if not isinstance(d, dict):
        raise UserError(f"--eval.data: {where} is not a JSON object; give HellaSwag's {FORMAT}")
    for key in ("ctx", "endings", "label"):
        if key not in d:
            test = " (the test split has no labels: use the validation split)" if key == "label" else ""
            raise UserError(f"--eval.data: {where} has no {key!r}{test}; give HellaSwag's {FORMAT}")
    ctx, endings, label = d["ctx"], d["endings"], d["label"]
    if not isinstance(ctx, str):
        raise UserError(f"--eval.data: {where} has a ctx that is not a string; give HellaSwag's {FORMAT}")
    if not (isinstance(endings, list) and len(endings) == CHOICES and all(isinstance(x, str) for x in endings)):
        raise UserError(f"--eval.data: {where} has endings that are not {CHOICES} strings; give HellaSwag's {FORMAT}")
    if isinstance(label, str) and label.strip().isdigit():  # Hugging Face's copy writes the label as a string
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < CHOICES:
        raise UserError(f"--eval.data: {where} has label {label!r}, not one of 0-{CHOICES - 1}; give HellaSwag's {FORMAT}")
    return Item(ctx, endings, label)


def render(items: list[Item], enc: tiktoken.Encoding, block_size: int) -> list[Rendered]:
    """llm.c's tokens of each item (the module's docstring), checked to fit ``block_size``: every ending
    with at least one token of context before it."""
    out = []
    for i, item in enumerate(items):
        context = enc.encode_ordinary(item.ctx) or [enc.eot_token]  # text, never special tokens
        endings = [enc.encode_ordinary(" " + ending) for ending in item.endings]
        longest = max(len(e) for e in endings)
        if longest > block_size:
            raise UserError(f"--eval.data: item {i + 1} has an ending of {longest} tokens, more than the model's context "
                            f"of {block_size}; HellaSwag needs a model whose context holds an ending and a token before it")
        out.append(Rendered(context, endings, item.label, [len(ending) for ending in item.endings]))
    return out


def candidate_rows(batch: list[Rendered], block_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The inputs x and targets y (rows, T) of every candidate of ``batch`` (four rows an item, in order),
    T the longest row's length less one; y is -1 except at the ending's tokens.  Each row is the last
    ``block_size + 1`` tokens of context + ending; also returned: how many items had their context cut."""
    seqs, cut = [], 0
    for r in batch:
        rows = [(r.context + e)[-(block_size + 1):] for e in r.endings]
        cut += any(len(s) < len(r.context) + len(e) for s, e in zip(rows, r.endings))
        seqs += [(s, len(e)) for s, e in zip(rows, r.endings)]
    T = max(len(s) for s, _ in seqs) - 1
    x = torch.zeros(len(seqs), T, dtype=torch.long)  # padding: 0, after every scored position
    y = torch.full((len(seqs), T), -1, dtype=torch.long)
    for i, (s, n_end) in enumerate(seqs):
        n = len(s) - 1  # inputs s[:-1] predict targets s[1:]; the ending is the last n_end of them
        x[i, :n] = torch.tensor(s[:-1])
        y[i, n - n_end:n] = torch.tensor(s[-n_end:])
    return x, y, cut


@torch.no_grad()
def score(models: list[GPT], rendered: list[Rendered], batch_size: int, device: torch.device, autocast,
          progress: bool = True) -> tuple[torch.Tensor, int]:
    """Each ending's summed log-probability given its context (items, 4), in float64, under ``models`` (one,
    or an ensemble's members); and the number of items whose context was cut."""
    L = models[0].config.block_size
    sums, truncated = [], 0
    with tqdm(total=len(rendered), unit="item", desc="hellaswag", disable=not progress, file=sys.stderr) as bar:
        for i in range(0, len(rendered), batch_size):
            batch = rendered[i:i + batch_size]
            x, y, cut = candidate_rows(batch, L)
            x, y = x.to(device), y.to(device)
            logp = target_log_probs(models, x, y, autocast)  # (M,): the ending positions, row by row
            row = (y >= 0).nonzero()[:, 0]  # the row of each, in the same (row-major) order
            per_row = torch.zeros(len(x), dtype=torch.float64, device=device).index_add_(0, row, logp.double())
            sums.append(per_row.view(len(batch), CHOICES).cpu())
            truncated += cut
            bar.update(len(batch))
    return torch.cat(sums), truncated


def accuracies(sums: torch.Tensor, rendered: list[Rendered]) -> dict[str, float]:
    """acc, acc_norm (per token, llm.c) and acc_norm_chars (per character, lm-eval's divisor) of the summed
    log-probabilities ``sums`` (items, 4); argmax takes the first of equal scores."""
    labels = torch.tensor([r.label for r in rendered])
    tokens = torch.tensor([[len(e) for e in r.endings] for r in rendered], dtype=torch.float64)
    chars = torch.tensor([[max(c, 1) for c in r.chars] for r in rendered], dtype=torch.float64)

    def share(scores: torch.Tensor) -> float:
        return (scores.argmax(1) == labels).double().mean().item()

    return {"acc": share(sums), "acc_norm": share(sums / tokens), "acc_norm_chars": share(sums / chars)}


def evaluate(e: EvalConfig, data: DataConfig, m: Models, progress: bool = True) -> dict:
    """Task 'hellaswag': ``m`` on the items of ``e.data``; the JSON record (without ``seconds``)."""
    items = read_items(data_file(e.data, e.sha256, downloads_dir(data)), e.max_items)
    rendered = render(items, m.enc, m.block_size)  # every check before the slow part
    models = m.load()
    sums, truncated = score(models, rendered, e.batch_size, m.device, m.autocast(), progress)
    record = {"task": "hellaswag", **accuracies(sums, rendered), "acc_norm_by": "tokens", "format": "llm.c",
              "items": len(items), "truncated": truncated, **m.describe(), "data": e.data}
    print(f"hellaswag: acc {record['acc']:.4f}, acc_norm {record['acc_norm']:.4f} (per token; "
          f"{record['acc_norm_chars']:.4f} per character) on {len(items):,} items of {e.data}"
          + (f", {truncated:,} with their context cut to {m.block_size} tokens" if truncated else "")
          + (f", an ensemble of {len(models)}" if len(models) > 1 else ""), file=sys.stderr)
    return record
