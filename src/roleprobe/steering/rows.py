"""Per-row additions: each row of a batch gets its own vector, at its own layer.

:class:`RowAdditions` is one :class:`~roleprobe.steering.interventions.Addition` per row
applied in a single batch: row ``i`` gets ``alpha * vectors[i]`` added to
``blocks.{layers[i]}.hook_resid_pre`` at the chosen positions, and the row is left alone
at every other layer. One ``generate`` call can so read out several directions at once
(:func:`roleprobe.vectors.readouts.patchscopes` asks the same prompt in every row).

How: one hook per distinct layer adds ``weights[l]`` (``[rows, d_model]``: row ``i``'s
vector where ``layers[i] == l``, zeros elsewhere) with :func:`add_per_row`. Adding zero
leaves a row exactly as it was, and the sum is computed as ``Addition`` computes it
(float32 for half-precision activations), so each row equals its own ``Addition`` bit for
bit where the batch does not change the model's numerics.

Footguns:

* **one row per vector.** The batch must have exactly ``len(layers)`` rows, in order; a
  hook that sees another batch size raises a ``ValueError`` (call
  :func:`roleprobe.generate` with ``batch_size=len(prompts) == len(layers)``).
* **no host synchronisation in the hook.** The weights are built when ``hooks()`` is
  called and copied to the activations' device and working dtype once, at the first call
  (:class:`~roleprobe.steering.interventions.OnDevice`); the row check is shape
  arithmetic and the position mask
  (:func:`~roleprobe.steering.interventions.position_mask`) is built on the device, so
  decoding is not stalled at every layer and step.

Example:
    >>> spec = RowAdditions(torch.stack([d_law, d_nurse]), layers=[12, 15], alpha=3.0)
    >>> with rp.steer(model, spec):
    ...     logits = model(tokens)  # tokens: [2, pos]
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.hooks import HOOKS, check_layers
from roleprobe.core.types import Model
from roleprobe.steering.interventions import (
    HookFn,
    OnDevice,
    PositionSpec,
    SteerState,
    _check_positions,
    _layer_list,
    position_mask,
)


def add_per_row(
    x: Float[Tensor, "batch pos d_model"], vectors: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch pos d_model"]:
    """``x[i] + vectors[i]`` at every position of row ``i``, computed in ``vectors``' dtype
    and cast back (no checks: for hooks).

    ``vectors`` must already be on ``x``'s device in the working dtype
    (:func:`~roleprobe.steering.operators.work_dtype`: float32 for half precision), as
    :func:`~roleprobe.steering.operators.shift` takes its vector.
    """
    return (x.to(vectors.dtype) + vectors[:, None, :]).to(x.dtype)


@dataclass(frozen=True)
class RowAdditions:
    """Add ``alpha * vectors[i]`` to row ``i`` of the batch at layer ``layers[i]``.

    The batched form of ``[Addition(vectors[i], layers[i], alpha, positions) for i ...]``
    where each ``Addition`` runs on its own row (see the module docstring).

    Attributes:
        vectors: ``[rows, d_model]``, one raw direction per row of the batch.
        layers: the block whose input (``hook_resid_pre``) row ``i`` is changed at; one per
            row, layers may repeat.
        alpha: the strength shared by every row (0 leaves the model unchanged).
        positions: ``"all"``, ``"prompt"``, ``"generated"`` or column indices (negative
            ones count from the end of the prompt), the same for every row.
        hook: the per-block hook point (default ``"hook_resid_pre"``).

    Example:
        >>> RowAdditions(torch.stack([d1, d2, d3]), layers=[6, 8, 6], alpha=3.0)
        RowAdditions(rows=3, layers=[6, 8, 6], alpha=3)
    """

    vectors: Tensor
    layers: Sequence[int]
    alpha: float = 1.0
    positions: PositionSpec = "all"
    hook: str = "hook_resid_pre"

    def __post_init__(self) -> None:
        vectors = self.vectors
        if not isinstance(vectors, Tensor):
            raise TypeError(f"vectors must be a torch.Tensor, got {type(vectors).__name__}")
        if vectors.ndim != 2 or not vectors.is_floating_point():
            raise ValueError(
                f"vectors must be a float [rows, d_model] tensor, got {vectors.dtype} "
                f"of shape {tuple(vectors.shape)}"
            )
        layers = tuple(int(layer) for layer in self.layers)
        if not layers or len(layers) != vectors.shape[0]:
            raise ValueError(
                f"one layer per row: {vectors.shape[0]} vectors but {len(layers)} layers"
            )
        if not torch.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be finite, got {self.alpha}")
        if self.hook not in HOOKS:
            raise ValueError(f"unknown hook point {self.hook!r}; use one of {HOOKS}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "positions", _check_positions(self.positions))

    @property
    def rows(self) -> int:
        """The batch size the hooks expect."""
        return int(self.vectors.shape[0])

    def __repr__(self) -> str:
        """One line: rows, layers, alpha, positions (no tensor)."""
        parts = [f"rows={self.rows}", f"layers={_layer_list(self.layers)}", f"alpha={self.alpha:g}"]
        if self.positions != "all":
            parts.append(f"positions={self.positions!r}")
        if self.hook != "hook_resid_pre":
            parts.append(f"hook={self.hook!r}")
        return f"RowAdditions({', '.join(parts)})"

    def columns(self) -> dict[str, Any]:
        """``condition="row_additions"`` and the parameters, for per-item tables."""
        return {
            "condition": "row_additions",
            "layers": ",".join(map(str, self.layers)),
            "alpha": self.alpha,
            "positions": str(self.positions),
        }

    def weights(self) -> dict[int, Float[Tensor, "row d_model"]]:
        """Per distinct layer, what each row gets there: ``alpha * vectors[i]`` for the rows
        at that layer, zeros for the others (on the vectors' device and dtype)."""
        scaled = self.alpha * self.vectors
        at = torch.tensor(self.layers)
        return {
            layer: scaled * (at == layer).to(device=scaled.device, dtype=scaled.dtype)[:, None]
            for layer in sorted(set(self.layers))
        }

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]:
        """One hook per distinct layer (checks the layers and the vectors' width)."""
        check_layers(model, self.layers)
        d_model = int(model.cfg.d_model)
        if self.vectors.shape[1] != d_model:
            raise ValueError(
                f"vectors have {self.vectors.shape[1]} dimensions; the model has d_model={d_model}"
            )
        return [
            (f"blocks.{layer}.{self.hook}", self._hook(OnDevice(weight), state))
            for layer, weight in self.weights().items()
        ]

    def _hook(self, weight: OnDevice, state: SteerState) -> HookFn:
        rows, positions = self.rows, self.positions

        def hook_fn(act: Float[Tensor, "batch pos d_model"], hook: Any) -> Tensor:
            if state.suspended:
                return act
            if act.shape[0] != rows:
                raise ValueError(
                    f"RowAdditions has {rows} rows (one per vector) but the batch at "
                    f"{getattr(hook, 'name', 'its hook')} has {act.shape[0]}: run one row "
                    "per vector, in order"
                )
            new = add_per_row(act, weight.like(act))
            mask = position_mask(positions, state, act.shape[0], act.shape[1], act.device)
            return new if mask is None else torch.where(mask[..., None], new, act)

        return hook_fn
