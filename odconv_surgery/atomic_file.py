"""Write a file the careful way: a temp file beside the target, fsync, rename over it, fsync the directory.

* A crash or kill at any point leaves either the old file or the new one, never half a file. Temp files are
  named ``.NAME.HOST.PID.RANDOM.tmp``; one left by a killed writer (same host, process gone) is removed by the
  next write to the same target, and one whose writer is still running is left alone. (Partials of older
  versions, ``NAMExxxxxxxx.tmp``, are not recognised and are left for you to delete.)
* A new file gets the usual permissions (0666 minus the umask); a replaced file keeps its own mode.
* A read-only target (no write permission bit, or not writable by this user) is refused with
  ``ReadOnlyTargetError`` rather than silently replaced: read-only is how a file says "do not overwrite".
* Only regular files are written: a symbolic link at the target (one this writer did not create), a device, a FIFO
  or a socket is refused with ``NotRegularFileError`` (``save(model, "/dev/null")`` must not replace the system's
  ``/dev/null``); the temp file is created with ``O_EXCL | O_NOFOLLOW``. The same rules hold for the files the
  library appends to or locks (``open_for_append``, ``open_lock_file``).
* ``inputs=``: the command's input files; writing over one of them is refused (``InputOverwriteError``).
* ``replaces=``: the kind of file being written ("checkpoint", "onnx", "json", "png", "text"); an existing,
  non-empty target that is plainly another kind (a checkpoint where JSON is written, ...) is refused with
  ``ForeignFileError`` rather than destroyed.
* ``~`` in paths is expanded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO
from .errors import (  # noqa: F401 - raised here, defined with every error
    ForeignFileError,
    InputOverwriteError,
    NotRegularFileError,
    ReadOnlyTargetError,
)

__all__ = [
    "ForeignFileError",
    "InputOverwriteError",
    "NotRegularFileError",
    "ReadOnlyTargetError",
    "KINDS",
    "atomic_write",
    "check_not_input",
    "check_target",
    "open_for_append",
    "open_for_read",
    "open_lock_file",
    "remove_stale_partials",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


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


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _refuse_not_regular(path: Path, mode: int, action: str) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{path} is a directory and was not {action}; give a file path")
    if not stat.S_ISREG(mode):
        raise NotRegularFileError(
            f"{path} is {_file_type(mode)}, not a regular file, and was not {action}; give the path of a regular "
            "file (a link: its target's path)"
        )


def _looks_like(head: bytes) -> str:
    """What an existing file plainly is, from its first bytes ("checkpoint", "png", "json", "text", "onnx", "binary")."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02\x8a"):
        return "checkpoint"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as err:
            if err.start >= len(head) - 3:  # a multi-byte character cut by the sample
                return "text"
    if head[:1] == b"\x08":  # ModelProto field 1 (ir_version), which onnx serialises first
        return "onnx"
    return "binary"


#: What each writer may replace: the kinds an existing target may look like (``_looks_like``).
KINDS: dict[str, tuple[str, ...]] = {
    "checkpoint": ("checkpoint",),
    "onnx": ("onnx",),
    "json": ("json",),
    "png": ("png",),
    "text": ("text", "json"),
}


def _check_kind(path: Path, replaces: str) -> None:
    if replaces not in KINDS:
        raise ValueError(f"replaces={replaces!r}: expected one of {sorted(KINDS)}")
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC)
    except PermissionError:
        return  # unreadable: the permission checks decide
    try:
        head = os.read(fd, 512)
    finally:
        os.close(fd)
    found = _looks_like(head) if head else None
    if found is not None and found not in KINDS[replaces]:
        raise ForeignFileError(
            f"{path} exists and holds {'a ' + found if found != 'binary' else 'binary data'}, not {replaces}: it was "
            f"not replaced; write the {replaces} file to another path, or remove {path} first if it is disposable"
        )


def check_not_input(path: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse (``InputOverwriteError``) when ``path`` is the same file as one of ``inputs``."""
    path = Path(path).expanduser()
    for item in inputs:
        item = Path(item).expanduser()
        try:
            same = os.path.samefile(path, item)
        except OSError:
            same = path.resolve() == item.resolve()
        if same:
            raise InputOverwriteError(
                f"the output {path} is the input file {item}; it was not overwritten. Give the output another path"
            )


def _check_target(path: Path, replaces: str | None = None) -> int | None:
    """The mode to keep for an existing target (None for a new file); refuses what must not be replaced."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    _refuse_not_regular(path, st.st_mode, "replaced")
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o222 or not os.access(path, os.W_OK):
        raise ReadOnlyTargetError(
            f"{path} is read-only (mode {mode:04o}) and was not replaced; make it writable (chmod u+w '{path}') to "
            "overwrite it, or write to another path"
        )
    if replaces is not None:
        _check_kind(path, replaces)
    return mode


def check_target(path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), replaces: str | None = None) -> Path:
    """Every refusal ``atomic_write`` would make for ``path``, without writing: call it before long work."""
    path = Path(path).expanduser()
    check_not_input(path, inputs)
    _check_target(path, replaces)
    return path


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    *,
    inputs: Sequence[str | os.PathLike] = (),
    replaces: str | None = None,
) -> Path:
    """Create or replace the regular file ``path`` with what ``write(binary_file)`` writes, atomically and durably.

    ``inputs``: files the output must not be; ``replaces``: the kind written (a ``KINDS`` key), so an existing file
    of another kind is refused. See the module docstring for every refusal.
    """
    path = Path(path).expanduser()
    check_not_input(path, inputs)
    keep_mode = _check_target(path, replaces)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    tmp = path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666)
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


def _open_regular(path: Path, flags: int, action: str, *, follow: bool = False) -> int:
    """``os.open`` that never blocks on a FIFO, returns only regular files and (unless ``follow``, for reading)
    never follows a final symbolic link."""
    try:
        fd = os.open(path, flags | (0 if follow else _NOFOLLOW) | _NONBLOCK | _CLOEXEC, 0o666)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow:
            raise NotRegularFileError(
                f"{path} is a symbolic link and was not {action}; remove the link (the library never writes through one)"
            ) from None
        if err.errno == errno.ENXIO:  # a FIFO nobody reads
            raise NotRegularFileError(f"{path} is a FIFO (named pipe), not a regular file, and was not {action}") from None
        raise
    try:
        st = os.fstat(fd)
        _refuse_not_regular(path, st.st_mode, action)
        if st.st_nlink > 1 and not follow:
            raise NotRegularFileError(
                f"{path} has {st.st_nlink} hard links (it is also another file) and was not {action}; remove it"
            )
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_append(path: str | os.PathLike) -> BinaryIO:
    """A regular file opened for appending (created if missing; no link followed, no FIFO or device)."""
    path = Path(path).expanduser()
    fd = _open_regular(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, "appended to")  # read: the last byte
    return os.fdopen(fd, "ab+")


def open_lock_file(path: str | os.PathLike) -> int:
    """A descriptor of the regular lock file ``path`` opened read-write (created if missing), never through a link."""
    return _open_regular(Path(path).expanduser(), os.O_RDWR | os.O_CREAT, "used as a lock")


def open_for_read(path: str | os.PathLike) -> BinaryIO:
    """A regular file opened for reading (links followed); a FIFO, device or socket is refused, never blocked on."""
    path = Path(path).expanduser()
    return os.fdopen(_open_regular(path, os.O_RDONLY, "read", follow=True), "rb")
