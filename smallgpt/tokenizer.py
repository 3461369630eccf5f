"""Tokenizers: every kind is a ``tiktoken.Encoding``, described by a small JSON-able *spec*.

Kinds (``data.tokenizer``):

- ``bytes``: the 256 byte values plus ``<|endoftext|>`` (id 256): no training, nothing unknown.
- ``bpe``: byte-level BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword
  Units"; byte-level as in GPT-2, Radford et al. 2019) trained here on the corpus, with GPT-4's split
  pattern, and written as a standard ``.tiktoken`` rank file that tiktoken loads, as nanochat does.
- a tiktoken name (``gpt2``, ``cl100k_base``, ...): ``tiktoken.get_encoding``, which downloads on first use.
- a ``.tiktoken`` rank file: copied into the dataset; a file of a known encoding is checked against
  tiktoken's published sha256 and gets that encoding's split pattern and ``<|endoftext|>`` id.

The spec (meta.json's ``"tokenizer"``) names a rank file by a bare file name relative to the directory
it lives in, so a dataset or run directory can be moved or copied whole.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import tiktoken
from tqdm import tqdm

from smallgpt.errors import UserError

EOT = "<|endoftext|>"
RANK_FILE = "tokenizer.tiktoken"  # the file name of a trained BPE inside a dataset directory

# GPT-4's (cl100k_base) split pattern: letters, 1-3 digit numbers, punctuation runs and whitespace are
# separate chunks, and BPE merges never cross a chunk boundary.
GPT4_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""])

# tiktoken's published rank files (tiktoken_ext/openai_public.py): sha256, split pattern, <|endoftext|> id.
KNOWN = {
    "r50k_base": ("306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930", GPT2_PAT, 50256),
    "p50k_base": ("94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069", GPT2_PAT, 50256),
    "cl100k_base": ("223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7", GPT4_PAT, 100257),
    "o200k_base": ("446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d", O200K_PAT, 199999),
}
SAME_RANKS = {"gpt2": "r50k_base", "p50k_edit": "p50k_base", "o200k_harmony": "o200k_base"}
RANK_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


# --------------------------------------------------------------------------- choosing a kind


def tokenizer_kind(arg: str) -> str:
    """'bytes', 'bpe', 'tiktoken' (a registered name) or 'file' (a rank file); anything else is a UserError."""
    if arg in ("bytes", "bpe"):
        return arg
    if arg in tiktoken.list_encoding_names():
        return "tiktoken"
    path = Path(arg).expanduser()
    if path.is_file():
        return "file"
    if path.suffix == ".tiktoken" or "/" in arg or "\\" in arg:
        raise UserError(f"data.tokenizer: rank file {arg} not found; give the path of an existing .tiktoken file")
    raise UserError(f"data.tokenizer: unknown tokenizer {arg!r}; use 'bytes', 'bpe', a tiktoken encoding name "
                    f"({', '.join(sorted(tiktoken.list_encoding_names()))}) or the path of a .tiktoken rank file")


def vocab_size_for(tokenizer: str, bpe_vocab_size: int) -> int:
    """The vocabulary a dataset prepared with ``data.tokenizer = tokenizer`` gets, without preparing one
    (a trained BPE may come out smaller on a tiny corpus; ``bpe_vocab_size`` is what it aims for)."""
    kind = tokenizer_kind(tokenizer)
    if kind == "bytes":
        return bytes_spec()["vocab_size"]
    if kind == "bpe":
        return bpe_vocab_size
    if kind == "tiktoken":
        return named_spec(tokenizer)["vocab_size"]
    with tempfile.TemporaryDirectory() as d:
        return file_spec(Path(tokenizer).expanduser(), Path(d))["vocab_size"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- specs of each kind


def bytes_spec() -> dict:
    return {"kind": "bytes", "name": "bytes", "file": None, "vocab_size": 257, "eot_id": 256, "pat_str": GPT4_PAT}


def named_spec(name: str) -> dict:
    """A tiktoken encoding by name; without network or cache, say how to give its rank file instead."""
    enc = get_named_encoding(name)
    return {"kind": "tiktoken", "name": name, "file": None, "vocab_size": enc.n_vocab, "eot_id": enc.eot_token,
            "pat_str": enc._pat_str}


def get_named_encoding(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except (KeyError, ValueError):
        raise UserError(f"data.tokenizer: tiktoken has no encoding named {name!r}") from None
    except Exception as e:  # tiktoken downloads with requests (or blobfile); any network failure ends here
        base = SAME_RANKS.get(name, name)
        raise UserError(
            f"tiktoken cannot load {name!r} (no network and not in its cache: {type(e).__name__}); download "
            f"{RANK_URL.format(base)} where there is network and pass its path: --data.tokenizer=path/to/{base}.tiktoken"
        ) from None


def file_spec(path: Path, directory: Path) -> dict:
    """Copy a user's rank file into ``directory``; known encodings are checked against tiktoken's sha256."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    claimed = SAME_RANKS.get(path.stem, path.stem)
    name = next((n for n, (h, _, _) in KNOWN.items() if h == digest), None)
    if name is None and claimed in KNOWN:
        raise UserError(f"data.tokenizer: {path} is named like tiktoken's {claimed} but its sha256 is {digest}, not "
                        f"{KNOWN[claimed][0]}; download it again from {RANK_URL.format(claimed)}")
    ranks = parse_rank_file(data, str(path))
    if name is not None:
        _, pat_str, eot_id = KNOWN[name]
    else:  # an unknown byte-level BPE: GPT-4's pattern, <|endoftext|> right after the last rank
        name, pat_str, eot_id = path.stem, GPT4_PAT, max(ranks.values()) + 1
    file = f"{path.stem}.tiktoken"
    (directory / file).write_bytes(data)
    return {"kind": "file", "name": name, "file": file, "vocab_size": max(max(ranks.values()), eot_id) + 1,
            "eot_id": eot_id, "pat_str": pat_str}


def parse_rank_file(data: bytes, origin: str) -> dict[bytes, int]:
    """The ``base64-token rank`` lines of a .tiktoken file; every single byte must be a token."""
    ranks = {}
    try:
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except ValueError:  # binascii.Error is a ValueError
        raise UserError(f"{origin} is not a .tiktoken rank file (lines of 'base64-token rank')") from None
    missing = 256 - sum(bytes([i]) in ranks for i in range(256))
    if missing or len(set(ranks.values())) != len(ranks):
        raise UserError(f"{origin} is not a byte-level rank file ({missing} single bytes missing or duplicate ranks)")
    return ranks


def write_rank_file(ranks: dict[bytes, int], path: Path) -> None:
    """The standard .tiktoken format (tiktoken.load), see :func:`rank_file_bytes`."""
    path.write_bytes(rank_file_bytes(ranks))


def rank_file_bytes(ranks: dict[bytes, int]) -> bytes:
    """``base64(token) rank`` per line in rank order: byte for byte how tiktoken's published files are
    written, so their sha256 (KNOWN) identifies ranks however they were obtained."""
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in sorted(ranks.items(), key=lambda x: x[1]))


# --------------------------------------------------------------------------- loading


def load_tokenizer(spec: dict, directory: Path) -> tiktoken.Encoding:
    """The Encoding a spec describes; a rank file is looked up in ``directory`` (a dataset or run dir)."""
    kind = spec["kind"]
    special = {EOT: spec["eot_id"]}
    if kind == "bytes":
        return tiktoken.Encoding("bytes", pat_str=spec["pat_str"], special_tokens=special, explicit_n_vocab=257,
                                 mergeable_ranks={bytes([i]): i for i in range(256)})
    if kind == "tiktoken":
        return get_named_encoding(spec["name"])
    if kind in ("bpe", "file"):
        path = Path(directory) / spec["file"]
        if not path.is_file():
            raise UserError(f"{path} is missing: the tokenizer's rank file must sit in the dataset or run directory "
                            "that uses it; run prepare.py again (or copy it there)")
        ranks = parse_rank_file(path.read_bytes(), str(path))
        return tiktoken.Encoding(spec["name"], pat_str=spec["pat_str"], mergeable_ranks=ranks, special_tokens=special)
    raise UserError(f"unknown tokenizer kind {kind!r} in the dataset's meta.json; run prepare.py again")


def token_lengths(enc: tiktoken.Encoding, n: int) -> np.ndarray:
    """UTF-8 bytes of each token id below n; special tokens (and ids past the tokenizer) spell no text: what
    bits per byte divides by, counted from tokens alone (eval.py's scored tokens, llm.c's token shards)."""
    special = set(enc._special_tokens.values())
    out = np.zeros(n, dtype=np.int64)
    for i in range(min(n, enc.n_vocab)):
        if i not in special:
            try:
                out[i] = len(enc.decode_single_token_bytes(i))
            except KeyError:
                pass
    return out


# --------------------------------------------------------------------------- BPE training


@functools.lru_cache(maxsize=None)
def gpt4_splitter() -> re.Pattern:
    """GPT4_PAT for Python's ``re`` (3.11+: possessive quantifiers), which lacks ``\\p{..}``.

    The Unicode classes are spelled out from ``unicodedata``; ``\\s`` becomes Unicode White_Space as in
    Rust's regex crate, which tiktoken uses, and ``$`` (end of text there) becomes ``\\Z``. tiktoken's own
    regex is not exposed, and the ``regex`` module is not a dependency.
    """
    classes: dict[str, list[tuple[int, int]]] = {"L": [], "N": []}
    for cp in range(sys.maxunicode + 1):
        ranges = classes.get(unicodedata.category(chr(cp))[0])
        if ranges is not None:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    L, N = ("".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in classes[k]) for k in "LN")
    S = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    pat = (rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\n{L}{N}]?+[{L}]++|[{N}]{{1,3}}+| ?[^{S}{L}{N}]++[\r\n]*+"""
           rf"""|[{S}]++\Z|[{S}]*[\r\n]|[{S}]+(?![^{S}])|[{S}]""")
    return re.compile(pat)


def count_chunks(texts: Iterable[str], progress: bool = True, total_bytes: int | None = None) -> Counter[bytes]:
    """How often each pre-token chunk (GPT-4 split) occurs: BPE then works on unique chunks, not on text."""
    findall = gpt4_splitter().findall
    counts: Counter[str] = Counter()
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc="bpe: counting chunks", disable=not progress) as bar:
        for text in texts:
            counts.update(findall(text))
            bar.update(len(text.encode("utf-8")))
    return Counter({chunk.encode("utf-8", "surrogatepass"): n for chunk, n in counts.items()})


def train_bpe(chunks: dict[bytes, int], vocab_size: int, progress: bool = True) -> dict[bytes, int]:
    """Byte-level BPE merges to ``vocab_size`` tokens (256 bytes + merges + ``<|endoftext|>``).

    The most frequent adjacent pair is merged each step; ties go to the pair of smaller token ids, so
    training is deterministic. Pair counts are updated incrementally: a merge touches only the chunks
    that contain the pair (an index from pair to chunks), and a lazy max-heap finds the next pair (stale
    entries are over-estimates and are re-pushed with the true count when they surface).
    Returns the rank of every token's bytes, as tiktoken wants; may stop early when no pair is left.
    """
    SHIFT = 20  # a pair (a, b) is the int a << SHIFT | b: faster dict keys than tuples
    words = [list(c) for c in chunks if len(c) > 1]
    freqs = [n for c, n in chunks.items() if len(c) > 1]
    counts: dict[int, int] = {}
    where: dict[int, set[int]] = {}
    for w, word in enumerate(words):
        f = freqs[w]
        for a, b in zip(word, word[1:]):
            key = a << SHIFT | b
            counts[key] = counts.get(key, 0) + f
            where.setdefault(key, set()).add(w)
    heap = [(-n, key) for key, n in counts.items()]
    heapq.heapify(heap)
    tokens = [bytes([i]) for i in range(256)]
    ranks = {t: i for i, t in enumerate(tokens)}
    target = vocab_size - 1  # the last id is <|endoftext|>
    bar = tqdm(total=target - 256, unit="merge", desc="bpe: merging", disable=not progress)
    while len(tokens) < target and heap:
        neg, key = heapq.heappop(heap)
        n = counts.get(key, 0)
        if n != -neg:  # stale entry
            if n > 0:
                heapq.heappush(heap, (-n, key))
            continue
        a, b = key >> SHIFT, key & ((1 << SHIFT) - 1)
        merged = tokens[a] + tokens[b]
        new = ranks.get(merged)  # the same bytes can (rarely) arise from two different pairs
        if new is None:
            new = ranks[merged] = len(tokens)
            tokens.append(merged)
            bar.update(1)
        touched = set()

        def add(pair: int, delta: int, w: int) -> None:
            counts[pair] = counts.get(pair, 0) + delta
            if delta > 0:
                where.setdefault(pair, set()).add(w)
                touched.add(pair)

        for w in where.pop(key):
            word, f = words[w], freqs[w]
            if a not in word:
                continue  # the index is a superset: the pair left this chunk in an earlier merge
            out, i, n_w = [], 0, len(word)
            while i < n_w:
                if i + 1 < n_w and word[i] == a and word[i + 1] == b:
                    if out:  # (left, a) becomes (left, new)
                        add(out[-1] << SHIFT | a, -f, w)
                        add(out[-1] << SHIFT | new, f, w)
                    if i + 2 < n_w:  # (b, right) becomes (new, right)
                        add(b << SHIFT | word[i + 2], -f, w)
                        add(new << SHIFT | word[i + 2], f, w)
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            words[w] = out
        counts.pop(key, None)
        touched.discard(key)
        for pair in sorted(touched):
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
    bar.close()
    return ranks


def bpe_spec(chunks: dict[bytes, int], vocab_size: int, directory: Path, progress: bool = True) -> dict:
    """Train a BPE, write it to ``directory/tokenizer.tiktoken``, return its spec."""
    ranks = train_bpe(chunks, vocab_size, progress)
    if len(ranks) + 1 < vocab_size:
        print(f"warning: the BPE sample has too few distinct pairs for {vocab_size} tokens; "
              f"the vocabulary has {len(ranks) + 1}", file=sys.stderr)
    write_rank_file(ranks, directory / RANK_FILE)
    return {"kind": "bpe", "name": f"bpe{vocab_size}", "file": RANK_FILE, "vocab_size": len(ranks) + 1,
            "eot_id": len(ranks), "pat_str": GPT4_PAT}


# --------------------------------------------------------------------------- telling tokenizers apart


def identity(setting: str) -> str:
    """What a ``data.tokenizer`` setting encodes with, the same however it is spelled: 'bytes', or the
    sha256 of its rank file (a tiktoken name of a published encoding stands for its file, so 'gpt2',
    'r50k_base' and a local r50k_base.tiktoken are one tokenizer); 'bpe' is a BPE still to be trained."""
    kind = tokenizer_kind(setting)
    if kind == "file":
        return file_sha256(Path(setting).expanduser())
    return _identity(kind, setting)


def spec_identity(spec: dict, directory: Path) -> str:
    """:func:`identity` of a dataset's or checkpoint's tokenizer spec, its rank file in ``directory``."""
    if spec["kind"] in ("bpe", "file"):
        path = Path(directory) / spec["file"]
        if not path.is_file():
            raise UserError(f"{path} is missing: the tokenizer's rank file must sit beside the checkpoint or in the "
                            "dataset that uses it; copy it there")
        return file_sha256(path)
    return _identity(spec["kind"], spec["name"])


def _identity(kind: str, name: str) -> str:
    if kind == "tiktoken":
        base = SAME_RANKS.get(name, name)
        return KNOWN[base][0] if base in KNOWN else f"tiktoken:{name}"
    return kind  # 'bytes'; 'bpe' (to be trained) equals nothing but itself
