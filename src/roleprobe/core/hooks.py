"""TransformerLens hook-point vocabulary and checks of layer and hook arguments.

Every block of a ``TransformerBridge`` exposes ``blocks.{l}.<hook>`` for the names in
:data:`HOOKS` (``hook_resid_pre`` is an alias of the block's ``hook_in``: hook one, not both).
"""

from collections.abc import Sequence

from roleprobe.core.types import Model

HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_mid", "hook_resid_post")
"""The per-block hook points roleprobe reads and writes."""


def check_layers(model: Model, layers: Sequence[int] | None) -> tuple[int, ...]:
    """Layers as a sorted tuple (default: all), each checked against the model's depth."""
    n_layers = int(model.cfg.n_layers)
    if layers is None:
        return tuple(range(n_layers))
    out = tuple(sorted({int(layer) for layer in layers}))
    if not out:
        raise ValueError("no layers given (the layer list is empty)")
    bad = [layer for layer in out if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this model has layers 0..{n_layers - 1}")
    return out


def check_hook(hook: str) -> str:
    """The hook point name (``"resid_pre"`` is accepted for ``"hook_resid_pre"``)."""
    name = hook if hook.startswith("hook_") else f"hook_{hook}"
    if name not in HOOKS:
        raise ValueError(f"unknown hook point {hook!r}; use one of {HOOKS}")
    return name
