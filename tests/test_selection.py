import math

import pandas as pd
import pytest

from roleprobe.experiments.selection import (
    _candidate_table,
    paper_rounded_rule,
    paper_rule,
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
    assert "no pick in the authors' code" in paper_rule(c, 0.30, 10).reason


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
