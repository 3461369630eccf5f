"""What several test modules share: a corpus of sentences, the settings of a tiny run, its records read
back, a model with larger random weights, the imports of a source file, and a local web server."""
from __future__ import annotations

import ast
import contextlib
import functools
import http.server
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

from model import GPT

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in ROOT.glob("*.py"))  # the commands a user runs, and model.py
PACKAGE = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "smallgpt").glob("*.py"))
PRODUCT = SCRIPTS + PACKAGE  # what a user runs and what it is built from; tools/ measures it
TOOLS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tools").rglob("*.py"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses: one thread, as the tests' own torch
WORDS = ("the a of and to in is was it he she they had said not but with for as his her on at by this "
         "that which were be have from one all would there their what so up out if about who them then").split()


def write_corpus(path: Path, n_bytes: int, seed: int) -> Path:
    """Sentences of common words: enough structure for a tiny model to learn within a few steps."""
    rng, parts, size = random.Random(seed), [], 0
    while size < n_bytes:
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + ". "
        parts.append(s + ("\n" if rng.random() < 0.2 else ""))
        size += len(parts[-1])
    path.write_text("".join(parts), encoding="utf-8")
    return path


def bytes_corpus(tmp: Path, n_bytes: int = 40_000, seed: int = 0) -> dict[str, str]:
    """The [data] settings of a corpus of sentences written into ``tmp`` and prepared with the bytes tokenizer."""
    from smallgpt.config import DataConfig
    from smallgpt.pipeline import prepare
    d = {"data.source": str(write_corpus(tmp / "corpus.txt", n_bytes, seed)), "data.tokenizer": "bytes",
         "data.dir": str(tmp / "bytes")}
    prepare(DataConfig(source=d["data.source"], tokenizer="bytes", dir=d["data.dir"]), progress=False)
    return d


def argv(data: dict[str, str], out: Path, **settings) -> list[str]:
    """Command-line settings of a tiny run (2 layers, 32 wide, context 32) over ``data``, into ``out``;
    ``settings`` as keyword arguments, ``section__key=value``.  On the CPU, whatever the machine has: these are
    the CPU's tests (bitwise resumes, gloo processes); what needs a GPU is marked ``cuda`` (tests/test_cuda.py)."""
    s = {**data, "train.device": "cpu",
         "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "model.block_size": 32,
         "train.batch_size": 4, "train.max_iters": 20, "train.eval_interval": 10, "train.eval_iters": 2,
         "train.log_interval": 1, "train.checkpoint_interval": 10, "train.warmup_iters": 5,
         "train.lr_decay_iters": 200, "train.learning_rate": 3e-3, "train.schedule": "cosine", "train.max_seconds": 0,
         "train.compile": "false", "train.optimizer": "adamw", "train.sample_at_end": "false", "train.out_dir": str(out)}
    s.update({k.replace("__", "."): v for k, v in settings.items()})
    return [f"--{k}={v}" for k, v in s.items()]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def losses(out: Path) -> dict[tuple[int, str], float]:
    """The loss of every training record and the val loss of every evaluation, by (step, kind)."""
    return {(r["step"], "train" if "loss" in r else "eval"): r.get("loss", r.get("val_loss")) for r in records(out)
            if "loss" in r or "val_loss" in r}


def spread(model: GPT) -> GPT:
    """Larger random weights, so attention is far from uniform, positions matter, and a random model's greedy
    output is not one token repeated; in eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.ndim == 2 else None
    return model.eval()


def imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """The files of ``directory`` over HTTP on 127.0.0.1 (a URL source without the network): its root URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- corpora in other formats

DOC_LINES = ["Grüße aus Köln — „Zitat“ ½", "    indented line with 日本語", "x = [1, 2, 3]  # code", "",
             "Emoji 🎉 and ελληνικά", "plain ASCII line, nothing special", "a literal <|endoftext|> is text"]


def documents(n: int, seed: int = 0, empty_every: int = 0) -> list[str]:
    """``n`` texts of a few lines to a few hundred, mixed scripts; every ``empty_every``-th one empty."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        if empty_every and k % empty_every == empty_every - 1:
            out.append("")
            continue
        lines = [f"{rng.choice(WORDS)} {rng.choice(DOC_LINES)} {rng.randint(0, 999)}" for _ in range(rng.randint(1, 60))]
        out.append("\n".join(lines) + ("\n" if rng.random() < 0.7 else ""))
    return out


def write_as_files(directory: Path, texts: list[str]) -> Path:
    """Each text as its own file, named so that sorted order is the texts' order."""
    directory.mkdir(parents=True, exist_ok=True)
    for k, text in enumerate(texts):
        (directory / f"{k:06d}.txt").write_bytes(text.encode("utf-8"))
    return directory


def write_jsonl(path: Path, records: list, opener=open) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with opener(path, "wb") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n")
    return path


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int = 50) -> Path:
    """A Parquet file of ``columns`` (needs pyarrow: the tests that call it skip without it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_shard(path: Path, tokens, magic: int = 20240520, version: int = 1) -> Path:
    """A token shard as llm.c's fineweb.py writes one: 256 int32 of header, then uint16 tokens."""
    import numpy as np
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())
    return path


PEAK_RSS = """
import resource, sys
sys.path.insert(0, {root!r})
from smallgpt import pipeline, tokenizer
from smallgpt.config import DataConfig
tokenizer.gpt4_splitter()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = DataConfig(source={source!r}, tokenizer='bpe', vocab_size=512, bpe_train_bytes=1_000_000, dir={dir!r})
pipeline.prepare(cfg, progress=False)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def prepare_peak_rss(source: Path, directory: Path, timeout: float = 900) -> tuple[float, dict]:
    """Prepare ``source`` into ``directory`` in a fresh process (a small BPE, as a real run trains one):
    how many MB its peak RSS grew above its start (its imports excluded), and the dataset's meta.json."""
    import subprocess
    import sys
    script = PEAK_RSS.format(root=str(ROOT), source=str(source), dir=str(directory))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                         cwd=directory.parent)
    assert out.returncode == 0, out.stderr
    base_kb, peak_kb = map(int, out.stdout.split())
    return (peak_kb - base_kb) / 1024, json.loads((directory / "meta.json").read_text())
