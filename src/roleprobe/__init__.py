"""roleprobe: role vectors in a language model's residual stream.

Difference-of-means directions between role-specific and generic prompts, read at every
layer through TransformerLens hooks, applied as activation additions and directional
ablations, and measured on multiple-choice benchmarks (arXiv 2502.12055).

A notebook needs only ``import roleprobe as rp``. Importing is cheap: torch, transformers
and TransformerLens load on first use of a name that needs them.

Example:
    >>> import roleprobe as rp
    >>> model = rp.load_model()  # the embedded SmolLM2-135M-Instruct
    >>> batch = rp.encode_chat(model.tokenizer, ["What is the capital of France?"])
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "models",
    "wrap_hf_model": "models",
    "available_models": "models",
    "resolve_device": "models",
    "resolve_dtype": "models",
    "ModelInfo": "models",
    "TINY_MODEL": "models",
    "EMBEDDED_MODEL": "embedded",
    "EmbeddedModelMissingError": "embedded",
    "embedded_gguf_path": "embedded",
    "load_embedded_hf": "embedded",
    "ChatBatch": "chat",
    "ChatTemplate": "chat",
    "answer_letter_ids": "chat",
    "chat_ids": "chat",
    "encode_chat": "chat",
    "left_pad": "chat",
    "generate": "generation",
    "TinyConfig": "tiny",
    "tiny_hf_model": "tiny",
    "tiny_tokenizer": "tiny",
    "cache_root": "snapshot",
}

__all__ = [
    "EMBEDDED_MODEL",
    "TINY_MODEL",
    "ChatBatch",
    "ChatTemplate",
    "EmbeddedModelMissingError",
    "ModelInfo",
    "TinyConfig",
    "__version__",
    "answer_letter_ids",
    "available_models",
    "cache_root",
    "chat_ids",
    "embedded_gguf_path",
    "encode_chat",
    "generate",
    "left_pad",
    "load_embedded_hf",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "tiny_hf_model",
    "tiny_tokenizer",
    "wrap_hf_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.chat import (
        ChatBatch,
        ChatTemplate,
        answer_letter_ids,
        chat_ids,
        encode_chat,
        left_pad,
    )
    from roleprobe.embedded import (
        EMBEDDED_MODEL,
        EmbeddedModelMissingError,
        embedded_gguf_path,
        load_embedded_hf,
    )
    from roleprobe.generation import generate
    from roleprobe.models import (
        TINY_MODEL,
        ModelInfo,
        available_models,
        load_model,
        resolve_device,
        resolve_dtype,
        wrap_hf_model,
    )
    from roleprobe.snapshot import cache_root
    from roleprobe.tiny import TinyConfig, tiny_hf_model, tiny_tokenizer


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'roleprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"roleprobe.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
