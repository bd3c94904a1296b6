"""Write a file the careful way: a temp file beside the target, fsync, rename over it, fsync the directory.

* A crash or kill at any point leaves either the old file or the new one, never half a file. Temp files are
  named ``.NAME.HOST.PID.RANDOM.tmp``; one left by a killed writer (same host, process gone) is removed by the
  next write to the same target, and one whose writer is still running is left alone. (Partials of older
  versions, ``NAMExxxxxxxx.tmp``, are not recognised and are left for you to delete.)
* A new file gets the usual permissions (0666 minus the umask); a replaced file keeps its own mode.
* A read-only target (no write permission bit, or not writable by this user) is refused with
  ``ReadOnlyTargetError`` rather than silently replaced: read-only is how a file says "do not overwrite".
* ``~`` in paths is expanded.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from .errors import ReadOnlyTargetError  # noqa: F401 - raised here, defined with every error

__all__ = ["ReadOnlyTargetError", "atomic_write", "remove_stale_partials"]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _partial_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[0-9a-f]+\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or a pid we cannot ask about): assume it is writing
    return True


def remove_stale_partials(path: str | os.PathLike) -> list[Path]:
    """Delete temp files a killed writer of ``path`` left behind on this host; returns what was removed."""
    path = Path(path).expanduser()
    pattern, host, removed = _partial_pattern(path.name), _host(), []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match and match["host"] == host and not _pid_alive(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_target(path: Path) -> int | None:
    """The mode to keep for an existing target (None for a new file); refuses directories and read-only files."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path} is a directory; give a file path to write")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o222 or not os.access(path, os.W_OK):
        raise ReadOnlyTargetError(
            f"{path} is read-only (mode {mode:04o}) and was not replaced; make it writable (chmod u+w '{path}') to "
            "overwrite it, or write to another path"
        )
    return mode


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` with what ``write(binary_file)`` writes, atomically and durably."""
    path = Path(path).expanduser()
    keep_mode = _check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if keep_mode is not None:
            os.chmod(tmp, keep_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path
