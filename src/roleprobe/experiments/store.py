"""An append-only result store: one parquet part per finished unit of work, and a manifest.

Layout of a store folder::

    manifest.json        what was asked (config, model fingerprint, data hashes) and with
                         which code (versions, git hash); written once, checked on reopen
    parts/<key>.parquet  one finished unit of work each; written to a temporary name and
                         renamed, so a part is either complete or absent

A killed run leaves only complete parts behind: reopening the store with the same manifest
skips them (``done()``), and the final table is the parts read in key order, so it does
not depend on how often the run was interrupted or how the work was sharded. Several
processes (e.g. the jobs of a SLURM array) may write disjoint parts into one store.

Example:
    >>> store = ResultStore("runs/sweep", {"config": cfg.to_dict()})
    >>> if "layer-3" not in store.done():
    ...     store.write("layer-3", table)
    >>> store.read()
"""

import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from roleprobe.core.io import atomic_write_bytes, create_text

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PARTS = "parts"
_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+$")


def code_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, and the git commit of the working dir."""
    versions = {}
    for package in ("roleprobe", "torch", "transformer-lens", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:  # pragma: no cover - always installed
            versions[package] = "not installed"
    versions["git"] = git_hash()
    return versions


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
        self.parts.mkdir(parents=True, exist_ok=True)
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

    def done(self) -> set[str]:
        """Keys of the finished parts."""
        return {p.stem for p in self.parts.glob("*.parquet")}

    def write(self, key: str, table: pd.DataFrame) -> None:
        """Store one finished unit of work (atomically; an existing part is replaced)."""
        path = self._path(key)
        atomic_write_bytes(path, table.to_parquet(index=False))

    def read(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The parts (all, or ``keys``) concatenated in key order."""
        wanted = sorted(self.done() if keys is None else keys)
        missing = [k for k in wanted if not self._path(k).exists()]
        if missing:
            raise KeyError(f"{len(missing)} parts are missing from {self.root}: {missing[:5]}")
        tables = [pd.read_parquet(self._path(k)) for k in wanted]
        return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
