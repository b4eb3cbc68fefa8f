"""Locks that hold across threads and processes (the CLI, `corral serve`, another CLI), with bounded
waits: a stuck holder makes the others fail with a clear error, never hang."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from corral.core.errors import Busy

POLL_S = 0.05


class HostLock:
    def __init__(self, path: Path, what: str = "lock") -> None:
        self.path = path
        self.what = what
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the lock; with `timeout_s`, raise Busy when it cannot be had within that time."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if not self._thread_lock.acquire(timeout=-1 if timeout_s is None else timeout_s):
            raise Busy(f"the {self.what} is held by another request of this process for over {timeout_s:g} s; "
                       "try again")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _flock(fd, deadline, lambda: f"the {self.what} is held by another process for over "
                                             f"{timeout_s:g} s; try again")
                yield
            finally:
                os.close(fd)  # closing releases the flock
        finally:
            self._thread_lock.release()


def _flock(fd: int, deadline: float | None, message: object) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise Busy(str(message() if callable(message) else message))
        time.sleep(POLL_S)


class Claim:
    """A marker file held under an exclusive flock while a piece of work runs (a guest being created).

    The file says who made it; if that process dies the flock goes with it but the file stays, so
    whoever comes next can tell "in progress" (locked) from "left behind" (unlocked)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def take(cls, path: Path, details: dict[str, object]) -> Claim:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, json.dumps({"pid": os.getpid(), "since": time.time(), **details}).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return cls(path, fd)

    def release(self, *, remove: bool) -> None:
        """Let go; with `remove`, the work is finished (or undone) and the marker goes too."""
        if remove:
            self.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    @staticmethod
    def holder(path: Path) -> dict[str, object] | None:
        """What the marker says, when it exists and a live process still holds it; else None."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                with contextlib.suppress(OSError, ValueError):
                    data = json.loads(os.pread(fd, 4096, 0) or b"{}")
                    return data if isinstance(data, dict) else {}
                return {}
            return None
        finally:
            os.close(fd)
