"""The plain Hugging Face reference of the benchmarks: forward passes with no hooks, no logits.

:func:`shared_copy` makes, *before* a model is wrapped, a second module tree that holds the
very same parameter and buffer tensors (no second copy of the weights: a 9B model fits
once): the bridge rewires the model it wraps, the copy stays plain ``transformers`` code.
:func:`plain_pass` runs the copy's decoder (``model.model``: embeddings, blocks, final norm;
no unembedding) over a range of blocks, starting from token ids or, like a sweep's prefix
reuse, from a residual entering block ``start``; positions come from the attention mask as
the bridge derives them, so that left-padded rows compute the same thing.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from roleprobe.steering.prefix import position_ids


def shared_copy(hf: nn.Module) -> nn.Module:
    """A copy of ``hf``'s modules that shares every parameter and buffer with it (eval mode).

    Make it before ``rp.wrap_hf_model(hf, ...)``: the bridge replaces ``hf``'s decoder
    layers, not the copy's, and reads the same weights.
    """
    memo: dict[int, Any] = {id(t): t for t in [*hf.parameters(), *hf.buffers()]}
    return copy.deepcopy(hf, memo).eval()


def decoder(hf: nn.Module) -> nn.Module:
    """The base model under the causal-LM head (``LlamaModel``, ``Gemma2Model``, ...)."""
    return hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model  # type: ignore[operator]


@contextmanager
def blocks(hf: nn.Module, start: int, stop: int) -> Iterator[nn.Module]:
    """Inside the block, the decoder runs only its layers ``start..stop-1`` (and their
    attention types, for models that alternate sliding and global attention)."""
    base = decoder(hf)
    layers, config = base.layers, base.config
    types = getattr(config, "layer_types", None)
    try:
        base.layers = nn.ModuleList(list(layers)[start:stop])
        if types is not None:
            config.layer_types = list(types)[start:stop]
        yield base
    finally:
        base.layers = layers
        if types is not None:
            config.layer_types = types


def n_layers(hf: nn.Module) -> int:
    return len(decoder(hf).layers)


def plain_pass(
    hf: nn.Module, inputs: Tensor, attention_mask: Tensor, start: int = 0, stop: int | None = None
) -> Tensor:
    """Blocks ``start..stop-1`` of the plain model and its final norm; no logits.

    Args:
        hf: a plain ``transformers`` causal LM (e.g. :func:`shared_copy`).
        inputs: token ids ``[batch, pos]`` (``start=0``), or the residual entering block
            ``start`` ``[batch, pos, d_model]``.
        attention_mask: ``[batch, pos]``, 1 for real tokens (left padding).
        start, stop: the blocks run (``stop``: default all).

    Returns:
        The last hidden state ``[batch, pos, d_model]``.
    """
    stop = n_layers(hf) if stop is None else stop
    kwargs: dict[str, Any] = {
        "attention_mask": attention_mask,
        "position_ids": position_ids(attention_mask),
        "use_cache": False,
    }
    if inputs.is_floating_point():
        kwargs["inputs_embeds"] = inputs
    else:
        kwargs["input_ids"] = inputs
    with torch.inference_mode(), blocks(hf, start, stop) as base:
        return base(**kwargs).last_hidden_state
