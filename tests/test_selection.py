import math

import numpy as np
import pandas as pd
import pytest

import roleprobe as rp
from reference import authors_float32_mean, authors_pick
from roleprobe.experiments import picks as picks_module
from roleprobe.experiments.evaluation import subject_domain
from roleprobe.experiments.picks import apply_picks
from roleprobe.experiments.selection import (
    _candidate_table,
    _with_zero_candidates,
    float32_mean,
    paper_rounded_rule,
    paper_rule,
    select,
    split_ids,
)


def cands(rows):
    return pd.DataFrame(rows, columns=["position", "layer", "add_accuracy", "abl_accuracy"])


def test_paper_rule_takes_the_best_addition_whose_ablation_hurts():
    # the best (layer 4) fails its ablation; of the two 0.50s the one at layer 3 fails too,
    # so the first in order that passes is (-2, 1)
    c2 = cands([(-1, 2, 0.40, 0.30), (-1, 3, 0.50, 0.35), (-2, 1, 0.50, 0.20), (-1, 4, 0.6, 0.3)])
    pick = paper_rule(c2, baseline=0.30, n_layers=10)
    assert (pick.position, pick.layer, pick.passed) == (-2, 1, True)


def test_paper_rounded_ties_go_to_the_earliest_layer_then_position():
    c = cands([(-1, 5, 0.5, 0.1), (-1, 2, 0.5, 0.1), (-3, 2, 0.5, 0.1)])
    pick = paper_rounded_rule(c, baseline=0.3, n_layers=10)
    assert (pick.position, pick.layer) == (-3, 2)
    c = cands([(-1, 3, 0.5, 0.1), (-2, 5, 0.5, 0.1)])
    assert paper_rounded_rule(c, baseline=0.3, n_layers=10).layer == 3


def test_no_ablation_below_baseline_falls_back_to_the_best_addition():
    c = cands([(-1, 1, 0.40, 0.35), (-1, 2, 0.45, 0.31)])
    pick = paper_rule(c, baseline=0.30, n_layers=10)
    assert (pick.layer, pick.passed) == (2, False)
    assert "no ablation" in pick.reason


def test_all_below_baseline_returns_the_best_and_says_so():
    c = cands([(-1, 1, 0.10, 0.05), (-1, 2, 0.20, 0.05)])
    for rule in (paper_rule, paper_rounded_rule):
        pick = rule(c, baseline=0.30, n_layers=10)
        assert (pick.layer, pick.passed) == (2, False)
        assert "below" in pick.reason and "baseline" in pick.reason
    assert "no zero candidate to fall back on" in paper_rule(c, 0.30, 10).reason


def test_late_layers_are_dropped_and_the_rounded_variant_rounds_the_baseline():
    c = cands([(-1, 8, 0.9, 0.0), (-1, 7, 0.25, 0.2)])
    # int(0.8 * 10) = 8 is dropped; baseline 0.254 rounds to 0.25, so 0.25 counts as >= base
    pick = paper_rounded_rule(c, baseline=0.254, n_layers=10)
    assert (pick.layer, pick.passed) == (7, True)
    # the authors first drop additions below the unrounded baseline: 0.25 < 0.254
    assert (paper_rule(c, baseline=0.254, n_layers=10).passed) is False
    for rule in (paper_rule, paper_rounded_rule):
        with pytest.raises(ValueError, match=">= 8"):
            rule(cands([(-1, 8, 0.9, 0.0)]), 0.3, 10)
        with pytest.raises(ValueError, match="no candidates"):
            rule(cands([]), 0.3, 10)


def test_paper_rule_drops_additions_below_the_unrounded_baseline():
    # issue 12: baseline 0.4449 rounds to 0.44; an addition of 0.444 is below the baseline
    one = cands([(-1, 1, 0.444, 0.30)])
    assert paper_rounded_rule(one, baseline=0.4449, n_layers=10).passed  # the old behaviour
    pick = paper_rule(one, baseline=0.4449, n_layers=10)
    assert not pick.passed
    # with a candidate above the baseline, that one is picked (its ablation does not hurt)
    two = cands([(-1, 1, 0.444, 0.30), (-1, 2, 0.45, 0.50)])
    assert paper_rounded_rule(two, baseline=0.4449, n_layers=10).layer == 1
    pick = paper_rule(two, baseline=0.4449, n_layers=10)
    assert (pick.layer, pick.passed) == (2, False)


def test_paper_rule_breaks_ties_position_major():
    # the authors visit positions -n_pos..-1, each over layers 0.., then stable-sort
    c = cands([(-1, 3, 0.5, 0.1), (-2, 5, 0.5, 0.1)])
    pick = paper_rule(c, baseline=0.3, n_layers=10)
    assert (pick.position, pick.layer, pick.passed) == (-2, 5, True)
    c = cands([(-1, 5, 0.5, 0.1), (-1, 2, 0.5, 0.1), (-3, 7, 0.5, 0.1), (-3, 2, 0.4, 0.1)])
    assert (paper_rule(c, 0.3, 10).position, paper_rule(c, 0.3, 10).layer) == (-3, 7)


def test_paper_rule_rounds_and_compares_as_the_authors():
    # numpy rounds 0.445 to 0.44 (Python's round gives 0.45): 0.445 >= 0.44 passes
    c = cands([(-1, 1, 0.445, 0.43)])
    assert paper_rule(c, baseline=0.445, n_layers=10).passed
    assert not paper_rounded_rule(c, baseline=0.445, n_layers=10).passed
    # float32(0.44) < 0.44: an addition equal to a 2-decimal baseline fails the rounded test,
    # so no candidate passes and the best (the earlier position) is the fallback
    c = cands([(-2, 1, 0.44, 0.50), (-1, 1, 0.44, 0.30)])
    pick = paper_rule(c, baseline=0.44, n_layers=10)
    assert (pick.position, pick.passed) == (-2, False)
    pick = paper_rounded_rule(c, baseline=0.44, n_layers=10)
    assert (pick.position, pick.passed) == (-1, True)


def _scores(rows):
    """Sweep scores: (condition, alpha, position, layer, accuracy)."""
    frame = pd.DataFrame(rows, columns=["condition", "alpha", "position", "layer", "accuracy"])
    return frame.assign(logprob_correct=-1.0)


def test_alpha_3_reads_ablation_values_from_the_alpha_1_list():
    nan = math.nan
    scores = _scores(
        [
            ("addition", 1.0, -1, 1, 0.20),  # below the baseline at α=1: not in the α=1 list
            ("addition", 1.0, -1, 2, 0.40),
            ("addition", 3.0, -1, 1, 0.60),
            ("addition", 3.0, -1, 2, 0.50),
            ("ablation", nan, -1, 1, 0.20),
            ("ablation", nan, -1, 2, 0.20),
        ]
    )
    table = _candidate_table(scores, 3.0)
    assert table.set_index("layer")["ref_add_accuracy"].to_dict() == {1: 0.20, 2: 0.40}
    pick = paper_rule(table, baseline=0.30, n_layers=10)
    assert (pick.layer, pick.passed) == (2, True)
    assert paper_rounded_rule(table, baseline=0.30, n_layers=10).layer == 1  # the old pick
    # at α=1 the list is the candidates' own
    assert paper_rule(_candidate_table(scores, 1.0), 0.30, 10).layer == 2
    # without α=1 in the sweep there is no list to restrict to
    no_ref = _candidate_table(scores[scores["alpha"] != 1.0], 3.0)
    assert "ref_add_accuracy" not in no_ref.columns
    assert paper_rule(no_ref, 0.30, 10).layer == 1


def test_without_ablation_the_best_addition_passes():
    c = cands([(-1, 1, 0.4, math.nan), (-1, 2, 0.5, math.nan)])
    pick = paper_rule(c, 0.3, 10)
    assert (pick.layer, pick.passed) == (2, True)


def test_split_ids_is_disjoint_stratified_and_seeded():
    items = pd.DataFrame({"id": range(20), "subject": ["a"] * 10 + ["b"] * 10})
    sel, rep = split_ids(items, 0.5, seed=1)
    assert sorted(sel + rep) == list(range(20)) and not set(sel) & set(rep)
    assert sum(i < 10 for i in sel) == 5
    assert split_ids(items, 0.5, seed=1) == (sel, rep)
    assert split_ids(items, 0.5, seed=2) != (sel, rep)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_ids(items, 1.0, 0)
    with pytest.raises(ValueError, match="too few"):
        split_ids(items.head(1), 0.5, 0)


# ---------------------------------------------------------------- issue 21: float32 means ----
PAPER_DOMAIN_SIZES = {200: 59, 241: 101, 247: 80, 287: 29, 492: 231, 590: 82}
"""Per test-file size of the paper's domains: counts whose GPU mean differs from the exact
mean rounded to float32."""


def test_float32_mean_is_the_gpu_mean_and_differs_from_the_rounded_exact_mean():
    for n, expected in PAPER_DOMAIN_SIZES.items():
        differ = 0
        for k in range(n + 1):
            gpu = float32_mean(k / n, n)
            assert gpu == authors_float32_mean(k, n), (k, n)
            differ += gpu != float32_mean(k / n, None)
            assert float32_mean(k / n, None) == float(np.float32(k / n))
        assert differ == expected, n
    # the comparison with a baseline rounded to 2 decimals flips for 30 counts at n = 200
    flips = set()
    for k in range(201):
        for base in range(201):
            rounded = float(np.round(np.float64(base / 200), 2))
            if (float32_mean(k / 200, 200) >= rounded) != (float32_mean(k / 200, None) >= rounded):
                flips.add(k)
    assert len(flips) == 30
    assert math.isnan(float32_mean(math.nan, 200))


def test_paper_rule_reads_accuracies_as_the_gpu_held_them():
    # 40/200: float32(0.2) is just above 0.2, the GPU's sum * float32(1/200) just below it,
    # so an addition equal to a baseline of 0.2 passes ">= rounded baseline" only on the CPU
    n, k = 200, 40
    assert float32_mean(k / n, None) >= 0.2 > float32_mean(k / n, n)
    c = cands([(-1, 1, k / n, 0.1)])
    assert paper_rule(c, baseline=k / n, n_layers=10).passed  # exact mean in float32
    assert not paper_rule(c.assign(n=n), baseline=k / n, n_layers=10).passed  # the GPU's
    with pytest.raises(ValueError, match="different numbers of questions"):
        paper_rule(pd.concat([c.assign(n=n), c.assign(n=n + 1)]), k / n, 10)


# ---------------------------------------------------------- issue 21: zero candidates -------
def test_zero_candidates_are_the_authors_fallback_when_nothing_beats_the_baseline():
    # nothing strictly above the baseline (0.3): the authors' list starts with the zero
    # direction at the earliest position's layer 0, whose scores are the baseline's
    c = cands([(-2, 3, 0.30, 0.30), (-1, 2, 0.30, 0.28), (-1, 4, 0.20, 0.10)]).assign(n=100)
    with_zeros = _with_zero_candidates(c, [(-2, 0), (-1, 0)], 0.30, -1.2, True)
    pick = paper_rule(with_zeros, baseline=0.30, n_layers=10)
    assert (pick.position, pick.layer, pick.passed, pick.zero_direction) == (-2, 0, False, True)
    assert "zero direction" in pick.reason
    # without them the rule returns a real candidate at the baseline (the old behaviour)
    old = paper_rule(c, baseline=0.30, n_layers=10)
    assert (old.position, old.layer, old.zero_direction) == (-2, 3, False)
    # a candidate above the baseline beats the zero direction in the fallback
    better = pd.concat([c, cands([(-1, 5, 0.31, 0.40)]).assign(n=100)], ignore_index=True)
    with_zeros = _with_zero_candidates(better, [(-2, 0), (-1, 0)], 0.30, -1.2, True)
    assert paper_rule(with_zeros, 0.30, 10).layer == 5
    # zero candidates always survive the unrounded filter: the fallback below it is gone
    low = _with_zero_candidates(cands([(-1, 1, 0.1, 0.0)]), [(-1, 0)], 0.3, -1.0, True)
    assert paper_rule(low, 0.3, 10).zero_direction


def _random_grid(rng, n, n_pos, n_layers, base_count):
    """Counts of correct answers per (position, layer) for α = 1, α = 3 and the ablation;
    layer 0 (the zero direction) at the baseline's count."""
    grids = {}
    for name, spread in (("add1", 6), ("add3", 14), ("abl", 8)):
        upper = int(rng.choice([1, 2, 4]))  # 1: nothing beats the baseline
        grid = {}
        for pos in range(-n_pos, 0):
            grid[(pos, 0)] = base_count
            for layer in range(1, n_layers):
                grid[(pos, layer)] = int(np.clip(base_count + rng.integers(-spread, upper), 0, n))
        grids[name] = grid
    return grids


def test_paper_rule_with_zero_candidates_picks_what_the_authors_code_picks():
    rng = np.random.default_rng(21)
    differ_without_zeros = differ_on_cpu = 0
    for trial in range(500):
        n = list(PAPER_DOMAIN_SIZES)[trial % len(PAPER_DOMAIN_SIZES)]
        n_pos, n_layers = 3, 10
        base_count = int(rng.integers(40, n - 40))
        g = _random_grid(rng, n, n_pos, n_layers, base_count)
        for alpha, add in ((1.0, g["add1"]), (3.0, g["add3"])):
            expected = authors_pick(add, g["abl"], g["add1"], base_count, n, n_layers, alpha)
            rows = [
                (p, layer, add[(p, layer)] / n, g["abl"][(p, layer)] / n, g["add1"][(p, layer)] / n)
                for (p, layer) in add
                if layer > 0  # the sweep does not run zero directions
            ]
            c = pd.DataFrame(
                rows, columns=["position", "layer", "add_accuracy", "abl_accuracy", "ref"]
            )
            c = c.assign(n=n)
            if alpha != 1.0:
                c = c.rename(columns={"ref": "ref_add_accuracy"})
            else:
                c = c.drop(columns="ref")
            zeros = [(p, 0) for p in range(-n_pos, 0)]
            full = _with_zero_candidates(c, zeros, base_count / n, -1.0, True)
            pick = paper_rule(full, base_count / n, n_layers)
            assert (pick.position, pick.layer) == expected, (trial, alpha)
            old = paper_rule(c, base_count / n, n_layers)
            differ_without_zeros += (old.position, old.layer) != expected
            cpu = paper_rule(full.drop(columns="n"), base_count / n, n_layers)
            differ_on_cpu += (cpu.position, cpu.layer) != expected
    # the zero candidates and the GPU's float32 means are what makes them agree
    assert differ_without_zeros > 50 and differ_on_cpu > 0


@pytest.fixture(scope="module")
def zero_sweep(tiny_model, tmp_path_factory):
    """A tiny sweep whose grid includes layer 0 (zero directions at both positions)."""
    rd = rp.compute_directions(tiny_model, roles=["lawyer", "nurse"], progress=False)
    items = rp.load_benchmark("builtin").items
    domain = items["subject"].map(subject_domain)
    keep = domain.isin(["law", "medicine"]) & (items.groupby(domain).cumcount() < 6)
    bench = rp.MultipleChoice(items[keep], "builtin-law-med")
    store = tmp_path_factory.mktemp("zero-sweep")
    result = rp.sweep(
        tiny_model,
        rd,
        bench,
        layers=[0, 1, 2],
        positions=[-2, -1],
        batch_size=6,
        store=store,
        progress=False,
    )
    return rd, bench, result


def _nothing_beats_the_baseline(result, monkeypatch):
    """Every addition scored well below the baseline (the case the authors' fallback is for)."""
    real = result.scores

    def lowered(ids=None):
        scores = real(ids)
        add = scores["condition"] == "addition"
        scores.loc[add, "accuracy"] = scores.loc[add, "base_accuracy"] - 0.25
        return scores

    monkeypatch.setattr(result, "scores", lowered)


def test_the_sweep_lists_its_zero_directions_and_the_paper_rule_falls_back_on_them(
    zero_sweep, monkeypatch
):
    _, _, result = zero_sweep
    assert sorted(result.skipped) == sorted(
        (r, p, 0) for r in ("lawyer", "nurse") for p in (-2, -1)
    )
    assert rp.merge(result.store).skipped == result.skipped  # read back from the manifest
    assert not (result.scores()["layer"] == 0).any()  # never run
    _nothing_beats_the_baseline(result, monkeypatch)
    picks = select(result, rule="paper", n_boot=100, n_perm=100)
    assert picks["zero_direction"].all()
    assert set(zip(picks["position"], picks["layer"], strict=True)) == {
        (-2, 0)
    }  # earliest position
    assert not picks["passed"].any()
    assert (picks["delta_accuracy"] == 0).all() and (picks["delta_logprob"] == 0).all()
    assert (picks["select_accuracy"] == picks["select_base_accuracy"]).all()
    # the earlier behaviour, and the held-out rule by default: a real candidate below it
    for kind, kwargs in (("paper", {"zero_candidates": False}), ("held-out", {})):
        other = select(result, rule=kind, n_boot=100, n_perm=100, **kwargs)
        assert not other["zero_direction"].any() and (other["layer"] > 0).all(), kind


def test_zero_picks_are_applied_as_the_unsteered_model_without_running_it(
    zero_sweep, tiny_model, monkeypatch
):
    rd, bench, result = zero_sweep
    _nothing_beats_the_baseline(result, monkeypatch)
    picks = select(result, rule="paper", n_boot=100, n_perm=100)
    base = rp.evaluate(tiny_model, bench, progress=False, system=rd.system)
    calls = []
    real = picks_module.evaluate
    monkeypatch.setattr(picks_module, "evaluate", lambda *a, **k: calls.append(a) or real(*a, **k))
    runs = apply_picks(tiny_model, rd, bench, picks, baseline=base, progress=False)
    assert not calls  # nothing ran: every row is the baseline's
    assert runs["zero_direction"].all()
    paired = runs.merge(base, on="id", suffixes=("", "_base"))
    assert (paired["correct"] == paired["correct_base"]).all()
    assert (paired["logprob_correct"] == paired["logprob_correct_base"]).all()
    effects = rp.effect_table(base, runs, n_boot=50, n_perm=50, round_accuracies=2)
    assert (effects["relative_change_pct"].fillna(0) == 0).all()  # +0.0 % as in the paper
    # without a baseline each role's questions are evaluated once, unsteered
    again = apply_picks(tiny_model, rd, bench, picks, progress=False)
    assert len(calls) == 2 and all(a[2] is None for a in calls)
    pd.testing.assert_series_equal(again["correct"], runs["correct"])
