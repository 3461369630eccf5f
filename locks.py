"""Exclusive locks on a run or dataset directory, held for a process's whole life.

Two writers of one run directory would interleave their ``metrics.jsonl`` records and overwrite each
other's checkpoints; two builders of one dataset would waste a build or, on shared storage, delete
each other's.  So a writer holds an advisory ``flock`` on a small lock file for as long as it writes:

* the kernel releases it when the process dies, however it dies (SIGKILL included), so a crashed run
  never leaves a stale lock behind that a user has to delete;
* the file records who holds it (host, pid, command, start time), so a refused second writer can say
  which run is in the way;
* temporary files carry their writer's host and pid in their name, and a sweep removes only those of
  writers on this host that are no longer alive (:func:`writer_gone`): never a live writer's file, and
  never another machine's, whose processes this one cannot see.

``flock`` works on local file systems and on NFSv4 (Linux maps it to POSIX locks there).  Where the
platform has no ``fcntl`` (Windows), no lock is taken and nothing is refused.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from errors import UserError

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

