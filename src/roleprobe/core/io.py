"""Atomic file writes: a file is either complete or absent, never half written.

Every writer goes through :func:`atomic_write_bytes`: the data goes to a temporary file in
the same folder (same file system), is flushed to disk, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows). A process killed mid-write leaves at most
a stray ``.NAME.*.tmp`` file, which readers ignore. Missing parent folders are created.

Files get the mode an ordinary ``open()`` would give, ``0o666 & ~umask`` (0644 under umask
022, 0664 under 002), not the 0600 of :func:`tempfile.mkstemp`, so that the members of a
group can read a shared store. The umask can only be read by setting it; that is done under
a lock (:func:`current_umask`), but another thread of the process that creates files at
that instant without the lock could still see umask 0 for it.

Example:
    >>> write_json(Path("runs/demo/config.json"), cfg.to_dict())
    >>> write_csv(Path("runs/demo/05_selection/picks_paper.csv"), picks)
"""

import hashlib
import json
import os
import tempfile
import threading
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "create_text",
    "current_umask",
    "write_csv",
    "write_json",
    "write_parquet",
]


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read (set and restored at once) under a lock."""
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _temporary(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target`` with the umask's usual mode (not 0600)."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
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
