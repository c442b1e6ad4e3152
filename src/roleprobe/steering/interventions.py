"""Interventions as TransformerLens hooks, applied only inside :func:`steer`.

An intervention is a small frozen spec:

* :class:`Addition` — ``resid_pre[layer] += alpha * d`` with the raw direction, as in the
  paper (``alpha`` in {1, 3} there), or, with ``reference_norm=``, ``alpha`` in units of the
  layer's mean residual norm (``alpha * norm * d_hat``) so that strengths compare across
  layers and models (:func:`residual_norms` measures the norms).
* :class:`Ablation` — project ``d_hat`` out of ``hook_resid_pre`` of every layer and out of
  every attention and MLP output (after Arditi et al.), so nothing can write along it.
  On models with post-norms (Gemma-2/3) ``at="paper"`` hooks the sub-layer outputs before
  those norms, as the authors' code does, and ``at="stream"`` (default) after them.
* :class:`Clamp` — set the component along ``d_hat`` at one layer to a fixed value.

``steer(model, *specs)`` turns specs into ``(hook_name, fn)`` pairs around the pure maths of
:mod:`roleprobe.steering.operators` and adds them with ``model.hooks(...)``, which removes them
on exit (also on error), so the model afterwards is exactly the model before.

**Your own intervention.** The set is open: any object with a method
``hooks(model, state) -> list[(hook_name, fn)]`` is an :class:`Intervention` (no base class
needed) and works wherever the built-ins do — :func:`steer`, :func:`roleprobe.generate`,
:func:`roleprobe.evaluate` and, built per candidate direction, :func:`roleprobe.sweep`. An
optional ``columns() -> dict`` names its parameters in per-item tables
(:func:`describe`; without it the table says ``condition=<class name>``). Wrap pure tensor
maths with :func:`position_hook` to get the same position and padding handling as the
built-ins. Anything else is refused with a ``TypeError`` before a forward pass runs
(:func:`check_intervention`).

Positions: ``"all"`` (default), ``"prompt"``, ``"generated"`` or explicit column indices
(negative ones count from the end of the prompt). An index outside the sequence is a
``ValueError`` when the hook runs (naming the position and the length), not a silent no-op;
during generation an index past the prompt is a generated token, reached when decoded.
Pass ``attention_mask=`` to leave left-padding untouched; :func:`roleprobe.generate` does,
and tells the hooks where the prompt ends so that ``"prompt"``/``"generated"`` hold during
KV-cached decoding.

Example:
    >>> d = rd.vector("mathematician", layer=15)
    >>> with rp.steer(model, rp.Addition(d, layer=15, alpha=3.0)):
    ...     logits = model(tokens)
"""

import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from roleprobe.core.hooks import HOOKS, check_layers
from roleprobe.core.types import Model
from roleprobe.steering.operators import (
    check_direction,
    clamp_unit,
    project_out_unit,
    shift,
    unit,
    work_dtype,
)

PositionSpec = str | Sequence[int]
HookFn = Callable[..., Tensor]
_POSITION_NAMES = ("all", "prompt", "generated")
ABLATION_HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
ABLATION_PLACEMENTS = ("stream", "paper")
# Where ``at="paper"`` hooks a sub-layer's output: the raw attention / MLP module output,
# before any post-norm (TransformerLens points hook_attn_out/hook_mlp_out after it).
_RAW_OUTPUTS = {"hook_attn_out": "attn.hook_out", "hook_mlp_out": "mlp.hook_out"}


class SteerState:
    """What the hooks of one :func:`steer` block know about the current forward pass.

    Attributes:
        attention_mask: 1 for real tokens, 0 for padding, over every position seen so far
            (the cached prefix included); ``None``: every position is real. Setting it
            also sets ``padded`` (one read-back, there and then: the hooks never read a
            value from the device).
        padded: whether ``attention_mask`` marks any padding.
        prompt_length: width of the (padded) prompt; positions past it are generated.
        suspended: while true the hooks pass activations through unchanged (see
            :func:`suspended`).
    """

    def __init__(
        self,
        attention_mask: Tensor | None = None,
        prompt_length: int | None = None,
        suspended: bool = False,
    ) -> None:
        self.attention_mask = attention_mask
        self.prompt_length = prompt_length
        self.suspended = suspended

    @property
    def attention_mask(self) -> Tensor | None:
        """The batch's attention mask (see the class docstring)."""
        return self._attention_mask

    @attention_mask.setter
    def attention_mask(self, mask: Tensor | None) -> None:
        self._attention_mask = mask
        self.padded = mask is not None and not bool(mask.bool().all())

    def __repr__(self) -> str:
        """The mask's shape, padding, prompt length and suspension."""
        shape = None if self.attention_mask is None else tuple(self.attention_mask.shape)
        return (
            f"SteerState(attention_mask={shape}, padded={self.padded}, "
            f"prompt_length={self.prompt_length}, suspended={self.suspended})"
        )


def _check_positions(positions: PositionSpec) -> PositionSpec:
    if isinstance(positions, str):
        if positions not in _POSITION_NAMES:
            raise ValueError(f"unknown positions {positions!r}; use one of {_POSITION_NAMES}")
        return positions
    out = tuple(int(p) for p in positions)
    if not out:
        raise ValueError("no positions given (the index list is empty)")
    return out


def position_mask(
    positions: PositionSpec, state: SteerState, batch: int, seq: int, device: torch.device
) -> Bool[Tensor, "batch seq"] | None:
    """Which of the current ``seq`` positions an intervention acts on (``None``: all).

    The current activations cover the last ``seq`` of the positions in
    ``state.attention_mask`` (earlier ones are in the KV cache). Built arithmetically on
    ``device``: nothing is read back to the host (it runs inside hooks).
    """
    mask = state.attention_mask
    if positions == "all" and (mask is None or not state.padded):
        return None
    total = mask.shape[1] if mask is not None else seq
    prompt_length = state.prompt_length if state.prompt_length is not None else total
    chosen: Tensor | None = None
    if positions != "all":
        columns = torch.arange(total - seq, total, device=device)
        if positions == "prompt":
            chosen = columns < prompt_length
        elif positions == "generated":
            chosen = columns >= prompt_length
        else:
            chosen = torch.zeros_like(columns, dtype=torch.bool)
            for p in positions:
                column = _position_column(int(p), prompt_length, total, state)
                chosen |= columns == column
    if mask is not None and state.padded:
        real = mask[:, total - seq :].to(device=device, dtype=torch.bool)
        return real if chosen is None else real & chosen[None, :]
    assert chosen is not None
    return chosen[None, :].expand(batch, seq)


def _position_column(p: int, prompt_length: int, total: int, state: SteerState) -> int:
    """The column of position ``p``, refusing one that no column of this pass can be.

    Pure Python on ints (shapes and the prompt length): no value is read from the device.
    During generation (``state.prompt_length`` set) a position past the prompt is a
    generated token that a later step reaches, so only negative positions are checked.
    """
    column = p if p >= 0 else prompt_length + p
    if column < 0:
        raise ValueError(
            f"position {p} is before the start of the {prompt_length}-token prompt; use "
            f"-{prompt_length}..-1 or 0..{total - 1}"
        )
    if state.prompt_length is None and column >= total:
        raise ValueError(
            f"position {p} is past the end of the {total}-token sequence; use 0..{total - 1} "
            f"or -{total}..-1"
        )
    return column


class OnDevice:
    """A vector kept on each device and working dtype it is used in, copied there once.

    Hooks call :meth:`like` with their activation: the first call per (device, dtype)
    copies the vector over, later ones reuse that copy (nothing is moved per call).
    """

    def __init__(self, vector: Tensor) -> None:
        self.vector = vector
        self._copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def like(self, x: Tensor) -> Tensor:
        """The vector on ``x``'s device in the working dtype of ``x`` (:func:`work_dtype`)."""
        key = (x.device, x.dtype)
        out = self._copies.get(key)
        if out is None:
            out = self._copies[key] = self.vector.to(device=x.device, dtype=work_dtype(x.dtype))
        return out


def position_hook(
    op: Callable[[Tensor], Tensor], positions: PositionSpec, state: SteerState
) -> HookFn:
    """A TransformerLens hook that applies the pure tensor map ``op`` at ``positions``.

    Padding (``state.attention_mask``) and positions not chosen keep their activations;
    while ``state.suspended`` the hook passes everything through. The built-in
    interventions are ``position_hook``s around :mod:`roleprobe.steering.operators`.

    Args:
        op: ``[batch, pos, d_model] -> [batch, pos, d_model]``, e.g.
            ``lambda x: roleprobe.steering.operators.add(x, v)``.
        positions: ``"all"``, ``"prompt"``, ``"generated"`` or column indices.
        state: the :class:`SteerState` of the enclosing :func:`steer`.

    Returns:
        ``fn(act, hook)`` for ``model.hooks(fwd_hooks=[(name, fn)])``.
    """
    positions = _check_positions(positions)

    def hook_fn(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
        if state.suspended:
            return act
        mask = position_mask(positions, state, act.shape[0], act.shape[1], act.device)
        new = op(act)
        return new if mask is None else torch.where(mask[..., None], new, act)

    return hook_fn


@runtime_checkable
class Intervention(Protocol):
    """Anything :func:`steer` can apply: it yields ``(hook_name, fn)`` pairs for a model.

    ``hooks`` is called once per :func:`steer` block (so it may check the model and raise a
    ``ValueError``); each ``fn(act, hook)`` returns the new activation. An intervention may
    also define ``columns() -> dict`` (see :func:`describe`).

    Example:
        >>> class AddAtLast:  # no base class needed
        ...     def __init__(self, v, layer): self.v, self.layer = v, layer
        ...     def hooks(self, model, state):
        ...         fn = rp.positionposition_hook(lambda x: x + self.v, [-1], state)
        ...         return [(f"blocks.{self.layer}.hook_resid_pre", fn)]
    """

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]: ...


def check_intervention(value: object, what: str = "intervention") -> Intervention:
    """``value`` if it is an :class:`Intervention`, else a ``TypeError`` naming its type.

    Called by :func:`steer`, :func:`roleprobe.evaluate`, :func:`roleprobe.generate` and
    :func:`roleprobe.sweep` before any forward pass runs.
    """
    if isinstance(value, Intervention) and callable(getattr(value, "hooks", None)):
        return value
    raise TypeError(
        f"{what} must be an Intervention (an object with a method hooks(model, state) -> "
        f"[(hook_name, fn), ...]), got {type(value).__name__}: {value!r:.80}"
    )


def describe(intervention: object) -> dict[str, Any]:
    """The columns a per-item table gets for ``intervention``.

    Its own ``columns()`` if it has one (which must give a ``"condition"`` name), else
    ``{"condition": <class name>}``.
    """
    columns = getattr(intervention, "columns", None)
    if not callable(columns):
        return {"condition": type(intervention).__name__}
    out = dict(columns())
    if not isinstance(out.get("condition"), str):
        raise ValueError(
            f"{type(intervention).__name__}.columns() must give a 'condition' name, got {out}"
        )
    return out


def _check_model_width(direction: Tensor, model: Model) -> None:
    check_direction(direction, int(model.cfg.d_model))


def _layer_list(layers: Sequence[int]) -> str:
    """``[3, 4, 5]``, or ``[0..23]`` for a long contiguous run."""
    values = [int(layer) for layer in layers]
    if len(values) > 3 and values == list(range(values[0], values[-1] + 1)):
        return f"[{values[0]}..{values[-1]}]"
    return str(values)


def _spec_repr(spec: Any, fields: list[str], hook: str | None) -> str:
    """``Name(fields, direction=[d_model] |d|=norm, positions=..., hook=...)``: no tensor dump."""
    direction = spec.direction
    norm = float(direction.detach().double().norm())
    parts = [*fields, f"direction=[{direction.shape[0]}] |d|={norm:.4g}"]
    if spec.positions != "all":
        parts.append(f"positions={spec.positions!r}")
    if hook is not None and hook != "hook_resid_pre":
        parts.append(f"hook={hook!r}")
    return f"{type(spec).__name__}({', '.join(parts)})"


def check_layer_arg(layer: object, name: str = "layer") -> None:
    """Refuse a layer that is not an integer (``True``, ``1.0``, ``"3"``) by name."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeError(f"{name} must be an integer block index, got {layer!r}")


@dataclass(frozen=True)
class Addition:
    """Add ``alpha`` times a direction to one layer's residual stream.

    Attributes:
        direction: ``[d_model]``, used raw (unnormalised) unless ``reference_norm`` is set.
        layer: the block whose input (``hook_resid_pre``) is changed.
        alpha: the strength (any finite value; 0 leaves the model unchanged).
        positions: ``"all"``, ``"prompt"``, ``"generated"`` or column indices.
        reference_norm: if set, add ``alpha * reference_norm * d_hat`` instead: ``alpha``
            is then in units of that norm (e.g. ``residual_norms(model)[layer]``).
        hook: the per-block hook point (default ``"hook_resid_pre"``).
    """

    direction: Tensor
    layer: int
    alpha: float = 1.0
    positions: PositionSpec = "all"
    reference_norm: float | None = None
    hook: str = "hook_resid_pre"

    def __post_init__(self) -> None:
        check_direction(self.direction)
        check_layer_arg(self.layer)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float):
            raise TypeError(f"alpha must be a number, got {self.alpha!r}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite, got {self.alpha}")
        if self.reference_norm is not None and not (
            math.isfinite(self.reference_norm) and self.reference_norm > 0
        ):
            raise ValueError(
                f"reference_norm must be positive and finite, got {self.reference_norm}"
            )
        if self.hook not in HOOKS:
            raise ValueError(f"unknown hook point {self.hook!r}; use one of {HOOKS}")
        object.__setattr__(self, "positions", _check_positions(self.positions))

    @property
    def vector(self) -> Float[Tensor, " d_model"]:
        """What is added at each chosen position."""
        if self.reference_norm is None:
            return self.alpha * self.direction
        return self.alpha * self.reference_norm * unit(self.direction)

    def __repr__(self) -> str:
        """One line: layer, alpha, the direction's size and norm, positions (no tensor)."""
        extra = [f"reference_norm={self.reference_norm:.4g}"] if self.reference_norm else []
        return _spec_repr(self, [f"layer={self.layer}", f"alpha={self.alpha:g}", *extra], self.hook)

    def columns(self) -> dict[str, Any]:
        """``condition="addition"`` and the parameters, for per-item tables."""
        return {
            "condition": "addition",
            "layer": self.layer,
            "alpha": self.alpha,
            "positions": str(self.positions),
            "reference_norm": self.reference_norm,
        }

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]:
        """The hook for ``model`` (checks the layer and the direction's width)."""
        check_layers(model, [self.layer])
        _check_model_width(self.direction, model)
        vector = OnDevice(self.vector)
        return [
            (
                f"blocks.{self.layer}.{self.hook}",
                position_hook(lambda x: shift(x, vector.like(x)), self.positions, state),
            )
        ]


@dataclass(frozen=True)
class Ablation:
    """Project a direction out of the residual stream and out of everything written to it.

    Two placements, identical on architectures that add a sub-layer's output to the stream
    as it is (Llama, Qwen, Mistral, SmolLM2, ...). They differ where a norm sits between
    the sub-layer and the stream (Gemma-2/3's post-attention and post-feed-forward norms):

    * ``at="stream"`` (default): at TransformerLens's ``hook_attn_out``/``hook_mlp_out``,
      which on those models are the *post-norm* outputs, i.e. what is really added to the
      stream. Nothing is written along ``d_hat``: the residual keeps no component along it
      (float error).
    * ``at="paper"``: at the raw attention and MLP module outputs, *before* the post-norms,
      as the authors' code hooks ``self_attn`` and ``mlp`` (``get_all_direction_ablation_hooks``).
      The post-norm then rescales each coordinate, so the writes (and the residual between
      block inputs) keep a component along ``d_hat``; each block's input is still projected.

    Attributes:
        direction: ``[d_model]`` (only its direction matters; zero norm is an error).
        layers: which blocks (default: all).
        positions: ``"all"``, ``"prompt"``, ``"generated"`` or column indices.
        hooks_at: per-block hook points to project at (default: the block input and the
            attention and MLP outputs, as in the paper).
        at: ``"stream"`` or ``"paper"``: where ``hook_attn_out``/``hook_mlp_out`` are
            taken (see above; other hook points are the same for both).
    """

    direction: Tensor
    layers: Sequence[int] | None = None
    positions: PositionSpec = "all"
    hooks_at: tuple[str, ...] = field(default=ABLATION_HOOKS)
    at: str = "stream"

    def __post_init__(self) -> None:
        unit(self.direction)  # finite, 1-D, non-zero
        bad = [h for h in self.hooks_at if h not in HOOKS]
        if bad or not self.hooks_at:
            raise ValueError(f"unknown hook points {bad or '(none)'}; use some of {HOOKS}")
        if self.at not in ABLATION_PLACEMENTS:
            raise ValueError(
                f"unknown ablation placement at={self.at!r}; use one of {ABLATION_PLACEMENTS}"
            )
        object.__setattr__(self, "positions", _check_positions(self.positions))

    def __repr__(self) -> str:
        """One line: layers, the direction's size and norm, placement, positions."""
        layers = "all" if self.layers is None else _layer_list(self.layers)
        extra = [] if tuple(self.hooks_at) == ABLATION_HOOKS else [f"hooks_at={self.hooks_at}"]
        return _spec_repr(self, [f"layers={layers}", f"at={self.at!r}", *extra], None)

    def columns(self) -> dict[str, Any]:
        """``condition="ablation"`` and the parameters, for per-item tables."""
        layers = "all" if self.layers is None else ",".join(map(str, self.layers))
        return {
            "condition": "ablation",
            "ablated_layers": layers,
            "ablation_at": self.at,
            "positions": str(self.positions),
        }

    def hook_names(self, model: Model) -> list[str]:
        """The hook points this ablation uses on ``model``, in order."""
        layers = check_layers(model, self.layers)
        points = [_RAW_OUTPUTS.get(h, h) if self.at == "paper" else h for h in self.hooks_at]
        names = [f"blocks.{layer}.{point}" for layer in layers for point in points]
        missing = [name for name in names if name not in model.hook_dict]
        if missing:
            raise ValueError(
                f"Ablation(at={self.at!r}): the model has no hook point {missing[0]!r} "
                f"({type(getattr(model, 'adapter', model)).__name__}); try the other placement"
            )
        return names

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]:
        """One hook per (layer, hook point)."""
        names = self.hook_names(model)
        _check_model_width(self.direction, model)
        d_hat = OnDevice(unit(self.direction.to(torch.float64)))
        fn = position_hook(lambda x: project_out_unit(x, d_hat.like(x)), self.positions, state)
        return [(name, fn) for name in names]


@dataclass(frozen=True)
class Clamp:
    """Set the component along a direction to ``value`` at one layer.

    Attributes:
        direction: ``[d_model]`` (non-zero).
        layer: the block whose input is changed.
        value: the projection onto ``d_hat`` after the hook.
        positions: ``"all"``, ``"prompt"``, ``"generated"`` or column indices.
        hook: the per-block hook point.
    """

    direction: Tensor
    layer: int
    value: float
    positions: PositionSpec = "all"
    hook: str = "hook_resid_pre"

    def __post_init__(self) -> None:
        unit(self.direction)
        if not math.isfinite(self.value):
            raise ValueError(f"value must be finite, got {self.value}")
        if self.hook not in HOOKS:
            raise ValueError(f"unknown hook point {self.hook!r}; use one of {HOOKS}")
        object.__setattr__(self, "positions", _check_positions(self.positions))

    def __repr__(self) -> str:
        """One line: layer, value, the direction's size and norm, positions."""
        return _spec_repr(self, [f"layer={self.layer}", f"value={self.value:g}"], self.hook)

    def columns(self) -> dict[str, Any]:
        """``condition="clamp"`` and the parameters, for per-item tables."""
        return {"condition": "clamp", "layer": self.layer, "value": self.value}

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]:
        """The hook for ``model``."""
        check_layers(model, [self.layer])
        _check_model_width(self.direction, model)
        d_hat, value = OnDevice(unit(self.direction.to(torch.float64))), self.value
        fn = position_hook(lambda x: clamp_unit(x, d_hat.like(x), value), self.positions, state)
        return [(f"blocks.{self.layer}.{self.hook}", fn)]


_ACTIVE: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
_STATES: "weakref.WeakKeyDictionary[Any, list[SteerState]]" = weakref.WeakKeyDictionary()


@contextmanager
def suspended(model: Model) -> Iterator[None]:
    """Inside the block, every :func:`steer` active on ``model`` leaves activations alone.

    For internal probes that run the model on their own small batch (the steering hooks
    know the caller's batch, not the probe's).
    """
    states = list(_STATES.get(model, []))
    before = [state.suspended for state in states]
    for state in states:
        state.suspended = True
    try:
        yield
    finally:
        for state, flag in zip(states, before, strict=True):
            state.suspended = flag


@contextmanager
def steer(
    model: Model, *interventions: Intervention, attention_mask: Tensor | None = None
) -> Iterator[SteerState]:
    """Apply interventions to every forward pass inside the block; restore the model after.

    Args:
        model: a TransformerLens ``TransformerBridge``.
        *interventions: :class:`Addition`, :class:`Ablation`, :class:`Clamp` or any
            :class:`Intervention` of your own, applied in order; several may share a hook
            point.
        attention_mask: the batch's mask, so that padding is left untouched (update
            ``state.attention_mask`` between calls if the batch changes).

    Yields:
        The :class:`SteerState` the hooks read.

    Raises:
        TypeError: an argument is not an :class:`Intervention`.
        ValueError: a bad spec for this model, or a hook point already steered by an
            enclosing ``steer`` on the same model (compose specs in one call instead).
    """
    for spec in interventions:
        check_intervention(spec)
    state = SteerState(attention_mask=attention_mask)
    hooks = [pair for spec in interventions for pair in spec.hooks(model, state)]
    names = {name for name, _ in hooks}
    active = _ACTIVE.setdefault(model, set())
    clash = sorted(names & active)
    if clash:
        raise ValueError(
            f"nested steer on {clash}: an enclosing rp.steer already changes these hook points; "
            "pass all interventions to one steer(...) call"
        )
    active |= names
    states = _STATES.setdefault(model, [])
    states.append(state)
    try:
        with model.hooks(fwd_hooks=hooks):
            yield state
    finally:
        active -= names
        states[:] = [other for other in states if other is not state]
