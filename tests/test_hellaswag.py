"""eval.py --eval.task=hellaswag (smallgpt/hellaswag.py): on a handful of items written here, each ending's
score equals a forward pass per candidate by hand (the context's tail kept when it is too long), a
Hugging Face GPT-2's equals transformers' log-probabilities, an ensemble's is the log of its members'
mean probability, a URL is downloaded once and checked, every refusal is one line, and the command prints
the JSON last."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path
from unittest.mock import ANY

import pytest
import tiktoken
import torch

import train
from smallgpt import evaluation, hellaswag, pretrained
from smallgpt.config import DataConfig
from smallgpt.errors import UserError
from smallgpt.evaluation import EvalConfig
from helpers import ENV, argv, serve, write_corpus

eval_script = importlib.import_module("eval")  # eval.py; `import eval` would shadow the builtin
ROOT = Path(__file__).resolve().parents[1]

# HellaSwag's own layout (hellaswag_val.jsonl), with its extra keys; in a context of 32 tokens some
# candidates do not fit (the last context alone is longer), so their context's start is cut
ITEMS = [
    {"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he",
     "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3,
     "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.",
                 "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY"},
    {"ind": 1, "ctx": "She said it was not so, and", "label": 0,
     "endings": ["he went away.", "the of and to in.", "they had said that it was so.", "was"]},
    {"ind": 2, "ctx": "The man who was at the door", "label": "2",  # Hugging Face's copy: the label as a string
     "endings": ["said not a word", "had a", "would be there with them all", "is"]},
    {"ind": 3, "ctx": "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
                      "of foolishness, it was the epoch of belief, and then",
     "label": 1, "endings": ["she said so.", "they went out.", "it was.", "all of them were there."]},
]


def write_items(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two tiny runs (a context of 32) on one dataset, so one tokenizer: an ensemble's members; and the items."""
    tmp = tmp_path_factory.mktemp("hellaswag")
    data = {"data.source": str(write_corpus(tmp / "a.txt", 30_000, seed=0)), "data.tokenizer": "bpe",
            "data.vocab_size": "300", "data.dir": str(tmp / "ds")}
    for name, seed in (("a", 1337), ("b", 7)):
        train.main(argv(data, tmp / name, train__max_iters=10, train__seed=seed))
    return {"a": tmp / "a", "b": tmp / "b", "items": write_items(tmp / "items.jsonl", ITEMS), "tmp": tmp}


def evaluate(checkpoint: str, data: Path | str, tokenizer: str = "bpe", data_dir: Path | None = None,
             **settings) -> dict:
    """eval.py's HellaSwag record, without progress bars; a download goes beside ``data_dir``."""
    e = EvalConfig(checkpoint=checkpoint, task="hellaswag", data=str(data), **settings)
    e.check()
    return evaluation.evaluate(e, DataConfig(tokenizer=tokenizer, dir=str(data_dir or "")), progress=False)


@torch.no_grad()
def by_hand(models: list, enc: tiktoken.Encoding, items: list[dict], block_size: int) -> torch.Tensor:
    """Each ending's log-probability (items, 4), one forward pass per candidate: llm.c's tokens (ctx, then
    ' ' + ending, apart), the last block_size + 1 of them, the members' probabilities averaged.  ``models``
    are callables from ids (1, T) to logits (1, T, V)."""
    out = torch.zeros(len(items), 4, dtype=torch.float64)
    for i, item in enumerate(items):
        ctx = enc.encode(item["ctx"])
        for j, ending in enumerate(item["endings"]):
            end = enc.encode(" " + ending)
            ids = (ctx + end)[-(block_size + 1):]
            p = torch.stack([model(torch.tensor([ids[:-1]]))[0].softmax(-1) for model in models]).mean(0)  # (T, V)
            out[i, j] = p.log()[torch.arange(len(ids) - 1), torch.tensor(ids[1:])][-len(end):].double().sum()
    return out


def expected(sums: torch.Tensor, enc: tiktoken.Encoding, items: list[dict]) -> dict[str, float]:
    """acc, acc_norm (per ending token) and acc_norm_chars (per ending character) of ``sums``."""
    labels = torch.tensor([int(item["label"]) for item in items])
    tokens = torch.tensor([[len(enc.encode(" " + e)) for e in item["endings"]] for item in items])
    chars = torch.tensor([[len(e) for e in item["endings"]] for item in items])
    return {name: (s.argmax(1) == labels).double().mean().item()
            for name, s in (("acc", sums), ("acc_norm", sums / tokens), ("acc_norm_chars", sums / chars))}


def cut(enc: tiktoken.Encoding, items: list[dict], block_size: int) -> int:
    """Items with a candidate longer than block_size + 1 tokens: their context loses its start."""
    return sum(any(len(enc.encode(item["ctx"])) + len(enc.encode(" " + e)) > block_size + 1 for e in item["endings"])
               for item in items)


def ours(source: pretrained.Source):
    model = source.model()
    return lambda ids: model(ids)[0]


def test_each_ending_scores_as_a_forward_pass_per_candidate(runs):
    source = pretrained.load_source(str(runs["a"]), "eval.checkpoint")
    enc = source.encoding("bpe")
    assert 0 < cut(enc, ITEMS, 32) < len(ITEMS)  # some contexts are cut, and still every ending token is scored
    rendered = hellaswag.render(hellaswag.read_items(runs["items"]), enc, 32)
    sums, truncated = hellaswag.score([source.model()], rendered, 3, torch.device("cpu"), contextlib.nullcontext(),
                                      progress=False)
    want = by_hand([ours(source)], enc, ITEMS, 32)
    torch.testing.assert_close(sums, want, atol=1e-4, rtol=0)
    assert truncated == cut(enc, ITEMS, 32)

    record = evaluate(str(runs["a"]), runs["items"])
    assert {k: record[k] for k in ("acc", "acc_norm", "acc_norm_chars")} == expected(want, enc, ITEMS)
    assert record["task"] == "hellaswag" and record["items"] == 4 and record["truncated"] == truncated
    assert record["acc_norm_by"] == "tokens" and record["format"] == "llm.c"
    assert record["model"] == str(source.path) and record["block_size"] == 32
    capped = evaluate(str(runs["a"]), runs["items"], max_items=2)
    assert capped["items"] == 2 and capped["acc"] == expected(want[:2], enc, ITEMS[:2])["acc"]


def test_a_hugging_face_gpt2_scores_as_transformers_does(hf_gpt2, gpt2_rank_file, tmp_path):
    """GPT-2's vocabulary, its learned positions and GELU, against transformers' own log-probabilities."""
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2).eval()
    with torch.no_grad():
        for p in theirs.parameters():  # larger weights than GPT-2's initialisation: far from uniform predictions
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    theirs.save_pretrained(hf_gpt2)
    enc = pretrained.load_source(str(hf_gpt2), "eval.checkpoint").encoding(str(gpt2_rank_file))
    want = by_hand([lambda ids: theirs(ids).logits], enc, ITEMS, 32)
    record = evaluate(str(hf_gpt2), write_items(tmp_path / "items.jsonl", ITEMS), tokenizer=str(gpt2_rank_file))
    assert {k: record[k] for k in ("acc", "acc_norm", "acc_norm_chars")} == expected(want, enc, ITEMS)
    assert record["tokenizer"] == "r50k_base" and record["truncated"] == cut(enc, ITEMS, 32) == 1

    source = pretrained.load_source(str(hf_gpt2), "eval.checkpoint")
    sums, _ = hellaswag.score([source.model()], hellaswag.render(hellaswag.read_items(tmp_path / "items.jsonl"), enc, 32),
                              8, torch.device("cpu"), contextlib.nullcontext(), progress=False)
    torch.testing.assert_close(sums, want, atol=1e-4, rtol=0)


def test_an_ensemble_scores_the_log_of_its_members_mean_probability(runs):
    sources = [pretrained.load_source(str(runs[name]), "eval.checkpoint") for name in "ab"]
    enc = sources[0].encoding("bpe")
    want = by_hand([ours(s) for s in sources], enc, ITEMS, 32)
    members = [source.model() for source in sources]
    sums, _ = hellaswag.score(members, hellaswag.render(hellaswag.read_items(runs["items"]), enc, 32), 2,
                              torch.device("cpu"), contextlib.nullcontext(), progress=False)
    torch.testing.assert_close(sums, want, atol=1e-4, rtol=0)
    alone = by_hand([ours(sources[0])], enc, ITEMS, 32)
    assert (sums - alone).abs().max() > 1e-3  # the second member made a difference
    record = evaluate(f"{runs['a']},{runs['b']}", runs["items"])
    assert {k: record[k] for k in ("acc", "acc_norm", "acc_norm_chars")} == expected(want, enc, ITEMS)
    assert record["model"] == f"{sources[0].path},{sources[1].path}"


def test_a_url_is_downloaded_once_and_checked_by_its_sha256(runs, tmp_path):
    digest = hashlib.sha256(runs["items"].read_bytes()).hexdigest()
    with serve(runs["items"].parent) as root:
        url = f"{root}/{runs['items'].name}"
        with pytest.raises(UserError, match=r"has sha256 [0-9a-f]+, not 0+; check the URL and eval.sha256"):
            evaluate(str(runs["a"]), url, data_dir=tmp_path / "ds", sha256="0" * 64)
        record = evaluate(str(runs["a"]), url, data_dir=tmp_path / "ds", sha256=digest)
    assert record["items"] == 4 and record["data"] == url
    assert (tmp_path / "downloads" / runs["items"].name).read_bytes() == runs["items"].read_bytes()
    assert evaluate(str(runs["a"]), url, data_dir=tmp_path / "ds", sha256=digest) == {**record, "seconds": ANY}  # offline


def item(**changes) -> dict:
    return {k: v for k, v in {**ITEMS[1], **changes}.items() if v is not None}


@pytest.mark.parametrize("content, message", [
    ("It is a truth universally acknowledged.\n", r"line 1 of .* is not a JSON object; give HellaSwag's hellaswag_val"),
    (json.dumps(ITEMS[0]) + "\n[1, 2]\n", r"line 2 of .* is not a JSON object"),
    (json.dumps(item(ctx=None)), r"line 1 of .* has no 'ctx'"),
    (json.dumps(item(label=None)), r"has no 'label' \(the test split has no labels: use the validation split\)"),
    (json.dumps(item(label=4)), r"has label 4, not one of 0-3"),
    (json.dumps(item(label=-1)), r"has label -1, not one of 0-3"),
    (json.dumps(item(label=True)), r"has label True, not one of 0-3"),
    (json.dumps(item(endings=["a", "b", "c"])), r"has endings that are not 4 strings"),
    (json.dumps(item(ctx=3)), r"has a ctx that is not a string"),
    ("\n\n", r"has no items"),
    (b"\xff\xfe\x00\x01", r"is not UTF-8 text"),
    (json.dumps(item(endings=["and " * 40, "b", "c", "d"])), r"item 1 has an ending of \d+ tokens, more than the model's context of 32"),
])
def test_what_is_not_hellaswag_is_refused_in_one_line(runs, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message) as e:
        evaluate(str(runs["a"]), path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("args, message", [
    (["--eval.task=hellaswag"], r"--eval.data: is empty; give HellaSwag's hellaswag_val.jsonl"),
    (["--eval.task=hellaswag", "--eval.data=https://example.com/hellaswag_val.jsonl"],
     r"eval.data is a URL: give its sha256 as --eval.sha256=<64 hex digits>"),
    (["--eval.task=hellaswag", "--eval.data=nowhere.jsonl"], r"--eval.data=nowhere.jsonl: no such file"),
    (["--eval.task=hellaswag", "--eval.data={items}", "--eval.sha256=" + "0" * 64], r"has sha256 .*, not 0+; check the file"),
    (["--eval.task=hellaswag", "--eval.data={items}", "--eval.sha256=abc"], r"--eval.sha256: must be 64 hex digits"),
    (["--eval.task=hellaswag", "--eval.data={items}", "--data.source=x.txt"], r"--data.source: is the text of eval.task=bpb"),
    (["--eval.task=hellaswag", "--eval.data={items}", "--eval.max_tokens=10"], r"--eval.max_tokens: is a setting of eval.task=bpb"),
    (["--eval.data={items}"], r"--eval.data: is a setting of eval.task=hellaswag"),
    (["--eval.task=mmlu"], r"--eval.task: must be 'bpb' or 'hellaswag', got 'mmlu'"),
])
def test_bad_settings_are_refused_in_one_line(runs, args, message):
    with pytest.raises(UserError, match=message) as e:
        eval_script.main([f"--eval.checkpoint={runs['a']}", *(a.format(items=runs["items"]) for a in args)])
    assert "\n" not in str(e.value)


def test_the_command_prints_the_json_last_and_refuses_with_exit_2(runs, tmp_path):
    cmd = [sys.executable, str(ROOT / "eval.py"), f"--eval.checkpoint={runs['a']}", "--eval.task=hellaswag",
           f"--eval.data={runs['items']}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"task", "acc", "acc_norm", "items", "model"} <= set(record) and record["items"] == 4
    assert "hellaswag: acc" in done.stderr
    done = subprocess.run([*cmd[:-1], "--eval.data=https://example.com/hellaswag_val.jsonl"], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "--eval.sha256" in done.stderr


def test_rows_pad_after_the_ending_and_mask_all_but_its_targets():
    """Four rows an item, right-padded to the longest; y holds exactly the ending's tokens, at the positions
    that predict them."""
    r = hellaswag.Rendered(context=[5, 6, 7], endings=[[1], [2, 3], [4, 4, 4], [9, 8]], label=0, chars=[1, 1, 1, 1])
    x, y, cut = hellaswag.candidate_rows([r], 8)
    assert x.shape == y.shape == (4, 5) and cut == 0
    assert x[2].tolist() == [5, 6, 7, 4, 4] and y[2].tolist() == [-1, -1, 4, 4, 4]
    assert x[0].tolist() == [5, 6, 7, 0, 0] and y[0].tolist() == [-1, -1, 1, -1, -1]
    x, y, cut = hellaswag.candidate_rows([r], 3)  # a context of 3: the tail of 4 tokens
    assert cut == 1 and x[2].tolist() == [7, 4, 4] and y[2].tolist() == [4, 4, 4]
    assert x[0].tolist() == [5, 6, 7] and y[0].tolist() == [-1, -1, 1]  # 4 tokens: nothing to cut
