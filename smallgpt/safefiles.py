"""Safe files: nothing a user made is lost or half-written, whatever kills the process and when.

Three mechanisms, used by every writer of the project (checkpoints, datasets, run directories):

* **Atomic replacement.**  A file is written beside its final name under a temporary name, then
  renamed onto it (:func:`atomic_write`; ``os.replace`` is atomic on POSIX and Windows), so a reader,
  or a kill at any moment, finds the old file or the new one, never a torn one.  A directory is
  swapped in one step the same way (:func:`commit_dir`).
* **Temporary names that say whose they are.**  A temporary file or directory carries its writer's
  host and pid (:func:`writer_tag`), so what a killed writer left behind is swept
  (:func:`sweep_temps`, :func:`recover`), and never what a live writer, or another machine whose
  processes this one cannot see, is still writing (:func:`writer_gone`).
* **One writer per run or dataset directory.**  Two writers of one run directory would interleave
  their ``metrics.jsonl`` records and overwrite each other's checkpoints; two builders of one dataset
  would waste a build or, on shared storage, delete each other's.  So a writer holds an advisory
  ``flock`` on a small lock file for as long as it writes (:class:`DirLock`).  The kernel releases it
  when the process dies, however it dies (SIGKILL included), so a crashed run never leaves a stale
  lock behind; the file records who holds it (host, pid, command, start time), so a refused second
  writer can say which run is in the way.  ``flock`` works on local file systems and on NFSv4 (Linux
  maps it to POSIX locks there); where the platform has no ``fcntl`` (Windows), no lock is taken.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from smallgpt.errors import UserError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

HOST = socket.gethostname()


def writer_tag() -> str:
    """This process as it is named in temporary file names: host and pid."""
    return f"{HOST}.{os.getpid()}"


def writer_gone(tag: str) -> bool:
    """True when the writer named by a :func:`writer_tag` is a process of this host that has ended."""
    host, _, pid = tag.rpartition(".")
    if host != HOST or not pid.isdigit():
        return False  # another machine's (or not ours): leave it alone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but belongs to another user
        pass
    return False


class DirLock:
    """An exclusive lock on the file ``path``, for one process; ``what`` and ``advice`` word the refusal."""

    def __init__(self, path: Path, what: str, advice: str):
        self.path, self.what, self.advice = Path(path), what, advice
        self.file = None

    @property
    def held(self) -> bool:
        return self.file is not None

    def acquire(self, wait: bool = False) -> None:
        """Take the lock (a no-op if held).  If another process holds it: with ``wait``, block until it is
        released (saying once on stderr whom we wait for), else refuse with a UserError naming the holder."""
        if self.held or fcntl is None:
            return
        f = open(self.path, "a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise UserError(f"{self.what} is in use by another process ({self._holder(f)}); "
                                    f"{self.advice}") from None
                print(f"waiting for {self.what}, held by {self._holder(f)} ...", file=sys.stderr, flush=True)
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"host": HOST, "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                "command": " ".join(sys.argv)[:300]}) + "\n")
            f.flush()
        except BaseException:
            f.close()
            raise
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor releases the flock
            self.file = None

    @staticmethod
    def _holder(f) -> str:
        f.seek(0)
        try:
            h = json.loads(f.read() or "{}")
            return f"pid {h['pid']} on {h['host']}, since {h['since']}: {h['command']}"
        except (ValueError, KeyError, TypeError):
            return "a process that has not said who it is yet"


# --------------------------------------------------------------------------- atomic files


def temp_path(path: Path) -> Path:
    """The temporary name this process writes ``path`` under: hidden, beside it (so the rename is atomic)."""
    return path.with_name(f".{path.name}.{writer_tag()}.tmp")


def sweep_temps(path: Path) -> None:
    """Remove the temporary files of ``path`` left by writers of this host that have ended (SIGKILL)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if writer_gone(stale.name[len(path.name) + 2:-len(".tmp")]):
            stale.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); directories cannot be opened for fsync on Windows."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, durable: bool = False) -> None:
    """Replace ``path`` by ``data`` (str: UTF-8) in one step; on failure the old file stays and no
    temporary file is left.  ``durable``: fsync the file and its directory, so that the new content
    survives a power cut too (checkpoints); OSError is the caller's to word."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


# --------------------------------------------------------------------------- atomic directories


def make_temp_dir(target: Path) -> Path:
    """A fresh hidden directory beside ``target``, named for this writer (host and pid)."""
    tmp = target.parent / f".{target.name}.tmp.{writer_tag()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def recover(target: Path) -> None:
    """Clear up after writers of ``target`` killed on this host (call it under the directory's lock): put
    back an old directory that a killed :func:`commit_dir` had moved aside, and remove what killed
    writers left half-written."""
    for kind in ("old", "tmp"):
        for left in sorted(target.parent.glob(f".{target.name}.{kind}.*")):
            if not writer_gone(left.name[len(f".{target.name}.{kind}."):]):
                continue  # a live writer's, or another machine's
            if kind == "old" and not target.exists():
                left.rename(target)  # the commit was killed between its two renames: the old one stays
            else:
                shutil.rmtree(left, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux's renameat2 with RENAME_EXCHANGE); False where the
    system or file system cannot, and the caller falls back to two renames."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def commit_dir(tmp: Path, target: Path) -> None:
    """Put the finished temporary directory ``tmp`` in place of ``target``, replacing an older one there.

    A reader, or a kill at any moment, finds the old directory or the new one: the two are swapped in one
    atomic step where the system can; elsewhere the old one is first renamed aside, and a commit killed
    between the two renames is undone by :func:`recover` (the old one is put back) on the next run."""
    if not target.exists():
        tmp.rename(target)
        return
    if exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # it now holds the old directory
        return
    old = target.parent / f".{target.name}.old.{writer_tag()}"
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
