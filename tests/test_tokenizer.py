"""tokenizer.py: every kind round-trips Unicode; the trained BPE is a valid, deterministic tiktoken encoding."""
from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import tiktoken

from smallgpt import tokenizer as tok
from smallgpt.errors import UserError

UNICODE = ("Grüße aus Köln! 日本語のテキスト, emoji 🎉🧪, Ελληνικά, עברית, ½ Ⅻ ٣٤٥, tabs\tand\r\nCRLF,\n"
           "    indented code: def f(x): return x**2  # ok\n\n\nI'M you'Ll ſ's \u0301e\u00a0\u2003 <|endoftext|> end  ")
TRAIN_TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
              "must be in want of a wife.\n" * 3 + "def main(argv):\n    return 0\n" * 5 + "Déjà vu, naïve café.\n" * 4)


def bpe_encoding(text: str, vocab_size: int, directory: Path) -> tuple[tiktoken.Encoding, dict]:
    spec = tok.bpe_spec(tok.count_chunks([text], progress=False), vocab_size, directory, progress=False)
    return tok.load_tokenizer(spec, directory), spec


def test_bytes_round_trip_and_ids():
    spec = tok.bytes_spec()
    enc = tok.load_tokenizer(spec, Path("."))
    ids = enc.encode_ordinary(UNICODE)
    assert ids == list(UNICODE.encode("utf-8"))  # token id = byte value
    assert enc.decode(ids) == UNICODE
    assert enc.n_vocab == spec["vocab_size"] == 257 and enc.eot_token == spec["eot_id"] == 256
    assert enc.encode(tok.EOT, allowed_special="all") == [256]


def test_bpe_round_trip_valid_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    enc, spec = bpe_encoding(TRAIN_TEXT, 300, a)
    assert spec == {"kind": "bpe", "name": "bpe300", "file": tok.RANK_FILE, "vocab_size": 300, "eot_id": 299,
                    "pat_str": tok.GPT4_PAT}
    assert enc.n_vocab == 300 and enc.eot_token == 299
    # every token decodes to distinct bytes that encode back to it
    seen = set()
    for i in range(299):
        piece = enc.decode_single_token_bytes(i)
        assert enc.encode_single_token(piece) == i and piece not in seen
        seen.add(piece)
    assert enc.decode(enc.encode_ordinary(UNICODE)) == UNICODE  # text it was not trained on
    assert len(enc.encode_ordinary("It is a truth universally acknowledged")) < 34  # < bytes: it learned merges
    bpe_encoding(TRAIN_TEXT, 300, b)
    assert (a / tok.RANK_FILE).read_bytes() == (b / tok.RANK_FILE).read_bytes()  # deterministic
    first = (a / tok.RANK_FILE).read_text().splitlines()[0]
    assert first == "AA== 0"  # standard .tiktoken lines: base64 token, space, rank


def naive_bpe(chunks: dict[bytes, int], vocab_size: int) -> dict[bytes, int]:
    """Textbook BPE: recount every pair after every merge; the most frequent pair wins, ties to smaller ids."""
    words = [(list(c), n) for c, n in chunks.items()]
    tokens = [bytes([i]) for i in range(256)]
    ranks = {t: i for i, t in enumerate(tokens)}
    while len(tokens) < vocab_size - 1:
        counts = Counter()
        for w, n in words:
            for p in zip(w, w[1:]):
                counts[p] += n
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))
        merged = tokens[a] + tokens[b]
        new = ranks.setdefault(merged, len(tokens))
        if new == len(tokens):
            tokens.append(merged)
        for w, _ in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [new]
                i += 1
    return ranks


def test_incremental_training_matches_textbook_bpe():
    text = TRAIN_TEXT + "aaaa aaa aaaaa abab ababab xyzxyz\n" * 3 + UNICODE
    chunks = tok.count_chunks([text], progress=False)
    assert tok.train_bpe(chunks, 420, progress=False) == naive_bpe(chunks, 420)


def test_training_stops_when_no_pairs_are_left(tmp_path, capsys):
    enc, spec = bpe_encoding("ab ab ab", 1000, tmp_path)
    assert spec["vocab_size"] == len(enc.token_byte_values()) + 1 < 1000
    assert "warning" in capsys.readouterr().err
    assert enc.decode(enc.encode_ordinary("abba")) == "abba"


def test_python_splitter_matches_tiktoken():
    """The BPE trainer splits with Python's re; tiktoken splits with Rust's regex. They must agree."""
    text = UNICODE * 2 + TRAIN_TEXT + "x\x1c\x1dy 12345678 a\u3000\u3000b\n \n\t\n  \r\n"
    chunks = tok.gpt4_splitter().findall(text)
    assert "".join(chunks) == text
    ranks = {bytes([i]): i for i in range(256)}
    for c in dict.fromkeys(chunks):  # every chunk a token: tiktoken then returns its own chunks whole
        ranks.setdefault(c.encode(), len(ranks))
    enc = tiktoken.Encoding("split", pat_str=tok.GPT4_PAT, mergeable_ranks=ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(t) for t in enc.encode_ordinary(text)] == [c.encode() for c in chunks]


def test_bpe_speed_on_a_novel(shared_data, tmp_path):
    """Issue: vocab 4096 on ~1 MB of text in <= 10 s (asserted loosely: the test machine is shared)."""
    text = (shared_data / "pride-and-prejudice.txt").read_text(encoding="utf-8")
    t = time.perf_counter()
    enc, spec = bpe_encoding(text, 4096, tmp_path)
    elapsed = time.perf_counter() - t
    assert spec["vocab_size"] == 4096 and elapsed < 30
    assert enc.decode(enc.encode_ordinary(text[:5000])) == text[:5000]
    assert len(text.encode()) / len(enc.encode_ordinary(text)) > 3.5  # bytes per token on its own text


def test_gpt2_rank_file(gpt2_rank_file, tmp_path):
    spec = tok.file_spec(gpt2_rank_file, tmp_path)
    assert spec == {"kind": "file", "name": "r50k_base", "file": "r50k_base.tiktoken", "vocab_size": 50257,
                    "eot_id": 50256, "pat_str": tok.GPT2_PAT}
    assert (tmp_path / "r50k_base.tiktoken").read_bytes() == gpt2_rank_file.read_bytes()  # copied beside the data
    enc = tok.load_tokenizer(spec, tmp_path)
    assert enc.encode_ordinary("hello world") == [31373, 995]  # GPT-2's well-known ids
    assert enc.decode(enc.encode_ordinary(UNICODE)) == UNICODE
    assert tok.tokenizer_kind(str(gpt2_rank_file)) == "file"


def test_gpt2_rank_file_under_any_name_is_recognised_by_hash(gpt2_rank_file, tmp_path):
    renamed = tmp_path / "src" / "my-ranks.tiktoken"
    renamed.parent.mkdir()
    shutil.copyfile(gpt2_rank_file, renamed)
    spec = tok.file_spec(renamed, tmp_path)
    assert spec["name"] == "r50k_base" and spec["file"] == "my-ranks.tiktoken" and spec["eot_id"] == 50256


def test_named_encoding_from_tiktoken_cache(gpt2_rank_file, tmp_path, monkeypatch):
    """With the rank file in tiktoken's cache (as on a machine that downloaded it once), names work offline."""
    url = tok.RANK_URL.format("r50k_base")
    shutil.copyfile(gpt2_rank_file, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    spec = tok.named_spec("r50k_base")
    assert spec["kind"] == "tiktoken" and spec["file"] is None and spec["eot_id"] == 50256
    enc = tok.load_tokenizer(spec, tmp_path)
    assert enc.decode(enc.encode_ordinary(UNICODE)) == UNICODE


def test_named_encoding_offline_says_how_to_give_the_file(tmp_path, monkeypatch):
    def no_network(url: str) -> bytes:
        raise ConnectionError("no network")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    with pytest.raises(UserError, match=r"--data.tokenizer=path/to/r50k_base.tiktoken"):
        tok.named_spec("gpt2")
    with pytest.raises(UserError, match=r"cl100k_base.tiktoken"):
        tok.named_spec("cl100k_base")


def test_bad_rank_files(tmp_path):
    fake = tmp_path / "r50k_base.tiktoken"  # named like a known encoding, but other content
    tok.write_rank_file({bytes([i]): i for i in range(256)}, fake)
    with pytest.raises(UserError, match="sha256"):
        tok.file_spec(fake, tmp_path)
    junk = tmp_path / "junk.tiktoken"
    junk.write_text("this is not a rank file\n")
    with pytest.raises(UserError, match="not a .tiktoken rank file"):
        tok.file_spec(junk, tmp_path)
    partial = tmp_path / "partial.tiktoken"
    tok.write_rank_file({bytes([i]): i for i in range(200)}, partial)
    with pytest.raises(UserError, match="single bytes missing"):
        tok.file_spec(partial, tmp_path)


def test_unknown_tokenizers():
    with pytest.raises(UserError, match="unknown tokenizer 'gpt5'"):
        tok.tokenizer_kind("gpt5")
    with pytest.raises(UserError, match="not found"):
        tok.tokenizer_kind("missing/ranks.tiktoken")
    kinds = [tok.tokenizer_kind(k) for k in ("bytes", "bpe", "gpt2", "cl100k_base")]
    assert kinds == ["bytes", "bpe", "tiktoken", "tiktoken"]
    with pytest.raises(UserError, match="missing"):
        tok.load_tokenizer({"kind": "bpe", "name": "x", "file": "gone.tiktoken", "vocab_size": 300, "eot_id": 299,
                            "pat_str": tok.GPT4_PAT}, Path("."))
