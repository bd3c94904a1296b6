"""An exclusive lock on a directory, so two processes never write the same sweep output at once.

The lock is ``fcntl.flock`` on ``DIR/.lock`` (the file holds the holder's pid, for the error message). The kernel
releases it when the holder exits, however it exits (SIGKILL included), so a crashed run never leaves a stale
lock; the file itself stays and is reused. The file is opened without following a symbolic link and must be a
regular file with one link (``atomic_file.open_lock_file``): a ``.lock`` planted as a link to another file is
refused, never truncated. Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import os
from pathlib import Path
from ..atomic_file import open_lock_file
from ..errors import DirectoryLocked  # noqa: F401 - raised here, defined with every error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["DirectoryLocked", "DirectoryLock", "LOCK_NAME"]

LOCK_NAME = ".lock"


class DirectoryLock:
    """``with DirectoryLock(path, what="sweep"):`` or ``lock.acquire()`` / ``lock.release()``; never waits."""

    def __init__(self, directory: str | os.PathLike, what: str = "process") -> None:
        self.path = Path(directory) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        """Take the lock or raise ``DirectoryLocked`` naming the holder's pid and the fix."""
        if fcntl is None or self._fd is not None:
            return self
        fd = self._locked_fd()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def check_free(self) -> None:
        """Raise ``DirectoryLocked`` when another process holds the lock; creates and writes nothing."""
        if fcntl is None or self._fd is not None or not os.path.lexists(self.path):
            return
        fd = self._locked_fd()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _locked_fd(self) -> int:
        fd = open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise DirectoryLocked(
                f"another {self.what} (pid {holder}) is writing to {self.path.parent}; wait for it to finish, or use "
                "another output directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
