"""What a corpus is and where its documents come from: ``data.source`` resolved to text files.

``data.source`` is a text file, a directory (read recursively), a glob, a list of these, an
``http(s)://`` URL checked by its sha256, or ``python-stdlib`` (the default corpus: the running
Python's standard library, present on every machine, no network needed).  Each file is one
document.  Files named directly must be UTF-8 text; files found in a directory or a glob are skipped,
with a warning, when they are binary or in another encoding.
"""
from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
import sysconfig
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from smallgpt import tokenizer as tok
from smallgpt.encoding import char_cut, decode
from smallgpt.errors import UserError

if TYPE_CHECKING:
    from smallgpt.config import DataConfig

SNIFF = 1 << 16  # bytes read to tell a text file from a binary or non-UTF-8 one


@dataclass
class Corpus:
    """The documents of a corpus: text files, in order, with their sizes (empty files dropped)."""
    files: list[Path]
    sizes: list[int]
    skipped: list[str] = field(default_factory=list)  # 'path (why)' of files left out
    stdlib: bool = False

    @property
    def total(self) -> int:
        return sum(self.sizes)

    def inputs_digest(self) -> str:
        """What a re-run must find unchanged to reuse a dataset: each file's path, size and mtime."""
        h = hashlib.sha256()
        for p in self.files:  # resolved: the same file given as a relative or an absolute path is the same
            st = p.stat()
            h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def stdlib_files() -> list[Path]:
    """The default corpus: every .py file of the running Python's standard library (its tests included,
    ~30 MB on CPython 3.11), without site-packages; present on any machine with Python, no network needed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(p for p in root.rglob("*.py")
                  if not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts) and p.is_file())


def sniff(path: Path) -> str | None:
    """Why ``path`` is not UTF-8 text ('binary', 'not UTF-8'), or None: judged on its first 64 KB."""
    with open(path, "rb") as f:
        head = f.read(SNIFF)
    if b"\0" in head:
        return "binary"
    if len(head) == SNIFF:
        head = head[:char_cut(head)]  # not a character cut by the limit
    bad = decode(head)[1]
    return "not UTF-8" if bad * 100 > len(head) else None  # a stray bad byte is replaced, a legacy encoding is not


def resolve_source(cfg: DataConfig, downloads: Path, exclude: Path | None = None) -> Corpus:
    """``data.source`` -> a Corpus. Files named directly must be text; files found in a directory, a glob or
    the standard library are skipped (with a warning) when binary or not UTF-8. Files found under
    ``exclude`` (the dataset directory itself, when a source directory holds it) are left out."""
    items = cfg.sources
    if not items or not all(items):
        raise UserError("data.source is empty; give a text file, a directory, a glob, a list of them, a URL "
                        "or 'python-stdlib'")
    found: list[tuple[Path, bool]] = []  # (path, named directly)
    stdlib = False
    for item in items:
        if item == "python-stdlib":
            stdlib = True
            found += [(p, False) for p in stdlib_files()]
        elif is_url(item):
            found.append((download(item, cfg.sha256, downloads), True))
        elif any(c in item for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"data.source: no files match {item!r}")
            found += [(p, False) for p in matches]
        else:
            p = Path(item).expanduser()
            if p.is_dir():
                files = sorted(f for f in p.rglob("*")
                               if f.is_file() and not any(s.startswith(".") for s in f.relative_to(p).parts))
                if not files:
                    raise UserError(f"data.source: directory {item} has no files")
                found += [(f, False) for f in files]
            elif p.is_file():
                found.append((p, True))
            else:
                raise UserError(f"data.source: {item} not found; give a text file, a directory, a glob, a list of "
                                "them, an http(s) URL or 'python-stdlib'")
    corpus, seen = Corpus([], [], stdlib=stdlib), set()
    inside = exclude.resolve() if exclude is not None else None
    for p, named in found:
        key = p.resolve()
        if key in seen or (inside is not None and not named and key.is_relative_to(inside)):
            continue
        seen.add(key)
        try:
            why, size = sniff(p), p.stat().st_size
        except OSError as e:
            raise UserError(f"data.source: cannot read {p}: {e.strerror}") from None
        if why and named:
            hint = "convert it to UTF-8 first (e.g. iconv -f latin1 -t utf-8)" if why == "not UTF-8" else "give a text file"
            raise UserError(f"data.source: {p} is {why} (judged on its first 64 KB); {hint}")
        if why:
            corpus.skipped.append(f"{p} ({why})")
        elif size:
            corpus.files.append(p)
            corpus.sizes.append(size)
    if corpus.skipped:
        shown = ", ".join(corpus.skipped[:3]) + (", ..." if len(corpus.skipped) > 3 else "")
        warn(f"skipped {len(corpus.skipped)} files that are not UTF-8 text: {shown}")
    if not corpus.total:
        raise UserError(f"the corpus {cfg.source!r} is empty: no text found; give files with text in them")
    return corpus


def is_url(item: str) -> bool:
    """Whether a source names a download rather than a local path."""
    return item.startswith(("http://", "https://"))


def is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def download(url: str, sha256: str, directory: Path, keys: tuple[str, str] = ("data.source", "data.sha256")) -> Path:
    """Fetch ``url`` once into ``directory``, checked against ``sha256``; ``keys`` are the settings that gave
    the URL and the sha256 (data.source and data.sha256; eval.data and eval.sha256), named in the errors."""
    url_key, sha_key = keys
    if not is_sha256(sha256 or ""):
        raise UserError(f"{url_key} is a URL: give its sha256 as --{sha_key}=<64 hex digits> to check the download")
    dest = directory / (Path(urllib.parse.urlparse(url).path).name or "download")
    if dest.is_file() and tok.file_sha256(dest) == sha256.lower():
        return dest
    part = dest.with_name(f".{dest.name}.part{os.getpid()}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=30) as r, open(part, "wb") as f, \
                tqdm(total=int(r.headers.get("Content-Length") or 0) or None, unit="B", unit_scale=True,
                     desc=f"downloading {dest.name}") as bar:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
        got = tok.file_sha256(part)
        if got != sha256.lower():
            raise UserError(f"the download of {url} has sha256 {got}, not {sha256}; check the URL and {sha_key}")
        os.replace(part, dest)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot download {url} ({getattr(e, 'reason', None) or e}); check the network, or download "
                        f"it yourself and give the file as {url_key}") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def source_name(item: str) -> str:
    """A short name for a source: a file's stem, a directory's name, a glob's directory, a URL's file stem."""
    if item == "python-stdlib":
        return item
    if is_url(item):
        return Path(urllib.parse.urlparse(item).path).stem or "download"
    fixed = re.split(r"[*?\[]", item)[0]
    if fixed != item:  # a glob: name it by the directory it searches
        fixed = fixed if fixed.endswith(("/", os.sep)) else os.path.dirname(fixed)
    p = Path(os.path.abspath(os.path.expanduser(fixed or ".")))
    return p.stem if p.is_file() else p.name


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
