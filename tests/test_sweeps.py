import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
import torch

import roleprobe as rp
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.selection import select
from roleprobe.experiments.sweeps import SweepConfig, merge, parse_shard, random_control, sweep
from roleprobe.model.tiny import TinyConfig

ROLES = ["lawyer", "nurse"]


def _model():
    return rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(n_layers=4)), rp.tiny_tokenizer(), "tiny-4", device="cpu"
    )


@pytest.fixture(scope="module")
def model():
    return _model()


def _bench():
    items = rp.load_benchmark("builtin").items
    law = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["law"])].head(5)
    med = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["medicine"])].head(5)
    return MultipleChoice(pd.concat([law, med]), "builtin-law-med")


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def directions(model):
    return rp.compute_directions(model, roles=[*ROLES, "mathematician"], progress=False)


KW = {"layers": [1, 2, 3], "positions": [-2, -1], "batch_size": 3, "progress": False}


@pytest.fixture(scope="module")
def full(model, directions, bench, tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep")
    return sweep(model, directions, bench, roles=ROLES, store=store, **KW)


def test_the_grid_is_complete(full, bench):
    t = full.table
    # 2 roles x 5 questions x 2 positions x 3 layers x 3 sources x (2 alphas + ablation)
    assert len(t) == 2 * 5 * 2 * 3 * 3 * 3
    assert set(t["source"]) == {"role", "random", "shuffled"}
    assert len(full.baseline) == 10 and full.complete
    shuffled = t[t["source"] == "shuffled"]
    assert (shuffled["donor"] != shuffled["role"]).all()
    assert set(t.loc[t["role"] == "lawyer", "domain"]) == {"law"}
    scores = full.scores()
    assert len(scores) == 2 * 2 * 3 * 3 * 3
    assert (scores["n"] == 5).all()
    np.testing.assert_allclose(
        scores["delta_accuracy"], scores["accuracy"] - scores["base_accuracy"]
    )


def test_prefix_reuse_equals_full_hooked_runs(model, directions, full, bench):
    law = bench.subset(domain="law")
    d = directions.vector("lawyer", 2, -1)
    t = full.table
    for condition, spec, alpha in [
        ("addition", rp.Addition(d, 2, 3.0), 3.0),
        ("ablation", rp.Ablation(d), None),
    ]:
        ref = rp.evaluate(model, law, spec, progress=False)
        rows = t[
            (t["role"] == "lawyer")
            & (t["source"] == "role")
            & (t["layer"] == 2)
            & (t["position"] == -1)
            & (t["condition"] == condition)
        ]
        if alpha is not None:
            rows = rows[rows["alpha"] == alpha]
        rows = rows.set_index("id").loc[ref["id"]]
        assert (rows["pred"].to_numpy() == ref["pred"].to_numpy()).all()
        np.testing.assert_allclose(rows["logprob_correct"], ref["logprob_correct"], atol=1e-4)
    base = rp.evaluate(model, law, progress=False)
    b = full.baseline.set_index("id").loc[base["id"]]
    np.testing.assert_allclose(b["logprob_correct"], base["logprob_correct"], atol=1e-5)


def test_stacking_does_not_change_results(model, directions, bench, full):
    one = sweep(
        model, directions, bench, roles=ROLES, stack=1, controls=False, ablation=False, **KW
    )
    mine = full.table[(full.table["source"] == "role") & (full.table["condition"] == "addition")]
    key = ["role", "position", "layer", "alpha", "id"]
    a = one.table.sort_values(key).reset_index(drop=True)
    b = mine.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(a["logprob_correct"], b["logprob_correct"], atol=1e-5)


def test_controls_are_seeded_and_norm_matched():
    d = torch.randn(16) * 5
    r1 = random_control(d, "lawyer", -1, 3, seed=0)
    assert torch.equal(r1, random_control(d, "lawyer", -1, 3, seed=0))
    assert not torch.equal(r1, random_control(d, "lawyer", -1, 4, seed=0))
    assert torch.isclose(r1.norm(), d.norm(), rtol=1e-5)


def test_shards_union_equals_the_unsharded_run(model, directions, bench, full, tmp_path):
    for i in range(3):
        part = sweep(model, directions, bench, roles=ROLES, store=tmp_path, shard=f"{i}/3", **KW)
        assert part.complete == (i == 2)
    merged = merge(tmp_path)
    pd.testing.assert_frame_equal(merged.table, full.table)
    pd.testing.assert_frame_equal(merged.baseline, full.baseline)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["sweep"]["system"] == directions.system
    assert manifest["config"]["sweep"]["ablation_at"] == "stream"
    assert manifest["chat_format"] == directions.chat_format  # questions formatted as prompts


def test_merge_lists_missing_parts(model, directions, bench, tmp_path):
    sweep(model, directions, bench, roles=["lawyer"], store=tmp_path, shard="0/2", **KW)
    with pytest.raises(ValueError, match=r"incomplete: \d+ of \d+ parts missing \(.*layer"):
        merge(tmp_path)
    with pytest.raises(ValueError, match="not a sweep store"):
        merge(tmp_path / "parts")


@pytest.mark.parametrize("spec", ["3/3", "a/b", "-1/2", "1/0", "1-2", "1/2/3", (2, 1)])
def test_bad_shard_specs(spec):
    with pytest.raises(ValueError, match="bad shard"):
        parse_shard(spec)


def test_good_shard_specs():
    assert parse_shard("0/4") == (0, 4) and parse_shard((3, 4)) == (3, 4)
    assert parse_shard(None) == (0, 1)


def test_config_validation_and_round_trip():
    cfg = SweepConfig(roles=("lawyer",), layers=(1,), positions=(-1,))
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="no roles"):
        SweepConfig(roles=(), layers=(1,), positions=(-1,))
    with pytest.raises(ValueError, match="unknown scope"):
        SweepConfig(roles=("a",), layers=(1,), positions=(-1,), scope="world")
    with pytest.raises(ValueError, match="nothing to sweep"):
        SweepConfig(roles=("a",), layers=(1,), positions=(-1,), alphas=(), ablation=False)
    assert cfg.tie_rule == "fractional" and cfg.to_dict()["tie_rule"] == "fractional"
    with pytest.raises(ValueError, match="unknown tie_rule"):
        SweepConfig(roles=("a",), layers=(1,), positions=(-1,), tie_rule="coin")
    # a manifest written before ties were counted scored them as the earliest letter
    old = {k: v for k, v in cfg.to_dict().items() if k != "tie_rule"}
    assert SweepConfig.from_dict(old).tie_rule == "first"


def test_bad_sweep_inputs_are_named(model, directions, bench, tmp_path):
    with pytest.raises(ValueError, match="chef"):
        sweep(model, directions, bench, roles=["chef"], **KW)
    with pytest.raises(ValueError, match="out of range"):
        sweep(model, directions, bench, roles=ROLES, **{**KW, "layers": [9]})
    with pytest.raises(ValueError, match="no math questions"):
        sweep(model, directions, bench, roles=["mathematician"], **KW)
    sweep(model, directions, bench, roles=["lawyer"], store=tmp_path, **KW)
    with pytest.raises(ValueError, match="different configuration"):
        sweep(model, directions, bench, roles=["nurse"], store=tmp_path, **KW)
    with pytest.raises(ValueError, match="resume=True"):
        sweep(model, directions, bench, roles=["lawyer"], store=tmp_path, resume=False, **KW)


def test_layer_zero_directions_are_skipped(model, directions, bench):
    r = sweep(model, directions, bench, roles=["lawyer"], **{**KW, "layers": [0, 1]})
    assert set(r.table["layer"]) == {1}


def test_select_by_both_rules(full):
    paper = select(full, rule="paper", n_perm=500, n_boot=200)
    held = select(full, rule="held-out", n_perm=500, n_boot=200)
    for picks in (paper, held):
        assert len(picks) == 2 * 3 * 2  # roles x sources x alphas
        assert (picks["layer"] < int(0.8 * 4)).all()
        assert picks["mcnemar_p_adj"].ge(picks["mcnemar_p"] - 1e-12).all()
    assert (paper["report_n"] == 5).all() and (paper["select_n"] == 5).all()
    assert (held["report_n"] + held["select_n"] == 5).all()
    with pytest.raises(ValueError, match="unknown rule"):
        select(full, rule="best")


SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_sweeps import ROLES, KW, _bench, _model
    import roleprobe as rp
    from roleprobe.experiments.sweeps import sweep
    model = _model()
    rd = rp.compute_directions(model, roles=[*ROLES, "mathematician"], progress=False)
    sweep(model, rd, _bench(), roles=ROLES, store={store!r}, **KW)
    """
)


def test_resume_after_sigkill_gives_the_same_table(full, tmp_path):
    store = tmp_path / "killed"
    code = SCRIPT.format(tests=os.path.dirname(__file__), store=str(store))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            parts = list((store / "parts").glob("layer*.parquet")) if store.exists() else []
            if len(parts) >= 2:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = {p.stem for p in (store / "parts").glob("*.parquet")}
    assert 2 <= len(done) < 2 + 2 * 3 * 2  # killed part-way
    with pytest.raises(ValueError, match="incomplete"):
        merge(store)
    model = _model()
    rd = rp.compute_directions(model, roles=[*ROLES, "mathematician"], progress=False)
    resumed = sweep(model, rd, _bench(), roles=ROLES, store=store, **KW)
    pd.testing.assert_frame_equal(resumed.table, full.table)


def test_apply_picks_feeds_the_effect_table(model, directions, bench, full):
    picks = select(full, rule="paper", n_perm=200, n_boot=100)
    runs = rp.apply_picks(model, directions, bench, picks, progress=False)
    # 2 roles x (2 alphas + 1 ablation) x 10 questions
    assert len(runs) == 2 * 3 * 10
    lawyer = picks[(picks["role"] == "lawyer") & (picks["source"] == "role")]
    row = lawyer[lawyer["alpha"] == 3.0].iloc[0]
    d = directions.vector("lawyer", int(row["layer"]), int(row["position"]))
    ref = rp.evaluate(model, bench, rp.Addition(d, int(row["layer"]), 3.0), progress=False)
    got = runs[(runs["role"] == "lawyer") & (runs["alpha"] == 3.0)]
    np.testing.assert_allclose(got["logprob_correct"], ref["logprob_correct"])
    base = rp.evaluate(model, bench, progress=False)
    effects = rp.effect_table(base, runs, n_boot=100, n_perm=200)
    assert set(effects["condition"]) == {"addition", "ablation"}
    assert len(effects) == 2 * 3 * 2  # roles x conditions x domains


def test_candidate_scores_state_the_tie_rule_and_count_ties():
    from roleprobe.experiments.sweeps import candidate_scores

    cell = {"role": "lawyer", "source": "role", "donor": "lawyer", "position": -1, "layer": 1}
    table = pd.DataFrame(
        {
            **{k: [v] * 3 for k, v in cell.items()},
            "condition": "addition",
            "alpha": 1.0,
            "id": ["q0", "q1", "q2"],
            "pred": ["A", "B", "A"],
            "correct": [0.5, 1.0, 0.0],
            "tied": [2, 1, 3],
            "tie_rule": "fractional",
            "logprob_correct": -1.0,
            "margin": 0.0,
        }
    )
    baseline = table[["id", "pred", "correct", "tied", "tie_rule", "logprob_correct"]].assign(
        group="law", correct=[1.0, 1.0, 0.0], tied=1
    )
    row = candidate_scores(table, baseline, "domain").iloc[0]
    assert row["accuracy"] == pytest.approx(0.5) and row["base_accuracy"] == pytest.approx(2 / 3)
    assert row["tie_rule"] == "fractional" and row["n_tied"] == 2
    old = candidate_scores(
        table.drop(columns=["tied", "tie_rule"]),
        baseline.drop(columns=["tied", "tie_rule"]),
        "domain",
    ).iloc[0]
    assert old["tie_rule"] == "first" and np.isnan(old["n_tied"])
    with pytest.raises(ValueError, match="mixes tie rules"):
        candidate_scores(table, baseline.assign(tie_rule="paper"), "domain")


class AddEverywhere:
    """A user's own intervention (no base class): plain torch at one layer's input."""

    def __init__(self, direction, layer, alpha):
        self.direction, self.layer, self.alpha = direction, layer, alpha

    def hooks(self, model, state):
        def add(act, hook):
            new = act + self.alpha * self.direction
            if state.attention_mask is None:
                return new
            return torch.where(state.attention_mask.bool()[..., None], new, act)

        return [(f"blocks.{self.layer}.hook_resid_pre", add)]


class NudgeMlp:
    """A user's own intervention at another hook point (runs in full passes)."""

    def __init__(self, direction, layer):
        self.direction, self.layer = direction, layer

    def hooks(self, model, state):
        return [(f"blocks.{self.layer}.hook_mlp_out", lambda act, hook: act + self.direction)]


def test_user_defined_conditions_run_in_the_sweep(model, directions, bench):
    extra = {"mine": lambda d, layer: AddEverywhere(d, layer, 3.0), "mlp": NudgeMlp}
    result = sweep(
        model,
        directions,
        bench,
        roles=["lawyer"],
        alphas=(3.0,),
        ablation=False,
        controls=False,
        conditions=extra,
        **KW,
    )
    t = result.table
    assert set(t["condition"]) == {"addition", "mine", "mlp"}
    assert result.config.conditions == ("mine", "mlp")
    key = ["position", "layer", "id"]
    ours = t[t["condition"] == "mine"].sort_values(key).reset_index(drop=True)
    builtin = t[t["condition"] == "addition"].sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(ours["logprob_correct"], builtin["logprob_correct"], atol=1e-6)
    assert ours["alpha"].isna().all()
    law = bench.subset(domain="law")
    d = directions.vector("lawyer", 2, -1)
    ref = rp.evaluate(model, law, NudgeMlp(d, 2), progress=False)
    rows = t[(t["condition"] == "mlp") & (t["layer"] == 2) & (t["position"] == -1)]
    rows = rows.set_index("id").loc[ref["id"]]
    np.testing.assert_allclose(rows["logprob_correct"], ref["logprob_correct"], atol=1e-5)
    assert "mine" in set(result.scores()["condition"])


def test_a_condition_that_is_no_intervention_is_refused_before_any_pass(model, directions, bench):
    calls = []

    def count(act, hook):
        calls.append(1)
        return act

    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count)]):
        with pytest.raises(TypeError, match=r"'oops'.*got tuple"):
            not_one = {"oops": lambda d, layer: (d, layer)}
            sweep(model, directions, bench, roles=["lawyer"], conditions=not_one, **KW)
        with pytest.raises(ValueError, match="condition names"):
            taken = {"addition": NudgeMlp}
            sweep(model, directions, bench, roles=["lawyer"], conditions=taken, **KW)
    assert calls == []


def test_alphas_in_units_of_the_residual_norm(model, directions, bench):
    kw = {**KW, "layers": [2], "positions": [-1]}
    result = sweep(
        model,
        directions,
        bench,
        roles=["lawyer"],
        alphas=(0.5,),
        ablation=False,
        controls=False,
        alpha_unit="norm",
        **kw,
    )
    d = directions.vector("lawyer", 2, -1)
    norm = float(rp.residual_norms(model)[2])
    law = bench.subset(domain="law")
    ref = rp.evaluate(model, law, rp.Addition(d, 2, 0.5, reference_norm=norm), progress=False)
    rows = result.table.set_index("id").loc[ref["id"]]
    np.testing.assert_allclose(rows["logprob_correct"], ref["logprob_correct"], atol=1e-5)


def test_new_config_fields_round_trip_and_old_manifests_still_match():
    cfg = SweepConfig(roles=("lawyer",), layers=(1,), positions=(-1,))
    assert "alpha_unit" not in cfg.to_dict() and "conditions" not in cfg.to_dict()
    custom = SweepConfig(
        roles=("lawyer",), layers=(1,), positions=(-1,), alpha_unit="norm", conditions=("x",)
    )
    assert SweepConfig.from_dict(custom.to_dict()) == custom
    with pytest.raises(ValueError, match="alpha_unit"):
        SweepConfig(roles=("lawyer",), layers=(1,), positions=(-1,), alpha_unit="sigma")


SPECIFIC_KW = {**KW, "layers": [2], "positions": [-1], "alphas": (3.0,)}


@pytest.fixture(scope="module")
def with_specific(model, directions, bench):
    return sweep(model, directions, bench, roles=ROLES, specific=True, **SPECIFIC_KW)


def test_specific_parts_are_swept_as_their_own_source_with_controls(
    model, directions, bench, with_specific
):
    t = with_specific.table
    assert set(t["source"]) == {
        "role",
        "random",
        "shuffled",
        "specific",
        "specific-random",
        "specific-shuffled",
    }
    assert with_specific.config.specific
    # 2 roles x 5 questions x 6 sources x (1 alpha + ablation)
    assert len(t) == 2 * 5 * 6 * 2
    raw = directions.vectors[:, directions.position_index(-1), directions.layer_index(2)]
    law = bench.subset(domain="law")
    lawyer = t[(t["role"] == "lawyer") & (t["condition"] == "addition")].set_index("id")
    expected = {
        "specific": raw[0] - raw.mean(dim=0),  # d_lawyer minus the mean over the 3 roles
        "role": raw[0],
    }
    shuffled = t[t["source"] == "specific-shuffled"]
    donors = dict(zip(shuffled["role"], shuffled["donor"], strict=True))
    plain = t[t["source"] == "shuffled"]
    assert donors == dict(zip(plain["role"], plain["donor"], strict=True))  # same derangement
    donor = directions.role_index(donors["lawyer"])
    expected["specific-shuffled"] = raw[donor] - raw.mean(dim=0)
    for source, vector in expected.items():
        ref = rp.evaluate(model, law, rp.Addition(vector, 2, 3.0), progress=False)
        rows = lawyer[lawyer["source"] == source].loc[ref["id"]]
        np.testing.assert_allclose(rows["logprob_correct"], ref["logprob_correct"], atol=1e-5)
    noise = random_control(expected["specific"], "specific:lawyer", -1, 2, seed=0)
    assert torch.isclose(noise.norm(), expected["specific"].norm(), rtol=1e-5)
    ref = rp.evaluate(model, law, rp.Addition(noise, 2, 3.0), progress=False)
    rows = lawyer[lawyer["source"] == "specific-random"].loc[ref["id"]]
    np.testing.assert_allclose(rows["logprob_correct"], ref["logprob_correct"], atol=1e-5)
    # the specific part's random control is not the raw one's direction rescaled
    raw_noise = random_control(raw[0], "lawyer", -1, 2, seed=0)
    assert abs(float(torch.nn.functional.cosine_similarity(noise, raw_noise, dim=0))) < 0.9


@pytest.fixture(scope="module")
def without_specific(model, directions, bench, tmp_path_factory):
    store = tmp_path_factory.mktemp("no-specific")
    return sweep(model, directions, bench, roles=ROLES, store=store, **SPECIFIC_KW)


def test_the_specific_option_leaves_the_role_rows_alone(with_specific, without_specific):
    off = without_specific
    key = ["role", "source", "donor", "condition", "alpha", "id"]
    on = with_specific.table[with_specific.table["source"].isin(["role", "random", "shuffled"])]
    a = on.sort_values(key).reset_index(drop=True)
    b = off.table.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b)
    pd.testing.assert_frame_equal(a.drop(columns=_SCORES), b.drop(columns=_SCORES))
    np.testing.assert_allclose(a["logprob_correct"], b["logprob_correct"], atol=1e-5)


_SCORES = [
    "pred",
    "correct",
    "tied",
    "margin",
    "logprob_correct",
    *[f"logprob_{x}" for x in "ABCD"],
]


def test_specific_sources_go_through_selection_and_picks(model, directions, bench, with_specific):
    picks = select(with_specific, rule="paper", n_perm=200, n_boot=100)
    assert len(picks) == 2 * 6  # roles x sources (one alpha)
    assert set(picks["source"]) >= {"specific", "specific-random", "specific-shuffled"}
    runs = rp.apply_picks(
        model, directions, bench, picks, source="specific", ablation=False, progress=False
    )
    assert set(runs["source"]) == {"specific"}
    raw = directions.vectors[:, directions.position_index(-1), directions.layer_index(2)]
    ref = rp.evaluate(
        model, bench, rp.Addition(raw[1] - raw.mean(dim=0), 2, 3.0), progress=False
    )  # nurse
    got = runs[runs["role"] == "nurse"].set_index("id").loc[ref["id"]]
    np.testing.assert_allclose(got["logprob_correct"], ref["logprob_correct"], atol=1e-6)
    shuffled = rp.apply_picks(
        model,
        directions,
        bench,
        picks,
        source="specific-shuffled",
        ablation=False,
        progress=False,
    )
    assert len(shuffled) == len(runs)


def test_specific_off_keeps_old_stores_readable(model, directions, bench, without_specific):
    full = without_specific
    manifest = json.loads((full.store / "manifest.json").read_text())
    assert "specific" not in manifest["config"]["sweep"]  # as stores written before it
    assert SweepConfig.from_dict(manifest["config"]["sweep"]).specific is False
    merged = merge(full.store)
    pd.testing.assert_frame_equal(merged.table, full.table)
    again = sweep(model, directions, bench, roles=ROLES, store=full.store, **SPECIFIC_KW)
    pd.testing.assert_frame_equal(again.table, full.table)  # resumed: nothing recomputed
    with pytest.raises(rp.StoreMismatchError, match="sweep"):
        sweep(model, directions, bench, roles=ROLES, store=full.store, specific=True, **SPECIFIC_KW)
    on = SweepConfig(roles=("lawyer",), layers=(1,), positions=(-1,), specific=True)
    assert on.to_dict()["specific"] is True and SweepConfig.from_dict(on.to_dict()) == on


def test_specific_needs_two_roles(model, bench):
    one = rp.compute_directions(model, roles=["lawyer"], layers=[2], progress=False)
    with pytest.raises(ValueError, match=r"at least 2 roles.*\['lawyer'\]"):
        sweep(model, one, bench, roles=["lawyer"], specific=True, **SPECIFIC_KW)


def _forwards(model):
    """Count the model's forward calls (a pass from the prefix counts as one)."""
    calls = []
    original = model.forward

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0] if args else None)
        return original(*args, **kwargs)

    return calls, counted


def test_stacked_ablations_equal_one_direction_per_pass(model, directions, bench, monkeypatch):
    """``stack`` ablations share one full pass (a block of rows each): the same scores as
    one direction per pass, in a quarter of the passes."""
    kw = {**KW, "alphas": (), "layers": [2, 3]}
    tables, passes = {}, {}
    for stack in (1, 4):
        calls, counted = _forwards(model)
        monkeypatch.setattr(model, "forward", counted)
        tables[stack] = sweep(
            model, directions, bench, roles=ROLES, stack=stack, stack_ablations=True, **kw
        ).table
        monkeypatch.undo()
        passes[stack] = sum(rows != 1 for rows in calls)  # not the 1-row output-head probe
    key = ["role", "source", "position", "layer", "id"]
    a, b = (tables[s].sort_values(key).reset_index(drop=True) for s in (1, 4))
    assert len(a) == len(b) == 2 * 5 * 2 * 2 * 3
    assert (a["pred"] == b["pred"]).all()
    np.testing.assert_allclose(a["logprob_correct"], b["logprob_correct"], atol=1e-5)
    # per (layer, batch) item: 2 positions x 3 sources = 6 ablations for each group's role
    # (1 role per group): 6 passes at stack 1, 2 at stack 4; plus one baseline pass per batch
    n_batches = 4  # 5 law + 5 medicine questions in batches of 3
    assert passes[1] == n_batches * (1 + 2 * 6)
    assert passes[4] == n_batches * (1 + 2 * 2)


def test_prefix_chunks_equal_one_chunk(model, directions, bench, full, caplog):
    """A prefix budget of one layer per chunk (each chunk's pass starting from the one
    below) gives the one-chunk results."""
    import logging

    with caplog.at_level(logging.DEBUG, logger="roleprobe.experiments.sweeps"):
        chunked = sweep(model, directions, bench, roles=ROLES, prefix_memory=1, **KW)
    assert "in 3 chunks" in caplog.text
    key = ["role", "source", "position", "layer", "condition", "alpha", "id"]
    a = chunked.table.sort_values(key).reset_index(drop=True)
    b = full.table.sort_values(key).reset_index(drop=True)
    assert (a["pred"] == b["pred"]).all()
    np.testing.assert_allclose(a["logprob_correct"], b["logprob_correct"], atol=1e-5)
    np.testing.assert_allclose(
        chunked.baseline.sort_values("id")["logprob_correct"],
        full.baseline.sort_values("id")["logprob_correct"],
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="prefix_memory must be a positive number of bytes"):
        sweep(model, directions, bench, roles=ROLES, prefix_memory=0, **KW)


def test_no_sweep_hook_reads_a_value_back_to_the_host(model, directions, bench):
    """Prefix capture, stacked additions and stacked ablations: zero host read-backs in any
    hook call (they would each be a GPU synchronisation)."""
    from _syncs import counting_syncs

    with counting_syncs(model) as count:
        sweep(model, directions, bench, roles=ROLES, **KW)
    assert count.hook_calls > 100
    assert count.syncs == {}, dict(count.syncs)


def test_variants_read_only_their_layer(model, directions, bench, monkeypatch):
    """Planning and building a work item's variants never materialise the whole direction
    tensor; the variants are those of the per-candidate construction."""
    from roleprobe.experiments.sweeps import SOURCES, _derangement, _Plan, _variants
    from roleprobe.vectors.directions import RoleDirections

    cfg = SweepConfig(roles=tuple(ROLES), layers=(1, 2, 3), positions=(-2, -1))
    donors = _derangement(directions.roles, 0)
    expected = {}
    for role in ROLES:
        for pos in cfg.positions:
            d = directions.vector(role, 2, pos)
            expected[(role, "role", pos)] = d
            expected[(role, "random", pos)] = random_control(d, role, pos, 2, 0)
            expected[(role, "shuffled", pos)] = directions.vector(donors[role], 2, pos)

    def refuse(self):
        raise AssertionError("RoleDirections.vectors was materialised")

    fresh = RoleDirections(**{f: getattr(directions, f) for f in directions.__dataclass_fields__})
    monkeypatch.setattr(RoleDirections, "vectors", property(refuse))
    plan = _Plan(model, fresh, bench, cfg)
    got = _variants(fresh, ROLES, 2, cfg, donors, None, plan.null, "cpu")
    assert {(v.role, v.source, v.position) for v in got} == set(expected)
    assert {v.source for v in got} == set(SOURCES)
    for v in got:
        assert torch.equal(v.vector, expected[(v.role, v.source, v.position)])
    base = got[0].vector
    assert all(
        v.vector.untyped_storage().data_ptr() == base.untyped_storage().data_ptr() for v in got
    )
