"""Work-arounds for TransformerLens behaviour that would otherwise give wrong numbers.

* **float64 attention.** TransformerLens 4.3's bridge computes the attention softmax in
  float32 (``_masked_softmax(scores, dtype=torch.float32)``, as Hugging Face's eager code
  does). For a float64 model that is a *down*-cast: the masked scores
  (``finfo(float64).min``) become ``-inf``, the leading pads of a left-padded row see no
  key, their softmax is NaN, and the NaN reaches the real tokens through ``pattern @ V``
  (``0 * NaN``) from the next layer on. :func:`keep_float64_softmax` keeps float64 scores
  in float64 (the upcast exists for half precision; float64 needs none). Loading through
  :func:`roleprobe.load_model` or :func:`roleprobe.wrap_hf_model` with ``dtype="float64"``
  applies it.
"""

import logging
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

_PATCHED = "_roleprobe_float64_softmax"


def _keep_float64(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def masked_softmax(attn_scores: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        if attn_scores.dtype == torch.float64:
            dtype = None  # a float32 "upcast" would turn the mask into -inf
        return original(attn_scores, dtype=dtype)

    return masked_softmax


def keep_float64_softmax(bridge: Any) -> int:
    """Keep the attention softmax of float64 scores in float64, on every attention module.

    Args:
        bridge: a TransformerLens ``TransformerBridge`` (changed in place; idempotent).

    Returns:
        How many attention modules were changed (0 where the bridge has no such step, e.g.
        another TransformerLens version, or where it was already applied).
    """
    count = 0
    for module in bridge.modules():
        method = getattr(module, "_masked_softmax", None)
        if method is None or getattr(module, _PATCHED, False):
            continue
        module._masked_softmax = _keep_float64(method)
        setattr(module, _PATCHED, True)
        count += 1
    logger.debug("float64 softmax kept on %d attention modules", count)
    return count
