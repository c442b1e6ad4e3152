"""Is a role direction real? Held-out separation and split-half stability, per layer.

Both work on models far too small to answer MMLU:

* **held-out separation** — project held-out role prompts and held-out baseline prompts
  onto the unit direction (computed without them) and measure the AUROC: 0.5 means the
  direction does not tell them apart, 1.0 that every role prompt projects higher than every
  generic one.
* **split-half stability** — compute the directions twice, from two disjoint halves of every
  prompt set, and take the cosine between the two estimates: near 1 means the mean
  difference is well determined by the prompts, near 0 that it is noise.

Both return a ``[role, pos, layer]`` tensor (index it, plot it, ``.flatten()`` it); pass
``as_frame=True`` for the same numbers as a labelled long DataFrame (columns ``role,
position, layer, auroc`` or ``stability``), or label any such tensor afterwards with
:meth:`RoleDirections.frame <roleprobe.RoleDirections.frame>`.

Example:
    >>> train, heldout = rp.load_prompts("builtin").split(0.25, seed=0)
    >>> rd = rp.compute_directions(model, source=train)
    >>> auroc = separation_auroc(model, rd, heldout)  # [role, pos, layer]
    >>> separation_auroc(model, rd, heldout, as_frame=True)  # role, position, layer, auroc
    >>> rd.frame(auroc, "auroc").query("position == -1").pivot(index="role", columns="layer")
"""

from typing import Any, Literal, overload

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.hooks import check_hook
from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.prompts import RolePrompts
from roleprobe.vectors.activations import ProjectionReducer, resolve_positions, stream
from roleprobe.vectors.directions import RoleDirections, compute_directions


def auroc(
    positive: Float[Tensor, "n_pos *rest"],  # noqa: F821
    negative: Float[Tensor, "n_neg *rest"],  # noqa: F821
) -> Float[Tensor, "*rest"]:
    """Area under the ROC curve of ``positive`` vs ``negative`` scores (ties count half).

    Computed exactly as the Mann-Whitney U statistic over all pairs, independently for
    every trailing index.
    """
    if positive.shape[0] == 0 or negative.shape[0] == 0:
        raise ValueError("AUROC needs at least one positive and one negative score")
    p, n = positive[:, None], negative[None, :]
    return ((p > n).double() + 0.5 * (p == n).double()).mean(dim=(0, 1))


def projections(
    model: Model,
    directions: RoleDirections,
    prompts: list[str],
    batch_size: int = 16,
    progress: bool = True,
    desc: str = "projections",
) -> Float[Tensor, "prompt role pos layer"]:
    """Each prompt's projection onto every unit direction, at its own layer and position."""
    reducer = ProjectionReducer(directions.vectors, len(prompts))
    labels = directions.positions
    spec = "instruction_mean" if labels == ("instruction_mean",) else [int(p) for p in labels]
    stream(
        model,
        prompts,
        reducer,
        directions.layers,
        check_hook(directions.hook),
        lambda n_post: resolve_positions(spec, n_post),
        batch_size,
        progress=progress,
        desc=desc,
        system=directions.system,
    )
    return reducer.values.cpu()


@overload
def separation_auroc(
    model: Model,
    directions: RoleDirections,
    heldout: RolePrompts,
    batch_size: int = ...,
    progress: bool = ...,
    as_frame: Literal[False] = ...,
) -> Float[Tensor, "role pos layer"]: ...


@overload
def separation_auroc(
    model: Model,
    directions: RoleDirections,
    heldout: RolePrompts,
    batch_size: int = ...,
    progress: bool = ...,
    *,
    as_frame: Literal[True],
) -> pd.DataFrame: ...


def separation_auroc(
    model: Model,
    directions: RoleDirections,
    heldout: RolePrompts,
    batch_size: int = 16,
    progress: bool = True,
    as_frame: bool = False,
) -> Float[Tensor, "role pos layer"] | pd.DataFrame:
    """AUROC of held-out role prompts vs held-out baseline prompts, projected on each direction.

    Args:
        model: the model the directions were computed on.
        directions: directions computed *without* the held-out prompts.
        heldout: held-out prompts for (at least) the directions' roles.
        batch_size: prompts per forward pass.
        progress: one tqdm bar over the prompt sets (each set's batches show below it while
            they run).
        as_frame: return a labelled DataFrame (``role, position, layer, auroc``, one row per
            direction) instead of the tensor.

    Returns:
        AUROC per role, position and layer, ``[role, pos, layer]`` (0.5 = chance; NaN where
        a direction is zero, e.g. at layer 0, where every post-instruction token has the
        same embedding); with ``as_frame=True``, ``directions.frame(auroc, "auroc")``.
    """
    directions.check_model(model, strict=False)
    missing = [role for role in directions.roles if role not in heldout.roles]
    if missing:
        raise ValueError(f"no held-out prompts for role {missing[0]!r}")
    out = torch.empty(directions.role_means.shape[:3], dtype=torch.float64)
    zero = directions.norms() == 0
    with bar(
        total=1 + len(directions.roles), enabled=progress, desc="held-out AUROC", unit="set"
    ) as sets:
        base = projections(
            model,
            directions,
            list(heldout.base.instructions),
            batch_size,
            progress,
            "held-out base",
        )
        sets.update()
        for r, role in enumerate(directions.roles):
            own = projections(
                model,
                directions,
                list(heldout.roles[role].instructions),
                batch_size,
                progress,
                f"held-out {role}",
            )
            out[r] = auroc(own[:, r], base[:, r])
            sets.update()
    out = out.masked_fill(zero, float("nan"))
    return directions.frame(out, "auroc") if as_frame else out


@overload
def split_half_stability(
    model: Model,
    prompts: RolePrompts,
    seed: int = ...,
    *,
    as_frame: Literal[False] = ...,
    **kwargs: Any,
) -> Float[Tensor, "role pos layer"]: ...


@overload
def split_half_stability(
    model: Model,
    prompts: RolePrompts,
    seed: int = ...,
    *,
    as_frame: Literal[True],
    **kwargs: Any,
) -> pd.DataFrame: ...


def split_half_stability(
    model: Model,
    prompts: RolePrompts,
    seed: int = 0,
    *,
    as_frame: bool = False,
    **kwargs: Any,
) -> Float[Tensor, "role pos layer"] | pd.DataFrame:
    """Cosine between directions computed from two disjoint halves of every prompt set.

    Args:
        model: a TransformerLens bridge.
        prompts: the prompts to halve (roles and baseline).
        seed: seed of the split.
        as_frame: return a labelled DataFrame (``role, position, layer, stability``)
            instead of the tensor.
        **kwargs: passed to :func:`roleprobe.compute_directions` (positions, layers,
            ``progress``: one bar over the two halves, ...).

    Returns:
        Cosine per role, position and layer, ``[role, pos, layer]`` (NaN where a direction
        is zero); with ``as_frame=True``, the labelled DataFrame.
    """
    first, second = prompts.split(0.5, seed)
    with bar(
        total=2, enabled=kwargs.get("progress", True), desc="split-half", unit="half"
    ) as halves:
        a = compute_directions(model, source=first, **kwargs)
        halves.update()
        b = compute_directions(model, source=second, **kwargs)
        halves.update()
    da, db = a.role_means - a.base_mean, b.role_means - b.base_mean
    norms = da.norm(dim=-1) * db.norm(dim=-1)
    cos = (da * db).sum(-1) / norms
    out = cos.masked_fill(norms == 0, float("nan"))
    return a.frame(out, "stability") if as_frame else out
