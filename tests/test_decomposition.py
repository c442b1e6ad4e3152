import math

import numpy as np
import pytest
import torch

import roleprobe as rp
from roleprobe.results import plotting
from roleprobe.results.labels import role_order
from roleprobe.vectors.decomposition import (
    band_summary,
    is_specific,
    layer_band,
    share_of_norm,
    shared_direction,
    shared_fraction,
    shared_share,
    specific_directions,
)

ROLES = ("lawyer", "nurse", "mathematician", "economist")
D_MODEL = 16


def _planted(fraction: float = 0.64, layers=(0, 1, 2)):
    """Directions ``d_r = c + u_r``: ``c`` common, ``u_r`` centred simplex parts orthogonal
    to ``c``, all of one norm, scaled so that ``|c|² / |d_r|² = fraction`` (layer 0 zero)."""
    n_role, n_layer = len(ROLES), len(layers)
    basis = torch.linalg.qr(torch.randn(D_MODEL, D_MODEL, dtype=torch.float64))[0].T
    common = basis[0]
    parts = basis[1 : 1 + n_role] - basis[1 : 1 + n_role].mean(dim=0)  # sum to 0, ⟂ c
    parts = parts / parts.norm(dim=-1, keepdim=True)
    c_len, u_len = math.sqrt(fraction), math.sqrt(1 - fraction)
    d = torch.zeros(n_role, 2, n_layer, D_MODEL, dtype=torch.float64)
    for li in range(1, n_layer):
        scale = 2.0 * li
        d[:, :, li] = scale * (c_len * common + u_len * parts)[:, None]
    base = torch.randn(2, n_layer, D_MODEL, dtype=torch.float64)
    rd = rp.RoleDirections(
        role_means=base + d,
        base_mean=base,
        role_counts=(5,) * n_role,
        base_count=7,
        roles=ROLES,
        layers=tuple(layers),
        positions=(-2, -1),
        source="builtin",
    )
    return rd, common, parts, d


def test_planted_shared_direction_and_share_are_recovered():
    rd, common, _parts, _d = _planted(0.64)
    s = shared_direction(rd)
    assert s.shape == (2, 3, D_MODEL) and s.dtype == torch.float64
    for li in (1, 2):
        expected = 2.0 * li * math.sqrt(0.64) * common
        torch.testing.assert_close(s[:, li], expected.expand(2, -1), atol=1e-12, rtol=0)
    assert torch.all(s[:, 0] == 0)
    df = shared_share(rd)
    assert list(df.columns) == [
        "role",
        "domain",
        "position",
        "layer",
        "norm",
        "shared_norm",
        "specific_norm",
        "cosine",
        "share",
    ]
    assert len(df) == len(ROLES) * 2 * 3
    live = df[df["layer"] > 0]
    np.testing.assert_allclose(live["share"], 0.64, atol=1e-12)
    np.testing.assert_allclose(live["cosine"], 0.8, atol=1e-12)
    np.testing.assert_allclose(live["specific_norm"], live["norm"] * 0.6, atol=1e-12)
    assert df.loc[df["layer"] == 0, "share"].isna().all()  # a zero direction: undefined
    assert set(df.loc[df["role"] == "nurse", "domain"]) == {"medicine"}
    pooled = shared_fraction(rd)
    assert len(pooled) == 2 * 3 and pooled.loc[pooled["layer"] == 0, "fraction"].isna().all()
    np.testing.assert_allclose(pooled.loc[pooled["layer"] > 0, "fraction"], 0.64, atol=1e-12)
    np.testing.assert_allclose(pooled.loc[pooled["layer"] > 0, "mean_share"], 0.64, atol=1e-12)


def test_the_share_tracks_the_planted_fraction():
    for fraction in (0.1, 0.5, 0.9):
        rd, *_ = _planted(fraction)
        live = shared_share(rd).query("layer > 0")
        np.testing.assert_allclose(live["share"], fraction, atol=1e-12)


def test_pooled_fraction_is_an_exact_split_of_the_mean_squared_norm():
    rd, *_ = _planted()
    g = torch.Generator().manual_seed(1)
    noisy = rd.role_means + torch.randn(rd.role_means.shape, generator=g, dtype=torch.float64)
    rd = rp.RoleDirections(
        noisy, rd.base_mean, rd.role_counts, rd.base_count, rd.roles, rd.layers, rd.positions
    )
    df = shared_share(rd)
    pooled = shared_fraction(rd)
    for _, row in pooled.iterrows():
        mine = df[(df["position"] == row["position"]) & (df["layer"] == row["layer"])]
        mean_sq = float((mine["norm"] ** 2).mean())
        specific_sq = float((mine["specific_norm"] ** 2).mean())
        assert row["fraction"] == pytest.approx(row["shared_norm"] ** 2 / mean_sq, rel=1e-12)
        assert row["fraction"] == pytest.approx(1 - specific_sq / mean_sq, rel=1e-9)
        # one role's share is not the pooled fraction when s and e_r are not orthogonal
    assert not np.allclose(df["share"], df["share"].iloc[0])


def test_specific_directions_are_role_directions_minus_their_mean():
    rd, _common, parts, d = _planted(0.5)
    spec = specific_directions(rd)
    assert isinstance(spec, rp.RoleDirections) and is_specific(spec) and not is_specific(rd)
    assert spec.source == "specific:builtin" and spec.roles == rd.roles
    expected = (d - d.mean(dim=0)).float()
    torch.testing.assert_close(spec.vectors, expected, atol=1e-6, rtol=0)
    assert spec.vectors.double().sum(dim=0).abs().max() < 1e-5
    v = spec.vector("nurse", 2, -1)
    torch.testing.assert_close(v, (2.0 * 2 * math.sqrt(0.5) * parts[1]).float(), atol=1e-6, rtol=0)
    again = specific_directions(spec)
    assert again.source == spec.source
    torch.testing.assert_close(again.vectors, spec.vectors, atol=1e-6, rtol=0)
    # the specific parts' cosine map is the mean-centred map of the raw directions
    torch.testing.assert_close(
        spec.cosine_similarity(2, -1), rd.cosine_similarity(2, -1, centered=True)
    )


def test_specific_directions_steer_like_any_direction(tiny_model, tmp_path):
    rd = rp.compute_directions(tiny_model, roles=list(ROLES[:3]), progress=False)
    spec = specific_directions(rd)
    layer = tiny_model.cfg.n_layers - 1
    d = spec.vector("lawyer", layer, -1)
    raw = rd.vectors[:, rd.position_index(-1), rd.layer_index(layer)]
    torch.testing.assert_close(d, raw[0] - raw.mean(dim=0), atol=1e-6, rtol=0)
    bench = rp.MultipleChoice(rp.load_benchmark("builtin").items.head(3), "tiny3")
    got = rp.evaluate(tiny_model, bench, rp.Addition(d, layer, 4.0), progress=False)
    ref = rp.evaluate(tiny_model, bench, rp.Addition(d.clone(), layer, 4.0), progress=False)
    np.testing.assert_array_equal(got["logprob_correct"], ref["logprob_correct"])
    base = rp.evaluate(tiny_model, bench, progress=False)
    assert not np.allclose(got["logprob_correct"], base["logprob_correct"])
    rp.evaluate(tiny_model, bench, rp.Ablation(d), progress=False)
    spec.save(tmp_path / "spec")  # persists and reloads like any directions
    back = rp.RoleDirections.load(tmp_path / "spec", tiny_model)
    assert is_specific(back)
    torch.testing.assert_close(back.vectors, spec.vectors)


def test_share_of_norm_edge_cases():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    s = torch.tensor([1.0, 0.0])
    share = share_of_norm(d, s)
    assert share[0].item() == pytest.approx(9 / 25) and share[2].item() == 0.0
    assert math.isnan(share[1].item())
    assert math.isnan(share_of_norm(d, torch.zeros(2))[0].item())


def test_bands_and_their_summary():
    assert [layer_band(i, 30) for i in (0, 9, 10, 19, 20, 29)] == [
        "early",
        "early",
        "middle",
        "middle",
        "late",
        "late",
    ]
    with pytest.raises(ValueError, match="layer 4 is not a layer of a 4-layer model"):
        layer_band(4, 4)
    rd, *_ = _planted(0.25, layers=(0, 1, 2, 3, 4, 5))
    summary = band_summary(shared_share(rd), n_layers=6)
    assert list(summary["band"]) == ["early", "middle", "late"] * 2
    early = summary[(summary["position"] == -1) & (summary["band"] == "early")].iloc[0]
    assert early["layers"] == "1-1" and early["n"] == len(ROLES)  # layer 0 is NaN: left out
    np.testing.assert_allclose(summary["mean"], 0.25, atol=1e-12)
    with pytest.raises(ValueError, match="no column 'nope'"):
        band_summary(shared_share(rd), 6, value="nope")


def test_one_role_has_no_shared_part():
    rd, *_ = _planted()
    one = rp.RoleDirections(
        rd.role_means[:1], rd.base_mean, (5,), 7, ("lawyer",), rd.layers, rd.positions
    )
    with pytest.raises(ValueError, match=r"at least 2 roles.*\['lawyer'\]"):
        specific_directions(one)


def test_figures_of_the_decomposition():
    rd, *_ = _planted(0.64)
    fig = plotting.shared_share_figure(shared_share(rd), shared_fraction(rd), position=-1)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in heat][1:] == ["undefined"]  # grey cells over layer 0
    grey = np.array(heat[1].z, dtype=float)
    assert (grey[:, 0] == 0).all() and np.isnan(grey[:, 1:]).all()
    assert list(heat[0].y) == role_order(list(ROLES))
    assert heat[0].zmin == 0.0 and heat[0].zmax == 1.0
    z = np.array(heat[0].z, dtype=float)
    assert np.isnan(z[:, 0]).all() and np.allclose(z[:, 1:], 0.64)
    lines = [t for t in fig.data if t.type == "scatter"]
    assert {t.name for t in lines} == {"pooled |s|² / mean |d_r|²", "mean over roles of cos²"}
    assert fig.layout.xaxis.type == "category"
    with pytest.raises(ValueError, match="position 5"):
        plotting.shared_share_figure(shared_share(rd), position=5)
    maps = plotting.decomposition_cosine_maps(rd, layer=2, position=-1)
    raw, centred = (np.array(t.z, dtype=float) for t in maps.data if t.type == "heatmap")
    off = ~np.eye(len(ROLES), dtype=bool)
    # raw: cos(c + u_i, c + u_j) = 0.64 - 0.36 / 3; specific parts: cos(u_i, u_j) = -1 / 3
    np.testing.assert_allclose(raw[off], 0.64 - 0.36 / 3, atol=1e-6)
    np.testing.assert_allclose(centred[off], -1 / 3, atol=1e-6)
    np.testing.assert_allclose(np.diag(centred), 1.0, atol=1e-6)
