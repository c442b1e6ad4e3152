"""Prefix reuse: run only the blocks above a layer, starting from a saved residual.

An addition at layer ``l`` changes nothing below ``l``: the residual stream entering block
``l`` is the same for every role, position and α. A sweep therefore computes
``blocks.{l}.hook_resid_pre`` once per batch (:func:`resid_at`) and runs only blocks
``l..L-1`` for each variant (:func:`letters_from`), which for a full layer sweep halves
the work on average.

TransformerLens 4.3's bridge accepts ``start_at_layer=l`` but still executes blocks
``0..l-1`` (it feeds the residual as ``inputs_embeds`` and swaps it in at block ``l``), so
the saving has to come from :func:`skipping_blocks`, which makes the lower blocks pass
their input through for the duration of a ``with`` block. Two more things must travel with
the residual for a left-padded batch to give the same logits as a full pass:

* the attention mask (passed through unchanged), and
* the position ids: the bridge derives them from the mask for token input but not for a
  float residual, so rotary models would see padded rows at the wrong positions.
  :func:`position_ids` derives them the same way.

``tests/test_prefix.py`` checks that a left-padded batch started at any layer gives the
same letter logits as the full pass, and that the lower blocks really do not run.

Example:
    >>> resid = resid_at(model, batch.input_ids, batch.attention_mask, layer=12)
    >>> logits = letters_from(model, resid + 3.0 * d, 12, batch.attention_mask, letter_ids)
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from roleprobe.activations import check_layers

_SLOT = "_original_component"


class _PassThrough(nn.Module):
    """Stands in for a skipped block: returns its hidden states unchanged."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


@contextmanager
def skipping_blocks(model: Any, below: int) -> Iterator[None]:
    """Inside the block, blocks ``0..below-1`` of ``model`` return their input unchanged.

    Only for use with ``start_at_layer=below``, where their output is discarded anyway.
    The original modules are restored on exit, also on error.

    Raises:
        NotImplementedError: if the bridge's blocks do not hold their wrapped module where
            TransformerLens 4.3 puts it (another TransformerLens version).
    """
    blocks = list(model.blocks)[:below]
    saved = []
    try:
        for block in blocks:
            original = block._modules.get(_SLOT)
            if original is None:
                raise NotImplementedError(
                    f"{type(block).__name__} holds no {_SLOT!r}: prefix reuse needs "
                    "TransformerLens 4.3's BlockBridge"
                )
            saved.append((block, original))
            block._modules[_SLOT] = _PassThrough()
        yield
    finally:
        for block, original in saved:
            block._modules[_SLOT] = original


def position_ids(attention_mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Position of each token among its row's real tokens (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class _Captured(Exception):
    def __init__(self, value: Tensor) -> None:
        self.value = value


def _capture_and_stop(act: Tensor, hook: Any) -> Tensor:
    raise _Captured(act)


def resid_at(
    model: Any, input_ids: Int[Tensor, "batch pos"], attention_mask: Tensor, layer: int
) -> Float[Tensor, "batch pos d_model"]:
    """``blocks.{layer}.hook_resid_pre`` for a batch; nothing above it is computed."""
    check_layers(model, [layer])
    try:
        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", _capture_and_stop)]):
            model(input_ids, attention_mask=attention_mask)
    except _Captured as stop:
        return stop.value
    raise RuntimeError(f"blocks.{layer}.hook_resid_pre never fired")  # pragma: no cover


def final_last(
    model: Any,
    inputs: Tensor,
    attention_mask: Tensor,
    start_at_layer: int | None = None,
) -> Float[Tensor, "batch d_model"]:
    """The last position's residual after the final norm, without the unembedding.

    ``inputs`` are token ids, or with ``start_at_layer=l`` the residual entering block
    ``l`` (then blocks below ``l`` are skipped).
    """
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    skipping: Any = _nothing()
    if start_at_layer is not None:
        check_layers(model, [start_at_layer])
        kwargs |= {"start_at_layer": start_at_layer, "position_ids": position_ids(attention_mask)}
        skipping = skipping_blocks(model, start_at_layer)
    try:
        with skipping, model.hooks(fwd_hooks=[("ln_final.hook_out", _last_and_stop)]):
            model(inputs, **kwargs)
    except _Captured as stop:
        return stop.value
    raise RuntimeError("ln_final.hook_out never fired")  # pragma: no cover


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _last_and_stop(act: Tensor, hook: Any) -> Tensor:
    raise _Captured(act[:, -1])


def project_letters(
    model: Any, final: Float[Tensor, "batch d_model"], letter_ids: Sequence[int]
) -> Float[Tensor, "batch choice"]:
    """Multiply normalised residuals by the unembedding rows of the letters only."""
    unembed = getattr(model.unembed, "original_component", model.unembed)
    ids = torch.tensor(list(letter_ids), device=final.device)
    logits = final @ unembed.weight[ids].T
    bias = getattr(unembed, "bias", None)
    return logits + bias[ids] if bias is not None else logits


def letters_from(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    attention_mask: Tensor,
    letter_ids: Sequence[int],
) -> Float[Tensor, "batch choice"]:
    """Letter logits at the last position, running only blocks ``layer..L-1`` on ``resid``."""
    return project_letters(model, final_last(model, resid, attention_mask, layer), letter_ids)
