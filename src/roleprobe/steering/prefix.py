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

Letter-only scoring (:func:`project_letters`) must also apply what the model's forward
does after the unembedding: the bias, and Gemma-2's final soft-cap ``cap * tanh(x / cap)``
(or Cohere's/Granite's logit scales; :func:`output_transform`). Skipping the cap moved
letter log-probs by up to 0.5 nats on a tiny Gemma-2. :func:`letter_only_supported` checks
once per model, against the model's own logits, that the maths reproduce its head;
:func:`last_letter_logits` falls back to the full logits (with a warning) where not.

``tests/test_prefix.py`` checks that a left-padded batch started at any layer gives the
same letter logits as the full pass, that the lower blocks really do not run, and that a
soft-capped Gemma-2 gives the full pass's letter log-probs.

Example:
    >>> resid = resid_at(model, batch.input_ids, batch.attention_mask, layer=12)
    >>> logits = letters_from(model, resid + 3.0 * d, 12, batch.attention_mask, letter_ids)
"""

import logging
import math
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from roleprobe.core.hooks import check_layers
from roleprobe.core.types import Model
from roleprobe.steering.interventions import suspended

logger = logging.getLogger(__name__)

_SLOT = "_original_component"


class _PassThrough(nn.Module):
    """Stands in for a skipped block: returns its hidden states unchanged."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


@contextmanager
def skipping_blocks(model: Model, below: int) -> Iterator[None]:
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
    model: Model, input_ids: Int[Tensor, "batch pos"], attention_mask: Tensor, layer: int
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
    model: Model,
    inputs: Tensor,
    attention_mask: Tensor,
    start_at_layer: int | None = None,
) -> Float[Tensor, "batch d_model"]:
    """The last position's residual after the final norm, without the unembedding.

    ``inputs`` are token ids, or with ``start_at_layer=l`` the residual entering block
    ``l`` (then blocks below ``l`` are skipped).
    """
    kwargs, skipping = _run_args(model, attention_mask, start_at_layer)
    try:
        with skipping, model.hooks(fwd_hooks=[("ln_final.hook_out", _last_and_stop)]):
            model(inputs, **kwargs)
    except _Captured as stop:
        return stop.value
    raise RuntimeError("ln_final.hook_out never fired")  # pragma: no cover


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _run_args(
    model: Model, attention_mask: Tensor, start_at_layer: int | None
) -> tuple[dict[str, Any], Any]:
    """The forward's keyword arguments, and the context that skips the blocks below."""
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if start_at_layer is None:
        return kwargs, _nothing()
    check_layers(model, [start_at_layer])
    kwargs |= {"start_at_layer": start_at_layer, "position_ids": position_ids(attention_mask)}
    return kwargs, skipping_blocks(model, start_at_layer)


def run_from(
    model: Model, inputs: Tensor, attention_mask: Tensor, start_at_layer: int | None = None
) -> Any:
    """The model's forward on token ids, or with ``start_at_layer=l`` on the residual
    entering block ``l`` (blocks below ``l`` are skipped); returns what the model returns."""
    kwargs, skipping = _run_args(model, attention_mask, start_at_layer)
    with skipping:
        return model(inputs, **kwargs)


def _last_and_stop(act: Tensor, hook: Any) -> Tensor:
    raise _Captured(act[:, -1])


def output_transform(
    model: Model, logits: Float[Tensor, "*batch vocab"]
) -> Float[Tensor, "*batch vocab"]:
    """What the model's forward applies to its logits after the unembedding.

    TransformerLens 4.3 declares each architecture's post-unembedding transform on its
    adapter (``apply_output_logits_transform``): Gemma-2's soft-cap ``cap * tanh(x / cap)``
    (config ``final_logit_softcapping``), Cohere's ``logit_scale``, Granite's
    ``/ logits_scaling``, ... Without an adapter, the configured soft-cap is applied.
    Element-wise, so it may be applied to any subset of the vocabulary.
    """
    adapter = getattr(model, "adapter", None)
    transform = getattr(adapter, "apply_output_logits_transform", None)
    if callable(transform):
        return transform(logits)
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        return cap * torch.tanh(logits / cap)
    return logits


def _unembed(model: Model) -> nn.Module:
    return getattr(model.unembed, "original_component", model.unembed)


def _raw_logits(
    model: Model, final: Float[Tensor, "*batch d_model"], ids: Tensor | None
) -> Float[Tensor, "*batch vocab"]:
    unembed = _unembed(model)
    weight: Tensor = unembed.weight  # type: ignore[assignment]
    bias: Tensor | None = getattr(unembed, "bias", None)
    if ids is not None:
        weight = weight[ids]
        bias = bias[ids] if bias is not None else None
    logits = final @ weight.T
    return logits + bias if bias is not None else logits


# What the head check found per model: (dtype, device) of the unembedding -> verdict.
_HEAD_CHECKS: "weakref.WeakKeyDictionary[Any, tuple[tuple[str, str], bool]]" = (
    weakref.WeakKeyDictionary()
)
_PROBE_LOGIT = 50.0


def _head_check(model: Model) -> tuple[bool, float, float]:
    """Compare the model's logits with :func:`project_letters`'s maths over the vocabulary.

    One forward pass on a few tokens, with the final normalised residual rescaled so that
    the raw logits reach ±50: large enough that a soft-cap, a scale or a bias the formula
    missed shows far above float error. Steering hooks are suspended for the probe (its
    batch is not theirs); they act before the final norm anyway.
    """
    weight: Tensor = _unembed(model).weight  # type: ignore[assignment]
    n = min(4, int(weight.shape[0]))
    tokens = torch.arange(n, device=getattr(model.cfg, "device", None) or weight.device)[None]
    seen: dict[str, Tensor] = {}

    def rescale(act: Tensor, hook: Any) -> Tensor:
        raw = (act @ weight.T).abs().max().float()
        scaled = act * (_PROBE_LOGIT / raw.clamp(min=1e-6)).to(act.dtype)
        seen["final"] = scaled
        return scaled

    with (
        torch.no_grad(),
        suspended(model),
        model.hooks(fwd_hooks=[("ln_final.hook_out", rescale)]),
    ):
        logits = model(tokens, attention_mask=torch.ones_like(tokens))
    if "final" not in seen:
        return False, math.inf, 0.0
    with torch.no_grad():
        ours = output_transform(model, _raw_logits(model, seen["final"], None)).float()
    reference = logits.float()
    if ours.shape != reference.shape:
        return False, math.inf, 0.0
    half = weight.dtype in (torch.float16, torch.bfloat16)
    tol = (3e-2 if half else 1e-4) * max(1.0, float(reference.abs().max()))
    diff = float((ours - reference).abs().max())
    return diff <= tol, diff, tol


def letter_only_supported(model: Model) -> bool:
    """Whether :func:`project_letters` reproduces ``model``'s own logits.

    Checked once per model (and again after a change of dtype or device) by comparing the
    model's logits with the letter-only maths over the whole vocabulary on a short probe
    (see :func:`output_transform`); a model whose head does something else (an unknown
    post-unembedding transform, a hook-bypassing head) is logged once and scored from the
    full logits by :func:`last_letter_logits`.
    """
    weight: Tensor = _unembed(model).weight  # type: ignore[assignment]
    key = (str(weight.dtype), str(weight.device))
    cached = _HEAD_CHECKS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    ok, diff, tol = _head_check(model)
    name = getattr(model.cfg, "model_name", type(model).__name__)
    if ok:
        logger.debug("letter-only scoring reproduces %s's logits (max diff %.3g)", name, diff)
    else:
        logger.warning(
            "letter-only scoring does not reproduce the logits of %s (max difference %.3g > "
            "%.3g on a probe: an unknown post-unembedding transform?); scoring letters from "
            "the full logits instead",
            name,
            diff,
            tol,
        )
    _HEAD_CHECKS[model] = (key, ok)
    return ok


def project_letters(
    model: Model, final: Float[Tensor, "batch d_model"], letter_ids: Sequence[int]
) -> Float[Tensor, "batch choice"]:
    """The letters' logits from normalised residuals, exactly as the model's head gives them.

    Multiplies by the unembedding rows of the letters only, adds their bias, and applies
    the model's post-unembedding transform (:func:`output_transform`; Gemma-2's soft-cap).

    Raises:
        NotImplementedError: the model's logits are not reproducible this way
            (:func:`letter_only_supported`); use :func:`last_letter_logits`, which then
            falls back to the full logits.
    """
    if not letter_only_supported(model):
        raise NotImplementedError(
            f"letter-only scoring cannot reproduce the logits of "
            f"{getattr(model.cfg, 'model_name', type(model).__name__)}; use "
            "roleprobe.steering.prefix.last_letter_logits (falls back to full logits) or "
            "full_logits=True"
        )
    ids = torch.tensor(list(letter_ids), device=final.device)
    return output_transform(model, _raw_logits(model, final, ids))


def last_letter_logits(
    model: Model,
    inputs: Tensor,
    attention_mask: Tensor,
    letter_ids: Sequence[int],
    start_at_layer: int | None = None,
) -> Float[Tensor, "batch choice"]:
    """Letter logits at the last position: letter-only where exact, else from full logits.

    Args:
        model: a TransformerLens bridge.
        inputs: token ids ``[batch, pos]``, or with ``start_at_layer=l`` the residual
            entering block ``l`` ``[batch, pos, d_model]`` (blocks below ``l`` are skipped).
        attention_mask: ``[batch, pos]``, 1 for real tokens.
        letter_ids: the answer letters' token ids.
        start_at_layer: see ``inputs``.

    Returns:
        ``[batch, choice]``, equal to ``model(...)[:, -1, letter_ids]``.
    """
    if letter_only_supported(model):
        final = final_last(model, inputs, attention_mask, start_at_layer)
        return project_letters(model, final, letter_ids)
    kwargs, skipping = _run_args(model, attention_mask, start_at_layer)
    with skipping:
        logits = model(inputs, **kwargs)
    ids = torch.tensor(list(letter_ids), device=logits.device)
    return logits[:, -1, ids]


def letters_from(
    model: Model,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    attention_mask: Tensor,
    letter_ids: Sequence[int],
) -> Float[Tensor, "batch choice"]:
    """Letter logits at the last position, running only blocks ``layer..L-1`` on ``resid``."""
    return last_letter_logits(model, resid, attention_mask, letter_ids, layer)
