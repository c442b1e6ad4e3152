"""Models by name for the benchmarks: what ``rp.load_model`` knows, plus in-memory tiny shapes.

``tiny-random-4`` (and any ``tiny-random-N``) is the tiny random chat model with N layers,
built in memory; the prefix-reuse sweep benchmark is degenerate with the 2-layer default.
:func:`fresh_hf` gives an unwrapped ``transformers`` copy of the same weights (the bridge
replaces the decoder layers of the model it wraps, so ``bridge.original_model`` no longer
runs as plain Hugging Face code).
"""

import re
from typing import Any

import roleprobe as rp

_TINY = re.compile(r"tiny-random-(\d+)$")


def tiny_layers(name: str) -> int | None:
    """N for ``tiny-random-N``, 2 for ``tiny-random``, else ``None``."""
    if name == rp.TINY_MODEL:
        return 2
    match = _TINY.match(name)
    return int(match.group(1)) if match else None


def load(name: str, device: str = "cpu", dtype: str = "float32") -> Any:
    """A TransformerBridge for ``name`` (``tiny-random-N`` is built in memory)."""
    n_layers = tiny_layers(name)
    if n_layers is None:
        return rp.load_model(name, device=device, dtype=dtype)
    hf = rp.tiny_hf_model(rp.TinyConfig(n_layers=n_layers))
    return rp.wrap_hf_model(hf, rp.tiny_tokenizer(), name, device=device, dtype=dtype)


def fresh_hf(name: str, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """A plain, unwrapped Hugging Face copy of the model ``name`` and its tokenizer."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    n_layers = tiny_layers(name)
    hf: Any
    tokenizer: Any
    if n_layers is not None:
        hf, tokenizer = rp.tiny_hf_model(rp.TinyConfig(n_layers=n_layers)), rp.tiny_tokenizer()
    elif name == rp.EMBEDDED_MODEL:
        hf, tokenizer = rp.load_embedded_hf()
    elif Path(name).expanduser().is_dir() or "/" in name:
        hf = AutoModelForCausalLM.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
    else:
        raise ValueError(f"no plain Hugging Face copy for model {name!r}")
    tokenizer.padding_side = "left"
    hf = hf.to(device=rp.resolve_device(device), dtype=rp.resolve_dtype(dtype))
    return hf.eval(), tokenizer
