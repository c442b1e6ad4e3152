import pandas as pd
import pytest
import torch

import roleprobe as rp
from roleprobe.data.prompts import RolePrompts
from roleprobe.results.tables import top_writers
from roleprobe.vectors.components import component_attribution, has_post_norms


@pytest.fixture(scope="module")
def small_prompts() -> RolePrompts:
    full = rp.builtin_prompts(["lawyer", "nurse"])
    roles = {r: p.sample(4, seed=0) for r, p in full.roles.items()}
    return RolePrompts(roles, full.base.sample(5, seed=0), "builtin-sample")


@pytest.fixture(scope="module")
def tiny64():
    """The tiny model in float64: the decomposition is then exact to rounding (~1e-15)."""
    config = rp.TinyConfig(n_layers=3)
    return rp.wrap_hf_model(
        rp.tiny_hf_model(config), rp.tiny_tokenizer(), "tiny-3l", "cpu", "float64"
    )


def test_terms_sum_exactly_to_the_directions_projection(tiny64, small_prompts):
    # batch_size=1: in float64 a padded batch turns pad positions into NaN from block 1 on
    # (fully masked attention rows), which then leak into real positions (compute_directions too)
    df = component_attribution(tiny64, small_prompts, layer=2, batch_size=1)
    rd = rp.compute_directions(
        tiny64, source=small_prompts, layers=[2], batch_size=1, progress=False
    )
    assert not has_post_norms(tiny64) and df.attrs["per_head"]
    # embed + 2 layers x (4 heads + MLP), per role and position
    assert len(df) == 2 * len(rd.positions) * (1 + 2 * 5)
    sums = df.groupby(["role", "position"])["value"].sum()
    for r, role in enumerate(rd.roles):
        for p, pos in enumerate(rd.positions):
            norm = float(rd.norms()[r, p, 0])
            assert norm > 1e-3
            assert sums[(role, pos)] == pytest.approx(norm, abs=1e-6, rel=0)
            assert df.attrs["norms"][(role, pos)] == pytest.approx(norm, abs=1e-10)
            assert df.attrs["totals"][(role, pos)] == pytest.approx(norm, abs=1e-10)
    assert df.attrs["residual"] < 1e-9
    # every prompt has the same template tokens at post-instruction positions
    assert (df.loc[df["kind"] == "embed", "value"].abs() < 1e-12).all()
    shares = df.groupby(["role", "position"])["share"].sum()
    assert shares.to_numpy() == pytest.approx(1.0, abs=1e-9)


def test_streaming_does_not_depend_on_batching(tiny64, small_prompts):
    one = component_attribution(tiny64, small_prompts, layer=1, positions="last", batch_size=1)
    many = component_attribution(tiny64, small_prompts, layer=1, positions="last", batch_size=16)
    assert one["value"].to_numpy() == pytest.approx(many["value"].to_numpy(), abs=1e-10)


def test_instruction_mean_gives_the_embedding_weight(tiny64, small_prompts):
    df = component_attribution(tiny64, small_prompts, layer=1, positions="instruction_mean")
    assert (df.loc[df["kind"] == "embed", "value"].abs() > 1e-6).all()
    sums = df.groupby(["role", "position"])["value"].sum()
    for key, norm in df.attrs["norms"].items():
        assert sums[key] == pytest.approx(norm, abs=1e-6)


def _planted(head: int, vector: torch.Tensor):
    """A tiny model whose only writer below layer 1 is head ``head`` of layer 0, along
    ``vector``."""
    config = rp.TinyConfig(n_layers=2)
    hf = rp.tiny_hf_model(config)
    layer = hf.model.layers[0]
    d_head = config.d_model // config.n_heads
    u = torch.randn(d_head, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer.mlp.down_proj.weight.zero_()
        layer.self_attn.o_proj.weight.zero_()
        layer.self_attn.o_proj.weight[:, head * d_head : (head + 1) * d_head] = torch.outer(
            vector, u
        )
    return rp.wrap_hf_model(hf, rp.tiny_tokenizer(), "tiny-planted", "cpu", "float64")


@pytest.mark.parametrize("head", [1, 3])
def test_a_planted_writer_carries_the_whole_projection(small_prompts, head):
    vector = torch.randn(64, generator=torch.Generator().manual_seed(2))
    model = _planted(head, vector)
    df = component_attribution(model, small_prompts, layer=1, positions="last")
    rd = rp.compute_directions(
        model, source=small_prompts, layers=[1], positions="last", progress=False
    )
    d = rd.role_means[0, 0, 0] - rd.base_mean[0, 0]
    assert abs(float(torch.nn.functional.cosine_similarity(d, vector.double(), dim=0))) > 0.999
    for role in ("lawyer", "nurse"):
        rows = df[df["role"] == role].set_index("component")["value"]
        norm = df.attrs["norms"][(role, -1)]
        assert rows[f"L0H{head}"] == pytest.approx(norm, rel=1e-9)
        assert rows.drop(f"L0H{head}").abs().max() < 1e-9
        top = top_writers(df[df["role"] == role], k=1)
        assert top["component"].tolist() == [f"L0H{head}"]


def test_directions_argument_sets_the_unit_vector(tiny64, small_prompts):
    full = rp.builtin_prompts(["lawyer", "nurse"])
    train = RolePrompts(
        {r: p.sample(8, seed=1) for r, p in full.roles.items()}, full.base.sample(8, 1)
    )
    rd = rp.compute_directions(tiny64, source=train, layers=[1], positions="last", progress=False)
    df = component_attribution(
        tiny64, small_prompts, layer=1, positions="last", directions=rd, batch_size=8
    )
    own = component_attribution(tiny64, small_prompts, layer=1, positions="last", batch_size=8)
    for role in ("lawyer", "nurse"):
        total = df.attrs["totals"][(role, -1)]
        assert df[df["role"] == role]["value"].sum() == pytest.approx(total, abs=1e-9)
        assert total < own.attrs["norms"][(role, -1)]  # a projection of d on another unit vector
    with pytest.raises(ValueError, match="layer 2 is not in these directions"):
        component_attribution(tiny64, small_prompts, layer=2, positions="last", directions=rd)


def test_post_norm_models_get_block_terms_and_refuse_heads(small_prompts):
    model = rp.load_model("tiny-random-gemma2", device="cpu", dtype="float64")
    assert has_post_norms(model)
    one = small_prompts.subset(["lawyer"])
    tiny = RolePrompts({"lawyer": one.roles["lawyer"].sample(3, 0)}, one.base.sample(3, 0))
    with pytest.raises(NotImplementedError, match="per_head=False"):
        component_attribution(model, tiny, layer=1, positions="last", per_head=True)
    df = component_attribution(model, tiny, layer=1, positions="last")
    assert df["component"].tolist() == ["embed", "L0 attn", "L0 MLP"]
    assert df["value"].sum() == pytest.approx(df.attrs["norms"][("lawyer", -1)], rel=1e-9)


def test_bad_arguments(tiny64, small_prompts):
    with pytest.raises(ValueError, match="layer 0 is out of range"):
        component_attribution(tiny64, small_prompts, layer=0)
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        component_attribution(tiny64, small_prompts, layer=3)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_writers(pd.DataFrame(), k=0)
    with pytest.raises(ValueError, match="not a component_attribution table"):
        top_writers(pd.DataFrame({"role": []}))


def test_top_writers_rank_by_magnitude():
    df = pd.DataFrame(
        {
            "role": ["a"] * 3 + ["b"] * 3,
            "domain": [""] * 6,
            "position": [-1] * 6,
            "component": ["embed", "L0H0", "L0 MLP"] * 2,
            "kind": ["embed", "head", "mlp"] * 2,
            "layer": [None, 0, 0] * 2,
            "head": [None, 0, None] * 2,
            "value": [0.1, -2.0, 1.0, 3.0, 0.5, -0.2],
            "share": [0.0] * 6,
        }
    )
    top = top_writers(df, k=2)
    assert top["component"].tolist() == ["L0H0", "L0 MLP", "embed", "L0H0"]
    assert top["rank"].tolist() == [1, 2, 1, 2]


def test_figures_build_from_the_table():
    from roleprobe.results import plotting

    rows = [("embed", "embed", None, None, 0.0)]
    rows += [(f"L{li}H{h}", "head", li, h, 0.1 * (h + 1)) for li in range(2) for h in range(3)]
    rows += [(f"L{li} MLP", "mlp", li, None, -0.5) for li in range(2)]
    df = pd.DataFrame(
        [
            {
                "role": role,
                "domain": "",
                "position": -1,
                "component": c,
                "kind": k,
                "layer": li,
                "head": h,
                "value": v,
                "share": v,
            }
            for role in ("lawyer", "nurse")
            for c, k, li, h, v in rows
        ]
    ).astype({"layer": "Int64", "head": "Int64"})
    fig = plotting.attribution_heatmap(df, "lawyer")
    heat = fig.data[0]
    assert list(heat.x) == ["H0", "H1", "H2", "MLP"] and list(heat.y) == ["L0", "L1"]
    assert heat.z[1][2] == pytest.approx(0.3) and heat.z[0][3] == pytest.approx(-0.5)
    top = plotting.top_writers_figure(df, k=2)
    assert list(top.data[0].y) == ["lawyer", "nurse"] and len(top.data[0].x) >= 2
    assert "at layer ?" in top.layout.title.text  # a table read back from CSV has no attrs
    picks = df.assign(direction_layer=[16 if r == "lawyer" else 8 for r in df["role"]])
    title = plotting.top_writers_figure(picks, k=2).layout.title.text
    assert "each role's layer (lawyer 16, nurse 8)" in title
    same = df.assign(direction_layer=12)
    assert "at layer 12, position" in plotting.top_writers_figure(same, k=2).layout.title.text
    with pytest.raises(ValueError, match="role 'chef' is not in the table"):
        plotting.attribution_heatmap(df, "chef")
