"""The corpora the text recipe is tuned and checked on, rebuilt byte for byte from Debian packages.

``python -m tools.corpora [CONFIG.toml] [--corpora.KEY=VALUE ...]`` writes each corpus as
``<out_dir>/<name>.txt``.  A recipe tuned on one text is tuned to that text, so config/text-cpu.toml
is tuned on several kinds of text (the tuning set, ``names=all``: four) and checked once at the end on
three more that tuning never saw (``names=held-out``).  The data is never committed: each corpus is made
from Debian packages pinned to an exact version (``apt-get download NAME=VERSION``, extracted with
``dpkg-deb -x``, so no root and no installation), and its sha256 is pinned too, so every machine
tunes on the same bytes.  The novel is the one exception: it comes from the user's own copy of the
text (``--corpora.novel=PATH``), checked against its sha256; without that setting it is skipped.

The trainer holds out the last 10 % of a file for validation, so the order of the documents in a
corpus decides what its validation text is; each corpus's description says what its last 10 % is.
One line per corpus goes to stdout, then a JSON object of the corpora built, last; the progress of
each step goes to stderr.  Other tools import :data:`CORPORA` and :func:`build`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from smallgpt.cli import Settings, need, parse_args, run_main
from smallgpt.errors import UserError
from smallgpt.safefiles import atomic_write
from smallgpt.tokenizer import file_sha256

SUMMARY = ("Rebuild the corpora the text recipe is tuned on (names=all) and checked on (names=held-out) "
           "from pinned Debian packages, each checked against its pinned sha256.")

MAX_BYTES = 5_000_000  # no corpus is larger: the recipe is for about a megabyte of text on a CPU
APT_TIMEOUT = 900  # seconds for one apt-get download; a hung mirror should fail, not wait forever


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Package:
    """One Debian package at the exact version a corpus was made from."""
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class Corpus:
    """One corpus: what it is, where it comes from, how it is made, and the bytes it must come out as."""
    name: str
    kind: str  # a few words
    description: str  # one sentence, including what its last 10 % (the validation text) is
    packages: tuple[Package, ...]  # empty: the user's own file (the novel)
    recipe: str  # how it is made from the packages, in words
    bytes: int
    sha256: str
    held_out: bool = False  # for the final check only, never for tuning
    make: Callable[[dict[str, Path]], bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def from_user_file(self) -> bool:
        """Made from a file the user gives (the novel), not from packages."""
        return self.make is None


def _files(root: Path, names: list[str], cap: int = MAX_BYTES) -> bytes:
    """The files, in the order given, joined; whole files only, stopping before the one that would pass cap.

    A file without a final newline gets one, so that no two documents share a line."""
    out = bytearray()
    for name in names:
        data = (root / name).read_bytes()
        if data and not data.endswith(b"\n"):
            data += b"\n"
        if len(out) + len(data) > cap:
            break
        out += data
    return bytes(out)


def _listing(root: Path, pattern: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Regular files (no links, no fortune index .dat files) matching pattern, in sorted (code point) order."""
    return sorted(p.name for p in root.glob(pattern)
                  if p.is_file() and not p.is_symlink() and p.suffix != ".dat" and p.name not in exclude)


FORTUNES = "usr/share/games/fortunes"
QUOTATIONS = ["cookie", "definitions", "humorists", "people", "wisdom", "politics", "science", "work", "love",
              "law", "education", "pets"]  # themes of plain sayings, not the computing or ASCII-art files


def _quotations(roots: dict[str, Path]) -> bytes:
    return _files(roots["fortunes"] / FORTUNES, QUOTATIONS)


def _vimdoc(roots: dict[str, Path]) -> bytes:
    doc = roots["vim-runtime"] / "usr/share/vim/vim90/doc"
    # usr_NN.txt sort in chapter order; the table of contents is a list of titles, not prose
    return _files(doc, _listing(doc, "usr_[0-9]*.txt"))


def _german(roots: dict[str, Path]) -> bytes:
    de = roots["fortunes-de"] / FORTUNES / "de"
    # zitate (2 MB of attributed quotations, sorted by author) would make two thirds of the corpus more of
    # what `quotations` already is; asciiart is pictures, not text
    return _files(de, _listing(de, "*", exclude=("zitate", "asciiart")))


def _perl(roots: dict[str, Path]) -> bytes:
    lib = roots["perl-modules-5.36"] / "usr/share/perl/5.36.0"
    return _files(lib, _listing(lib, "*.pm"))


def _russian(roots: dict[str, Path]) -> bytes:
    ru = roots["fortunes-ru"] / FORTUNES / "ru"
    return _files(ru, _listing(ru, "*"), cap=2_000_000)  # near the recipe's megabyte, like the tuning set


def _bible(roots: dict[str, Path]) -> bytes:
    return bible_text((roots["bible-kjv-text"] / "usr/lib/bible.data").read_bytes())


CORPORA: dict[str, Corpus] = {c.name: c for c in [
    Corpus(
        "novel", "English novel (prose)",
        "Jane Austen's Pride and Prejudice (1813), the illustrated edition without the Project Gutenberg "
        "header and licence; its last 10 % is the end of chapter 55 (Jane's engagement) and chapters 56 to "
        "61 (Lady Catherine's visit to the end), the same story and prose as the rest.",
        (), "your copy of pride-and-prejudice.txt (--corpora.novel), copied as it is",
        737_944, "86dab871eec9c0cef97f4cb6313f86c6cc48f6f7809534e65cd3f1c1d486d247"),
    Corpus(
        "quotations", "English quotations and jokes",
        "BSD fortune cookies: sayings, jokes, definitions and quotations of twelve themes, separated by '%' "
        "lines; its last 10 % is the end of 'love' and the whole of 'law', 'education' and 'pets', "
        "the same kind of text on other subjects.",
        (Package("fortunes", "1:1.99.1-7.3"),),
        f"the files {', '.join(QUOTATIONS)} of {FORTUNES}, joined in that order",
        1_158_787, "bd24ee6cfa5f0294c407d587197eafc434af7f21ebb8f3460ee7aa0c1abec626", make=_quotations),
    Corpus(
        "vimdoc", "technical manual with markup",
        "The Vim user manual, chapters usr_01 to usr_90 in order: tutorial prose with Vim help markup "
        "(*tags*, |links|, examples after a '>' indented by a tab); its last 10 % is the end of chapter 45 "
        "and chapters 50 to 52 (writing Vim scripts and plugins, more code than the rest) and 90 (installing "
        "Vim).",
        (Package("vim-runtime", "2:9.0.1378-2+deb12u2"),),
        "usr/share/vim/vim90/doc/usr_[0-9]*.txt (not usr_toc.txt), in sorted order",
        631_674, "fe9a00b6565a2716a5689be7d668bd4f77b51db3ea2e32bbaa8563f95fd05c7d", make=_vimdoc),
    Corpus(
        "german", "German jokes, anecdotes and sayings",
        "The German fortune files: jokes, anecdotes, IRC quotes, recipes, proverbs and poems, one file "
        "per theme in alphabetical order; its last 10 % is the end of 'witze' (jokes), 'woerterbuch' (a "
        "humorous dictionary) and 'wusstensie' (did-you-know items).",
        (Package("fortunes-de", "0.35-1"),),
        f"{FORTUNES}/de/* but zitate and asciiart, in sorted order",
        998_867, "01d430d1eecebd0655ebe115e1786f6f51921ce17091fa9b83685cdb8b972193", make=_german),
    Corpus(
        "perl", "Perl source with its POD documentation",
        "The top-level modules of Perl's standard library (Carp.pm, Exporter.pm, strict.pm, overload.pm, "
        "...), code followed by its POD manual, in sorted order; its last 10 % is the end of overload.pm and "
        "the small lower-case pragmas from overloading.pm to warnings.pm, more manual than code, "
        "warnings.pm opening with generated tables of bit masks.",
        (Package("perl-modules-5.36", "5.36.0-7+deb12u3"),),
        "usr/share/perl/5.36.0/*.pm (the top level only), in sorted order",
        1_089_229, "de7b695f5753bed1e1e44c5bd8b97cc9395f6b7019cf9dfea250934b0227d2bb",
        held_out=True, make=_perl),
    Corpus(
        "bible", "Early Modern English scripture",
        "The King James Bible, Genesis to Revelation, one verse a line after its reference ('Ge1:1 In the "
        "beginning ...'); its last 10 % is the New Testament from Acts 22:12 on (the end of Acts, the "
        "epistles and Revelation): letters and visions, where most of the rest is the Old Testament.",
        (Package("bible-kjv-text", "4.38"),),
        "usr/lib/bible.data uncompressed (the bible program's windowed LZW format, decoded here)",
        4_404_475, "e53aaf0af1e58f259e35d0d9f7ca1bbe154fd77bb95471279b37b34d3c397a98",
        held_out=True, make=_bible),
    Corpus(
        "russian", "Russian aphorisms (Cyrillic)",
        "Russian fortune files: aphorisms, quotations and jokes in UTF-8 Cyrillic, whole files in "
        "alphabetical order up to 2 MB ('2001.03' to 'human_being'); its last 10 % is most of 'friendship' "
        "and 'future', 'genious', 'haiku', 'happy' and 'human_being', the same kind of text.",
        (Package("fortunes-ru", "1.52-3.1"),),
        f"{FORTUNES}/ru/*, in sorted order, whole files up to 2,000,000 bytes",
        1_999_457, "25abb870a93df105654675192747307bd82a98508f40e2e2c4bc974b7377ccab",
        held_out=True, make=_russian),
]}
TUNING = [c.name for c in CORPORA.values() if not c.held_out]
HELD_OUT = [c.name for c in CORPORA.values() if c.held_out]


# --------------------------------------------------------------------------- the Bible's data file


def bible_text(data: bytes) -> bytes:
    """The text of a data file of the ``bible`` program (bible-kjv), which reads it in windows.

    The file is a header (magic ``EC02``, an 80-byte description, the window size and count, then
    count + 1 file offsets, all big-endian), a Unix compress header, and the windows, each compressed
    on its own so the program can seek; every window but the last is window-size bytes of text."""
    if data[:4] != b"EC02":
        raise UserError("bible-kjv-text: usr/lib/bible.data is not in the format this tool reads (magic "
                        f"{data[:4]!r}); the package must have changed: pin the version the corpus was made from")
    wsize, wnum = struct.unpack(">ii", data[84:92])
    end = 92 + 4 * (wnum + 1)
    offsets = struct.unpack(f">{wnum + 1}i", data[92:end])
    magic = data[end:end + 3]
    if magic[:2] != b"\x1f\x9d" or not magic[2] & 0x80:
        raise UserError("bible-kjv-text: usr/lib/bible.data is not compressed as this tool expects; "
                        "the package must have changed: pin the version the corpus was made from")
    maxbits = magic[2] & 0x1F
    windows = [lzw_decompress(data[offsets[i]:offsets[i + 1]], maxbits) for i in range(wnum)]
    if any(len(w) != wsize for w in windows[:-1]):
        raise UserError("bible-kjv-text: a window of usr/lib/bible.data did not decompress to its size; "
                        "the package must have changed: pin the version the corpus was made from")
    return b"".join(windows)


def lzw_decompress(buf: bytes, maxbits: int) -> bytes:
    """Unix ``compress`` data (block mode, 9 to maxbits bits a code), without its 3-byte header.

    ``compress`` writes codes in groups of n_bits bytes (eight codes) and starts a new group whenever
    the code width changes or the table is cleared, so the rest of a group is skipped then."""
    CLEAR, maxmax = 256, 1 << maxbits
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b""] * (maxmax - 256)
    n_bits, maxcode, free_ent, clear = 9, (1 << 9) - 1, 257, False
    pos, group, offset, size = 0, 0, 0, 0
    out, prev = bytearray(), b""
    while True:
        if clear or offset >= size or free_ent > maxcode:  # a new group of codes
            if free_ent > maxcode:
                n_bits += 1
                maxcode = maxmax if n_bits == maxbits else (1 << n_bits) - 1
            if clear:
                n_bits, maxcode, clear = 9, (1 << 9) - 1, False
            take = min(n_bits, len(buf) - pos)
            if take <= 0:
                return bytes(out)
            group, pos = int.from_bytes(buf[pos:pos + take], "little"), pos + take
            offset, size = 0, (take << 3) - (n_bits - 1)
        code = (group >> offset) & ((1 << n_bits) - 1)
        offset += n_bits
        if code == CLEAR and prev:
            clear, free_ent = True, 256  # the entry made after the next code lands on 256, never read
            continue
        entry = table[code] if code < free_ent else prev + prev[:1]
        out += entry
        if prev and free_ent < maxmax:
            table[free_ent] = prev + entry[:1]
            free_ent += 1
        prev = entry


# --------------------------------------------------------------------------- Debian packages


def require_debian() -> None:
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"{' and '.join(missing)} not found: the corpora are made from Debian packages, so this "
                        "needs a Debian or Ubuntu system (or a Debian container)")


def progress(message: str) -> None:
    print(f"corpora: {message}", file=sys.stderr, flush=True)


def deb_version(deb: Path) -> str | None:
    """The Version field of a .deb file, or None if it cannot be read (a damaged file)."""
    done = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def _apt_download(spec: str, cache_dir: Path) -> tuple[Path | None, str]:
    """``apt-get download spec`` into a fresh folder under cache_dir: (the .deb, or None; apt's error)."""
    work = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    try:
        done = subprocess.run(["apt-get", "download", spec], cwd=work, capture_output=True, text=True,
                              timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        raise UserError(f"apt-get download {spec} took over {APT_TIMEOUT} s; check the network or the "
                        "apt mirror and try again") from None
    debs = sorted(work.glob("*.deb"))
    if done.returncode != 0 or len(debs) != 1:
        shutil.rmtree(work, ignore_errors=True)
        errors = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("E:")]
        return None, (errors[-1] if errors else (done.stderr.strip().splitlines() or ["no .deb came"])[-1])
    # apt spells an epoch's ':' as '%3a' in file names; keep its name, which is unique per version
    target = cache_dir / debs[0].name
    os.replace(debs[0], target)
    shutil.rmtree(work, ignore_errors=True)
    return target, ""


def fetch(package: Package, cache_dir: Path) -> tuple[Path, str]:
    """The package's .deb in cache_dir, downloaded if it is not there: (its path, the version it holds).

    A pinned version that has left the archive (a point release replaced it) is replaced by the
    current one, with a note: the corpus's sha256 then says whether its text is still the same."""
    for deb in sorted(cache_dir.glob(f"{package.name}_*.deb")):
        if deb_version(deb) == package.version:
            return deb, package.version
    progress(f"downloading {package}")
    deb, error = _apt_download(str(package), cache_dir)
    if deb is not None:
        return deb, package.version
    if "Unable to locate package" in error:
        raise UserError(f"apt-get cannot find the package {package.name} ({error}); run 'apt-get update' "
                        "and try again")
    if "not found" not in error:
        raise UserError(f"apt-get download {package} failed: {error}; check the network and the apt sources")
    progress(f"note: {package} is no longer in the archive ({error}); trying its current version, "
             "the corpus's sha256 will say whether its text changed")
    deb, error = _apt_download(package.name, cache_dir)
    if deb is None:
        raise UserError(f"apt-get download {package.name} failed: {error}; check the network and the apt "
                        f"sources, or put the .deb of {package} into the cache folder {cache_dir}")
    return deb, deb_version(deb) or "?"


def extract(deb: Path, cache_dir: Path) -> Path:
    """The .deb unpacked under cache_dir (reused if it is there), through a temporary folder so a folder
    under the final name is always complete."""
    target = cache_dir / deb.stem
    if target.is_dir():
        return target
    progress(f"extracting {deb.name}")
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_dir))
    done = subprocess.run(["dpkg-deb", "-x", str(deb), str(work)], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        deb.unlink(missing_ok=True)  # a damaged download: the next run fetches it again
        raise UserError(f"dpkg-deb cannot extract {deb}: {done.stderr.strip()}; it was deleted, run again")
    os.replace(work, target)
    return target


# --------------------------------------------------------------------------- building


def write_checked(corpus: Corpus, data: bytes, path: Path, origin: str) -> None:
    """Write data as path through a temporary file, and only if it has the corpus's pinned sha256."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:  # the trainer reads UTF-8; say so before the sha256 would
        raise UserError(f"corpus {corpus.name} made from {origin} is not UTF-8 at byte {e.start}: the package's "
                        "text must have changed; build it from the pinned version") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != corpus.sha256:
        raise UserError(f"corpus {corpus.name} made from {origin} has sha256 {digest[:16]}... ({len(data):,} bytes), "
                        f"not the pinned {corpus.sha256[:16]}... ({corpus.bytes:,} bytes): the package's "
                        "version or text must have changed; build it from the pinned version (put its .deb into "
                        "the cache folder), or check the new text and pin its version, bytes and sha256 in "
                        "tools/corpora.py, knowing that results measured on the old text no longer compare")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, durable=True)


def _read_novel(corpus: Corpus, novel: str | Path | None) -> tuple[bytes, str]:
    if not novel:
        raise UserError("--corpora.novel: the corpus 'novel' is made from your own copy of "
                        "pride-and-prejudice.txt; give its path, e.g. --corpora.novel=PATH")
    path = Path(novel).expanduser()
    if not path.is_file():
        raise UserError(f"--corpora.novel: {path} is not a file; give the path of your pride-and-prejudice.txt")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != corpus.sha256:
        raise UserError(f"--corpora.novel: {path} is not the pinned edition of Pride and Prejudice (sha256 "
                        f"{hashlib.sha256(data).hexdigest()[:16]}..., {len(data):,} bytes; want "
                        f"{corpus.sha256[:16]}..., {corpus.bytes:,} bytes); give the project's copy of the text")
    return data, str(path)


def build(name: str, out_dir: str | Path, cache_dir: str | Path, novel: str | Path | None = None,
          force: bool = False) -> Path:
    """Make corpus ``name`` as ``<out_dir>/<name>.txt`` (kept if it is there with the pinned sha256 and
    not force) and return its path; a UserError if it cannot be made or comes out different."""
    if name not in CORPORA:
        raise UserError(f"unknown corpus {name!r}; the corpora are {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    path = Path(out_dir) / f"{name}.txt"
    if not force and path.is_file() and path.stat().st_size == corpus.bytes and file_sha256(path) == corpus.sha256:
        progress(f"{name}: {path} is already there with the pinned sha256")
        return path
    if corpus.make is None:
        data, origin = _read_novel(corpus, novel)
    else:
        require_debian()
        cache = Path(cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        roots, used = {}, []
        for package in corpus.packages:
            deb, version = fetch(package, cache)
            roots[package.name] = extract(deb, cache)
            used.append(f"{package.name}={version}")
        progress(f"building {name}")
        data, origin = corpus.make(roots), ", ".join(used)
    write_checked(corpus, data, path, origin)
    return path


# --------------------------------------------------------------------------- command line


@dataclass
class CorporaConfig:
    names: str = "all"  # comma-separated corpus names, 'all' (the tuning set) or 'held-out' (the final check's)
    out_dir: str = "data/corpora"  # each corpus is written as <out_dir>/<name>.txt
    novel: str = ""  # path of your copy of pride-and-prejudice.txt (sha256-checked); empty: the novel is skipped
    cache_dir: str = "data/corpora/debs"  # where the .deb packages are downloaded and extracted
    force: bool = False  # rebuild a corpus even if its file is there with the pinned sha256

    def selected(self) -> list[str]:
        """The corpus names asked for, 'all' and 'held-out' expanded, in order, each once."""
        groups = {"all": TUNING, "held-out": HELD_OUT}
        names = [n for item in self.names.split(",") if item.strip() for n in groups.get(item.strip(), [item.strip()])]
        return list(dict.fromkeys(names))

    def asked_by_name(self) -> set[str]:
        return {item.strip() for item in self.names.split(",")} - {"all", "held-out"}

    def check(self) -> None:
        unknown = [n for n in self.selected() if n not in CORPORA]
        need(not unknown, "corpora.names", f"unknown corpus {', '.join(unknown)}; choose from {', '.join(CORPORA)}, "
             "'all' (the tuning set) or 'held-out'")
        need(bool(self.selected()), "corpora.names", "name at least one corpus, or 'all'")
        need(bool(self.novel) or "novel" not in self.asked_by_name(), "corpora.novel",
             "the corpus 'novel' is made from your own copy of pride-and-prejudice.txt; give its path")


@dataclass
class CorporaSettings(Settings):
    corpora: CorporaConfig = field(default_factory=CorporaConfig)


def main(argv: list[str]) -> int:
    cfg = parse_args(argv, CorporaSettings, "python -m tools.corpora", SUMMARY).corpora
    built: dict[str, dict[str, object]] = {}
    for name in cfg.selected():
        corpus = CORPORA[name]
        if corpus.from_user_file and not cfg.novel:
            print(f"{name:<10} skipped: it is made from your copy of pride-and-prejudice.txt; "
                  "give its path with --corpora.novel=PATH", flush=True)
            continue
        path = build(name, cfg.out_dir, cfg.cache_dir, novel=cfg.novel or None, force=cfg.force)
        print(f"{name:<10} {corpus.kind:<40} {corpus.bytes:>10,} bytes  sha256 OK  {path}", flush=True)
        built[name] = {"path": str(path), "bytes": corpus.bytes, "sha256": corpus.sha256, "kind": corpus.kind,
                       "package": ", ".join(map(str, corpus.packages)) or None}
    print(json.dumps(built))
    return 0


if __name__ == "__main__":
    run_main(main)
