"""Atomic file writes: a file is either complete or absent, never half written.

Every writer goes through :func:`atomic_write_bytes`: the data goes to a temporary file in
the same folder (same file system), is flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows). A process killed mid-write leaves at most
a stray temporary, which readers ignore and :func:`remove_stale_temporaries` removes later.
Missing parent folders are created.

**Temporaries.** A temporary is named ``.NAME.rpPID-WRITER.RANDOM.tmp`` beside its target
``NAME``: ``PID`` is the writing process, ``WRITER`` 8 hex digits of a hash of its host
name and process namespace, ``RANDOM`` the 8 characters of :func:`tempfile.mkstemp` (files
written before the pid was recorded read ``.NAME.RANDOM.tmp``). A temporary is *stale*, and
:func:`remove_stale_temporaries` removes it, when its writer ran on this host in this
process namespace and is gone, or when it has not been written to for
:data:`STALE_TEMPORARY_AGE` (an hour: a write takes seconds; a writer on another host
cannot be asked). Nothing else is ever removed: no file of another name, no folder, no
link, no temporary of a live writer.

Files get the mode an ordinary ``open()`` would give, ``0o666 & ~umask`` (0644 under umask
022, 0664 under 002), not the 0600 of :func:`tempfile.mkstemp`, so that the members of a
group can read a shared store. The umask can only be read by setting it; that is done under
a lock (:func:`current_umask`), but another thread of the process that creates files at
that instant without the lock could still see umask 0 for it.

Example:
    >>> write_json(Path("runs/demo/config.json"), cfg.to_dict())
    >>> write_csv(Path("runs/demo/05_selection/picks_paper.csv"), picks)
"""

import functools
import hashlib
import json
import logging
import os
import re
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "create_text",
    "current_umask",
    "is_temporary",
    "remove_stale_temporaries",
    "stale_temporaries",
    "write_csv",
    "write_json",
    "write_parquet",
]


logger = logging.getLogger(__name__)

_UMASK_LOCK = threading.Lock()
STALE_TEMPORARY_AGE = 3600.0
"""Seconds without a write after which any temporary of ours is stale, whoever wrote it."""
_RANDOM = r"[a-z0-9_]{8}"  # tempfile.mkstemp's random part
_TEMPORARY = re.compile(
    rf"^\.(?P<name>.+)\.rp(?P<pid>\d+)-(?P<writer>[0-9a-f]{{8}})\.{_RANDOM}\.tmp$"
)
_LEGACY_TEMPORARY = re.compile(rf"^\.(?P<name>.+)\.{_RANDOM}\.tmp$")


def current_umask() -> int:
    """The process's umask, read (set and restored at once) under a lock."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


@functools.cache
def _writer_tag() -> str:
    """8 hex digits naming this host and process namespace (pids are unique within it)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: the host alone
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def _temporary(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target`` with the umask's usual mode (not 0600),
    named after its writer (see the module docstring)."""
    prefix = f".{target.name}.rp{os.getpid()}-{_writer_tag()}."
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=prefix, suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX; Windows has no group modes
            os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: the target file; its folder is created if missing.
        data: the bytes.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (non-JSON values as ``str``)."""
    return atomic_write_text(path, json.dumps(data, indent=1, default=str))


def write_csv(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` as CSV without its index, atomically."""
    buffer = StringIO()
    df.to_csv(buffer, index=False)
    return atomic_write_text(path, buffer.getvalue())


def write_parquet(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write ``df`` as parquet without its index, atomically."""
    return atomic_write_bytes(path, df.to_parquet(index=False))


def create_text(path: str | os.PathLike[str], text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists, atomically and exclusively.

    Of several processes creating the same file at once, exactly one wins; the others
    leave the winner's file untouched (e.g. shards of one sweep writing its manifest).

    Returns:
        Whether this call created the file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary(target)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)  # fails if the target exists: exclusive and complete
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True


def _writer_gone(pid: int) -> bool:
    """Whether process ``pid`` of this namespace has exited (``False`` when unsure)."""
    if os.name != "posix":  # os.kill(pid, 0) would signal a Windows process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: another user's live process
        return False
    return False


def is_temporary(path: Path) -> bool:
    """Whether ``path``'s name is one of roleprobe's temporary files (a write in progress,
    or one a killed writer left)."""
    return bool(_TEMPORARY.match(path.name) or _LEGACY_TEMPORARY.match(path.name))


def _stale(path: Path, now: float, max_age: float) -> bool:
    """Whether ``path`` is one of our temporaries whose writer is gone or long silent."""
    new = _TEMPORARY.match(path.name)
    if new is None and _LEGACY_TEMPORARY.match(path.name) is None:
        return False
    try:
        info = path.lstat()
    except OSError:  # gone meanwhile
        return False
    if not stat.S_ISREG(info.st_mode):  # never a folder or a link
        return False
    if now - info.st_mtime > max_age:
        return True
    return new is not None and new["writer"] == _writer_tag() and _writer_gone(int(new["pid"]))


def stale_temporaries(
    folder: str | os.PathLike[str],
    max_age: float = STALE_TEMPORARY_AGE,
    names: Iterable[str] | None = None,
) -> list[Path]:
    """The stale temporaries of :func:`atomic_write_bytes` in ``folder`` (not below it).

    Args:
        folder: the folder to look in (a missing folder has none).
        max_age: seconds without a write after which a temporary is stale whoever wrote it.
        names: the folder's entries, if the caller has listed it already (no listing then).

    Returns:
        Their paths, sorted: temporaries of writers of this host that have exited, and
        those not written to for ``max_age`` seconds (see the module docstring).
    """
    root = Path(folder)
    if names is None:
        try:
            names = [entry.name for entry in os.scandir(root)]
        except (FileNotFoundError, NotADirectoryError):
            return []
    now = time.time()
    return sorted(root / n for n in names if n.endswith(".tmp") and _stale(root / n, now, max_age))


def remove_stale_temporaries(
    folder: str | os.PathLike[str],
    max_age: float = STALE_TEMPORARY_AGE,
    names: Iterable[str] | None = None,
) -> list[Path]:
    """Remove the temporaries a killed writer left in ``folder`` (:func:`stale_temporaries`).

    Only our own temporaries whose writer is gone are removed (never another file, nor the
    temporary of a live writer); one that cannot be removed (a read-only folder) is left
    and logged.

    Returns:
        The paths removed.
    """
    removed = []
    for path in stale_temporaries(folder, max_age, names):
        try:
            path.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        except OSError as err:
            logger.warning("could not remove the stale temporary %s: %s", path, err)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d stale temporaries in %s", len(removed), Path(folder))
    return removed


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds roleprobe's cached model snapshots (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("ROLEPROBE_CACHE"):
        return Path(os.environ["ROLEPROBE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "roleprobe"


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()
