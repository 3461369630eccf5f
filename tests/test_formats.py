"""The readers of data.source: JSON Lines, JSON, Parquet, compressed text and token shards give exactly
what the same texts as plain files give (byte for byte); bad input is one line, exit 2, and loses nothing."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prepare as prepare_script
import train
from helpers import (ROOT, argv, documents, prepare_peak_rss, records, serve, write_as_files, write_jsonl, write_parquet,
                     write_shard)
from smallgpt import corpus, dataset, evaluation, pipeline
from smallgpt import tokenizer as tok
from smallgpt.cli import parse_args, run_main
from smallgpt.config import Config, DataConfig
from smallgpt.errors import UserError

TEXTS = documents(120, seed=1, empty_every=17)  # 7 empty records among them: skipped and counted
BPE = {"tokenizer": "bpe", "vocab_size": 300, "bpe_train_bytes": 20_000}  # a sampled BPE: the sample must match too


def build(tmp_path: Path, source, name: str, **kw) -> dataset.Dataset:
    cfg = DataConfig(source=source if isinstance(source, list) else str(source), dir=str(tmp_path / name), **kw)
    return dataset.open_dataset(pipeline.prepare(cfg, progress=False))


def assert_same_dataset(a: dataset.Dataset, b: dataset.Dataset) -> None:
    """The same token files, byte for byte, the same tokenizer and the same counts."""
    for split in ("train", "val"):
        assert (a.dir / f"{split}.bin").read_bytes() == (b.dir / f"{split}.bin").read_bytes(), split
        for k in ("tokens", "bytes", "documents"):
            assert a.meta[f"{split}_{k}"] == b.meta[f"{split}_{k}"], (split, k)
    assert a.meta["tokenizer"] == b.meta["tokenizer"] and a.meta["source"]["sha256"] == b.meta["source"]["sha256"]
    for name in ("tokenizer.tiktoken",):
        if (a.dir / name).exists():
            assert (a.dir / name).read_bytes() == (b.dir / name).read_bytes()


@pytest.fixture
def as_files(tmp_path) -> dataset.Dataset:
    """TEXTS as plain files, one per record, in sorted order: what every reader must reproduce."""
    return build(tmp_path, write_as_files(tmp_path / "files", TEXTS), "ds-files", **BPE)


@pytest.fixture
def pyarrow():
    return pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install pyarrow; requirements-dev.txt)")


def test_jsonl_gives_the_tokens_of_the_same_texts_as_files(tmp_path, as_files):
    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": k, "text": t} for k, t in enumerate(TEXTS)])
    ds = build(tmp_path, src, "ds-jsonl", **BPE)
    assert_same_dataset(ds, as_files)
    assert ds.meta["train_documents"] + ds.meta["val_documents"] == len([t for t in TEXTS if t]) == 113
    src_meta = ds.meta["source"]
    assert src_meta["empty_records"] == 7 and src_meta["documents"] == 113
    assert src_meta["parts"] == [{"source": str(src), "formats": {"jsonl": 1}, "documents": 113, "empty": 7,
                                  "text_field": ["text"]}]
    assert ds.meta["settings"]["formats"] == ["jsonl"] and ds.meta["settings"]["text_field"] == ["text"]
    assert "record" in ds.meta["split_at"]


def test_parquet_shards_give_the_tokens_of_the_same_texts_as_files(tmp_path, as_files, pyarrow, monkeypatch):
    from smallgpt import formats
    monkeypatch.setattr(formats.ParquetRows, "BATCH", 5)  # several batches in a row group, read on and read again
    for n, part in enumerate((TEXTS[:50], TEXTS[50:])):  # two shards, several row groups each
        write_parquet(tmp_path / "shards" / f"000_0000{n}.parquet", {"id": list(range(len(part))), "text": part},
                      row_group_size=16)
    ds = build(tmp_path, tmp_path / "shards", "ds-parquet", **BPE)
    assert_same_dataset(ds, as_files)
    assert ds.meta["source"]["parts"][0]["formats"] == {"parquet": 2}


def test_train_py_trains_on_a_directory_of_parquet_shards(tmp_path, pyarrow):
    texts = documents(300, seed=3)
    write_parquet(tmp_path / "shards" / "a.parquet", {"text": texts[:150]})
    write_parquet(tmp_path / "shards" / "b.parquet", {"text": texts[150:]})
    out = tmp_path / "run"
    data = {"data.source": str(tmp_path / "shards"), "data.text_field": "text", "data.tokenizer": "bytes",
            "data.dir": str(tmp_path / "ds")}
    assert train.main(argv(data, out, train__max_iters=4, train__eval_interval=4)) == 0
    assert any("val_loss" in r for r in records(out))
    files = build(tmp_path, write_as_files(tmp_path / "files", texts), "ds-files", tokenizer="bytes")
    assert_same_dataset(dataset.open_dataset(tmp_path / "ds"), files)


@pytest.mark.parametrize("variant", ["json-lines", "json-array", "jsonl.gz", "jsonl.zst", "format=jsonl"])
def test_every_json_variant_reads_the_same_records(variant, tmp_path, as_files):
    rows = [{"text": t, "n": k} for k, t in enumerate(TEXTS)]
    kw = dict(BPE)
    if variant == "json-lines":
        src = write_jsonl(tmp_path / "docs.json", rows)
    elif variant == "json-array":  # one array, written over many lines, with odd spacing
        src = tmp_path / "docs.json"
        src.write_text("[\n" + ",\n  ".join(json.dumps(r, ensure_ascii=False, indent=1) for r in rows) + "\n]\n",
                       encoding="utf-8")
    elif variant == "jsonl.gz":
        src = write_jsonl(tmp_path / "docs.jsonl.gz", rows, opener=gzip.open)
    elif variant == "jsonl.zst":
        zstd = pytest.importorskip("zstandard", reason="zstandard is not installed (pip install zstandard)")
        raw = write_jsonl(tmp_path / "raw.jsonl", rows).read_bytes()
        src = tmp_path / "docs.jsonl.zst"  # two frames: a reader must read across them
        src.write_bytes(zstd.ZstdCompressor().compress(raw[:len(raw) // 2]) + zstd.ZstdCompressor().compress(raw[len(raw) // 2:]))
    else:  # a suffix that says nothing, the format named
        src = write_jsonl(tmp_path / "docs.txt", rows)
        kw["format"] = "jsonl"
    assert_same_dataset(build(tmp_path, src, "ds", **kw), as_files)


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_compressed_text_is_the_same_text(compression, tmp_path):
    plain = write_as_files(tmp_path / "plain", TEXTS[:40])
    packed = tmp_path / "packed"
    packed.mkdir()
    for p in sorted(plain.iterdir()):
        if compression == "gz":
            (packed / f"{p.name}.gz").write_bytes(gzip.compress(p.read_bytes()))
        else:
            zstd = pytest.importorskip("zstandard", reason="zstandard is not installed (pip install zstandard)")
            (packed / f"{p.name}.zst").write_bytes(zstd.ZstdCompressor().compress(p.read_bytes()))
    a, b = build(tmp_path, plain, "ds-plain", **BPE), build(tmp_path, packed, "ds-packed", **BPE)
    assert_same_dataset(a, b)
    assert b.meta["settings"]["formats"] == [f"text+{'gzip' if compression == 'gz' else 'zstd'}"]


def test_dotted_and_several_fields(tmp_path):
    rows = [{"meta": {"body": f"body {k}\n"}, "instruction": f"Do {k}.", "input": "" if k % 2 else f"with {k}",
             "output": f"Done {k}.\n"} for k in range(60)]
    src = write_jsonl(tmp_path / "sft.jsonl", rows)
    texts = ["\n\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in rows]
    several = build(tmp_path, src, "ds-several", tokenizer="bytes", text_field=["instruction", "input", "output"])
    assert several.tokenizer.decode(np.concatenate([several.train, several.val]).tolist()) == "<|endoftext|>".join(texts)
    dotted = build(tmp_path, src, "ds-dotted", tokenizer="bytes", text_field="meta.body")
    assert dotted.tokenizer.decode(np.concatenate([dotted.train, dotted.val]).tolist()) == \
        "<|endoftext|>".join(r["meta"]["body"] for r in rows)
    cfg = parse_args([f"--data.source={src}", "--data.text_field=instruction,input,output"], Config, "train.py")
    assert cfg.data.text_fields == ["instruction", "input", "output"]
    toml = tmp_path / "sft.toml"
    toml.write_text('[data]\ntext_field = ["instruction", "output"]\nformat = "jsonl"\n')
    assert parse_args([str(toml)], Config, "train.py").data.text_fields == ["instruction", "output"]
    with pytest.raises(UserError, match="data.format"):
        parse_args(["--data.format=csv"], Config, "train.py")
    with pytest.raises(UserError, match="data.text_field"):
        parse_args(["--data.text_field=a..b"], Config, "train.py")


def test_parquet_nested_and_several_columns_and_nulls(tmp_path, pyarrow):
    bodies = [f"body {k}\n" if k % 5 else None for k in range(40)]  # nulls: empty records, skipped and counted
    src = write_parquet(tmp_path / "p.parquet", {"meta": [{"body": b, "lang": "en"} for b in bodies],
                                                 "title": [f"Title {k}" for k in range(40)]}, row_group_size=7)
    ds = build(tmp_path, src, "ds", tokenizer="bytes", text_field="meta.body")
    assert ds.tokenizer.decode(np.concatenate([ds.train, ds.val]).tolist()) == "<|endoftext|>".join(b for b in bodies if b)
    assert ds.meta["source"]["empty_records"] == 8
    both = build(tmp_path, src, "ds2", tokenizer="bytes", text_field=["title", "meta.body"])
    want = ["\n\n".join(p for p in (f"Title {k}", b) if p) for k, b in enumerate(bodies)]
    assert both.tokenizer.decode(np.concatenate([both.train, both.val]).tolist()) == "<|endoftext|>".join(want)


def test_a_mixed_list_of_sources_records_each_format_and_field(tmp_path):
    write_as_files(tmp_path / "notes", TEXTS[:30])
    jsonl = write_jsonl(tmp_path / "more.jsonl", [{"body": t} for t in TEXTS[30:]])
    ds = build(tmp_path, [str(tmp_path / "notes"), str(jsonl)], "ds", tokenizer="bytes", text_field="body")
    files = build(tmp_path, write_as_files(tmp_path / "all", TEXTS), "ds-all", tokenizer="bytes")
    assert_same_dataset(ds, files)
    full = lambda texts: sum(1 for t in texts if t)
    assert ds.meta["source"]["parts"] == [  # an empty file is no document, an empty record is one counted
        {"source": str(tmp_path / "notes"), "formats": {"text": full(TEXTS[:30])}, "documents": full(TEXTS[:30]),
         "empty": 0},
        {"source": str(jsonl), "formats": {"jsonl": 1}, "documents": full(TEXTS[30:]),
         "empty": 90 - full(TEXTS[30:]), "text_field": ["body"]}]


def test_another_text_field_is_another_dataset(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"a": t, "b": t.upper()} for t in TEXTS[:40]])
    cfg = DataConfig(source=str(src), text_field="a", tokenizer="bytes", dir=str(tmp_path / "ds"))
    pipeline.prepare(cfg, progress=False)
    with pytest.raises(UserError, match=r"built differently \(text_field \['a'\] there, \['b'\] now\)"):
        pipeline.prepare(DataConfig(source=str(src), text_field="b", tokenizer="bytes", dir=str(tmp_path / "ds")),
                         progress=False)
    pipeline.prepare(cfg, progress=False)  # reused


def test_format_auto_by_content(tmp_path, pyarrow, capsys):
    write_parquet(tmp_path / "src" / "part-0", {"text": TEXTS[:10]})  # no suffix: Parquet by its magic bytes
    (tmp_path / "src" / "notes.txt").write_text("some notes\n", encoding="utf-8")
    info = tmp_path / "src" / "dataset_info.json"  # as a datasets cache holds: a document, not records
    info.write_text(json.dumps({"description": "x", "features": {"text": "string"}}, indent=2), encoding="utf-8")
    c = corpus.resolve_source(DataConfig(source=str(tmp_path / "src")), tmp_path)
    assert [str(k) for k in c.kinds] == ["text", "parquet"]
    assert c.skipped == [f"{info} (a JSON document, not records (an array, or one JSON object per line))"]
    assert "skipped 1 files that hold no text or records" in capsys.readouterr().err
    with pytest.raises(UserError, match="is a JSON document, not records.*--data.format=text"):
        corpus.resolve_source(DataConfig(source=str(info)), tmp_path)


def test_eval_reads_jsonl_as_it_reads_files(tmp_path):
    enc = tok.load_tokenizer(tok.bytes_spec(), tmp_path)
    src = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS[:30]])
    files = write_as_files(tmp_path / "files", TEXTS[:30])
    got = evaluation.read_tokens(DataConfig(source=str(src)), enc, progress=False)
    assert got.tolist() == evaluation.read_tokens(DataConfig(source=str(files)), enc, progress=False).tolist()
    assert enc.decode(got.tolist()) == "<|endoftext|>" + "<|endoftext|>".join(t for t in TEXTS[:30] if t)


def test_a_record_that_straddles_blocks_is_read_whole(tmp_path, monkeypatch):
    from smallgpt import encoding
    monkeypatch.setattr(encoding, "BLOCK", 512)  # records of several blocks, read back through a stream
    big = [t * 8 for t in TEXTS[:20]]
    a = build(tmp_path, write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in big]), "a", tokenizer="bytes")
    b = build(tmp_path, write_as_files(tmp_path / "files", big), "b", tokenizer="bytes")
    assert_same_dataset(a, b)


def test_a_jsonl_url_is_downloaded_under_its_name_and_read_as_jsonl(tmp_path, as_files):
    served = write_jsonl(tmp_path / "www" / "docs.jsonl", [{"text": t} for t in TEXTS])
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    with serve(tmp_path / "www") as root:
        ds = build(tmp_path, f"{root}/docs.jsonl", "ds-url", sha256=digest, **BPE)
    assert_same_dataset(ds, as_files)
    assert (tmp_path / "downloads" / "docs.jsonl").read_bytes() == served.read_bytes()


# --------------------------------------------------------------------------- token shards


def gpt2_shards(tmp_path: Path, rank_file: Path, texts: list[str]) -> tuple[list[int], object]:
    """llm.c-style tokens of ``texts``: each document <|endoftext|> then its tokens."""
    enc = tok.load_tokenizer(tok.file_spec(rank_file, tmp_path), tmp_path)
    tokens = [t for text in texts for t in [enc.eot_token] + enc.encode_ordinary(text)]
    return tokens, enc


def test_token_shards_are_a_dataset_without_re_tokenizing(tmp_path, gpt2_rank_file):
    texts = [t for t in TEXTS if t]
    tokens, enc = gpt2_shards(tmp_path, gpt2_rank_file, texts)
    cut = tokens.index(enc.eot_token, len(tokens) * 4 // 5)
    write_shard(tmp_path / "fw" / "fineweb_train_000001.bin", tokens[:cut // 2])
    write_shard(tmp_path / "fw" / "fineweb_train_000002.bin", tokens[cut // 2:cut])
    write_shard(tmp_path / "fw" / "fineweb_val_000000.bin", tokens[cut:])
    ds = build(tmp_path, tmp_path / "fw", "ds", tokenizer=str(gpt2_rank_file))
    assert ds.train.tolist() == tokens[:cut] and ds.val.tolist() == tokens[cut:]
    assert ds.meta["train_bytes"] + ds.meta["val_bytes"] == sum(len(t.encode()) for t in texts)
    assert ds.meta["val_bytes"] == len(enc.decode_bytes([t for t in tokens[cut:] if t != enc.eot_token]))
    assert ds.meta["train_documents"] + ds.meta["val_documents"] == len(texts)
    assert ds.meta["tokenizer"]["name"] == "r50k_base" and ds.vocab_size == 50257 and ds.meta["dtype"] == "uint16"
    assert ds.meta["split_at"] == {"val_shards": [str(tmp_path / "fw" / "fineweb_val_000000.bin")]}
    # no val shard: the tail, from a document start
    write_shard(tmp_path / "fw2" / "shard_0.bin", tokens[:len(tokens) // 2])
    write_shard(tmp_path / "fw2" / "shard_1.bin", tokens[len(tokens) // 2:])
    tail = build(tmp_path, tmp_path / "fw2", "ds2", tokenizer=str(gpt2_rank_file), val_fraction=0.25)
    start = tokens.index(enc.eot_token, int(0.75 * len(tokens)))
    assert tail.val.tolist() == tokens[start:] and tail.train.tolist() == tokens[:start]


# --------------------------------------------------------------------------- bad input


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["prepare.py", *args])
    with pytest.raises(SystemExit) as e:
        run_main(prepare_script.main)
    return e.value.code, capsys.readouterr().err


def bad_files(t: Path) -> dict[str, tuple[str, list[str], str]]:
    """case -> (source, extra settings, what the one line says)."""
    ok = [{"text": d} for d in TEXTS[:20]]
    write_jsonl(t / "nofield.jsonl", ok[:5] + [{"body": "x"}] + ok[5:])
    (t / "notjson.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in ok[:3]) + b"{oops\n")
    write_jsonl(t / "wrongtype.jsonl", ok[:2] + [{"text": 42}])
    with open(t / "long.jsonl", "wb") as f:  # a 100 MB line: refused without being read whole
        f.write(json.dumps(ok[0]).encode() + b"\n" + b'{"text": "' + b"x" * 100_000_000 + b'"}\n')
    gz = gzip.compress(write_jsonl(t / "g.jsonl", ok * 20).read_bytes())
    (t / "cut.jsonl.gz").write_bytes(gz[:len(gz) // 2])
    (t / "notarray.json").write_text('[{"text": "a"}, {"text": "b"', encoding="utf-8")
    (t / "binaries").mkdir()
    (t / "binaries" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    write_shard(t / "badshard.bin", [1, 2, 3], magic=20240801)
    shard = write_shard(t / "cutshard.bin", list(range(1000)))
    shard.write_bytes(shard.read_bytes()[:-100])
    write_shard(t / "gpt2shards" / "fineweb_train_000001.bin", [50256, 1, 2, 3] * 100)
    (t / "mixed").mkdir()
    write_shard(t / "mixed" / "a.bin", [1, 2, 3])
    (t / "mixed" / "b.txt").write_text("text\n")
    cases = {
        "missing field": ("nofield.jsonl", [], "nofield.jsonl: the record on line 6 has no field 'text' (it has: body); "
                                                "set --data.text_field"),
        "line not JSON": ("notjson.jsonl", [], "notjson.jsonl: line 4 is not valid JSON"),
        "wrong type": ("wrongtype.jsonl", [], "line 3: field 'text' is a int, not a string"),
        "100 MB line": ("long.jsonl", [], "long.jsonl: line 2 is longer than 32 MB"),
        "gzip cut short": ("cut.jsonl.gz", [], "the gzip stream is damaged or cut short"),
        "array cut short": ("notarray.json", [], "ends inside its array"),
        "no readable file": ("binaries", [], "is empty: no readable file"),
        "shard header": ("badshard.bin", [], "is not a GPT-2 token shard of llm.c (its header: magic 20240801"),
        "shard cut short": ("cutshard.bin", [], "but its header says 1000: the shard is cut short"),
        "shards and text": ("mixed", [], "mixes token shards"),
        "shards, another tokenizer": ("gpt2shards", [], "data.tokenizer 'bytes' is not GPT-2's"),
        "tokens named on text": ("g.jsonl", ["--data.format=tokens"], "is not a GPT-2 token shard"),
    }
    try:
        import zstandard
        z = zstandard.ZstdCompressor().compress((t / "g.jsonl").read_bytes())
        (t / "cut.jsonl.zst").write_bytes(z[:len(z) // 2])
        cases["zstd cut short"] = ("cut.jsonl.zst", [], "the zstd stream is damaged or cut short")
    except ImportError:
        pass
    try:
        import pyarrow  # noqa: F401
        good = write_parquet(t / "good.parquet", {"text": [d["text"] for d in ok] * 5, "n": list(range(100))}, 10)
        (t / "cut.parquet").write_bytes(good.read_bytes()[:good.stat().st_size // 2])
        cases |= {
            "truncated parquet": ("cut.parquet", [], "cut.parquet is not a readable Parquet file"),
            "parquet column type": ("good.parquet", ["--data.text_field=n"], "column 'n' holds int64, not text"),
            "parquet no column": ("good.parquet", ["--data.text_field=body"],
                                  "good.parquet has no column 'body' (its columns: text, n)"),
        }
    except ImportError:
        pass
    return cases


CASES = ["missing field", "line not JSON", "wrong type", "100 MB line", "gzip cut short", "zstd cut short",
         "array cut short", "no readable file", "shard header", "shard cut short", "shards and text", "shards, another tokenizer",
         "tokens named on text", "truncated parquet", "parquet column type", "parquet no column"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_the_dataset_stays(case, tmp_path, monkeypatch, capsys):
    cases = bad_files(tmp_path)
    if case not in cases:
        pytest.skip("needs pyarrow" if "parquet" in case else "needs zstandard")
    src, extra, message = cases[case]
    good = write_as_files(tmp_path / "good", TEXTS[:40])
    common = ["--data.tokenizer=bytes", f"--data.dir={tmp_path / 'ds'}"]
    assert cli(monkeypatch, capsys, f"--data.source={good}", *common)[0] == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}
    code, err = cli(monkeypatch, capsys, f"--data.source={tmp_path / src}", *common, *extra, "--force")
    assert code == 2 and "Traceback" not in err and err.count("error:") == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before  # the old dataset, untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")) == [".ds.lock"]  # no temp dir
    code, _ = cli(monkeypatch, capsys, f"--data.source={tmp_path / src}", *extra, "--data.tokenizer=bytes",
                  f"--data.dir={tmp_path / 'fresh'}")
    assert code == 2 and not (tmp_path / "fresh").exists()  # nothing that looks prepared


@pytest.mark.parametrize("package", ["pyarrow", "zstandard"])
def test_a_missing_optional_package_is_one_line_naming_it(package, tmp_path, monkeypatch):
    if package == "pyarrow":
        pytest.importorskip("pyarrow", reason="pyarrow is not installed")
        src = write_parquet(tmp_path / "p.parquet", {"text": TEXTS[:5]})
    else:
        zstd = pytest.importorskip("zstandard", reason="zstandard is not installed")
        src = tmp_path / "t.txt.zst"
        src.write_bytes(zstd.ZstdCompressor().compress(b"hello\n"))
    for name in [m for m in sys.modules if m.split(".")[0] == package]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)  # import raises ImportError, as where it is not installed
    with pytest.raises(UserError, match=f"pip install {package}$"):
        pipeline.prepare(DataConfig(source=str(src), tokenizer="bytes", dir=str(tmp_path / "ds")), progress=False)


def test_text_and_json_need_neither_optional_package(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl.gz", [{"text": t} for t in TEXTS[:20]], opener=gzip.open)
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from smallgpt import pipeline; "
              f"from smallgpt.config import DataConfig; pipeline.prepare(DataConfig(source={str(src)!r}, "
              f"tokenizer='bytes', dir={str(tmp_path / 'ds')!r}), progress=False); "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'zstandard'}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- scale


@pytest.mark.slow
def test_memory_stays_bounded_on_a_large_jsonl(tmp_path):
    """200 MB of generated JSON Lines: peak RSS must grow far less than the corpus or its tokens would need."""
    texts = documents(400, seed=5)
    block = b"".join(json.dumps({"id": k, "text": t}, ensure_ascii=False).encode() + b"\n" for k, t in enumerate(texts))
    with open(tmp_path / "big.jsonl", "wb") as f:
        for _ in range(200_000_000 // len(block) + 1):
            f.write(block)
    grown_mb, meta = prepare_peak_rss(tmp_path / "big.jsonl", tmp_path / "ds")
    reps = 200_000_000 // len(block) + 1
    assert meta["train_bytes"] + meta["val_bytes"] == reps * sum(len(t.encode()) for t in texts)
    assert meta["source"]["documents"] == reps * len(texts)
    assert grown_mb < 200, f"peak RSS grew by {grown_mb:.0f} MB on a {reps * len(block) / 1e6:.0f} MB JSONL file"
