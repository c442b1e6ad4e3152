"""Shared and role-specific parts of role directions: ``d_r = s + e_r``.

Every raw role direction ``d_r = mean(D_r) - mean(D_base)`` (per position and layer) holds a
large component common to all roles: "a role prompt, not a generic one". On SmolLM2, adding
the lawyer or the nurse direction reads out the same patchscope text, and the raw role ×
role cosine map is near-uniformly high. This module splits each direction into

* the **shared** ("any role") direction ``s = (1/R) Σ_r d_r``, the mean over the ``R`` roles
  of the directions (per position and layer): :func:`shared_direction`;
* the **specific** part ``e_r = d_r - s`` (``Σ_r e_r = 0``): :func:`specific_directions`,
  returned as a :class:`~roleprobe.RoleDirections` so that it goes wherever a role direction
  goes (``rd.vector(role, layer, pos)``, :class:`~roleprobe.Addition`,
  :class:`~roleprobe.Ablation`, :func:`roleprobe.sweep`, the cosine maps, ...);
* how much of each role's direction is shared, :func:`shared_share`:

  ``share[r] = cos²(d_r, s) = (d_r · ŝ)² / |d_r|²``

  the fraction of ``|d_r|²`` that lies along the shared direction (1: the role direction
  *is* the shared one up to scale; 0: orthogonal to it). The rest, ``1 - share``, is the
  fraction orthogonal to ``s``. Because ``s`` and ``e_r`` need not be orthogonal for one
  role, the pooled figure is given too, :func:`shared_fraction`:

  ``fraction = |s|² / mean_r |d_r|²``

  which is exact as a decomposition of the mean squared norm
  (``mean_r |d_r|² = |s|² + mean_r |e_r|²``, the cross terms cancel since ``Σ_r e_r = 0``).
  A direction that is zero (layer 0 at the post-instruction positions: the template tokens'
  embeddings are the same for every prompt) has an undefined share: NaN.

**Footguns.** ``s`` is the mean over the roles *in these directions*: the specific parts of
the same role differ between a 3-role and a 29-role :class:`RoleDirections` (compute them
on the catalogue you mean). With two roles, ``e_1 = -e_2``. The mean is unweighted (each
role counts once whatever its number of prompts). The specific directions' ``role_means``
are synthetic (``base_mean + e_r``, so that ``vectors`` is ``e_r``); their ``source`` starts
with :data:`SPECIFIC_PREFIX`.

Example:
    >>> rd = rp.compute_directions(model)  # every built-in role
    >>> s = shared_direction(rd)  # [pos, layer, d_model]
    >>> spec = specific_directions(rd)
    >>> rp.Addition(spec.vector("lawyer", 12, -1), layer=12, alpha=3.0)
    >>> shared_share(rd).pivot_table(index="role", columns="layer", values="share")
"""

import dataclasses

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.data.roles import ROLES
from roleprobe.vectors.directions import RoleDirections

SPECIFIC_PREFIX = "specific:"
"""Start of the ``source`` of directions made by :func:`specific_directions`."""
BANDS = ("early", "middle", "late")
_DOMAIN = {role.name: role.domain for role in ROLES}
_TINY = 1e-12


def _raw(rd: RoleDirections) -> Float[Tensor, "role pos layer d_model"]:
    """The directions in float64 (``role_means - base_mean``)."""
    return rd.role_means.double() - rd.base_mean.double()


def shared_direction(rd: RoleDirections) -> Float[Tensor, "pos layer d_model"]:
    """The shared "any role" direction: the mean of the role directions over roles.

    Args:
        rd: role directions (at least 2 roles).

    Returns:
        ``s[pos, layer] = mean_r d[r, pos, layer]`` in float64, shape ``[pos, layer,
        d_model]`` (positions and layers as in ``rd``). Steer with it like any direction:
        ``rp.Addition(s[rd.position_index(-1), rd.layer_index(12)], 12, 3.0)``.

    Raises:
        ValueError: fewer than 2 roles (the shared part of one role is the role itself).

    Example:
        >>> s = shared_direction(rd)
        >>> s[rd.position_index(-1)].norm(dim=-1)  # per layer
    """
    if len(rd.roles) < 2:
        raise ValueError(
            f"the shared direction needs at least 2 roles; these directions have {list(rd.roles)}"
        )
    return _raw(rd).mean(dim=0)


def specific_directions(rd: RoleDirections) -> RoleDirections:
    """Each role's specific part ``d_r - s`` as a :class:`~roleprobe.RoleDirections`.

    Same roles, positions, layers, provenance and counts as ``rd``; ``vectors`` are the
    specific parts, ``source`` is ``"specific:" + rd.source`` (unchanged if it is already
    specific: the specific parts have mean 0, so taking them again changes nothing). Their
    cosine map is ``rd.cosine_similarity(layer, pos, centered=True)``.

    Args:
        rd: role directions (at least 2 roles).

    Returns:
        Directions with ``vectors[r] = d_r - mean_r d_r`` (float32, from float64 maths).

    Raises:
        ValueError: fewer than 2 roles.

    Example:
        >>> spec = specific_directions(rd)
        >>> rp.evaluate(model, bench, rp.Addition(spec.vector("nurse", 12), 12, 3.0))
    """
    shared = shared_direction(rd)
    source = rd.source if rd.source.startswith(SPECIFIC_PREFIX) else SPECIFIC_PREFIX + rd.source
    means = rd.base_mean.double() + (_raw(rd) - shared)
    return dataclasses.replace(rd, role_means=means.to(rd.role_means.dtype), source=source)


def is_specific(rd: RoleDirections) -> bool:
    """Whether ``rd`` holds specific parts (made by :func:`specific_directions`)."""
    return rd.source.startswith(SPECIFIC_PREFIX)


def share_of_norm(
    directions: Float[Tensor, "role *rest d_model"], shared: Float[Tensor, "*rest d_model"]
) -> Float[Tensor, "role *rest"]:  # noqa: F821
    """``cos²(d_r, s)``: the fraction of each ``|d_r|²`` that lies along ``s``.

    A pure tensor function (float64 inside). NaN where ``d_r`` or ``s`` is zero.

    Args:
        directions: ``[role, ..., d_model]``.
        shared: ``[..., d_model]``, broadcast over roles.

    Returns:
        ``[role, ...]`` values in ``[0, 1]`` (NaN where undefined).
    """
    d, s = directions.double(), shared.double()
    dot = (d * s).sum(-1)
    denom = (d * d).sum(-1) * (s * s).sum(-1)
    share = dot * dot / denom.clamp_min(_TINY * _TINY)
    return torch.where(denom > _TINY * _TINY, share.clamp(0.0, 1.0), torch.nan)


def shared_share(rd: RoleDirections) -> pd.DataFrame:
    """Per role, position and layer: how much of the direction is the shared one.

    Args:
        rd: role directions (at least 2 roles).

    Returns:
        One row per (role, position, layer), in ``rd``'s order: ``role, domain, position,
        layer, norm`` (``|d_r|``), ``shared_norm`` (``|s|``), ``specific_norm``
        (``|d_r - s|``), ``cosine`` (``cos(d_r, s)``, signed) and ``share``
        (``cos²(d_r, s)``, the fraction of ``|d_r|²`` along ``s``; NaN for a zero
        direction).

    Example:
        >>> df = shared_share(rd)
        >>> df.pivot_table(index="role", columns="layer", values="share")
    """
    d = _raw(rd)
    s = shared_direction(rd)
    norm, shared_norm = d.norm(dim=-1), s.norm(dim=-1).expand(d.shape[:-1])
    cosine = (d * s).sum(-1) / (norm * shared_norm).clamp_min(_TINY)
    cosine = torch.where(norm * shared_norm > _TINY, cosine, torch.nan)
    columns = {
        "norm": norm,
        "shared_norm": shared_norm,
        "specific_norm": (d - s).norm(dim=-1),
        "cosine": cosine,
        "share": share_of_norm(d, s),
    }
    frames = [
        rd.frame(values, name).set_index(["role", "position", "layer"])
        for name, values in columns.items()
    ]
    df = pd.concat(frames, axis=1).reset_index()
    df.insert(1, "domain", [_DOMAIN.get(r, "") for r in df["role"]])
    return df


def shared_fraction(rd: RoleDirections) -> pd.DataFrame:
    """Per position and layer: the part of the roles' mean squared norm that is shared.

    ``fraction = |s|² / mean_r |d_r|²``; exactly ``1 - mean_r |e_r|² / mean_r |d_r|²``.

    Args:
        rd: role directions (at least 2 roles).

    Returns:
        One row per (position, layer): ``position, layer, shared_norm, mean_norm``
        (root mean square of ``|d_r|``), ``fraction`` (NaN where every direction is zero)
        and ``mean_share`` (the mean over roles of :func:`shared_share`'s ``share``).
    """
    d = _raw(rd)
    s = shared_direction(rd)
    shared_sq = (s * s).sum(-1)
    mean_sq = (d * d).sum(-1).mean(dim=0)
    fraction = torch.where(mean_sq > _TINY, shared_sq / mean_sq.clamp_min(_TINY), torch.nan)
    share = share_of_norm(d, s)
    rows = []
    for p, pos in enumerate(rd.positions):
        for li, layer in enumerate(rd.layers):
            column = share[:, p, li]
            defined = column[~column.isnan()]
            rows.append(
                {
                    "position": pos,
                    "layer": layer,
                    "shared_norm": float(shared_sq[p, li].sqrt()),
                    "mean_norm": float(mean_sq[p, li].sqrt()),
                    "fraction": float(fraction[p, li]),
                    "mean_share": float(defined.mean()) if len(defined) else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def layer_band(layer: int, n_layers: int) -> str:
    """``"early"``, ``"middle"`` or ``"late"``: the third of the model ``layer`` is in.

    Thirds by index: layers ``[0, n/3)`` early, ``[n/3, 2n/3)`` middle, the rest late.
    """
    if n_layers < 1 or not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} is not a layer of a {n_layers}-layer model")
    return BANDS[min(2, 3 * layer // n_layers)]


def band_summary(df: pd.DataFrame, n_layers: int, value: str = "share") -> pd.DataFrame:
    """Mean, min and max of ``value`` per position and layer band (NaN rows left out).

    Args:
        df: a table with ``position, layer`` and ``value`` (:func:`shared_share` or
            :func:`shared_fraction`).
        n_layers: the model's depth (the bands are its thirds, :func:`layer_band`).
        value: the column to summarise.

    Returns:
        One row per (position, band) in early/middle/late order: ``position, band, layers``
        (e.g. ``"0-9"``), ``mean, min, max, n`` (rows averaged).
    """
    for column in ("position", "layer", value):
        if column not in df.columns:
            raise ValueError(f"df has no column {column!r} (columns: {list(df.columns)})")
    data = df.dropna(subset=[value])
    data = data.assign(band=[layer_band(int(layer), n_layers) for layer in data["layer"]])
    rows = []
    for pos in dict.fromkeys(data["position"]):
        mine = data[data["position"] == pos]
        for band in BANDS:
            part = mine[mine["band"] == band]
            if part.empty:
                continue
            rows.append(
                {
                    "position": pos,
                    "band": band,
                    "layers": f"{int(part['layer'].min())}-{int(part['layer'].max())}",
                    "mean": float(part[value].mean()),
                    "min": float(part[value].min()),
                    "max": float(part[value].max()),
                    "n": len(part),
                }
            )
    return pd.DataFrame(rows)
