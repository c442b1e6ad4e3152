"""An append-only result store: one parquet part per finished unit of work, and a manifest.

Layout of a store folder::

    manifest.json        what was asked (config, model fingerprint, data hashes) and with
                         which code (versions, git hash); written once, checked on reopen
    parts/<key>.parquet  one finished unit of work each; written to a temporary name and
                         renamed, so a part is either complete or absent
    claims/<key>.claim   a unit of work some worker is computing now (host, pid, time);
                         removed when its part is written

A killed run leaves only complete parts behind: reopening the store with the same manifest
skips them (``done()``), and the final table is the parts read in key order, so it does
not depend on how often the run was interrupted or how the work was sharded.

**Several workers on one store.** Processes (the jobs of a SLURM array, two notebooks, a
lab's shared folder) may run the same work on one store at once. A worker *claims* a unit
before computing it (:meth:`ResultStore.claim`): the claim file is created exclusively
(complete or absent, never half written), so of two workers exactly one gets it and the
other moves on to the next unit; the winner writes the part, then removes its claim. A
claim never blocks forever: one held by a dead process on the same host, by this very
process (left by an interrupted call), or older than ``timeout`` seconds (default
:data:`CLAIM_TIMEOUT`, 6 h; a worker on another host may have died) is stale and is taken
over, with a log warning. Taking over is serialised by a lock (``claims/.lock``, ``flock``)
so that one stale claim goes to one worker. The timeout must exceed the time one unit takes;
a unit computed twice (after a wrong timeout) still gives the same part.

Example:
    >>> store = ResultStore("runs/sweep", {"config": cfg.to_dict()})
    >>> if "layer-3" not in store.done() and store.claim("layer-3"):
    ...     store.write("layer-3", table)  # also releases the claim
    >>> store.read()
"""

import fcntl
import json
import logging
import math
import os
import re
import socket
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from roleprobe.core.io import atomic_write_bytes, atomic_write_text, create_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
CLAIMS = "claims"
CLAIM_TIMEOUT = 6 * 3600.0
"""Seconds after which a claim is stale whoever holds it (a worker on another host may have
died without anyone on this host being able to tell)."""
_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def code_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, and roleprobe's commit if known.

    ``"git"`` is recorded only when roleprobe runs from an editable checkout of its own
    repository (:func:`roleprobe_checkout`); an installed copy records its version only (a
    ``git rev-parse`` from its folder would name whatever repository it sits in).
    """
    versions = {}
    for package in ("roleprobe", "torch", "transformer-lens", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover - always installed
            versions[package] = "not installed"
    checkout = roleprobe_checkout()
    if checkout is not None:
        versions["git"] = git_hash(checkout)
    return versions


def roleprobe_checkout(package: str | os.PathLike[str] | None = None) -> Path | None:
    """The repository root when ``package`` (default: the imported ``roleprobe`` folder)
    is ``<root>/src/roleprobe`` of a checkout of roleprobe itself, else ``None``.

    A checkout is a folder with ``.git`` and a ``pyproject.toml`` naming the project
    ``roleprobe``; a copy installed into ``site-packages`` (even one inside some other git
    repository) is none.
    """
    where = Path(package) if package is not None else Path(__file__).resolve().parents[1]
    root = where.parent.parent
    if where.name != "roleprobe" or where.parent.name != "src" or not (root / ".git").exists():
        return None
    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name = project.get("project", {}).get("name") if isinstance(project, dict) else None
    return root if name == "roleprobe" else None


def git_hash(path: str | os.PathLike[str] | None = None) -> str:
    """The commit of the git checkout holding ``path`` (default: this file), or ``"unknown"``."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


class StoreMismatchError(ValueError):
    """A store folder already holds results made with a different configuration.

    Attributes:
        root: the store folder.
        keys: the configuration keys whose values differ.
    """

    def __init__(self, root: Path, keys: list[str]) -> None:
        super().__init__(
            f"{root} was made with a different configuration (differs in {keys}); "
            "use a new folder for a new run"
        )
        self.root = root
        self.keys = keys


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the store in ``root``.

    Raises:
        FileNotFoundError: ``root`` holds no manifest (it is not a store).
        ValueError: the manifest is not readable JSON.
    """
    path = Path(root) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{Path(root)} is not a result store (no {MANIFEST})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a readable manifest: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a readable manifest: not a JSON object")
    return data


def check_claim_timeout(timeout: Any) -> float:
    """``timeout`` as a positive finite number of seconds (``ValueError`` naming it)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"claim_timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"claim_timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


class ResultStore:
    """A folder of result parts with a manifest that must match on reopen.

    Args:
        root: the store folder (created if missing).
        manifest: what identifies the run. Its ``"config"`` entry must equal the stored one
            when the store is reopened; other entries (versions, git hash) are kept from the
            first writer and only logged if they differ.
        resume: reopen a store that already has parts (``False``: refuse, so that results of
            an earlier run are never mixed in by accident).

    Raises:
        StoreMismatchError: the stored manifest's config differs (the message and
            ``keys`` list the keys).
        ValueError: ``resume=False`` and the store already holds parts, or the stored
            manifest is unreadable.
    """

    def __init__(
        self, root: str | os.PathLike[str], manifest: Mapping[str, Any], resume: bool = True
    ) -> None:
        self.root = Path(root)
        self.parts = self.root / PARTS
        self.claims = self.root / CLAIMS
        self.parts.mkdir(parents=True, exist_ok=True)
        self._tokens: dict[str, str] = {}  # key -> token of the claims this object holds
        self.manifest = self._open_manifest(dict(manifest))
        if not resume and self.done():
            raise ValueError(
                f"{self.root} already holds {len(self.done())} result parts; "
                "pass resume=True to continue that run, or choose a new folder"
            )

    def _open_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
        # exclusive create: if another shard got there first, its manifest is kept
        create_text(self.root / MANIFEST, text)
        stored = read_manifest(self.root)
        wanted = json.loads(text)
        if stored.get("config") != wanted.get("config"):
            old, new = stored.get("config") or {}, wanted.get("config") or {}
            keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise StoreMismatchError(self.root, keys)
        for key in sorted(set(stored) | set(wanted)):
            if key != "config" and stored.get(key) != wanted.get(key):
                logger.info("store %s: %s differs from the first writer's; kept", self.root, key)
        return dict(stored)

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"bad part key {key!r}: use letters, digits and _ . = + -")
        return self.parts / f"{key}.parquet"

    def part_path(self, key: str) -> Path:
        """The file of part ``key`` (which may not exist yet)."""
        return self._path(key)

    def done(self) -> set[str]:
        """Keys of the finished parts."""
        return {p.stem for p in self.parts.glob("*.parquet")}

    def write(self, key: str, table: pd.DataFrame) -> None:
        """Store one finished unit of work (atomically; an existing part is replaced) and
        release this object's claim on it, if any."""
        path = self._path(key)
        atomic_write_bytes(path, table.to_parquet(index=False))
        self.release(key)

    def read(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The parts (all, or ``keys``) concatenated in key order."""
        wanted = sorted(self.done() if keys is None else keys)
        missing = [k for k in wanted if not self._path(k).exists()]
        if missing:
            raise KeyError(f"{len(missing)} parts are missing from {self.root}: {missing[:5]}")
        tables = [pd.read_parquet(self._path(k)) for k in wanted]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    # -- claims: several workers on one store -------------------------------------------

    def _claim_path(self, key: str) -> Path:
        self._path(key)  # validates the key
        return self.claims / f"{key}.claim"

    def claim(self, key: str, timeout: float | int = CLAIM_TIMEOUT) -> bool:
        """Claim the unit ``key`` for this worker, unless it is done or claimed by another.

        Args:
            key: the part key.
            timeout: seconds after which another worker's claim is stale (see the module
                docstring); claims of dead processes on this host are stale at once.

        Returns:
            Whether this worker now holds the claim and the part is not finished: compute
            it, then :meth:`write` it (which releases the claim) or :meth:`release` it.
        """
        seconds = check_claim_timeout(timeout)
        path = self._claim_path(key)
        if self._path(key).exists():
            return False
        self.claims.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        text = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "time": time.time(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "token": token,
            }
        )
        if not create_text(path, text) and not self._take_over(key, path, text, seconds):
            return False
        self._tokens[key] = token
        if self._path(key).exists():  # finished by the previous holder meanwhile
            self.release(key)
            return False
        return True

    def _take_over(self, key: str, path: Path, text: str, timeout: float) -> bool:
        """Replace a stale claim on ``key`` by ours (under the store's claim lock)."""
        lock = self.claims / ".lock"
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                try:
                    held = path.read_text(encoding="utf-8")
                except FileNotFoundError:  # released meanwhile
                    return create_text(path, text)
                why = self._stale(path, held, timeout)
                if why is None:
                    return False
                if why != "own":
                    logger.warning(
                        "store %s: taking over the claim on %s (%s)", self.root, key, why
                    )
                atomic_write_text(path, text)
                return True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @staticmethod
    def _stale(path: Path, held: str, timeout: float) -> str | None:
        """Why a claim is stale (``"own"``: this process's), or ``None`` if it holds."""
        try:
            info = json.loads(held)
            host, pid, since = str(info["host"]), int(info["pid"]), float(info["time"])
        except (ValueError, KeyError, TypeError):
            try:
                since = path.stat().st_mtime
            except OSError:
                return "unreadable claim, gone"
            age = time.time() - since
            return f"unreadable claim, {age:.0f} s old" if age > timeout else None
        age = time.time() - since
        if host == socket.gethostname():
            if pid == os.getpid():
                return "own"
            if not _pid_alive(pid):
                return f"its process {pid} on this host has ended"
        if age > timeout:
            return f"held by pid {pid} on {host} for {age:.0f} s > claim_timeout {timeout:.0f} s"
        return None

    def release(self, key: str) -> None:
        """Remove this object's claim on ``key`` (if it still holds it)."""
        token = self._tokens.pop(key, None)
        if token is None:
            return
        path = self._claim_path(key)
        try:
            held = json.loads(path.read_text(encoding="utf-8")).get("token")
        except (OSError, ValueError, AttributeError):
            return
        if held == token:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        """Remove every claim this object holds (e.g. after an interrupted computation)."""
        for key in list(self._tokens):
            self.release(key)

    def claimed(self) -> dict[str, dict[str, Any]]:
        """The current claims, by key: ``host, pid, time, started`` of each holder."""
        out: dict[str, dict[str, Any]] = {}
        for path in sorted(self.claims.glob("*.claim")) if self.claims.exists() else []:
            try:
                info = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                info = {}
            out[path.name[: -len(".claim")]] = info if isinstance(info, dict) else {}
        return out
