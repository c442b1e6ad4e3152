"""Figures from small hand-made inputs: trace types, axes, cell values, marks and hover data."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from roleprobe.results.plotting import (
    AUROC_RANGE,
    SLIDER_HEIGHT,
    UNDEFINED,
    auroc_heatmap,
    control_distribution,
    correlation_heatmap,
    cosine_map,
    cosine_map_slider,
    direction_heatmaps,
    layer_effect_plot,
    layer_heatmap,
    letter_attribution_plot,
    logit_lens_table,
    paper_table_figure,
    stability_heatmap,
    sweep_heatmaps,
)
from roleprobe.vectors.directions import RoleDirections

# catalogue order: economist (econ), lawyer (law), nurse, doctor (medicine), then unknown
ROLES = ("nurse", "lawyer", "court jester", "economist", "doctor")
ORDERED = ["economist", "lawyer", "nurse", "doctor", "court jester"]


@pytest.fixture
def rd():
    gen = torch.Generator().manual_seed(0)
    return RoleDirections(
        role_means=torch.randn(5, 2, 3, 8, generator=gen, dtype=torch.float64),
        base_mean=torch.randn(2, 3, 8, generator=gen, dtype=torch.float64),
        role_counts=(10, 11, 12, 13, 14),
        base_count=50,
        roles=ROLES,
        layers=(0, 4, 8),
        positions=(-2, -1),
    )


def _heatmaps(fig):
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


def _scores():
    rows = []
    for role in ("nurse", "lawyer"):
        for position in (-2, -1):
            for layer in (2, 5):
                for condition, alpha in (
                    ("addition", 3.0),
                    ("ablation", math.nan),
                    ("addition", 1.0),
                ):
                    for source in ("role", "random"):
                        value = 0.01 * layer * (1 if role == "lawyer" else -1) + position / 100
                        rows.append(
                            {
                                "role": role,
                                "source": source,
                                "donor": role if source == "role" else f"random-{layer}",
                                "position": position,
                                "layer": layer,
                                "condition": condition,
                                "alpha": alpha,
                                "n": 40,
                                "accuracy": 0.5 + value,
                                "base_accuracy": 0.5,
                                "delta_accuracy": value + (alpha if alpha == alpha else 0) / 10,
                                "logprob_correct": -1.0,
                                "delta_logprob": value * 2,
                            }
                        )
    return pd.DataFrame(rows)


def test_layer_heatmap_values_marks_and_hover():
    values = pd.DataFrame(
        [[0.1, -0.2, 0.3], [0.0, 0.5, -0.4]], index=["lawyer", "nurse"], columns=[0, 1, 2]
    )
    counts = pd.DataFrame(7, index=values.index, columns=values.columns)
    fig = layer_heatmap(values, "T", "Δ (nats)", signed=True, marks=[("nurse", 2)], n=counts)
    (heat,) = _heatmaps(fig)
    np.testing.assert_allclose(heat.z, values.to_numpy())
    assert list(heat.y) == ["lawyer", "nurse"] and list(heat.x) == [0, 1, 2]
    assert heat.colorscale[0][1] == "rgb(103,0,31)" and heat.zmid == 0  # RdBu, centred
    assert (np.asarray(heat.customdata) == 7).all() and "n: %{customdata}" in heat.hovertemplate
    assert "Δ (nats)" in heat.hovertemplate and heat.colorbar.title.text == "Δ (nats)"
    (mark,) = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert list(mark.x) == [2] and list(mark.y) == ["nurse"] and mark.marker.symbol == "square-open"
    assert fig.layout.xaxis.title.text == "layer" and fig.layout.yaxis.title.text == "role"
    assert fig.layout.yaxis.autorange == "reversed"
    unsigned = _heatmaps(layer_heatmap(values, "T", "x"))[0]
    assert unsigned.zmid is None and unsigned.colorscale[0][1] != heat.colorscale[0][1]
    with pytest.raises(ValueError, match="'doctor'"):
        layer_heatmap(values, "T", "x", marks=[("doctor", 1)])
    with pytest.raises(ValueError, match="layer 9"):
        layer_heatmap(values, "T", "x", marks=[("nurse", 9)])


def test_direction_heatmaps(rd):
    fig = direction_heatmaps(rd, position=-2)
    norms, cosines = _heatmaps(fig)
    assert list(norms.y) == ORDERED and list(norms.x) == [0, 4, 8]
    nurse = ROLES.index("nurse")
    np.testing.assert_allclose(norms.z[ORDERED.index("nurse")], rd.norms()[nurse, 0].numpy())
    np.testing.assert_allclose(cosines.z[0], rd.base_cosine()[ROLES.index("economist"), 0].numpy())
    assert cosines.zmin == -1 and cosines.zmax == 1 and cosines.colorscale[0][1] == "rgb(103,0,31)"
    assert norms.zmid is None
    custom = np.asarray(norms.customdata)
    assert custom.shape == (5, 3, 2) and custom[ORDERED.index("doctor"), 0, 0] == 14
    assert custom[0, 0, 1] == 50
    assert fig.layout.annotations[0].text.startswith("‖d‖")


def test_stability_heatmap(rd):
    stability = torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(5, 2, 3)
    (heat,) = _heatmaps(stability_heatmap(stability, rd, position=-1))
    np.testing.assert_allclose(heat.z[ORDERED.index("lawyer")], stability[1, 1].numpy())
    assert heat.zmin == -1 and heat.zmax == 1
    with pytest.raises(ValueError, match="shape"):
        stability_heatmap(stability[:, :, :2], rd)


def test_sweep_heatmaps_panels_values_and_selection():
    scores = _scores()
    selected = pd.DataFrame(
        {
            "role": ["lawyer", "nurse", "nurse"],
            "source": ["role", "role", "role"],
            "alpha": [3.0, math.nan, 1.0],
            "position": [-1, -1, -2],  # the last one is at another position: not drawn
            "layer": [5, 2, 2],
        }
    )
    fig = sweep_heatmaps(scores, "delta_accuracy", selected=selected)
    heats = _heatmaps(fig)
    assert [a.text for a in fig.layout.annotations] == ["α=1", "α=3", "ablation"]
    alpha3 = heats[1]
    assert list(alpha3.y) == ["lawyer", "nurse"] and list(alpha3.x) == [2, 5]
    expected = scores.query(
        "source == 'role' and position == -1 and role == 'nurse' and layer == 5 and alpha == 3"
    )["delta_accuracy"].item()
    assert alpha3.z[1][1] == pytest.approx(expected)
    assert all(h.coloraxis == "coloraxis" for h in heats)
    assert (
        fig.layout.coloraxis.cmid == 0 and fig.layout.coloraxis.colorscale[0][1] == "rgb(103,0,31)"
    )
    assert "Δ accuracy" in fig.layout.coloraxis.colorbar.title.text
    marks = [t for t in fig.data if isinstance(t, go.Scatter)]
    placed = {(m.xaxis, x, y) for m in marks for x, y in zip(m.x, m.y, strict=True)}
    assert placed == {("x2", 5, "lawyer"), ("x3", 2, "nurse")}
    assert np.asarray(alpha3.customdata)[0, 0, 0] == 40
    # two random candidates per role and layer? averaged, and counted in the hover
    extra = scores.query("source == 'random'").assign(delta_accuracy=0.0)
    mixed = sweep_heatmaps(pd.concat([scores, extra]), source="random", position=-2)
    first = _heatmaps(mixed)[0]
    raw = scores.query("source == 'random' and position == -2 and role == 'lawyer' and layer == 2")
    assert first.z[0][0] == pytest.approx(raw.query("alpha == 1")["delta_accuracy"].item() / 2)
    assert np.asarray(first.customdata)[0, 0, 1] == 2


def test_sweep_heatmaps_errors():
    scores = _scores()
    with pytest.raises(ValueError, match="'layer'"):
        sweep_heatmaps(scores.drop(columns="layer"))
    with pytest.raises(ValueError, match="shuffled"):
        sweep_heatmaps(scores, source="shuffled")
    bad = pd.DataFrame(
        {"role": ["surgeon"], "source": ["role"], "alpha": [1.0], "position": [-1], "layer": [2]}
    )
    with pytest.raises(ValueError, match="'surgeon'"):
        sweep_heatmaps(scores, selected=bad)
    with pytest.raises(ValueError, match="α=7"):
        sweep_heatmaps(scores, selected=bad.assign(role="nurse", alpha=7.0))


def test_sweep_default_position_is_the_strongest_without_minus_one():
    scores = _scores().query("position == -2").assign(position=3)
    strong = _scores().query("position == -2").assign(position=5, delta_accuracy=9.0)
    fig = sweep_heatmaps(pd.concat([scores, strong]))
    assert "position 5" in fig.layout.title.text


def test_cosine_map_orders_roles_and_draws_domains(rd):
    fig = cosine_map(rd, layer=4, position=-1)
    (heat,) = _heatmaps(fig)
    assert list(heat.x) == ORDERED and list(heat.y) == ORDERED
    full = rd.cosine_similarity(4, -1).numpy()
    index = [ROLES.index(r) for r in ORDERED]
    np.testing.assert_allclose(heat.z, full[np.ix_(index, index)])
    assert heat.zmid == 0 and heat.zmin == -1
    # econ | law | medicine (nurse, doctor) | other: three boundaries, two lines each
    assert len(fig.layout.shapes) == 6
    xs = sorted({s.x0 for s in fig.layout.shapes if s.x0 == s.x1})
    assert xs == [0.5, 1.5, 3.5]
    assert [a.text for a in fig.layout.annotations] == ["econ", "law", "medicine", "other"]
    assert np.asarray(heat.customdata)[2, 0, 0] == "medicine"
    centred = _heatmaps(cosine_map(rd, layer=4, centered=True))[0]
    assert not np.allclose(centred.z, heat.z)


def test_cosine_map_slider_has_a_frame_per_layer(rd):
    fig = cosine_map_slider(rd, position=-2)
    assert [f.name for f in fig.frames] == ["0", "4", "8"]
    assert len(fig.layout.sliders[0].steps) == 3
    assert list(fig.layout.sliders[0].steps[2].args[0]) == ["8"]
    last = fig.frames[2].data[0]
    index = [ROLES.index(r) for r in ORDERED]
    np.testing.assert_allclose(last.z, rd.cosine_similarity(8, -2).numpy()[np.ix_(index, index)])


def test_layer_effect_plot_lines_and_bands():
    scores = _scores()
    ci = scores.query("source == 'role' and role == 'lawyer' and position == -1")[
        ["condition", "alpha", "layer"]
    ].assign(ci_low=-1.0, ci_high=1.0)
    fig = layer_effect_plot(scores, "lawyer", "delta_logprob", ci=ci)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["α=1", "α=3", "ablation"] and len(bands) == 3
    expected = scores.query(
        "source == 'role' and role == 'lawyer' and position == -1 and alpha == 1"
    )
    np.testing.assert_allclose(lines[0].y, expected.sort_values("layer")["delta_logprob"])
    assert list(bands[0].y) == [1.0, 1.0, -1.0, -1.0]
    assert fig.layout.yaxis.title.text == "Δ log p(correct letter) (nats)"
    assert fig.layout.xaxis.title.text == "layer"
    plain = layer_effect_plot(scores, "lawyer")
    assert len(plain.data) == 3 and "CI" not in plain.data[0].hovertemplate
    with pytest.raises(ValueError, match="'doctor'"):
        layer_effect_plot(scores, "doctor")


def test_letter_attribution_plot():
    rows = [
        {"role": role, "position": -1, "layer": layer, "letter": letter, "attribution": i * 0.1}
        for role in ("nurse", "lawyer")
        for layer in (0, 1)
        for i, letter in enumerate("DCBA")
    ]
    fig = letter_attribution_plot(pd.DataFrame(rows))
    heats = _heatmaps(fig)
    assert [a.text for a in fig.layout.annotations] == ["lawyer", "nurse"]
    assert list(heats[0].x) == ["A", "B", "C", "D"] and list(heats[0].y) == [0, 1]
    np.testing.assert_allclose(heats[0].z[0], [0.3, 0.2, 0.1, 0.0])
    assert fig.layout.coloraxis.cmid == 0
    twice = pd.DataFrame([*rows, {**rows[0], "position": -2}])
    with pytest.raises(ValueError, match="several positions"):
        letter_attribution_plot(twice)


def test_logit_lens_table():
    df = pd.DataFrame(
        {
            "layer": [3, 3, 3, 3, 1, 1],
            "sign": ["+", "+", "-", "-", "+", "-"],
            "rank": [1, 0, 0, 1, 0, 0],
            "token": [" court", " law", "<|im_end|>", "x", " a", " b"],
            "token_id": [1, 2, 3, 4, 5, 6],
            "logit": [1.5, 2.25, 0.5, 0.25, 1.0, 1.0],
        }
    )
    fig = logit_lens_table(df)
    (table,) = fig.data
    assert isinstance(table, go.Table)
    layers, plus, minus = table.cells.values
    assert list(layers) == [1, 3]
    assert plus[1] == "' law' (2.25), ' court' (1.50)"
    assert "&lt;|im_end|&gt;" in minus[1]
    with pytest.raises(ValueError, match="empty"):
        logit_lens_table(pd.DataFrame())


def _effects():
    rows = []
    for role in ("nurse", "lawyer"):
        for condition, alpha in (("ablation", math.nan), ("addition", 1.0)):
            for domain in ("law", "medicine"):
                in_domain = (role == "lawyer") == (domain == "law")
                rows.append(
                    {
                        "role": role,
                        "condition": condition,
                        "alpha": alpha,
                        "domain": domain,
                        "in_domain": in_domain,
                        "relative_change_pct": 10.0 if in_domain else -5.0,
                        "n": 30,
                        "mcnemar_p_adj": 0.004 if in_domain else 0.5,
                        "stars": "**" if in_domain else "",
                    }
                )
    return pd.DataFrame(rows)


def test_paper_table_figure():
    fig = paper_table_figure(_effects())
    (heat,) = _heatmaps(fig)
    assert list(fig.layout.yaxis.ticktext) == ["lawyer", "nurse"]
    assert list(fig.layout.xaxis.ticktext) == ["law", "medicine", "law", "medicine"]
    np.testing.assert_allclose(heat.z, [[10, -5, 10, -5], [-5, 10, -5, 10]])
    assert heat.zmid == 0 and heat.texttemplate == "%{text}"
    assert np.asarray(heat.text).tolist() == [["**", "", "**", ""], ["", "**", "", "**"]]
    rects = {(s.x0, s.y0) for s in fig.layout.shapes if s.type == "rect"}
    assert rects == {(-0.5, -0.5), (1.5, -0.5), (0.5, 0.5), (2.5, 0.5)}
    assert [a.text for a in fig.layout.annotations] == ["α=1", "ablation"]
    custom = np.asarray(heat.customdata)
    assert custom[0, 0].tolist() == ["lawyer", "α=1", "law", 30, 0.004, "10"]
    with pytest.raises(ValueError, match="'stars'"):
        paper_table_figure(_effects().drop(columns="stars"))


def test_correlation_heatmap_masks_the_upper_triangle():
    corr = pd.DataFrame(
        {
            "model_a": ["a", "a", "b"],
            "model_b": ["b", "c", "c"],
            "r": [0.9, -0.2, 0.5],
            "p": [0.0005, 0.4, 0.03],
            "n": [20, 20, 18],
        }
    )
    fig = correlation_heatmap(corr)
    (heat,) = _heatmaps(fig)
    assert list(heat.x) == ["a", "b", "c"]
    z = [list(row) for row in heat.z]
    assert z == [[None, None, None], [0.9, None, None], [-0.2, 0.5, None]]
    text = [list(row) for row in heat.text]
    assert text[1][0] == "***" and text[2][0] == "" and text[2][1] == "*"
    assert heat.customdata[2][1] == [0.03, 18] and heat.zmid == 0
    with pytest.raises(ValueError, match="'p'"):
        correlation_heatmap(corr.drop(columns="p"))


def test_control_distribution():
    scores = _scores()
    shuffled = scores.query("source == 'random'").assign(source="shuffled", delta_accuracy=-1.0)
    fig = control_distribution(pd.concat([shuffled, scores]))
    assert [t.name for t in fig.data] == ["role", "random", "shuffled"]
    assert all(isinstance(t, go.Box) and t.boxpoints == "all" for t in fig.data)
    role = scores.query("source == 'role'")
    np.testing.assert_allclose(fig.data[0].y, role["delta_accuracy"])
    assert set(fig.data[0].x) == {"α=1", "α=3", "ablation"}
    assert list(fig.layout.xaxis.categoryarray) == ["α=1", "α=3", "ablation"]
    assert fig.data[0].customdata[0].tolist()[:2] == ["nurse", "nurse"]
    assert fig.layout.yaxis.title.text == "Δ accuracy (fraction of items)"
    with pytest.raises(ValueError, match="'source'"):
        control_distribution(scores.drop(columns="source"))


# ------------------------------------------------------------------ figures that read right --
def _layer_axes(fig, letter="x"):
    return [
        a for name, a in fig.layout.to_plotly_json().items() if name.startswith(f"{letter}axis")
    ]


def _assert_layer_axes(fig, layers, letter="x"):
    axes = _layer_axes(fig, letter)
    assert axes, f"no {letter} axes"
    for axis in axes:
        assert axis["type"] == "category"
        assert list(axis["tickvals"]) == layers and list(axis["categoryarray"]) == layers
        assert list(axis["ticktext"]) == [str(x) for x in layers]


def test_layers_are_categorical_axes_ticked_at_the_swept_layers(rd):
    """Layers 8 and 16 are two equal cells ticked 8 and 16, not bands spread over 4-20."""
    scores = _scores().assign(layer=lambda d: d["layer"].map({2: 8, 5: 16}))
    _assert_layer_axes(sweep_heatmaps(scores, "delta_logprob"), [8, 16])
    _assert_layer_axes(layer_effect_plot(scores, "lawyer"), [8, 16])
    values = pd.DataFrame([[0.1, 0.2]], index=["lawyer"], columns=[8, 16])
    _assert_layer_axes(layer_heatmap(values, "T", "x"), [8, 16])
    _assert_layer_axes(direction_heatmaps(rd), [0, 4, 8])
    rows = [
        {"role": "nurse", "position": -1, "layer": layer, "letter": letter, "attribution": 0.1}
        for layer in (16, 8)
        for letter in "ABCD"
    ]
    _assert_layer_axes(letter_attribution_plot(pd.DataFrame(rows)), [8, 16], letter="y")
    many = pd.DataFrame([list(range(80))], index=["lawyer"], columns=list(range(80)))
    (axis,) = _layer_axes(layer_heatmap(many, "T", "x"))
    assert len(axis["categoryarray"]) == 80 and list(axis["tickvals"]) == list(range(0, 80, 2))


def test_auroc_has_a_fixed_colour_scale():
    near = pd.DataFrame([[0.93, 0.99], [0.95, 1.0]], index=["lawyer", "nurse"], columns=[8, 16])
    (heat,) = _heatmaps(auroc_heatmap(near))
    assert (heat.zmin, heat.zmax) == AUROC_RANGE == (0.5, 1.0)
    assert heat.colorbar.title.text == "AUROC"
    with pytest.raises(ValueError, match="zrange"):
        layer_heatmap(near, "T", "x", zrange=(1.0, 0.5))


def test_cosine_slider_opens_on_a_middle_layer_below_the_labels(rd):
    fig = cosine_map_slider(rd, position=-1)
    (slider,) = fig.layout.sliders
    assert slider.active == 1 and slider.steps[slider.active].label == "4"  # layers 0, 4, 8
    index = [ROLES.index(r) for r in ORDERED]
    expected = rd.cosine_similarity(4, -1).numpy()[np.ix_(index, index)]
    np.testing.assert_allclose(fig.data[0].z, expected)  # what the page opens on
    assert "layer 4" in fig.layout.title.text
    # the slider starts below the rotated role names ("court jester": 12 characters at -45°)
    label_depth = 0.6 * 12 * len("court jester") * np.sin(np.pi / 4)
    assert slider.yanchor == "top" and slider.y == 0 and slider.pad.t > label_depth + 20
    assert fig.layout.margin.b >= slider.pad.t + SLIDER_HEIGHT


def test_norm_panel_offers_log_and_relative_views(rd):
    p = rd.position_index(-1)
    nurse = ORDERED.index("nurse")
    norms = rd.norms()[ROLES.index("nurse"), p].numpy()
    linear = _heatmaps(direction_heatmaps(rd))[0]
    np.testing.assert_allclose(linear.z[nurse], norms)
    log = direction_heatmaps(rd, norm_scale="log")
    np.testing.assert_allclose(_heatmaps(log)[0].z[nurse], np.log10(norms))
    assert log.layout.annotations[0].text.startswith("log")
    relative = direction_heatmaps(rd, norm_scale="relative")
    base = rd.base_mean[p].norm(dim=-1).numpy()
    np.testing.assert_allclose(_heatmaps(relative)[0].z[nurse], norms / base)
    assert "baseline mean" in relative.layout.annotations[0].text
    with pytest.raises(ValueError, match="'cubic'"):
        direction_heatmaps(rd, norm_scale="cubic")


def test_undefined_paper_cells_do_not_read_like_zero():
    effects = _effects()
    undefined = (effects["role"] == "nurse") & (effects["domain"] == "law")
    zero = (effects["role"] == "lawyer") & (effects["domain"] == "medicine")
    effects.loc[undefined, "relative_change_pct"] = math.nan
    effects.loc[zero, "relative_change_pct"] = 0.0
    fig = paper_table_figure(effects)
    values, grey = _heatmaps(fig)
    text = np.asarray(grey.text)
    assert text[1, 0] == UNDEFINED and text[0, 1] == ""  # nurse x law: "—"; lawyer 0 %: not
    assert np.isnan(grey.z[0][1]) and not np.isnan(grey.z[1][0])  # grey only where undefined
    assert grey.showscale is False and grey.colorscale[0][1] == grey.colorscale[-1][1]
    assert np.asarray(values.customdata)[0, 1, 5] == "0"
    assert "undefined" in np.asarray(values.customdata)[1, 0, 5]
    assert UNDEFINED in fig.layout.title.text


def test_persona_vs_addition_groups_conditions_by_domain_with_their_intervals():
    from roleprobe.results.plotting import persona_vs_addition

    rows = []
    for k, role in enumerate(["nurse", "lawyer", "economist"]):
        for j, condition in enumerate(["persona", "addition α=3"]):
            value = 0.1 * k - 0.05 * j
            rows.append(
                {
                    "role": role,
                    "condition": condition,
                    "delta_logprob": value,
                    "delta_logprob_ci_low": value - 0.02,
                    "delta_logprob_ci_high": value + 0.03,
                    "delta_accuracy": -value,
                    "delta_ci_low": -value - 0.1,
                    "delta_ci_high": -value + 0.1,
                }
            )
    table = pd.DataFrame(rows)
    fig = persona_vs_addition(table)
    assert [t.name for t in fig.data] == ["addition α=3", "persona"]
    persona = fig.data[1]
    assert list(persona.x) == ["economist", "lawyer", "nurse"]  # catalogue (domain) order
    np.testing.assert_allclose(persona.y, [0.2, 0.1, 0.0])
    np.testing.assert_allclose(persona.error_y.array, [0.03] * 3)
    np.testing.assert_allclose(persona.error_y.arrayminus, [0.02] * 3)
    assert fig.layout.xaxis.type == "category"
    assert [a.text for a in fig.layout.annotations] == ["econ", "law", "medicine"]
    acc = persona_vs_addition(table, "delta_accuracy")
    np.testing.assert_allclose(acc.data[1].error_y.array, [0.1] * 3)
    with pytest.raises(ValueError, match="delta_logprob_ci_low"):
        persona_vs_addition(table.drop(columns="delta_logprob_ci_low"))
