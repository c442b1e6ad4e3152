"""Plotly figures of role directions, sweeps and effect tables. Computation lives elsewhere.

Every function returns a ``plotly.graph_objects.Figure``; none shows or writes it (call
``fig.show()`` or ``fig.write_html(...)`` yourself).

One style throughout:

* signed values (changes, cosines, attributions) use the diverging ``"RdBu"`` scale centred
  at 0 (red below, blue above); unsigned ones (norms, accuracies) a sequential scale;
* heatmap rows are roles in catalogue order, grouped by domain (:data:`roleprobe.ROLES`),
  top to bottom; columns are layers (the input of each block, ``hook_resid_pre``);
* layer axes are categorical (:func:`layer_axis`): a sweep of layers 8 and 16 is two equal
  cells ticked 8 and 16, not two bands spread over 4–20;
* a quantity with a natural range keeps it (AUROC 0.5–1, cosines −1–1), so near-identical
  values look alike; undefined cells read ``—`` on grey, never like a "0" cell;
* hovering a cell shows its exact value and the counts behind it (items or prompts).

Example:
    >>> fig = sweep_heatmaps(scores, "delta_logprob", selected=chosen)
    >>> fig.write_html("runs/smollm2/sweep.html")
"""

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import plotly.graph_objects as go
from jaxtyping import Float
from plotly.colors import qualitative
from plotly.subplots import make_subplots
from torch import Tensor

from roleprobe.data.benchmarks import LETTERS
from roleprobe.results.labels import (
    condition_label,
    condition_rank,
    role_domain,
    role_order,
    significance_stars,
)
from roleprobe.results.stats import require_columns
from roleprobe.results.tables import COMPONENT_COLUMNS, EFFECT_KEYS, pivot_effects, top_writers
from roleprobe.vectors.activations import PositionLabel
from roleprobe.vectors.directions import RoleDirections

SIGNED_SCALE = "RdBu"
SEQUENTIAL_SCALE = "Viridis"
MARKER = {"symbol": "square-open", "size": 16, "color": "black", "line": {"width": 2}}
SOURCE_ORDER = ("role", "random", "shuffled")
SCORE_COLUMNS = ("role", "source", "position", "layer", "condition", "alpha", "n")
MAX_LAYER_TICKS = 40
AUROC_RANGE = (0.5, 1.0)  # chance to perfect separation: one fixed scale for every figure
NORM_SCALES = ("linear", "log", "relative")
UNDEFINED = "—"  # the text of a cell whose value is undefined (never "0")
UNDEFINED_COLOR = "#d0d0d0"  # and its colour (RdBu's middle, 0, is near white)
SLIDER_GAP = 40  # px between the rotated tick labels (and the axis title) and a slider
SLIDER_HEIGHT = 90  # px of a slider with its current-value label
VALUE_LABELS = {
    "delta_accuracy": "Δ accuracy (fraction of items)",
    "accuracy": "accuracy (fraction of items)",
    "base_accuracy": "baseline accuracy (fraction of items)",
    "delta_logprob": "Δ log p(correct letter) (nats)",
    "logprob_correct": "log p(correct letter) (nats)",
    "relative_change_pct": "relative change in accuracy (%)",
    "attribution": "direct logit attribution (logits, centred over A–D)",
}


def value_label(value: str) -> str:
    """The axis label, with units, of a result column (the column name if unknown)."""
    return VALUE_LABELS.get(value, value)


def _colors(signed: bool, limit: float | None = None) -> dict[str, Any]:
    if not signed:
        return {"colorscale": SEQUENTIAL_SCALE}
    bounds = {} if limit is None else {"zmin": -limit, "zmax": limit}
    return {"colorscale": SIGNED_SCALE, "zmid": 0.0, **bounds}


def _coloraxis(signed: bool, title: str) -> dict[str, Any]:
    axis: dict[str, Any] = {"colorbar": {"title": {"text": title}}}
    if signed:
        return {**axis, "colorscale": SIGNED_SCALE, "cmid": 0.0}
    return {**axis, "colorscale": SEQUENTIAL_SCALE}


def layer_axis(layers: Sequence[Any], max_ticks: int = MAX_LAYER_TICKS) -> dict[str, Any]:
    """Axis settings that draw ``layers`` as categories: one equal cell per swept layer.

    A numeric axis draws a sweep of layers 8 and 16 as two wide bands (layer 8 covering
    4–12) with ticks that are not the swept layers; a categorical one draws exactly one cell
    per layer, ticked with its number. Past ``max_ticks`` layers every k-th is ticked.

    Args:
        layers: the layers, in the order drawn.
        max_ticks: the most tick labels to draw.

    Returns:
        Keyword arguments for ``fig.update_xaxes`` / ``update_yaxes`` (or a layout axis).
    """
    values = list(dict.fromkeys(layers))
    step = max(1, math.ceil(len(values) / max_ticks))
    ticks = values[::step]
    return {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": values,
        "tickmode": "array",
        "tickvals": ticks,
        "ticktext": [str(v) for v in ticks],
    }


def _role_axes(
    fig: go.Figure, title: str, x_title: str = "layer", layers: Sequence[Any] | None = None
) -> go.Figure:
    fig.update_layout(title={"text": title}, template="plotly_white")
    rows = {str(y) for trace in fig.data if isinstance(trace, go.Heatmap) for y in trace.y}
    if len(rows) > 12:  # every role gets its label: ~22 px per row
        fig.update_layout(height=max(450, 160 + 22 * len(rows)))
    fig.update_xaxes(title_text=x_title, **(layer_axis(layers) if layers is not None else {}))
    fig.update_yaxes(type="category", autorange="reversed", dtick=1)
    fig.layout.yaxis.title.text = "role"  # the first panel's axis only
    return fig


def _cells(values: pd.DataFrame) -> tuple[list[str], list[Any], npt.NDArray[np.float64]]:
    return [str(r) for r in values.index], list(values.columns), values.to_numpy(np.float64)


def _add_marks(
    fig: go.Figure,
    cells: Sequence[tuple[str, Any]],
    roles: Sequence[str],
    layers: Sequence[Any],
    **where: int,
) -> None:
    """Black open squares on (role, layer) cells, after checking both exist."""
    for role, layer in cells:
        if role not in roles:
            raise ValueError(f"mark on role {role!r}, which is not a row (rows: {list(roles)})")
        if layer not in layers:
            raise ValueError(f"mark on layer {layer!r}, which is not a column ({list(layers)})")
    trace = go.Scatter(
        x=[layer for _, layer in cells],
        y=[role for role, _ in cells],
        mode="markers",
        marker=MARKER,
        name="selected",
        showlegend=False,
        hovertemplate="selected: %{y}, layer %{x}<extra></extra>",
    )
    fig.add_trace(trace, **where)


# ------------------------------------------------------------------ role × layer ------------
def layer_heatmap(
    values: pd.DataFrame,
    title: str,
    colorbar_title: str,
    signed: bool = False,
    marks: Sequence[tuple[str, int]] | None = None,
    n: pd.DataFrame | None = None,
    zrange: tuple[float, float] | None = None,
) -> go.Figure:
    """A role × layer heatmap of any per-layer quantity (layers as categorical columns).

    Args:
        values: index = roles (top to bottom), columns = layers.
        title: the figure title.
        colorbar_title: what the colour shows, with units.
        signed: diverging RdBu scale centred at 0 (else sequential).
        marks: ``(role, layer)`` cells to outline with a black square (e.g. chosen layers).
        n: counts behind each cell (same index and columns), shown on hover.
        zrange: a fixed colour range ``(low, high)`` for a quantity that has one (AUROC,
            cosines); values outside it take the end colours. ``None``: fitted to the data.

    Raises:
        ValueError: an empty table, a reversed ``zrange``, or a mark on a role or layer that
            is not in ``values``.
    """
    if values.empty:
        raise ValueError("values is empty")
    if zrange is not None and not zrange[0] < zrange[1]:
        raise ValueError(f"zrange must be (low, high) with low < high, got {zrange!r}")
    roles, layers, z = _cells(values)
    hover = f"role: %{{y}}<br>layer: %{{x}}<br>{colorbar_title}: %{{z:.6g}}"
    extra: dict[str, Any] = {}
    if n is not None:
        extra["customdata"] = n.reindex(index=values.index, columns=values.columns).to_numpy()
        hover += "<br>n: %{customdata}"
    heatmap = go.Heatmap(
        z=z,
        x=layers,
        y=roles,
        colorbar={"title": {"text": colorbar_title}},
        hovertemplate=hover + "<extra></extra>",
        **_colors(signed),
        **extra,
    )
    if zrange is not None:
        heatmap.update(zmin=zrange[0], zmax=zrange[1])
    fig = go.Figure(heatmap)
    if marks:
        _add_marks(fig, marks, roles, layers)
    return _role_axes(fig, title, layers=layers)


def auroc_heatmap(
    auroc: pd.DataFrame,
    title: str = "Held-out separation (AUROC) of role vs generic prompts",
    n: pd.DataFrame | None = None,
    marks: Sequence[tuple[str, int]] | None = None,
) -> go.Figure:
    """Role × layer AUROC on the fixed scale :data:`AUROC_RANGE` (0.5 chance to 1 perfect).

    A scale fitted to the data would stretch 0.93–1.0 over the whole colour bar and make
    near-identical layers look maximally different; on the fixed scale they look alike.
    Values below 0.5 (worse than chance) take the chance colour; hover shows every exact
    value.

    Args:
        auroc: index = roles, columns = layers (e.g. a pivot of
            :func:`roleprobe.separation_auroc`'s table).
        title: the figure title.
        n: held-out prompts behind each cell, shown on hover.
        marks: ``(role, layer)`` cells to outline.
    """
    return layer_heatmap(auroc, title, "AUROC", n=n, marks=marks, zrange=AUROC_RANGE)


def _role_frame(
    rd: RoleDirections, grid: Float[Tensor, "role layer"] | npt.NDArray[Any]
) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(grid, dtype=np.float64), index=rd.roles, columns=rd.layers)
    return frame.reindex(role_order(rd.roles))


def _prompt_counts(rd: RoleDirections) -> pd.DataFrame:
    counts = np.repeat(np.asarray(rd.role_counts)[:, None], len(rd.layers), axis=1)
    return _role_frame(rd, counts)


def _norm_view(rd: RoleDirections, p: int, scale: str) -> tuple[npt.NDArray[np.float64], str]:
    """The norm panel's values and colour-bar label under ``scale`` (see NORM_SCALES)."""
    if scale not in NORM_SCALES:
        raise ValueError(f"norm scale {scale!r} is not one of {list(NORM_SCALES)}")
    norms = rd.norms()[:, p].double().numpy()
    if scale == "linear":
        return norms, "‖d‖ (L2 norm)"
    if scale == "log":
        with np.errstate(divide="ignore"):
            logs = np.log10(norms)
        return np.where(norms > 0, logs, np.nan), "log₁₀ ‖d‖"
    base = rd.base_mean[p].double().norm(dim=-1).numpy()  # (layer,)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(base > 0, norms / np.where(base > 0, base, 1.0), np.nan)
    return ratio, "‖d‖ / ‖baseline mean‖"


def direction_heatmaps(
    rd: RoleDirections, position: PositionLabel = -1, norm_scale: str = "linear"
) -> go.Figure:
    """Two panels, role × layer: the directions' norms and their cosine to the baseline mean.

    A direction much shorter than its neighbours, or one nearly parallel to the baseline
    mean (|cos| near 1: the "role" shifts the overall activation scale), deserves a look
    before it is used for steering.

    The residual stream grows with depth, so on a linear scale the last layers' norms
    dominate the colour bar and every early layer looks alike. ``norm_scale="relative"``
    divides each norm by the baseline mean's norm at the same layer and position (how big
    the direction is beside the activations it is added to); ``"log"`` shows ``log10 ‖d‖``
    (zero directions, e.g. at layer 0, are left blank).

    Args:
        rd: the directions.
        position: which position label to show.
        norm_scale: ``"linear"``, ``"log"`` or ``"relative"`` (see above).

    Raises:
        ValueError: an unknown ``norm_scale`` or position.
    """
    p = rd.position_index(position)
    norms, norm_label = _norm_view(rd, p, norm_scale)
    panels = (
        (_role_frame(rd, norms), norm_label, False, 0.77),
        (_role_frame(rd, rd.base_cosine()[:, p]), "cos(d, baseline mean)", True, 0.23),
    )
    titles = [t for _, t, _, _ in panels]
    fig = make_subplots(1, 2, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.06)
    counts = _prompt_counts(rd).to_numpy()
    for col, (frame, label, signed, bar_x) in enumerate(panels, start=1):
        roles, layers, z = _cells(frame)
        heatmap = go.Heatmap(
            z=z,
            x=layers,
            y=roles,
            customdata=np.dstack([counts, np.full_like(counts, rd.base_count)]),
            hovertemplate=f"role: %{{y}}<br>layer: %{{x}}<br>{label}: %{{z:.6g}}<br>"
            "n role prompts: %{customdata[0]}<br>n baseline prompts: %{customdata[1]}"
            "<extra></extra>",
            colorbar={
                "title": {"text": label, "side": "right"},
                "x": 1.02,
                "y": bar_x,
                "len": 0.45,
            },
            **_colors(signed, 1.0 if signed else None),
        )
        fig.add_trace(heatmap, row=1, col=col)
    model = rd.model_name.rsplit("/", 1)[-1]
    title = f"Role directions at position {position} ({rd.hook}){' · ' + model if model else ''}"
    return _role_axes(fig, title, layers=list(rd.layers))


def stability_heatmap(
    stability: Float[Tensor, "role pos layer"],
    labels: RoleDirections,
    position: PositionLabel = -1,
) -> go.Figure:
    """Role × layer split-half stability (:func:`roleprobe.split_half_stability`).

    Args:
        stability: the cosines returned by ``split_half_stability``.
        labels: directions computed with the same roles, positions and layers (e.g. from all
            the prompts); only their labels and prompt counts are used.
        position: which position label to show.
    """
    expected = tuple(labels.role_means.shape[:3])
    if tuple(stability.shape) != expected:
        raise ValueError(
            f"stability has shape {tuple(stability.shape)} but the labels' directions have "
            f"{expected} (role, position, layer)"
        )
    p = labels.position_index(position)
    return layer_heatmap(
        _role_frame(labels, stability[:, p].double().numpy()),
        f"Split-half stability at position {position}: cosine between the two halves' directions",
        "cos(half A, half B)",
        signed=True,
        n=_prompt_counts(labels),
        zrange=(-1.0, 1.0),
    )


def _pick_position(data: pd.DataFrame, value: str, position: PositionLabel | None) -> Any:
    positions = list(dict.fromkeys(data["position"]))
    if position is None:
        if -1 in positions:
            return -1
        peak = data.assign(_abs=data[value].abs()).groupby("position")["_abs"].max()
        return peak.idxmax()
    if position not in positions:
        raise ValueError(f"position {position!r} is not in the scores (positions {positions})")
    return position


def _conditions(data: pd.DataFrame) -> list[tuple[str, float]]:
    """The distinct (condition, alpha) pairs, NaN alphas merged, additions by α first."""
    pairs = {
        condition_label(c, a): (str(c), float(a))
        for c, a in zip(data["condition"], data["alpha"], strict=True)
    }
    return sorted(pairs.values(), key=lambda ca: condition_rank(*ca))


def _alpha_is(series: pd.Series, alpha: Any) -> pd.Series:
    return series.isna() if pd.isna(alpha) else series == alpha


def sweep_heatmaps(
    scores: pd.DataFrame,
    value: str = "delta_accuracy",
    selected: pd.DataFrame | None = None,
    position: PositionLabel | None = None,
    source: str = "role",
) -> go.Figure:
    """Sweep results as role × layer panels, one per α of the additions and one for ablation.

    Args:
        scores: one row per candidate with ``role, source, donor, position, layer,
            condition, alpha, n`` and ``value`` (``alpha`` NaN for ablation).
        value: the column to show (e.g. ``"delta_accuracy"``, ``"delta_logprob"``).
        selected: chosen candidates (``role, source, alpha, position, layer``; ``alpha``
            NaN for ablation), outlined in the matching panel.
        position: the position to show (default ``-1`` if swept, else the position with the
            largest ``|value|``).
        source: ``"role"``, ``"random"`` or ``"shuffled"``; several candidates of one cell
            (e.g. several random directions) are averaged.

    Returns:
        One panel per condition, sharing one colour scale (RdBu centred at 0 for ``delta_*``
        or negative values).
    """
    require_columns(scores, [*SCORE_COLUMNS, value], "scores")
    data = scores[scores["source"] == source]
    if data.empty:
        present = sorted(map(str, scores["source"].unique()))
        raise ValueError(f"no rows with source {source!r}; sources present: {present}")
    position = _pick_position(data, value, position)
    data = data[data["position"] == position]
    panels = _conditions(data)
    labels = [condition_label(c, a) for c, a in panels]
    roles, layers = role_order(list(data["role"])), sorted(data["layer"].unique().tolist())
    signed = value.startswith("delta") or bool((data[value] < 0).any())
    fig = make_subplots(1, len(panels), subplot_titles=labels, shared_yaxes=True)
    for col, (condition, alpha) in enumerate(panels, start=1):
        cell = data[(data["condition"] == condition) & _alpha_is(data["alpha"], alpha)]
        agg = cell.groupby(["role", "layer"]).agg(
            v=(value, "mean"), n=("n", "min"), k=(value, "size")
        )
        grid = {c: agg[c].unstack("layer").reindex(index=roles, columns=layers) for c in agg}
        fig.add_trace(
            go.Heatmap(
                z=grid["v"].to_numpy(np.float64),
                x=layers,
                y=roles,
                coloraxis="coloraxis",
                customdata=np.dstack([grid["n"].to_numpy(), grid["k"].to_numpy()]),
                hovertemplate=f"role: %{{y}}<br>layer: %{{x}}<br>{labels[col - 1]}<br>"
                f"{value}: %{{z:.6g}}<br>n items: %{{customdata[0]}}<br>"
                "candidates averaged: %{customdata[1]}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    if selected is not None:
        _mark_selected(fig, selected, source, position, labels, roles, layers)
    fig.update_layout(coloraxis=_coloraxis(signed, value_label(value)))
    title = f"{value} by role and layer (source {source}, position {position})"
    return _role_axes(fig, title, layers=layers)


def _mark_selected(
    fig: go.Figure,
    selected: pd.DataFrame,
    source: str,
    position: Any,
    labels: list[str],
    roles: list[str],
    layers: list[Any],
) -> None:
    require_columns(selected, ["role", "source", "alpha", "position", "layer"], "selected")
    chosen = selected[(selected["source"] == source) & (selected["position"] == position)]
    by_panel: dict[str, list[tuple[str, Any]]] = {}
    for _, row in chosen.iterrows():
        alpha = math.nan if pd.isna(row["alpha"]) else float(row["alpha"])
        condition = row.get("condition", "ablation" if math.isnan(alpha) else "addition")
        label = condition_label(str(condition), alpha)
        if label not in labels:
            raise ValueError(f"selected {row['role']!r} at {label}, a condition not in the sweep")
        by_panel.setdefault(label, []).append((str(row["role"]), row["layer"]))
    for label, cells in by_panel.items():
        _add_marks(fig, cells, roles, layers, row=1, col=labels.index(label) + 1)


# ------------------------------------------------------------------ role × role ------------
def _cosine_heatmap(
    rd: RoleDirections, layer: int, position: PositionLabel, centered: bool
) -> go.Heatmap:
    order = role_order(rd.roles)
    index = [rd.role_index(r) for r in order]
    cos = rd.cosine_similarity(layer, position, centered)[index][:, index].numpy()
    domains = np.array([role_domain(r) or "other" for r in order], dtype=object)
    counts = np.array([rd.role_counts[i] for i in index], dtype=object)
    customdata = np.dstack(
        [np.broadcast_to(a, cos.shape) for a in (domains[:, None], domains, counts[:, None])]
    )
    return go.Heatmap(
        z=cos,
        x=order,
        y=order,
        customdata=customdata,
        hovertemplate="%{y} (%{customdata[0]}) vs %{x} (%{customdata[1]})<br>"
        "cos: %{z:.4f}<br>n prompts (row role): %{customdata[2]}<extra></extra>",
        colorbar={"title": {"text": "cosine similarity"}},
        **_colors(True, 1.0),
    )


def _domain_blocks(roles: Sequence[str]) -> tuple[list[str], list[int]]:
    """Each role's domain ("other" if none) and the index where each domain block starts."""
    domains = [role_domain(r) or "other" for r in roles]
    starts = [0] + [k for k in range(1, len(roles)) if domains[k] != domains[k - 1]]
    return domains, starts


def _domain_names(fig: go.Figure, domains: Sequence[str], starts: Sequence[int]) -> None:
    """Each domain's name above its block of columns."""
    for start, end in zip(starts, [*starts[1:], len(domains)], strict=True):
        fig.add_annotation(
            x=(start + end - 1) / 2,
            y=1.0,
            yref="paper",
            yanchor="bottom",
            text=domains[start],
            showarrow=False,
            textangle=-30,
            font={"size": 10},
        )


def _domain_guides(fig: go.Figure, roles: Sequence[str]) -> None:
    """Thin lines between domain blocks and the domains' names above the columns."""
    domains, starts = _domain_blocks(roles)
    edge = len(roles) - 0.5
    line = {"color": "black", "width": 1}
    for k in starts[1:]:
        fig.add_shape(type="line", x0=k - 0.5, x1=k - 0.5, y0=-0.5, y1=edge, line=line)
        fig.add_shape(type="line", y0=k - 0.5, y1=k - 0.5, x0=-0.5, x1=edge, line=line)
    _domain_names(fig, domains, starts)


def _cosine_title(layer: int, position: PositionLabel, centered: bool) -> str:
    kind = "mean-centred cosine" if centered else "cosine"
    return f"Role × role {kind} at layer {layer}, position {position}"


def cosine_map(
    rd: RoleDirections, layer: int, position: PositionLabel = -1, centered: bool = False
) -> go.Figure:
    """Role × role cosine similarity at one layer, roles grouped by domain.

    ``centered=True`` subtracts the mean direction over roles first (what distinguishes the
    roles rather than what all of them share; needs at least 3 roles).
    """
    fig = go.Figure(_cosine_heatmap(rd, layer, position, centered))
    _domain_guides(fig, role_order(rd.roles))
    fig.update_layout(margin={"t": 120})
    fig = _role_axes(fig, _cosine_title(layer, position, centered), x_title="role")
    return fig.update_xaxes(type="category", tickangle=-45)


def cosine_map_slider(
    rd: RoleDirections, position: PositionLabel = -1, centered: bool = False
) -> go.Figure:
    """:func:`cosine_map` with one animation frame per layer and a layer slider.

    It opens on the middle layer (at layer 0 the post-instruction directions are exactly
    zero: a uniform map), and the slider sits below the rotated role names.
    """
    active = len(rd.layers) // 2
    fig = cosine_map(rd, rd.layers[active], position, centered)
    fig.frames = [
        go.Frame(
            data=[_cosine_heatmap(rd, layer, position, centered)],
            name=str(layer),
            layout={"title": {"text": _cosine_title(layer, position, centered)}},
        )
        for layer in rd.layers
    ]
    step_args = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    steps = [
        {"method": "animate", "label": str(layer), "args": [[str(layer)], step_args]}
        for layer in rd.layers
    ]
    labels = _tick_label_depth(role_order(rd.roles))
    slider = {
        "active": active,
        "currentvalue": {"prefix": "layer: "},
        "steps": steps,
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": labels + SLIDER_GAP},
    }
    height = fig.layout.height or 450
    bottom = labels + SLIDER_GAP + SLIDER_HEIGHT
    return fig.update_layout(sliders=[slider], margin={"b": bottom}, height=height + bottom)


def _tick_label_depth(labels: Sequence[str], angle: float = 45.0, font_px: float = 12.0) -> int:
    """Pixels that x tick labels rotated by ``angle`` reach below the axis (an estimate)."""
    longest = max((len(str(x)) for x in labels), default=0)
    return math.ceil(0.6 * font_px * longest * math.sin(math.radians(angle)) + font_px + 8)


# ------------------------------------------------------------------ lines and boxes ---------
def _rgba(color: str, opacity: float) -> str:
    red, green, blue = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{opacity})"


def layer_effect_plot(
    scores: pd.DataFrame,
    role: str,
    metric: str = "delta_logprob",
    ci: pd.DataFrame | None = None,
    source: str = "role",
    position: PositionLabel | None = None,
) -> go.Figure:
    """One role's effect by layer: a line per α of the additions and one for ablation.

    Args:
        scores: sweep scores (as :func:`sweep_heatmaps`).
        role: the role.
        metric: the column on the y axis.
        ci: optional interval per point, columns ``condition, alpha, layer, ci_low,
            ci_high`` (and ``role``/``source``/``position`` when they vary), drawn as bands.
        source: which candidates (``"role"``, ``"random"``, ``"shuffled"``).
        position: as in :func:`sweep_heatmaps`.
    """
    require_columns(scores, [*SCORE_COLUMNS, metric], "scores")
    data = scores[(scores["role"] == role) & (scores["source"] == source)]
    if data.empty:
        raise ValueError(f"no rows for role {role!r} with source {source!r}")
    position = _pick_position(data, metric, position)
    data = data[data["position"] == position]
    if ci is not None:
        require_columns(ci, ["condition", "alpha", "layer", "ci_low", "ci_high"], "ci")
        keys = [k for k in ("role", "source", "position", "condition", "alpha", "layer") if k in ci]
        data = data.merge(ci[[*keys, "ci_low", "ci_high"]], on=keys, how="left")
    fig = go.Figure()
    for i, (condition, alpha) in enumerate(_conditions(data)):
        label, color = condition_label(condition, alpha), qualitative.Plotly[i % 10]
        line = data[(data["condition"] == condition) & _alpha_is(data["alpha"], alpha)]
        if line["layer"].duplicated().any():
            raise ValueError(f"several rows per layer for {role!r} at {label}: filter by donor")
        line = line.sort_values("layer")
        layers = line["layer"].tolist()
        if ci is not None:
            band = line.dropna(subset=["ci_low", "ci_high"])
            fig.add_trace(
                go.Scatter(
                    x=band["layer"].tolist() + band["layer"].tolist()[::-1],
                    y=band["ci_high"].tolist() + band["ci_low"].tolist()[::-1],
                    fill="toself",
                    fillcolor=_rgba(color, 0.2),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=label,
                    name=f"{label} CI",
                )
            )
        bounds = [line["ci_low"], line["ci_high"]] if ci is not None else []
        ci_hover = "CI: [%{customdata[1]:.4g}, %{customdata[2]:.4g}]<br>" if bounds else ""
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=line[metric].to_numpy(np.float64),
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                customdata=np.column_stack([line["n"], *bounds]),
                hovertemplate=f"{label}<br>layer: %{{x}}<br>{metric}: %{{y:.6g}}<br>"
                f"{ci_hover}n items: %{{customdata[0]}}<extra></extra>",
            )
        )
    fig.add_hline(y=0.0, line={"color": "grey", "dash": "dot", "width": 1})
    fig.update_xaxes(layer_axis(sorted(data["layer"].unique().tolist())))
    return fig.update_layout(
        title={"text": f"{role}: {metric} by layer (source {source}, position {position})"},
        xaxis_title="layer",
        yaxis_title=value_label(metric),
        template="plotly_white",
    )


def control_distribution(scores: pd.DataFrame, value: str = "delta_accuracy") -> go.Figure:
    """The value's distribution for role directions vs random and shuffled controls.

    One box (with every candidate as a point) per source and condition; a role direction
    whose effect sits inside the controls' spread is no evidence of a role-specific effect.
    """
    require_columns(scores, ["role", "source", "layer", "condition", "alpha", value], "scores")
    labels = [
        condition_label(c, a) for c, a in zip(scores["condition"], scores["alpha"], strict=True)
    ]
    data = scores.assign(
        _label=labels,
        _donor=scores.get("donor", ""),
        _n=scores.get("n", ""),
    )
    present = list(dict.fromkeys(data["source"]))
    sources = [s for s in SOURCE_ORDER if s in present] + sorted(set(present) - set(SOURCE_ORDER))
    fig = go.Figure()
    for source in sources:
        sub = data[data["source"] == source]
        fig.add_trace(
            go.Box(
                x=sub["_label"].tolist(),
                y=sub[value].to_numpy(np.float64),
                name=source,
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                customdata=np.column_stack([sub["role"], sub["_donor"], sub["layer"], sub["_n"]]),
                hovertemplate=f"{source}: %{{customdata[0]}} (donor %{{customdata[1]}})<br>"
                f"layer %{{customdata[2]}}, %{{x}}<br>{value}: %{{y:.6g}}<br>"
                "n items: %{customdata[3]}<extra></extra>",
            )
        )
    fig.add_hline(y=0.0, line={"color": "grey", "dash": "dot", "width": 1})
    return fig.update_layout(
        boxmode="group",
        title={"text": f"{value}: role directions vs controls"},
        xaxis={
            "title": {"text": "condition"},
            "categoryorder": "array",
            "categoryarray": [condition_label(c, a) for c, a in _conditions(scores)],
        },
        yaxis_title=value_label(value),
        legend_title_text="source",
        template="plotly_white",
    )


# ------------------------------------------------------------------ readouts ----------------
def letter_attribution_plot(attribution: pd.DataFrame) -> go.Figure:
    """Layer × letter heatmap of :func:`roleprobe.letter_attribution`, one per role."""
    require_columns(
        attribution, ["role", "position", "layer", "letter", "attribution"], "attribution"
    )
    roles = role_order(list(attribution["role"]))
    fig = make_subplots(1, len(roles), subplot_titles=roles, shared_yaxes=True)
    for col, role in enumerate(roles, start=1):
        sub = attribution[attribution["role"] == role]
        if sub["position"].nunique() > 1:
            raise ValueError(f"role {role!r} has several positions; keep one before plotting")
        grid = sub.pivot(index="layer", columns="letter", values="attribution")
        letters = [x for x in LETTERS if x in grid.columns] + sorted(
            set(grid.columns) - set(LETTERS)
        )
        grid = grid.reindex(columns=letters).sort_index()
        fig.add_trace(
            go.Heatmap(
                z=grid.to_numpy(np.float64),
                x=letters,
                y=grid.index.tolist(),
                coloraxis="coloraxis",
                hovertemplate=f"{role}<br>layer: %{{y}}<br>letter: %{{x}}<br>"
                "attribution: %{z:.6g} logits<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_layout(
        coloraxis=_coloraxis(True, value_label("attribution")),
        title={"text": "Direct attribution of each layer's direction to the answer letters"},
        template="plotly_white",
    )
    fig.update_xaxes(title_text="answer letter", type="category")
    fig.update_yaxes(layer_axis(sorted(attribution["layer"].unique().tolist())))
    return fig.update_yaxes(title_text="layer", row=1, col=1)


def logit_lens_table(df: pd.DataFrame) -> go.Figure:
    """A table of :func:`roleprobe.logit_lens`: per layer, the tokens ``+d`` and ``-d`` promote."""
    if df.empty:
        raise ValueError("the logit-lens table is empty (every direction was zero?)")
    require_columns(df, ["layer", "sign", "rank", "token", "logit"], "df")

    def tokens(sub: pd.DataFrame) -> str:
        return ", ".join(
            f"{html.escape(repr(t), quote=False)} ({v:.2f})"
            for t, v in zip(sub["token"], sub["logit"], strict=True)
        )

    layers = sorted(df["layer"].unique().tolist())
    by = {key: g.sort_values("rank") for key, g in df.groupby(["layer", "sign"])}
    empty = df.iloc[:0]
    columns = [
        layers,
        [tokens(by.get((layer, "+"), empty)) for layer in layers],
        [tokens(by.get((layer, "-"), empty)) for layer in layers],
    ]
    table = go.Table(
        columnwidth=[1, 6, 6],
        header={"values": ["layer", "top tokens of +d (logit)", "top tokens of −d (logit)"]},
        cells={"values": columns, "align": "left"},
    )
    return go.Figure(table).update_layout(title={"text": "Logit lens of the role direction"})


# ------------------------------------------------------------------ paper tables ------------
def paper_table_figure(effects: pd.DataFrame, value: str = "relative_change_pct") -> go.Figure:
    """The paper's results table as a heatmap: role × (condition, domain), stars on cells.

    Args:
        effects: :func:`roleprobe.results.tables.effect_table` output.
        value: the column coloured (default: % change of accuracy), RdBu centred at 0.

    Cells of a role's own domain are outlined; stars are McNemar after Holm over the table.
    An undefined cell (e.g. a relative change from a baseline accuracy of 0) or one that
    was not evaluated reads ``—`` on grey, never like a white "0 %" cell; its hover says why.
    """
    needed = [*EFFECT_KEYS, value, "in_domain", "stars", "n", "mcnemar_p_adj"]
    require_columns(effects, needed, "effects")
    grid = pivot_effects(effects, value)
    aligned = {c: pivot_effects(effects, c).reindex_like(grid) for c in needed[5:]}
    conditions = grid.columns.get_level_values("condition").tolist()
    domains = grid.columns.get_level_values("domain").tolist()
    roles = grid.index.tolist()
    shape = grid.shape
    customdata = np.dstack(
        [
            np.broadcast_to(np.array(roles, dtype=object)[:, None], shape),
            np.broadcast_to(np.array(conditions, dtype=object), shape),
            np.broadcast_to(np.array(domains, dtype=object), shape),
            aligned["n"].to_numpy(),
            aligned["mcnemar_p_adj"].to_numpy(),
            _cell_values(grid, aligned["n"]),
        ]
    )
    stars = aligned["stars"].astype(object).fillna("").to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(np.float64),
            x=list(range(shape[1])),
            y=list(range(shape[0])),
            text=stars,
            texttemplate="%{text}",
            customdata=customdata,
            hovertemplate="%{customdata[0]}, %{customdata[1]}, %{customdata[2]}<br>"
            f"{value}: %{{customdata[5]}}<br>n items: %{{customdata[3]}}<br>"
            "McNemar p (Holm): %{customdata[4]:.3g}<extra></extra>",
            colorbar={"title": {"text": value_label(value)}},
            **_colors(True),
        )
    )
    missing = grid.isna().to_numpy()
    if missing.any():  # grey "—" cells on top: never read like a white "0 %" cell
        fig.add_trace(
            go.Heatmap(
                z=np.where(missing, 0.0, np.nan),
                x=list(range(shape[1])),
                y=list(range(shape[0])),
                text=np.where(missing, UNDEFINED, ""),
                texttemplate="%{text}",
                customdata=customdata,
                colorscale=[[0.0, UNDEFINED_COLOR], [1.0, UNDEFINED_COLOR]],
                showscale=False,
                hoverongaps=False,
                hovertemplate="%{customdata[0]}, %{customdata[1]}, %{customdata[2]}<br>"
                f"{value}: %{{customdata[5]}}<br>n items: %{{customdata[3]}}<extra></extra>",
                name="undefined",
            )
        )
    inside = aligned["in_domain"].fillna(False).to_numpy(bool)
    for i, j in zip(*np.nonzero(inside), strict=True):
        fig.add_shape(
            type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line={"width": 2}
        )
    starts = [j for j in range(shape[1]) if j == 0 or conditions[j] != conditions[j - 1]]
    for j, end in zip(starts, [*starts[1:], shape[1]], strict=True):
        if j:
            fig.add_shape(
                type="line",
                x0=j - 0.5,
                x1=j - 0.5,
                y0=-0.5,
                y1=shape[0] - 0.5,
                line={"color": "grey", "width": 1},
            )
        fig.add_annotation(
            x=(j + end - 1) / 2,
            y=1.0,
            yref="paper",
            yanchor="bottom",
            text=conditions[j],
            showarrow=False,
        )
    fig.update_xaxes(
        tickvals=list(range(shape[1])),
        ticktext=domains,
        tickangle=-45,
        title_text="domain of the questions",
    )
    fig.update_yaxes(
        tickvals=list(range(shape[0])), ticktext=roles, autorange="reversed", title_text="role"
    )
    return fig.update_layout(
        title={
            "text": f"{value_label(value)} by role, condition and domain<br>"
            "<sup>outlined: the role's own domain · stars: McNemar, Holm · "
            f"{UNDEFINED} on grey: undefined (e.g. baseline accuracy 0) or not evaluated"
            f"{_paper_table_note(effects, value)}</sup>"
        },
        template="plotly_white",
        margin={"t": 100},
    )


def _cell_values(grid: pd.DataFrame, n: pd.DataFrame) -> npt.NDArray[np.object_]:
    """Hover text of each value: the number, or why there is none."""
    values, counts = grid.to_numpy(np.float64), n.to_numpy(np.float64)
    text = np.empty(values.shape, dtype=object)
    for idx, v in np.ndenumerate(values):
        if not math.isnan(v):
            text[idx] = f"{v:.4g}"
        elif math.isnan(counts[idx]):
            text[idx] = f"{UNDEFINED} (not evaluated)"
        else:
            text[idx] = f"{UNDEFINED} (undefined, e.g. baseline accuracy 0)"
    return text


def _paper_table_note(effects: pd.DataFrame, value: str) -> str:
    """Caption additions: how the relative change was computed, and the tie rule."""
    note = ""
    if value == "relative_change_pct":
        decimals = effects.get("round_accuracies", pd.Series(dtype=float)).dropna().unique()
        note += (
            f"<br>% change from accuracies rounded to {int(decimals[0])} decimals (as the paper)"
            if len(decimals) == 1
            else "<br>% change from unrounded accuracies"
        )
    rules = effects.get("tie_rule", pd.Series(dtype=object)).dropna().unique()
    if len(rules) == 1:
        note += f" · ties: {rules[0]}"
    return note


def correlation_heatmap(corr: pd.DataFrame) -> go.Figure:
    """Lower triangle of between-model correlations (:func:`roleprobe.model_correlation`).

    The diagonal and upper triangle are blank; stars are the uncorrected two-sided p-values.
    """
    require_columns(corr, ["model_a", "model_b", "r", "p", "n"], "corr")
    models = list(
        dict.fromkeys(
            m for pair in zip(corr["model_a"], corr["model_b"], strict=True) for m in pair
        )
    )
    size = len(models)
    z: list[list[float | None]] = [[None] * size for _ in range(size)]
    text = [[""] * size for _ in range(size)]
    custom: list[list[list[Any]]] = [[[None, None] for _ in range(size)] for _ in range(size)]
    for a, b, r, p, n in zip(
        corr["model_a"], corr["model_b"], corr["r"], corr["p"], corr["n"], strict=True
    ):
        i, j = sorted((models.index(a), models.index(b)), reverse=True)
        if i == j:
            continue
        z[i][j] = None if math.isnan(r) else float(r)
        text[i][j] = significance_stars(float(p))
        custom[i][j] = [float(p), int(n)]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=models,
            y=models,
            text=text,
            texttemplate="%{text}",
            customdata=custom,
            hovertemplate="%{y} vs %{x}<br>r = %{z:.3f}<br>p = %{customdata[0]:.3g}<br>"
            "n cells = %{customdata[1]}<extra></extra>",
            colorbar={"title": {"text": "Pearson r"}},
            **_colors(True, 1.0),
        )
    )
    fig.update_xaxes(title_text="model", type="category")
    fig.update_yaxes(title_text="model", type="category", autorange="reversed")
    return fig.update_layout(
        title={"text": "Agreement of effects between models (Pearson r)"}, template="plotly_white"
    )


# ------------------------------------------------------------------ components, role vs role -
def _attribution_position(data: pd.DataFrame, position: PositionLabel | None) -> Any:
    present = list(dict.fromkeys(data["position"]))
    if position is None:
        return -1 if -1 in present else present[-1]
    if position not in present:
        raise ValueError(f"position {position!r} is not in the table (positions {present})")
    return position


def attribution_heatmap(
    df: pd.DataFrame, role: str, position: PositionLabel | None = None
) -> go.Figure:
    """Layer × head map of what each component writes along one role's direction.

    Args:
        df: a :func:`roleprobe.vectors.components.component_attribution` table.
        role: which role.
        position: which position label (default ``-1`` when present, else the last one).

    Returns:
        A heatmap, rows the layers below the decomposed one, columns the heads, the
        attention bias (where the model has one) and the MLP (per-block tables: ``attn`` and
        ``MLP``); values are projections on ``d̂`` (signed, RdBu), the embedding's term is in
        the title. All terms sum to ``d̂ · d``.
    """
    require_columns(
        df,
        ("role", "position", "component", "kind", "layer", "head", "value", "share"),
        "component attribution",
    )
    data = df[df["role"] == role]
    if data.empty:
        raise ValueError(f"role {role!r} is not in the table (roles {sorted(set(df['role']))})")
    pos = _attribution_position(data, position)
    data = data[data["position"] == pos]
    column = np.where(
        data["kind"] == "head",
        "H" + data["head"].astype(str),
        data["kind"].map(
            {"attn_bias": "attn bias", "attn": "attn", "mlp": "MLP", "embed": "embed"}
        ),
    )
    data = data.assign(column=column)
    body = data[data["kind"] != "embed"]
    heads = sorted({int(h) for h in body["head"].dropna()})
    columns = [f"H{h}" for h in heads] + [
        c for c in ("attn bias", "attn", "MLP") if c in set(body["column"])
    ]
    layers = sorted({int(x) for x in body["layer"].dropna()})
    values = body.pivot_table(index="layer", columns="column", values="value", aggfunc="sum")
    shares = body.pivot_table(index="layer", columns="column", values="share", aggfunc="sum")
    values = values.reindex(index=layers, columns=columns)
    shares = shares.reindex(index=layers, columns=columns)
    z = values.to_numpy(np.float64)
    limit = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=columns,
            y=[f"L{layer}" for layer in layers],
            customdata=shares.to_numpy(np.float64),
            hovertemplate="%{y} %{x}<br>d̂·Δ: %{z:.4g}<br>share of d̂·d: %{customdata:.1%}"
            "<extra></extra>",
            colorbar={"title": {"text": "projection on d̂"}},
            **_colors(True, limit or 1.0),
        )
    )
    embed = float(data.loc[data["kind"] == "embed", "value"].sum())
    total = float(data["value"].sum())
    layer = df.attrs.get("layer", max(layers) + 1 if layers else "?")
    fig.update_layout(
        title={
            "text": f"What writes the {role} direction into resid_pre[{layer}] (position {pos})"
            f"<br><sup>sum of all terms d̂·d = {total:.4g}; embedding term {embed:.3g}</sup>"
        },
        template="plotly_white",
        height=max(400, 140 + 22 * len(layers)),
    )
    fig.update_xaxes(title_text="component", type="category")
    fig.update_yaxes(title_text="layer", type="category", autorange="reversed")
    return fig


def top_writers_figure(
    df: pd.DataFrame, k: int = 5, position: PositionLabel | None = None
) -> go.Figure:
    """Role × component map of the top writers: each role's ``k`` largest ``|value|``.

    Args:
        df: a :func:`roleprobe.vectors.components.component_attribution` table.
        k: components per role (the columns are the union over roles, ordered by mean
            ``|share|``).
        position: which position label (default ``-1`` when present, else the last one).

    Returns:
        A heatmap of each component's share of ``d̂ · d`` (signed, RdBu), roles grouped by domain.
    """
    require_columns(df, COMPONENT_COLUMNS, "component attribution")
    pos = _attribution_position(df, position)
    data = df[df["position"] == pos]
    chosen = set(top_writers(data, k)["component"])  # checks k
    shares = data.pivot_table(index="role", columns="component", values="share", aggfunc="sum")
    columns = shares[sorted(chosen)].abs().mean().sort_values(ascending=False).index.tolist()
    roles = role_order(list(shares.index))
    table = shares.reindex(index=roles, columns=columns)
    fig = go.Figure(
        go.Heatmap(
            z=table.to_numpy(np.float64),
            x=columns,
            y=roles,
            hovertemplate="%{y}: %{x}<br>share of d̂·d: %{z:.1%}<extra></extra>",
            colorbar={"title": {"text": "share of d̂·d"}},
            **_colors(True, float(np.nanmax(np.abs(table.to_numpy(np.float64)))) or 1.0),
        )
    )
    if "direction_layer" in data:  # several attributions, e.g. one per pick of a run
        layers = data.groupby("role")["direction_layer"].first()
        where = (
            f"layer {int(layers.iloc[0])}"
            if layers.nunique() == 1
            else "each role's layer ("
            + ", ".join(f"{r} {int(layers[r])}" for r in roles if r in layers)
            + ")"
        )
    else:
        where = f"layer {df.attrs.get('layer', '?')}"
    fig = _role_axes(
        fig, f"Top {k} writers of each role direction at {where}, position {pos}", "component"
    )
    return fig.update_xaxes(type="category", tickangle=-45)


def confusion_figure(
    matrix: Float[Tensor, "role role"] | npt.NDArray[np.float64],
    roles: Sequence[str],
    domains: Sequence[str],
    title: str | None = None,
) -> go.Figure:
    """Role × role confusion matrix (row: true role, column: assigned role), grouped by domain.

    Args:
        matrix: row-normalised fractions in the order of ``roles`` (e.g.
            :meth:`roleprobe.vectors.confusion.RoleConfusion.matrix`).
        roles: the role of each row/column.
        domains: the domain of each role; rows and columns are reordered by domain
            (catalogue order of domains, then first appearance), with lines between domains.
        title: the figure title (default: a generic one with the accuracy).

    Returns:
        A heatmap on a sequential 0–1 scale; the diagonal is the fraction assigned correctly.
    """
    from roleprobe.results.labels import domain_order

    m = np.asarray(matrix.numpy() if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    if m.shape != (len(roles), len(roles)) or len(domains) != len(roles):
        raise ValueError(
            f"matrix has shape {m.shape} for {len(roles)} roles and {len(domains)} domains; "
            "need one row, column and domain per role"
        )
    rank = {d: i for i, d in enumerate(domain_order(list(domains)))}
    order = sorted(range(len(roles)), key=lambda i: (rank[domains[i]], i))
    m = m[np.ix_(order, order)]
    names = [roles[i] for i in order]
    doms = [domains[i] for i in order]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=names,
            y=names,
            customdata=np.dstack(
                [
                    np.broadcast_to(np.array(doms, dtype=object)[:, None], m.shape),
                    np.broadcast_to(np.array(doms, dtype=object), m.shape),
                ]
            ),
            hovertemplate="true %{y} (%{customdata[0]})<br>assigned %{x} (%{customdata[1]})"
            "<br>fraction: %{z:.2f}<extra></extra>",
            colorscale="Blues",
            zmin=0.0,
            zmax=1.0,
            colorbar={"title": {"text": "fraction of the row's prompts"}},
        )
    )
    edge = len(names) - 0.5
    starts = [0] + [i for i in range(1, len(names)) if doms[i] != doms[i - 1]]
    for s in starts[1:]:
        for kw in (
            {"x0": s - 0.5, "x1": s - 0.5, "y0": -0.5, "y1": edge},
            {"y0": s - 0.5, "y1": s - 0.5, "x0": -0.5, "x1": edge},
        ):
            fig.add_shape(type="line", line={"color": "black", "width": 1}, **kw)
    for start, end in zip(starts, [*starts[1:], len(names)], strict=True):
        fig.add_annotation(
            x=(start + end - 1) / 2,
            y=1.0,
            yref="paper",
            yanchor="bottom",
            text=doms[start],
            showarrow=False,
            textangle=-30,
            font={"size": 10},
        )
    accuracy = float(np.nanmean(np.diag(m))) if np.isfinite(m).any() else float("nan")
    text = title or f"Nearest-direction role confusion (mean diagonal {accuracy:.2f})"
    fig.update_layout(
        title={"text": text},
        template="plotly_white",
        margin={"t": 120},
        height=max(450, 200 + 22 * len(names)),
        width=max(500, 260 + 22 * len(names)),
    )
    fig.update_xaxes(title_text="assigned role", type="category", tickangle=-45)
    fig.update_yaxes(title_text="true role", type="category", autorange="reversed")
    return fig


# ------------------------------------------------------------------ shared vs specific ------
SHARE_RANGE = (0.0, 1.0)
"""The range of a share of a squared norm: one fixed scale for every figure."""


def shared_share_figure(
    share: pd.DataFrame,
    pooled: pd.DataFrame | None = None,
    position: PositionLabel | None = None,
) -> go.Figure:
    """How much of each role direction is the shared "any role" direction, per layer.

    Top: the mean over roles of ``cos²(d_r, s)`` per layer and, with ``pooled``, the pooled
    fraction ``|s|² / mean_r |d_r|²``. Bottom: role × layer heatmap of ``cos²(d_r, s)`` on
    the fixed 0–1 scale (1: the role direction is the shared one; undefined cells, e.g.
    layer 0's zero directions, are ``—`` on grey).

    Args:
        share: :func:`roleprobe.vectors.decomposition.shared_share`'s table.
        pooled: :func:`roleprobe.vectors.decomposition.shared_fraction`'s table (optional).
        position: the position label (default ``-1`` when present, else the last one).

    Raises:
        ValueError: a missing column, or a position that is not in ``share``.
    """
    require_columns(share, ("role", "position", "layer", "share"), "shared_share table")
    pos = _attribution_position(share, position)
    data = share[share["position"] == pos]
    layers = sorted({int(x) for x in data["layer"]})
    roles = role_order(list(data["role"]))
    grid = data.pivot_table(index="role", columns="layer", values="share", dropna=False)
    grid = grid.reindex(index=roles, columns=layers)
    z = grid.to_numpy(np.float64)
    missing = np.isnan(z)
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.25, 0.75], vertical_spacing=0.04
    )
    lines = [
        (data.groupby("layer")["share"].mean(), "mean over roles of cos²", "mean cos²(d_r, s)")
    ]
    if pooled is not None:
        require_columns(pooled, ("position", "layer", "fraction"), "shared_fraction table")
        mine = pooled[pooled["position"] == pos].set_index("layer")["fraction"]
        lines.append((mine, "pooled |s|² / mean |d_r|²", "|s|² / mean |d_r|²"))
    for series, name, label in lines:
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=series.reindex(layers).to_numpy(np.float64),
                mode="lines+markers",
                name=name,
                hovertemplate=f"layer %{{x}}<br>{label}: %{{y:.4f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Heatmap(
            z=z,
            x=layers,
            y=roles,
            zmin=SHARE_RANGE[0],
            zmax=SHARE_RANGE[1],
            colorscale=SEQUENTIAL_SCALE,
            colorbar={"title": {"text": "cos²(d_r, s)"}, "y": 0.375, "len": 0.75},
            hovertemplate="role: %{y}<br>layer: %{x}<br>share of |d_r|² along s: %{z:.4f}"
            "<extra></extra>",
            showlegend=False,
        ),
        row=2,
        col=1,
    )
    if missing.any():  # grey "—" cells (zero directions): never read like a share of 0
        fig.add_trace(
            go.Heatmap(
                z=np.where(missing, 0.0, np.nan),
                x=layers,
                y=roles,
                text=np.where(missing, UNDEFINED, ""),
                texttemplate="%{text}",
                colorscale=[[0.0, UNDEFINED_COLOR], [1.0, UNDEFINED_COLOR]],
                showscale=False,
                hoverongaps=False,
                hovertemplate="role: %{y}<br>layer: %{x}<br>undefined (zero direction)"
                "<extra></extra>",
                name="undefined",
                showlegend=False,
            ),
            row=2,
            col=1,
        )
    axis = layer_axis(layers)
    fig.update_xaxes(**axis, row=1, col=1)
    fig.update_xaxes(**axis, title_text="layer", row=2, col=1)
    fig.update_yaxes(title_text="share", range=[0.0, 1.05], row=1, col=1)
    fig.update_yaxes(
        title_text="role", type="category", autorange="reversed", dtick=1, row=2, col=1
    )
    return fig.update_layout(
        title={
            "text": f"Share of each role direction that is the shared direction s = mean_r d_r "
            f"(position {pos})<br><sup>cos²(d_r, s): fraction of |d_r|² along s</sup>"
        },
        height=max(500, 260 + 22 * len(roles)),
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0.0},
        margin={"t": 130},
        template="plotly_white",
    )


def decomposition_cosine_maps(
    rd: RoleDirections, layer: int, position: PositionLabel = -1
) -> go.Figure:
    """Role × role cosines of the raw directions beside those of their role-specific parts.

    Left: ``cos(d_i, d_j)``; right: ``cos(d_i - s, d_j - s)`` with ``s`` the mean direction
    over the roles (the specific parts of :func:`roleprobe.vectors.decomposition.
    specific_directions`; equal to the mean-centred map). Roles grouped by domain; one
    RdBu scale, −1 to 1.

    Args:
        rd: raw role directions (at least 3 roles).
        layer: the layer.
        position: the position label.
    """
    order = role_order(rd.roles)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=("raw directions d_r", "specific parts d_r − s"),
    )
    for col, centered in ((1, False), (2, True)):
        heat = _cosine_heatmap(rd, layer, position, centered)
        heat.update(coloraxis="coloraxis")
        fig.add_trace(heat, row=1, col=col)
        fig.update_xaxes(type="category", tickangle=-45, title_text="role", row=1, col=col)
        fig.update_yaxes(type="category", autorange="reversed", dtick=1, row=1, col=col)
    fig.layout.yaxis.title.text = "role"
    side = max(450, 160 + 22 * len(order))
    return fig.update_layout(
        title={
            "text": f"Role × role cosine at layer {layer}, position {position}: "
            "raw vs shared component removed"
        },
        coloraxis={
            "colorscale": SIGNED_SCALE,
            "cmin": -1.0,
            "cmax": 1.0,
            "cmid": 0.0,
            "colorbar": {"title": {"text": "cosine similarity"}},
        },
        height=side + 60,
        width=2 * side + 160,
        margin={"t": 110},
        template="plotly_white",
    )


# ------------------------------------------------------------------ persona ↔ vector --------
def _persona_matrix(
    shift: pd.DataFrame, layer: int, centred: bool
) -> tuple[list[str], list[str], npt.NDArray[np.float64]]:
    """The persona × direction matrix at ``layer``, rows and columns grouped by domain."""
    at = shift[shift["layer"] == layer]
    grid = at.pivot_table(index="persona", columns="role", values="shift", aggfunc="first")
    rows, cols = role_order(list(grid.index)), role_order(list(grid.columns))
    m = grid.loc[rows, cols].to_numpy(np.float64)
    if centred:
        m = m - m.mean(axis=0, keepdims=True) - m.mean(axis=1, keepdims=True) + m.mean()
    return rows, cols, m


def _persona_heatmap(rows: list[str], cols: list[str], m: npt.NDArray[np.float64]) -> go.Heatmap:
    row_dom = np.array([role_domain(r) or "other" for r in rows], dtype=object)
    col_dom = np.array([role_domain(c) or "other" for c in cols], dtype=object)
    return go.Heatmap(
        z=m,
        x=cols,
        y=rows,
        customdata=np.dstack(
            [np.broadcast_to(row_dom[:, None], m.shape), np.broadcast_to(col_dom, m.shape)]
        ),
        hovertemplate="persona %{y} (%{customdata[0]})<br>direction %{x} (%{customdata[1]})"
        "<br>shift: %{z:.3f}<extra></extra>",
        coloraxis="coloraxis",
    )


def _persona_title(layer: int, centred: bool) -> str:
    kind = "double-centred shift" if centred else "shift"
    return f"Persona-induced {kind} along each role's direction, layer {layer}"


def persona_shift_figure(
    shift: pd.DataFrame, layer: int | None = None, centred: bool = False
) -> go.Figure:
    """Persona × role-direction heatmap of the persona-induced shift, grouped by domain.

    Args:
        shift: :meth:`roleprobe.experiments.persona_shift.PersonaShift.to_dataframe`
            (``persona, role, layer, shift``).
        layer: the layer shown; ``None``: every layer, with a layer slider (opening on the
            middle one).
        centred: remove each direction's mean over personas and each persona's mean over
            directions (what is specific to the pair: the "every persona moves every
            direction" part is gone).

    Returns:
        A heatmap (rows: persona, columns: direction; RdBu, midpoint 0, one colour scale for
        every layer); the diagonal is each persona's shift along its own role's direction.
    """
    require_columns(shift, ("persona", "role", "layer", "shift"), "shift", allow_empty=False)
    layers = sorted(int(x) for x in shift["layer"].unique())
    if layer is not None and layer not in layers:
        raise ValueError(f"layer {layer} is not in the shift table (layers {layers})")
    shown = [layer] if layer is not None else layers
    mats = {la: _persona_matrix(shift, la, centred) for la in shown}
    limit = max(float(np.nanmax(np.abs(m))) for _, _, m in mats.values()) or 1.0
    active = layer if layer is not None else layers[len(layers) // 2]
    rows, cols, m = mats[active]
    fig = go.Figure(_persona_heatmap(rows, cols, m))
    if len(rows) == len(cols) and rows == cols:
        _domain_guides(fig, rows)
    side = max(450, 200 + 22 * len(rows))
    fig.update_layout(
        title={"text": _persona_title(active, centred)},
        template="plotly_white",
        margin={"t": 120},
        height=side,
        width=max(520, 280 + 22 * len(cols)),
        coloraxis={
            "colorscale": SIGNED_SCALE,
            "cmin": -limit,
            "cmax": limit,
            "cmid": 0.0,
            "colorbar": {"title": {"text": "Δ projection on d̂ (persona − baseline)"}},
        },
    )
    fig.update_xaxes(title_text="role direction", type="category", tickangle=-45)
    fig.update_yaxes(title_text="persona", type="category", autorange="reversed", dtick=1)
    if layer is not None or len(layers) == 1:
        return fig
    fig.frames = [
        go.Frame(
            data=[_persona_heatmap(*mats[la])],
            name=str(la),
            layout={"title": {"text": _persona_title(la, centred)}},
        )
        for la in layers
    ]
    step_args = {"mode": "immediate", "frame": {"duration": 0, "redraw": True}}
    labels = _tick_label_depth(cols)
    slider = {
        "active": layers.index(active),
        "currentvalue": {"prefix": "layer: "},
        "steps": [
            {"method": "animate", "label": str(la), "args": [[str(la)], step_args]} for la in layers
        ],
        "y": 0.0,
        "yanchor": "top",
        "pad": {"t": labels + SLIDER_GAP},
    }
    bottom = labels + SLIDER_GAP + SLIDER_HEIGHT
    return fig.update_layout(sliders=[slider], margin={"b": bottom}, height=side + bottom)


def persona_specificity_figure(specificity: pd.DataFrame) -> go.Figure:
    """Per layer: mean shift of personas along their own direction vs along the others'.

    Args:
        specificity: :meth:`roleprobe.experiments.persona_shift.PersonaShift.specificity`
            (``layer, diagonal, off_diagonal, centred_diagonal``).

    Returns:
        Lines over the layers (categorical layer axis).
    """
    require_columns(
        specificity,
        ("layer", "diagonal", "off_diagonal", "centred_diagonal"),
        "specificity",
        allow_empty=False,
    )
    names = {
        "diagonal": "own direction (diagonal)",
        "off_diagonal": "other roles' directions (off-diagonal)",
        "centred_diagonal": "own, double-centred",
    }
    fig = go.Figure(
        [
            go.Scatter(x=specificity["layer"], y=specificity[col], mode="lines+markers", name=label)
            for col, label in names.items()
        ]
    )
    fig.update_layout(
        title={"text": "Persona-induced shift along role directions: own vs others"},
        template="plotly_white",
        yaxis_title="mean Δ projection on d̂ (persona − baseline)",
    )
    return fig.update_xaxes(title_text="layer", **layer_axis(list(specificity["layer"])))


def persona_vs_addition(table: pd.DataFrame, value: str = "delta_logprob") -> go.Figure:
    """Per role, the effect of the persona and of adding the role's direction, by domain.

    Args:
        table: one row per role and condition with ``role``, ``condition`` and ``value``
            plus its ``{value}_ci_low``/``_ci_high`` (``delta_logprob``) or
            ``delta_ci_low``/``delta_ci_high`` (``delta_accuracy``), as
            :func:`roleprobe.compare` returns them.
        value: ``"delta_logprob"`` (default: read this first when accuracy sits at chance)
            or ``"delta_accuracy"``.

    Returns:
        Grouped bars (one colour per condition) over the roles, grouped by domain, with 95 %
        confidence intervals.
    """
    low, high = (
        ("delta_ci_low", "delta_ci_high")
        if value == "delta_accuracy"
        else (f"{value}_ci_low", f"{value}_ci_high")
    )
    require_columns(table, ("role", "condition", value, low, high), "table", allow_empty=False)
    roles = role_order(list(dict.fromkeys(table["role"])))
    fig = go.Figure()
    for k, (condition, part) in enumerate(table.groupby("condition", sort=True)):
        part = part.set_index("role").reindex(roles)
        fig.add_bar(
            x=roles,
            y=part[value],
            name=str(condition),
            marker_color=qualitative.Plotly[k % len(qualitative.Plotly)],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": (part[high] - part[value]).to_numpy(),
                "arrayminus": (part[value] - part[low]).to_numpy(),
            },
            customdata=np.array([role_domain(r) or "other" for r in roles], dtype=object),
            hovertemplate="%{x} (%{customdata})<br>%{y:.3f}<extra>" + str(condition) + "</extra>",
        )
    domains, starts = _domain_blocks(roles)
    for s in starts[1:]:
        fig.add_vline(x=s - 0.5, line={"color": "grey", "width": 1, "dash": "dot"})
    _domain_names(fig, domains, starts)
    fig.update_layout(
        barmode="group",
        template="plotly_white",
        title={"text": "Persona vs activation addition, each role on its own domain"},
        yaxis_title=value_label(value),
        margin={"t": 120},
        width=max(700, 200 + 34 * len(roles)),
    )
    return fig.update_xaxes(title_text="role", type="category", tickangle=-45)
