"""An append-only result store: one parquet part per finished unit of work, and a manifest.

Layout of a store folder::

    manifest.json        what was asked (config, model fingerprint, data hashes) and with
                         which code (versions, git hash); written once, checked on reopen
    parts/<key>.parquet  one finished unit of work each; written to a temporary name and
                         renamed, so a part is either complete or absent
    claims/<key>.claim   a unit of work some worker is computing now (host, pid, Slurm job,
                         heartbeat);
                         removed when its part is written

A killed run leaves only complete parts behind: reopening the store with the same manifest
skips them (``done()``), and the final table is the parts read in key order, so it does
not depend on how often the run was interrupted or how the work was sharded.

**Several workers on one store.** Processes (the tasks of a Slurm array, two notebooks, a
lab's shared folder) may run the same work on one store at once. A worker *claims* a unit
before computing it (:meth:`ResultStore.claim`, :class:`~roleprobe.experiments.claims.Claims`):
of two workers exactly one gets it, and the winner writes the part, then removes its claim.
The holder refreshes a heartbeat in its claim while it computes; a claim whose process is
gone, whose Slurm job has ended or whose heartbeat is older than the lease (default 5
minutes) is taken over, with a log warning. A unit computed twice (after a frozen worker
woke up) gives the same part.

**The done set** is listed once per store object and kept up to date by its own writes and
by one ``stat`` per unit it meets (:meth:`ResultStore.is_done`), not by a listing per unit
(which, on a network file system, is what costs). The same listing finds the temporaries
of writers that were killed, and removes those that are stale
(:func:`~roleprobe.core.io.remove_stale_temporaries`).

**A damaged part.** Parts are written atomically, so a part that is not a parquet file (0
bytes, or cut short: a disk or file-system fault, a copy interrupted) comes from outside.
Such a part still counts as done: the done set is names only, because checking each part
(an open and two small reads; a paper sweep has 3,402 parts, and every worker lists them)
would cost every worker thousands of round trips on a network file system to guard
against a rare fault. The part is caught where it is read instead (:meth:`ResultStore.read`,
:func:`~roleprobe.experiments.merging.merge` and its result, at no extra cost): one
:class:`BadPartError` names it (with every other damaged part of the read, checked only
then) and says to delete it and rerun the sweep, which computes it again. Nothing is ever
deleted or renamed for the user.

Example:
    >>> store = ResultStore("runs/sweep", {"config": cfg.to_dict()})
    >>> if store.claim("layer-3"):  # not done, and no live worker holds it
    ...     store.write("layer-3", table)  # also releases the claim
    >>> store.read()
"""

import dataclasses
import json
import logging
import os
import re
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from roleprobe.core.io import atomic_write_bytes, create_text, remove_stale_temporaries
from roleprobe.experiments.claims import LEASE, Claims

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
CLAIMS = "claims"
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


PART_FIX = "delete it and rerun the sweep: it will be computed again"
"""What to do about a damaged part (:class:`BadPartError`)."""
_MAGIC = b"PAR1"


def part_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the part file ``path`` is not a whole parquet file, or ``None``.

    A cheap check (one open, two 4-byte reads): the size, and the ``PAR1`` magic a parquet
    file starts and ends with; a file that passes may still be damaged inside.
    """
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 3 * len(_MAGIC):
                return f"{size} bytes, too short for parquet"
            head = handle.read(len(_MAGIC))
            handle.seek(-len(_MAGIC), os.SEEK_END)
            tail = handle.read(len(_MAGIC))
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    if head != _MAGIC or tail != _MAGIC:
        return f"{size} bytes without the parquet magic at both ends: cut short or not parquet"
    return None


class BadPartError(ValueError):
    """Store parts that are not readable parquet files (a fault outside roleprobe: parts
    are written atomically).

    Attributes:
        paths: the damaged parts found, the one that failed first.
    """

    def __init__(self, paths: Sequence[Path], why: str) -> None:
        first = paths[0]
        if len(paths) == 1:
            text = f"{first} is not a readable store part ({why}); {PART_FIX}"
        else:
            names = ", ".join(p.name for p in paths[:5]) + (" …" if len(paths) > 5 else "")
            text = (
                f"{len(paths)} store parts in {first.parent} are not readable ({names}; "
                f"{first.name}: {why}); delete them and rerun the sweep: they will be "
                "computed again"
            )
        super().__init__(text)
        self.paths = list(paths)


@contextmanager
def reading_part(path: Path, others: Sequence[Path] = ()) -> Iterator[None]:
    """Turn pyarrow's error on reading the part ``path`` into a :class:`BadPartError`.

    Args:
        path: the part being read in the ``with`` block.
        others: the other parts of the same read; checked (:func:`part_problem`) only when
            ``path`` fails, so that the error names every damaged one at once.

    Raises:
        BadPartError: ``path`` is cut short or not parquet, or its data are damaged
            (pyarrow's ``OSError``). A missing or forbidden file raises its own
            ``OSError``, and pyarrow's ``ArrowInvalid`` on a whole file (a column or
            filter the part lacks: a caller's mistake, not damage) passes unchanged.
    """
    try:
        yield
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (pa.ArrowException, OSError) as err:
        why = part_problem(path)
        if why is None:  # the footer is whole: damaged data, or not the file's fault
            if not isinstance(err, OSError):
                raise
            why = " ".join(str(err).split()) or type(err).__name__
        bad = [path, *(p for p in others if p != path and part_problem(p) is not None)]
        raise BadPartError(bad, why) from err


class ResultStore:
    """A folder of result parts with a manifest that must match on reopen.

    Args:
        root: the store folder (created if missing).
        manifest: what identifies the run. Its ``"config"`` entry must equal the stored one
            when the store is reopened; other entries (versions, git hash) are kept from the
            first writer and only logged if they differ.
        resume: reopen a store that already has parts (``False``: refuse, so that results of
            an earlier run are never mixed in by accident).
        lease: seconds without a heartbeat after which another worker's claim is stale
            (:class:`~roleprobe.experiments.claims.Claims`).

    Raises:
        StoreMismatchError: the stored manifest's config differs (the message and
            ``keys`` list the keys).
        ValueError: ``resume=False`` and the store already holds parts, or the stored
            manifest is unreadable.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        manifest: Mapping[str, Any],
        resume: bool = True,
        lease: float | int = LEASE,
    ) -> None:
        self.root = Path(root)
        self.parts = self.root / PARTS
        self.parts.mkdir(parents=True, exist_ok=True)
        self.claims = Claims(self.root / CLAIMS, lease)
        self._done: set[str] | None = None
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

    def _done_keys(self) -> set[str]:
        if self._done is None:  # one listing: the parts, and the temporaries of killed writers
            names = [p.name for p in self.parts.glob("*")]
            self._done = {n.removesuffix(".parquet") for n in names if n.endswith(".parquet")}
            remove_stale_temporaries(self.parts, names=[n for n in names if n.endswith(".tmp")])
        return self._done

    def done(self) -> set[str]:
        """Keys of the finished parts: the folder is listed once per object, then kept up
        to date with this object's writes and :meth:`is_done` checks (:meth:`refresh`
        lists it again)."""
        return set(self._done_keys())

    def refresh(self) -> set[str]:
        """List the parts folder again (parts other workers finished) and return
        :meth:`done`."""
        self._done = None
        return self.done()

    def write(self, key: str, table: pd.DataFrame) -> None:
        """Store one finished unit of work (atomically; an existing part is replaced) and
        release this object's claim on it, if any."""
        path = self._path(key)
        atomic_write_bytes(path, table.to_parquet(index=False))
        self._done_keys().add(key)
        self.release(key)

    def read(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The parts (all, or ``keys``) concatenated in key order.

        Raises:
            KeyError: parts of ``keys`` are missing.
            BadPartError: a part is not a readable parquet file (names every damaged part
                of ``keys`` and the fix).
        """
        wanted = sorted(self.refresh() if keys is None else keys)
        missing = [k for k in wanted if not self._path(k).exists()]
        if missing:
            raise KeyError(f"{len(missing)} parts are missing from {self.root}: {missing[:5]}")
        paths = [self._path(k) for k in wanted]
        tables = []
        for path in paths:
            with reading_part(path, paths):
                tables.append(pd.read_parquet(path))
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()

    # -- claims: several workers on one store -------------------------------------------

    def is_done(self, key: str) -> bool:
        """Whether part ``key`` is finished (by any worker): the done set, else one
        ``stat`` of its file (no listing)."""
        if key in self._done_keys():
            return True
        if self._path(key).exists():
            self._done_keys().add(key)
            return True
        return False

    def claim(self, key: str) -> bool:
        """Claim the unit ``key`` for this worker, unless it is done or claimed by a live
        worker (see :mod:`roleprobe.experiments.claims`; a stale claim is taken over).

        Returns:
            Whether this worker now holds the claim and the part is not finished: compute
            it, then :meth:`write` it (which releases the claim) or :meth:`release` it.
        """
        self._path(key)  # validates the key
        if self.is_done(key):
            return False
        if not self.claims.claim(key):
            return False
        if self._path(key).exists():  # finished by the previous holder meanwhile
            self._done_keys().add(key)
            self.release(key)
            return False
        return True

    def release(self, key: str) -> None:
        """Remove this object's claim on ``key`` (if it still holds it)."""
        self.claims.release(key)

    def release_all(self) -> None:
        """Remove every claim this object holds (e.g. after an interrupted computation)."""
        self.claims.release_all()

    def claimed(self) -> dict[str, dict[str, Any]]:
        """The current claims, by key: ``host, pid, time`` (last heartbeat), ``lease``,
        ``slurm`` of each holder (empty for an unreadable claim)."""
        return {
            key: ({} if h is None else {**dataclasses.asdict(h), "time": h.heartbeat})
            for key, h in self.claims.holders().items()
        }
