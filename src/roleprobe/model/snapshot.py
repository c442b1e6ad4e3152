"""A verified on-disk cache of a ``transformers`` model and tokenizer (safetensors + JSON).

Dequantising the embedded GGUF takes ~30–50 s on a laptop CPU; loading the float32 weights
back from safetensors takes about a second. A snapshot is a folder written by
``save_pretrained`` plus a manifest (``roleprobe-snapshot.json``) that records where the
weights came from and the size and SHA-256 of every file. The manifest is written last and
the folder is moved into place with one rename, so a crash mid-write leaves no snapshot; a
snapshot whose files no longer match their manifest is reported and rebuilt, never used.

The cache root is ``cache_dir`` if given, else ``$ROLEPROBE_CACHE``, else
``$XDG_CACHE_HOME/roleprobe``, else ``~/.cache/roleprobe``.
"""

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from roleprobe.core.io import file_digest

logger = logging.getLogger(__name__)

MANIFEST_NAME = "roleprobe-snapshot.json"
SNAPSHOT_FORMAT = 1


def _describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.name: {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_NAME
    }


def save_snapshot(
    model: PreTrainedModel, tokenizer: Any, folder: Path, source: dict[str, Any]
) -> Path:
    """Write ``model`` and ``tokenizer`` to ``folder`` atomically, with a manifest.

    Args:
        model: a ``transformers`` model (not quantised: clear any quantizer first).
        tokenizer: its tokenizer.
        folder: the snapshot folder to create (an existing one is replaced).
        source: what the weights were built from; :func:`load_snapshot` requires it to match.

    Returns:
        ``folder``.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        manifest = {"format": SNAPSHOT_FORMAT, "source": source, "files": _describe_files(staging)}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if folder.exists():
            shutil.rmtree(folder)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: keep theirs
            logger.info("snapshot %s was written concurrently; keeping the existing one", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def snapshot_problem(folder: Path, source: dict[str, Any]) -> str | None:
    """Why the snapshot in ``folder`` cannot be used, or ``None`` when it is complete and intact."""
    manifest_path = folder / MANIFEST_NAME
    if not folder.is_dir():
        return "no snapshot"
    if not manifest_path.is_file():
        return "no manifest (an interrupted write?)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("format") != SNAPSHOT_FORMAT:
        return f"snapshot format {manifest.get('format')} is not {SNAPSHOT_FORMAT}"
    if manifest.get("source") != source:
        return "built from a different source"
    if not files:
        return "manifest lists no files"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"missing file {name}"
        if path.stat().st_size != meta["size"]:
            return f"file {name} has size {path.stat().st_size}, expected {meta['size']}"
        if file_digest(path) != meta["sha256"]:
            return f"file {name} does not match its checksum"
    return None


def load_snapshot(
    folder: Path, source: dict[str, Any], dtype: torch.dtype = torch.float32
) -> tuple[Any, Any] | None:
    """Load a verified snapshot, or return ``None`` (and log why) when it is absent or corrupt."""
    problem = snapshot_problem(folder, source)
    if problem is not None:
        if problem != "no snapshot":
            logger.warning("ignoring cached model at %s: %s; rebuilding it", folder, problem)
        return None
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer
