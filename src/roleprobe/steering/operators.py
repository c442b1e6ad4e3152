"""The maths of interventions on the residual stream, as pure tensor functions.

Nothing here knows about models or hooks (those wrap these functions in
:mod:`roleprobe.steering.interventions`), so each operator is tested on plain tensors.

* :func:`add`: ``x + alpha * d`` — activation addition with the raw direction.
* :func:`project_out`: ``x - (x . d_hat) d_hat`` — directional ablation.
* :func:`clamp_projection`: ``x - (x . d_hat - value) d_hat`` — set the component along
  ``d_hat`` to ``value`` everywhere.

Half-precision inputs are computed in float32 and cast back, so an ablation in bfloat16
removes the component as well as bfloat16 can represent.

Example:
    >>> x = torch.randn(2, 5, 64); d = torch.randn(64)
    >>> (project_out(x, d) @ unit(d)).abs().max()  # ~0
"""

import math

import torch
from jaxtyping import Float
from torch import Tensor


def check_direction(direction: Tensor, d_model: int | None = None, name: str = "direction") -> None:
    """Raise a clear error for a direction that is not a finite ``[d_model]`` float vector."""
    if not isinstance(direction, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(direction).__name__}")
    if direction.ndim != 1:
        raise ValueError(f"{name} must be one vector [d_model], got shape {tuple(direction.shape)}")
    if not direction.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {direction.dtype}")
    if direction.device.type == "meta":
        raise ValueError(f"{name} is on the meta device (a shape without values); load its values")
    if d_model is not None and direction.shape[0] != d_model:
        raise ValueError(
            f"{name} has {direction.shape[0]} dimensions; the model has d_model={d_model}"
        )
    if not torch.isfinite(direction).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def unit(direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """``direction / |direction|``; a zero-norm direction has no unit vector (error)."""
    check_direction(direction)
    norm = direction.double().norm()
    if norm == 0:
        raise ValueError("the direction has zero norm, so it has no unit vector to ablate along")
    return (direction.double() / norm).to(direction.dtype)


def _work_dtype(x: Tensor) -> torch.dtype:
    return work_dtype(x.dtype)


def add(
    x: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"], alpha: float = 1.0
) -> Float[Tensor, "... d_model"]:
    """``x + alpha * direction`` (the direction is used raw, not normalised)."""
    check_direction(direction, x.shape[-1])
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    work = _work_dtype(x)
    return (x.to(work) + alpha * direction.to(device=x.device, dtype=work)).to(x.dtype)


def project_out(
    x: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"]
) -> Float[Tensor, "... d_model"]:
    """Remove the component of ``x`` along ``direction``: ``x - (x . d_hat) d_hat``."""
    check_direction(direction, x.shape[-1])
    work = _work_dtype(x)
    d_hat = unit(direction.to(torch.float64)).to(device=x.device, dtype=work)
    xw = x.to(work)
    return (xw - (xw @ d_hat)[..., None] * d_hat).to(x.dtype)


def clamp_projection(
    x: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"], value: float
) -> Float[Tensor, "... d_model"]:
    """Set the component of ``x`` along ``direction`` to ``value``.

    ``x - (x . d_hat - value) d_hat``.
    """
    check_direction(direction, x.shape[-1])
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    work = _work_dtype(x)
    d_hat = unit(direction.to(torch.float64)).to(device=x.device, dtype=work)
    xw = x.to(work)
    return (xw - ((xw @ d_hat) - value)[..., None] * d_hat).to(x.dtype)


# ---- the same maths on prepared vectors, for hooks --------------------------------------
# A hook runs once per layer per forward pass: these take a vector already validated and
# already on the activation's device in the working dtype (:func:`work_dtype`), and do no
# check that would read a value back to the host (no ``.item()``, ``bool(tensor)``).


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype intervention maths run in for activations of ``dtype`` (float32 for half)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def shift(x: Float[Tensor, "... d_model"], vector: Float[Tensor, " d_model"]) -> Tensor:
    """``x + vector`` computed in the working dtype, cast back (no checks: for hooks)."""
    return (x.to(vector.dtype) + vector).to(x.dtype)


def project_out_unit(x: Float[Tensor, "... d_model"], d_hat: Float[Tensor, " d_model"]) -> Tensor:
    """``x - (x . d_hat) d_hat`` for a unit ``d_hat`` in the working dtype (no checks)."""
    xw = x.to(d_hat.dtype)
    return (xw - (xw @ d_hat)[..., None] * d_hat).to(x.dtype)


def project_out_stacked(
    x: Float[Tensor, "rows pos d_model"], d_hats: Float[Tensor, "k d_model"]
) -> Float[Tensor, "rows pos d_model"]:
    """Project a different unit direction out of each of ``k`` equal blocks of rows.

    ``x`` holds ``k`` copies of a batch one after another (``rows = k * batch``); block
    ``j`` loses its component along ``d_hats[j]``. Equal to :func:`project_out_unit` per
    block up to float rounding (one batched matrix product instead of ``k``).
    """
    k = d_hats.shape[0]
    xw = x.to(d_hats.dtype)
    blocks = xw.reshape(k, -1, xw.shape[-1])  # [k, batch * pos, d_model]
    coef = torch.bmm(blocks, d_hats[:, :, None])  # [k, batch * pos, 1]
    return (blocks - coef * d_hats[:, None, :]).reshape(x.shape).to(x.dtype)


def clamp_unit(
    x: Float[Tensor, "... d_model"], d_hat: Float[Tensor, " d_model"], value: float
) -> Tensor:
    """``x - (x . d_hat - value) d_hat`` for a unit ``d_hat`` in the working dtype."""
    xw = x.to(d_hat.dtype)
    return (xw - ((xw @ d_hat) - value)[..., None] * d_hat).to(x.dtype)


def orthogonalize_rows(
    weight: Float[Tensor, "n d_model"], direction: Float[Tensor, " d_model"]
) -> Float[Tensor, "n d_model"]:
    """Project ``direction`` out of every row of a matrix whose rows live in the residual
    stream (e.g. an embedding matrix ``[d_vocab, d_model]``)."""
    return project_out(weight, direction)


def orthogonalize_output(
    weight: Float[Tensor, "d_model n"], direction: Float[Tensor, " d_model"]
) -> Float[Tensor, "d_model n"]:
    """Project ``direction`` out of the outputs of a linear map ``y = W x`` with ``W`` of shape
    ``[d_model, n]`` (a ``torch.nn.Linear`` weight that writes to the residual stream)."""
    return project_out(weight.T, direction).T
