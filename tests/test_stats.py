"""Hand-made cases with known answers for roleprobe.results.stats."""

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from roleprobe.results.stats import (
    accuracy,
    adjust_pvalues,
    bootstrap_ci,
    compare,
    mcnemar_exact,
    paired_accuracy_test,
    paired_bootstrap_ci,
    paired_permutation_test,
    relative_change,
)


def _table(answers, preds, logprobs=None, ids=None):
    n = len(answers)
    return pd.DataFrame(
        {
            "id": ids if ids is not None else [f"q{i}" for i in range(n)],
            "subject": ["s"] * n,
            "answer": answers,
            "pred": preds,
            "correct": [a == p for a, p in zip(answers, preds, strict=True)],
            "logprob_correct": logprobs if logprobs is not None else [-1.0] * n,
            "margin": [0.0] * n,
        }
    )


def _brute_force_sign_flip_p(diff, exact_arithmetic=True):
    """Share of all sign flips with |sum| >= the observed one, in exact decimal arithmetic.

    Without exact arithmetic (faster; fine for continuous values without ties) it uses floats.
    """
    exact = [Fraction(str(d)) if exact_arithmetic else float(d) for d in diff]
    observed = abs(sum(exact))
    hits = 0
    total = 0
    for signs in itertools.product((1, -1), repeat=len(exact)):
        total += 1
        hits += abs(sum(s * d for s, d in zip(signs, exact, strict=True))) >= observed
    return hits / total


# --- bootstrap -----------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(size=50)
    large = rng.normal(size=5000)
    low_s, high_s = bootstrap_ci(small)
    low_l, high_l = bootstrap_ci(large)
    assert low_s < small.mean() < high_s
    assert low_l < large.mean() < high_l
    assert high_l - low_l < (high_s - low_s) / 5  # width ~ 1/sqrt(n): 10x more narrow here


def test_bootstrap_ci_width_matches_the_standard_error():
    values = np.random.default_rng(2).normal(size=400)
    low, high = bootstrap_ci(values, n_boot=4000)
    se = values.std() / math.sqrt(values.size)
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_ci_is_seeded_and_takes_other_statistics():
    values = np.arange(20.0)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    low, high = bootstrap_ci(values, statistic=np.max)
    assert high == 19.0 and low <= 19.0
    assert bootstrap_ci(np.full(10, 0.7)) == pytest.approx((0.7, 0.7))
    assert bootstrap_ci(pd.Series([1.0, 2.0, 3.0])) == bootstrap_ci(np.array([1.0, 2.0, 3.0]))


def test_bootstrap_ci_narrows_with_level():
    values = np.random.default_rng(5).normal(size=100)
    low90, high90 = bootstrap_ci(values, level=0.9)
    low99, high99 = bootstrap_ci(values, level=0.99)
    assert low99 < low90 < high90 < high99


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": np.array([])}, "empty"),
        ({"values": np.ones((2, 2))}, "one-dimensional"),
        ({"values": np.array([1.0, np.nan])}, "NaN"),
        ({"values": np.ones(3), "level": 1.0}, "level"),
        ({"values": np.ones(3), "level": 0.0}, "level"),
        ({"values": np.ones(3), "n_boot": 0}, "n_boot"),
    ],
)
def test_bootstrap_ci_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(**kwargs)


def _mean_square(values):
    """A statistic without ``axis``: the bootstrap calls it once per resample."""
    return float(np.mean(values**2))


def _loop_bootstrap(samples, statistic, n_boot, seed, level):
    """The former hand-written resampler: one ``rng.integers(0, n, size=n)`` draw per resample."""
    rng = np.random.default_rng(seed)
    n = len(samples[0])
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        picked = [np.asarray(s, dtype=float)[idx] for s in samples]
        values.append(statistic(*picked))
    alpha = (1 - level) / 2
    return tuple(float(q) for q in np.quantile(values, [alpha, 1 - alpha]))


@pytest.mark.parametrize("n", [1, 2, 7, 50, 301])
def test_bootstrap_keeps_the_numbers_of_its_seed(n):
    # scipy.stats.bootstrap draws the same index stream as the former loop: equal bit for bit
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=n), rng.normal(size=n)
    for seed, n_boot, level in ((0, 2000, 0.95), (3, 101, 0.9), (1, 1, 0.95)):
        assert bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level) == _loop_bootstrap(
            [x], np.mean, n_boot, seed, level
        )
        assert bootstrap_ci(x, np.median, n_boot, seed, level) == _loop_bootstrap(
            [x], np.median, n_boot, seed, level
        )
        assert paired_bootstrap_ci(x, y, n_boot=n_boot, seed=seed, level=level) == (
            _loop_bootstrap([x, y], lambda a, b: b.mean() - a.mean(), n_boot, seed, level)
        )
        assert bootstrap_ci(x, _mean_square, n_boot, seed, level) == _loop_bootstrap(
            [x], _mean_square, n_boot, seed, level
        )


def test_paired_bootstrap_ci_keeps_the_pairing():
    rng = np.random.default_rng(6)
    base = rng.normal(size=300)
    other = base + 0.1  # every item moves by exactly 0.1
    assert paired_bootstrap_ci(base, other) == pytest.approx((0.1, 0.1))
    noisy = base + 0.1 + rng.normal(scale=0.05, size=300)
    low, high = paired_bootstrap_ci(base, noisy)
    assert low < noisy.mean() - base.mean() < high
    assert high - low < 0.05  # an unpaired interval would be ~0.3 wide
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap_ci(base, other[:-1])


# --- accuracy ------------------------------------------------------------------------------


def test_accuracy_reports_letter_distributions_and_majority_baseline():
    # Correct letters: A, B, B, B, C, C, D, D -> B is the majority (3/8).
    answers = ["A", "B", "B", "B", "C", "C", "D", "D"]
    preds = ["B", "B", "B", "B", "B", "B", "B", "D"]  # a model that mostly says "B"
    row = accuracy(_table(answers, preds))
    assert row["n"] == 8
    assert row["accuracy"] == pytest.approx(4 / 8)
    assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    assert (row["pred_A"], row["pred_B"], row["pred_C"], row["pred_D"]) == pytest.approx(
        (0.0, 7 / 8, 0.0, 1 / 8)
    )
    assert (row["answer_A"], row["answer_B"], row["answer_C"], row["answer_D"]) == pytest.approx(
        (1 / 8, 3 / 8, 2 / 8, 2 / 8)
    )
    assert row["majority_letter"] == "B"
    assert row["majority_baseline"] == pytest.approx(3 / 8)


def test_accuracy_breaks_majority_ties_by_letter_order_and_ignores_invalid_preds():
    row = accuracy(_table(["C", "D", "C", "D"], ["C", "X", "A", "D"]))
    assert row["majority_letter"] == "C"
    assert row["majority_baseline"] == pytest.approx(0.5)
    assert row["accuracy"] == pytest.approx(0.5)
    assert row["pred_A"] + row["pred_B"] + row["pred_C"] + row["pred_D"] == pytest.approx(0.75)


def test_accuracy_names_missing_columns_and_rejects_empty_tables():
    table = _table(["A"], ["A"]).drop(columns=["pred", "correct"])
    with pytest.raises(ValueError, match=r"\['pred', 'correct'\]"):
        accuracy(table)
    with pytest.raises(ValueError, match="empty"):
        accuracy(_table([], []))


# --- relative change -----------------------------------------------------------------------


def test_relative_change():
    assert relative_change(0.5, 0.55) == pytest.approx(10.0)
    assert relative_change(0.4, 0.3) == pytest.approx(-25.0)
    assert relative_change(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="baseline of 0"):
        relative_change(0.0, 0.1)


# --- McNemar -------------------------------------------------------------------------------


def _pairs(b, c, both_right=0, both_wrong=0):
    base = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    other = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(base), np.array(other)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 5, 2 / 32),
        (5, 0, 2 / 32),
        (1, 9, 2 * (1 + 10) / 1024),
        (9, 1, 2 * (1 + 10) / 1024),
        (4, 4, 1.0),
        (3, 4, 1.0),
        (0, 1, 1.0),
        (2, 8, 2 * (1 + 10 + 45) / 1024),
    ],
)
def test_mcnemar_exact_known_values(b, c, expected):
    base, other = _pairs(b, c, both_right=7, both_wrong=3)
    result = mcnemar_exact(base, other)
    assert (result["b"], result["c"]) == (b, c)
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_without_discordant_pairs_and_with_large_counts():
    base, other = _pairs(0, 0, both_right=5, both_wrong=5)
    assert mcnemar_exact(base, other) == {"b": 0, "c": 0, "p_value": 1.0}
    # n = 3000 overflows floats in 2**n; the exact computation must still work.
    base, other = _pairs(1400, 1600)
    p = mcnemar_exact(base, other)["p_value"]
    assert 0.0 < p < 0.001
    base, other = _pairs(1500, 1500)
    assert mcnemar_exact(base, other)["p_value"] == 1.0


def test_mcnemar_exact_accepts_0_1_values_and_lists():
    assert mcnemar_exact([1, 0, 0], [0, 1, 1]) == {"b": 1, "c": 2, "p_value": 1.0}
    assert mcnemar_exact(pd.Series([True, False]), pd.Series([False, False]))["b"] == 1
    with pytest.raises(ValueError, match="paired"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5, 1.0], [1.0, 1.0])


def test_mcnemar_exact_is_fast_at_a_million_discordant_pairs():
    base, other = _pairs(499_000, 501_000)
    start = time.perf_counter()
    p = mcnemar_exact(base, other)["p_value"]
    assert time.perf_counter() - start < 1.0  # the former Fraction sum took minutes at 39,000
    # normal approximation with continuity correction: z = (|b - c| - 1) / sqrt(b + c)
    z = (2000 - 1) / 1000
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-3)
    assert mcnemar_exact(*_pairs(500_000, 500_000))["p_value"] == 1.0


# --- paired permutation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "diff",
    [
        [0.3, -0.1, 0.5, 0.2, 0.4, -0.2, 0.6, 0.1],
        [1.0, 1.0, 1.0, -1.0, 1.0, 0.0],  # ties in |d| and a zero
        [2.0, 3.0, 5.0, 7.0, 11.0],
        # Many sign flips tie with the observed sum only up to float rounding.
        [0.1, 0.2, 0.3, 0.7, -0.1, 0.1, 0.3, -0.2, 0.6, 0.1, 0.4, -0.3],
    ],
)
def test_paired_permutation_test_exact_matches_brute_force(diff):
    assert paired_permutation_test(np.array(diff)) == pytest.approx(_brute_force_sign_flip_p(diff))


@pytest.mark.parametrize("n", [2, 5, 9, 12])
def test_paired_permutation_test_exact_matches_scipy(n):
    # scipy's permutation_test on one sample flips signs; |sum| with "greater" is two-sided
    diff = np.round(np.random.default_rng(n).normal(0.3, size=n), 1)
    reference = scipy_stats.permutation_test(
        (diff,),
        lambda d, axis: np.abs(np.sum(d, axis=axis)),
        permutation_type="samples",
        vectorized=True,
        n_resamples=2**n,
        alternative="greater",
    )
    assert paired_permutation_test(diff) == pytest.approx(reference.pvalue)


def test_paired_permutation_test_exact_known_values():
    # All 5 differences positive: only the all-plus and all-minus flips reach |sum| -> 2/32.
    assert paired_permutation_test(np.ones(5)) == pytest.approx(2 / 32)
    assert paired_permutation_test(np.zeros(4)) == 1.0
    # Exact enumeration ignores the seed.
    d = np.array([0.5, -0.2, 0.9])
    assert paired_permutation_test(d, seed=1) == paired_permutation_test(d, seed=2)


def test_paired_permutation_test_monte_carlo_approximates_the_exact_p():
    rng = np.random.default_rng(7)
    diff = rng.normal(loc=0.3, size=17)  # one above the exact limit
    exact = _brute_force_sign_flip_p(diff.tolist(), exact_arithmetic=False)
    estimate = paired_permutation_test(diff, n_perm=20000, seed=0)
    assert estimate == pytest.approx(exact, abs=0.015)  # ~4 standard errors
    # Discrete differences tie often: 14 of +1 and 6 of -1 -> |sum| = |2K - 20|, K ~ Bin(20, 1/2),
    # and P(|2K - 20| >= 8) = 2 * P(K <= 6).
    ties = np.array([1.0] * 14 + [-1.0] * 6)
    exact_ties = 2 * sum(math.comb(20, k) for k in range(7)) / 2**20
    assert paired_permutation_test(ties, n_perm=20000) == pytest.approx(exact_ties, abs=0.01)
    # The (count + 1) / (n_perm + 1) correction: never 0, at least 1 / (n_perm + 1).
    assert paired_permutation_test(np.full(40, 1.0), n_perm=999) == pytest.approx(1 / 1000)


def test_paired_permutation_test_validates():
    with pytest.raises(ValueError, match="empty"):
        paired_permutation_test(np.array([]))
    with pytest.raises(ValueError, match="n_perm"):
        paired_permutation_test(np.ones(20), n_perm=0)


# --- compare -------------------------------------------------------------------------------


def test_compare_known_case():
    answers = ["A", "B", "C", "D"] * 5
    base_preds = list(answers)
    base_preds[:6] = ["D", "A", "B", "C", "D", "A"]  # 6 wrong at baseline (items 0-5)
    other_preds = list(answers)
    other_preds[4:7] = ["D", "A", "B"]  # 3 wrong steered (items 4-6)
    base_lp = [-1.0] * 20
    other_lp = [-0.5] * 20
    base = _table(answers, base_preds, base_lp)
    other = _table(answers, other_preds, other_lp)
    row = compare(base, other, n_boot=500)
    assert row["n"] == 20
    assert row["base_accuracy"] == pytest.approx(14 / 20)
    assert row["accuracy"] == pytest.approx(17 / 20)
    assert row["delta_accuracy"] == pytest.approx(3 / 20)
    assert row["delta_ci_low"] <= row["delta_accuracy"] <= row["delta_ci_high"]
    assert row["relative_change_pct"] == pytest.approx(100 * (17 - 14) / 14)
    assert (row["mcnemar_b"], row["mcnemar_c"]) == (1, 4)  # item 6 got worse; items 0-3 better
    assert row["mcnemar_p"] == pytest.approx(2 * (1 + 5) / 32)
    assert row["delta_logprob"] == pytest.approx(0.5)
    assert (row["delta_logprob_ci_low"], row["delta_logprob_ci_high"]) == pytest.approx((0.5, 0.5))
    assert row["logprob_p"] == pytest.approx(1 / 10001)  # all 20 differences positive
    rows = pd.DataFrame([row, row])
    assert rows["mcnemar_b"].dtype.kind == "i" and rows["accuracy"].dtype.kind == "f"


def test_compare_with_zero_base_accuracy_gives_nan_relative_change():
    base = _table(["A", "B"], ["B", "A"])
    other = _table(["A", "B"], ["A", "A"])
    assert math.isnan(compare(base, other, n_boot=10, n_perm=10)["relative_change_pct"])


def test_compare_rejects_mismatched_items():
    base = _table(["A", "B", "C"], ["A", "B", "C"])
    shuffled = _table(["A", "B", "C"], ["A", "B", "C"], ids=["q0", "q2", "q1"])
    with pytest.raises(ValueError, match="ids differ at 2 of 3 positions"):
        compare(base, shuffled)
    with pytest.raises(ValueError, match="3 items but other_df has 2"):
        compare(base, base.iloc[:2])
    with pytest.raises(
        ValueError, match=r"other_df lacks required column\(s\) \['logprob_correct'\]"
    ):
        compare(base, base.drop(columns="logprob_correct"))


# --- p-value adjustment --------------------------------------------------------------------


def test_adjust_pvalues_by_hand():
    p = [0.01, 0.04, 0.03, 0.2]
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    np.testing.assert_allclose(adjust_pvalues(p), adjust_pvalues(p, "holm"))


def test_adjust_pvalues_caps_at_one_and_keeps_order():
    p = np.array([0.5, 0.4, 0.9])
    np.testing.assert_allclose(adjust_pvalues(p, "holm"), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(adjust_pvalues(p, "bh"), [0.75, 0.75, 0.9])
    rng = np.random.default_rng(8)
    raw = rng.uniform(size=30) ** 3
    for method in ("holm", "bh"):
        adjusted = adjust_pvalues(raw, method)
        assert (adjusted >= raw).all() and (adjusted <= 1.0).all()
        order = np.argsort(raw)
        assert (np.diff(adjusted[order]) >= 0).all()
    assert adjust_pvalues([], "bh").size == 0
    np.testing.assert_allclose(adjust_pvalues([0.03], "holm"), [0.03])


def test_adjust_pvalues_validates():
    with pytest.raises(ValueError, match="allowed: holm, bh"):
        adjust_pvalues([0.1], "bonferroni")
    with pytest.raises(ValueError, match="NaN"):
        adjust_pvalues([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_pvalues([1.5])


# --- ties ----------------------------------------------------------------------------------


def test_accuracy_reports_the_tie_rule_and_the_number_of_ties():
    table = _table(["A", "B", "C", "D"], ["A", "A", "C", "A"])
    plain = accuracy(table, n_boot=10)
    assert plain["tie_rule"] == "unrecorded" and math.isnan(plain["n_tied"])
    tied = table.assign(correct=[1.0, 0.5, 1.0, 0.0], tied=[1, 2, 1, 3], tie_rule="fractional")
    row = accuracy(tied, n_boot=10)
    assert row["accuracy"] == pytest.approx(2.5 / 4)
    assert row["tie_rule"] == "fractional" and row["n_tied"] == 2
    with pytest.raises(ValueError, match="mixes tie rules"):
        accuracy(tied.assign(tie_rule=["paper", "first", "paper", "paper"]), n_boot=10)


def test_paired_accuracy_test_is_mcnemar_on_0_1_and_sign_flip_on_fractions():
    base = [1, 1, 0, 0, 1, 0, 1, 1]
    other = [0, 1, 1, 1, 1, 1, 1, 1]
    result = paired_accuracy_test(base, other)
    assert result["test"] == "mcnemar"
    assert result["p_value"] == mcnemar_exact(base, other)["p_value"]
    # the same discordant items as a sign-flip test: identical p (exact enumeration)
    diff = np.subtract(other, base, dtype=float)
    assert paired_permutation_test(diff[diff != 0]) == pytest.approx(result["p_value"])
    fractional = paired_accuracy_test([0.5, 1.0, 0.0, 1 / 3], [1.0, 1.0, 0.5, 0.0])
    assert fractional["test"] == "sign-flip" and (fractional["b"], fractional["c"]) == (1, 2)
    # |sum| of 0.5, 0.5, -1/3 reached by the flips with |±0.5 ±0.5 ±1/3| >= 2/3: 4 of 8
    assert fractional["p_value"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must lie in"):
        paired_accuracy_test([1.5], [1.0])


def test_compare_with_fractional_credit_uses_the_sign_flip_test():
    answers = ["A", "B", "C", "D"] * 3
    base = _table(answers, answers).assign(tie_rule="fractional", tied=1)
    base["correct"] = base["correct"].astype(float)
    other = base.copy()
    other.loc[[0, 1, 2], "correct"] = [0.5, 0.5, 0.25]
    other.loc[[0, 1, 2], "tied"] = [2, 2, 4]
    row = compare(base, other, n_boot=50)
    assert row["accuracy_test"] == "sign-flip" and row["tie_rule"] == "fractional"
    assert (row["mcnemar_b"], row["mcnemar_c"]) == (3, 0)
    assert row["mcnemar_p"] == pytest.approx(0.25)  # all three negative: 2 of 8 flips
    assert row["accuracy"] == pytest.approx((9 + 1.25) / 12)
    assert compare(base, base, n_boot=10)["accuracy_test"] == "mcnemar"
    with pytest.raises(ValueError, match="tie_rule 'fractional' but other_df with 'paper'"):
        compare(base, other.assign(tie_rule="paper"), n_boot=10)
