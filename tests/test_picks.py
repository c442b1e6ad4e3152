import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.evaluation import subject_domain
from roleprobe.experiments.picks import apply_picks, position_label


@pytest.fixture(scope="module")
def directions(tiny_model):
    return rp.compute_directions(tiny_model, roles=["lawyer", "nurse"], layers=[1], progress=False)


@pytest.fixture(scope="module")
def bench():
    """Three questions from each of four domains (law and medicine are the roles' own)."""
    items = rp.load_benchmark("builtin").items
    domain = items["subject"].map(subject_domain)
    keep = domain.isin(["law", "medicine", "math", "econ"]) & (items.groupby(domain).cumcount() < 3)
    return MultipleChoice(items[keep], "builtin-small")


def _picks(alphas=(1.0, 3.0)):
    return pd.DataFrame(
        [
            {"role": role, "source": source, "donor": "", "alpha": a, "position": -1, "layer": 1}
            for role in ("lawyer", "nurse")
            for source in ("role", "random")
            for a in alphas
        ]
    )


def _own_ids(bench, domain):
    items = bench.items
    return items.loc[items["subject"].map(subject_domain) == domain, "id"].tolist()


def test_every_role_on_every_domain_with_own_domain_held_out(tiny_model, directions, bench):
    heldout = {"lawyer": _own_ids(bench, "law")[:1], "nurse": _own_ids(bench, "medicine")[1:]}
    runs = apply_picks(
        tiny_model,
        directions,
        bench,
        _picks(),
        heldout_ids=heldout,
        alphas=[3.0],
        batch_size=16,
        progress=False,
    )
    cells = runs.groupby(["role", "condition", "alpha"], dropna=False)["domain"].agg(set)
    assert len(cells) == 2 * 2  # an addition and an ablation per role
    assert all(d == {"law", "medicine", "math", "econ"} for d in cells)  # every role × domain
    for role, own in (("lawyer", "law"), ("nurse", "medicine")):
        mine = runs[(runs["role"] == role) & (runs["condition"] == "addition")]
        assert set(mine.loc[mine["domain"] == own, "id"]) == set(heldout[role])
        assert set(mine.loc[mine["own_domain"], "id"]) == set(heldout[role])
        assert set(mine.loc[mine["own_domain"], "part"]) == {"heldout"}
        assert set(mine.loc[~mine["own_domain"], "part"]) == {"other"}
        assert (mine["domain"] != own).sum() == 9  # other domains in full
    ablation = runs[runs["condition"] == "ablation"]
    assert ablation["alpha"].isna().all() and len(ablation) == (1 + 9) + (2 + 9)
    effects = rp.effect_table(
        rp.evaluate(tiny_model, bench, progress=False), runs, n_boot=50, n_perm=100
    )
    assert len(effects.query("in_domain")) == 2 * 2 and len(effects) == 2 * 2 * 4


def test_ablation_false_gives_no_ablation_rows(tiny_model, directions, bench):
    runs = apply_picks(
        tiny_model, directions, bench, _picks((3.0,)), ablation=False, progress=False
    )
    assert set(runs["condition"]) == {"addition"} and len(runs) == 2 * 12
    own = runs[runs["own_domain"]]  # no held-out ids: the questions the pick was chosen on
    assert set(own["part"]) == {"selected"} and len(own) == 2 * 3


def test_the_picked_direction_is_what_is_applied(tiny_model, directions, bench):
    runs = apply_picks(
        tiny_model, directions, bench, _picks((3.0,)), ablation=False, progress=False
    )
    vector = directions.vector("nurse", 1, -1)
    direct = rp.evaluate(tiny_model, bench, rp.Addition(vector, 1, 3.0), progress=False)
    mine = runs[runs["role"] == "nurse"].set_index("id")["logprob_correct"]
    assert mine.loc[direct["id"]].tolist() == pytest.approx(direct["logprob_correct"].tolist())


def test_errors_name_the_problem(tiny_model, directions, bench):
    with pytest.raises(ValueError, match=r"heldout_ids lacks roles \['nurse'\]"):
        apply_picks(tiny_model, directions, bench, _picks(), heldout_ids={"lawyer": ["x"]})
    with pytest.raises(ValueError, match="not among the role's own questions"):
        apply_picks(
            tiny_model,
            directions,
            bench,
            _picks(),
            heldout_ids={"lawyer": _own_ids(bench, "math"), "nurse": []},
        )
    with pytest.raises(ValueError, match=r"no picks for alpha \[2.0\]"):
        apply_picks(tiny_model, directions, bench, _picks(), alphas=[2.0])
    with pytest.raises(ValueError, match="no picks with source 'shuffled'"):
        apply_picks(tiny_model, directions, bench, _picks(), source="shuffled")
    with pytest.raises(ValueError, match="unknown ablation placement at='middle'"):
        apply_picks(tiny_model, directions, bench, _picks(), ablation_at="middle")
    with pytest.raises(ValueError, match="unknown scope"):
        apply_picks(tiny_model, directions, bench, _picks(), scope="role")


def test_position_labels_from_tables():
    assert position_label(-1.0) == -1 and position_label("-2") == -2
    assert position_label("mean") == "mean" and position_label(3) == 3
