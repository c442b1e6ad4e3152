"""Direct letter attribution: what a direction, added to the residual stream, does to the
answer letters' logits through the final norm and the unembedding alone.

:func:`letter_attribution` reads each layer's direction the way a multiple-choice evaluation
reads the residual stream — through the final norm's linear part and the rows of the
unembedding for ``A``-``D`` — ignoring everything the later layers do with it (see its
docstring for the approximation of the norm's scale). Centred over the four letters, since
only differences move an argmax.

Example:
    >>> rp.letter_attribution(model, rd, "lawyer", position=-1)  # role, position, layer, letter
"""

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.types import Model
from roleprobe.data.benchmarks import LETTERS
from roleprobe.model.chat import answer_letter_ids
from roleprobe.vectors.activations import PositionLabel, resolve_positions, stream
from roleprobe.vectors.directions import RoleDirections


def _centres(model: Model) -> bool:
    """Whether the final norm subtracts the mean (LayerNorm) rather than only scaling (RMS)."""
    return str(getattr(model.cfg, "normalization_type", "RMS")).upper().startswith("LN")


def _scale(x: Tensor, centre: bool) -> Tensor:
    """The norm's scale of each vector: centred standard deviation (LN) or RMS."""
    if centre:
        x = x - x.mean(dim=-1, keepdim=True)
    return x.pow(2).mean(dim=-1).sqrt()


def final_residual_rms(
    model: Model, prompts: Sequence[str] | None = None, batch_size: int = 16
) -> float:
    """Mean scale of the final residual stream (the final norm's input) at the last token.

    The scale is what the final norm divides by: the RMS for RMSNorm, the centred standard
    deviation for LayerNorm. Defaults to 32 of the built-in generic prompts.
    """
    from roleprobe.data.prompts import builtin_generic

    texts = list(prompts) if prompts is not None else list(builtin_generic().instructions)[:32]
    centre, total, count = _centres(model), [0.0], [0]

    def reduce(layer_index: int, rows: list[int], selected: Tensor) -> None:
        total[0] += float(_scale(selected[:, -1].double(), centre).sum())
        count[0] += len(rows)

    last = int(model.cfg.n_layers) - 1
    stream(
        model,
        texts,
        reduce,
        (last,),
        "hook_resid_post",
        lambda n_post: resolve_positions("last", n_post),
        batch_size,
        progress=False,
    )
    return total[0] / count[0]


def norm_linear_part(
    model: Model, vectors: Float[Tensor, "vec d_model"]
) -> Float[Tensor, "vec d_model"]:
    """The final norm's linear map applied to ``vectors`` (e.g. ``w * d`` for RMSNorm).

    Found through the model's own norm module, so variants (Gemma's ``1 + w``, LayerNorm's
    centring) need no special case: ``(N(d / s) - N(0)) * s`` with ``s`` the norm's scale
    of ``d``; dividing by ``s`` first makes the norm's epsilon negligible.
    """
    x = vectors.double()
    scale = _scale(x, _centres(model))
    unit = x / scale.clamp_min(1e-30)[:, None]
    param = next(model.parameters())
    with torch.no_grad():
        probe = torch.stack([unit, torch.zeros_like(unit)]).to(param.device, param.dtype)
        normed = model.ln_final(probe).double().cpu()
    return (normed[0] - normed[1]) * scale[:, None]


def letter_attribution(
    model: Model,
    directions: RoleDirections,
    role: str,
    position: PositionLabel = -1,
    layers: Sequence[int] | None = None,
    scale: float | int | None = None,
) -> pd.DataFrame:
    """Direct logit attribution of each layer's raw direction onto the answer letters A-D.

    For direction ``d`` (added with α = 1) the attribution to letter ``L`` is
    ``W_U[L] · lin(d) / s``, centred over the four letters, where ``lin`` is the final norm's
    linear part (``w * d`` for RMSNorm; see :func:`norm_linear_part`) and ``s`` the typical
    scale the norm divides by at the last token (:func:`final_residual_rms`).

    **Approximation.** This is the *direct* path only: what ``d`` would change in the letter
    logits if it reached the final norm unchanged, to first order, at a residual of typical
    scale. It ignores what later blocks do with ``d`` and how ``d`` itself changes the
    residual's norm. Only differences between letters move the argmax, so each layer's
    values are centred (they sum to 0); the unembedding bias cancels in the centring.

    Args:
        model: the TransformerLens bridge the directions come from (its tokenizer gives the
            letter ids, as in :func:`roleprobe.evaluate`).
        directions: the role directions.
        role: which role.
        position: which position label of the directions.
        layers: which layers (default: all of the directions' layers).
        scale: the residual scale ``s``; ``None`` measures it with
            :func:`final_residual_rms` (a forward pass over 32 generic prompts); ``1`` gives
            the bare unembedding of ``lin(d)``.

    Returns:
        Long rows ``role, position, layer, letter, attribution`` (logits, centred over the
        letters); the scale used is in ``.attrs["scale"]``.
    """
    directions.check_model(model, strict=False)
    chosen = directions.layers if layers is None else tuple(layers)
    r, p = directions.role_index(role), directions.position_index(position)
    stack = torch.stack(
        [
            directions.role_means[r, p, directions.layer_index(layer)]
            - directions.base_mean[p, directions.layer_index(layer)]
            for layer in chosen
        ]
    )
    s = final_residual_rms(model) if scale is None else float(scale)
    if not s > 0:
        raise ValueError(f"scale must be positive, got {s}")
    unembed = getattr(model.unembed, "original_component", model.unembed)
    ids = answer_letter_ids(model.tokenizer, LETTERS, directions.system)
    with torch.no_grad():
        rows_u = unembed.weight[torch.tensor(ids, device=unembed.weight.device)].double().cpu()
    logits = norm_linear_part(model, stack) @ rows_u.T / s
    centred = logits - logits.mean(dim=-1, keepdim=True)
    table = pd.DataFrame(
        [
            {
                "role": directions.roles[r],
                "position": position,
                "layer": layer,
                "letter": letter,
                "attribution": float(centred[i, j]),
            }
            for i, layer in enumerate(chosen)
            for j, letter in enumerate(LETTERS)
        ]
    )
    table.attrs["scale"] = s
    return table
