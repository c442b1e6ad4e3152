import math

import pandas as pd
import pytest

from roleprobe.selection import paper_rule, split_ids


def cands(rows):
    return pd.DataFrame(rows, columns=["position", "layer", "add_accuracy", "abl_accuracy"])


def test_paper_rule_takes_the_best_addition_whose_ablation_hurts():
    # the best (layer 4) fails its ablation; of the two 0.50s the one at layer 3 fails too,
    # so the first in order that passes is (-2, 1)
    c2 = cands([(-1, 2, 0.40, 0.30), (-1, 3, 0.50, 0.35), (-2, 1, 0.50, 0.20), (-1, 4, 0.6, 0.3)])
    pick = paper_rule(c2, baseline=0.30, n_layers=10)
    assert (pick.position, pick.layer, pick.passed) == (-2, 1, True)


def test_ties_go_to_the_earliest_layer_then_position():
    c = cands([(-1, 5, 0.5, 0.1), (-1, 2, 0.5, 0.1), (-3, 2, 0.5, 0.1)])
    pick = paper_rule(c, baseline=0.3, n_layers=10)
    assert (pick.position, pick.layer) == (-3, 2)


def test_no_ablation_below_baseline_falls_back_to_the_best_addition():
    c = cands([(-1, 1, 0.40, 0.35), (-1, 2, 0.45, 0.31)])
    pick = paper_rule(c, baseline=0.30, n_layers=10)
    assert (pick.layer, pick.passed) == (2, False)
    assert "no ablation" in pick.reason


def test_all_below_baseline_returns_the_best_and_says_so():
    c = cands([(-1, 1, 0.10, 0.05), (-1, 2, 0.20, 0.05)])
    pick = paper_rule(c, baseline=0.30, n_layers=10)
    assert (pick.layer, pick.passed) == (2, False)
    assert "below baseline" in pick.reason


def test_late_layers_are_dropped_and_baseline_is_rounded():
    c = cands([(-1, 8, 0.9, 0.0), (-1, 7, 0.25, 0.2)])
    # int(0.8 * 10) = 8 is dropped; baseline 0.254 rounds to 0.25, so 0.25 counts as >= base
    pick = paper_rule(c, baseline=0.254, n_layers=10)
    assert (pick.layer, pick.passed) == (7, True)
    with pytest.raises(ValueError, match=">= 8"):
        paper_rule(cands([(-1, 8, 0.9, 0.0)]), 0.3, 10)
    with pytest.raises(ValueError, match="no candidates"):
        paper_rule(cands([]), 0.3, 10)


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
