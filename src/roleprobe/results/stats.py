"""Statistics for item-by-item multiple-choice evaluations: intervals, paired tests, corrections.

An evaluation gives one row per benchmark item (columns ``id``, ``subject``, ``answer``,
``pred``, ``correct``, ``logprob_correct``, ``margin``), in benchmark order. Everything here is a
pure function of such tables or of their columns; no model is involved.

**One evaluation.** :func:`accuracy` reports the fraction correct with a percentile bootstrap
interval (:func:`bootstrap_ci`): resample the items with replacement ``n_boot`` times, recompute
the accuracy each time, and take the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. The
items are the unit of resampling because they are what a new benchmark would redraw.

**The footgun: letter bias.** Small models often choose by letter position ("always B") rather
than by content. Such a model scores the share of items whose correct letter is its favourite,
and a steering vector that merely moves the favourite from B to C changes the accuracy by the
difference between the shares of B and C answers — an "effect" with nothing to do with the
content of the steering. So :func:`accuracy` always returns, beside the accuracy:

* ``pred_A`` … ``pred_D``: how often each letter was predicted. A distribution piled on one
  letter means the accuracy is mostly the share of that letter among the answers.
* ``answer_A`` … ``answer_D``: how often each letter is correct.
* ``majority_letter`` and ``majority_baseline``: the most common correct letter and the
  accuracy of always answering it. An accuracy near this baseline says little about knowledge.

Show all three side by side before reading anything into an accuracy change.

**Ties.** ``correct`` is the credit of each item under the evaluation's tie rule (its
``tie_rule`` column: ``"fractional"`` gives ``1/k`` to a ``k``-way tie that includes the
correct letter, ``"paper"`` gives it 1, ``"first"`` gives it to the earliest letter). Every
accuracy here is the mean credit, and :func:`accuracy` / :func:`compare` report the rule
(``tie_rule``; ``"unrecorded"`` for tables without the column) and :func:`accuracy` the
number of tied items (``n_tied``, from the ``tied`` column).

**Two evaluations of the same items** (baseline vs steered) are *paired*: each item is answered
under both conditions, so per-item differences, not two independent samples, carry the signal.
:func:`compare` reports:

* the accuracy change with a paired bootstrap interval (:func:`paired_bootstrap_ci`: the same
  resampled items feed both conditions) and the relative change in percent
  (:func:`relative_change`, as the paper reports it: ``100 * (value - baseline) / baseline``);
* McNemar's exact test (:func:`mcnemar_exact`). Only discordant items matter: ``b`` right at
  baseline and wrong steered, ``c`` the reverse. Under "no effect" each discordant item is a
  fair coin, so ``b ~ Binomial(b + c, 1/2)`` and the two-sided p-value is
  ``min(1, 2 * P(X <= min(b, c)))`` (:func:`scipy.stats.binomtest`). With
  fractional credits (ties under ``"fractional"``) McNemar does not apply;
  :func:`paired_accuracy_test` then runs the sign-flip permutation test on the per-item
  credit differences — on 0/1 credits that test *is* McNemar's (each discordant item is a
  coin flip of ±1) — and ``accuracy_test`` says which one ran;
* the mean change in the log-probability of the correct letter (a continuous, more sensitive
  measure than accuracy) with a bootstrap interval and a sign-flip permutation test
  (:func:`paired_permutation_test`): under "no effect" each item's difference is as likely
  positive as negative, so flipping signs at random generates the null distribution of the
  mean difference.

**Many comparisons** (roles × layers × subjects) inflate false positives; correct the p-values
with :func:`adjust_pvalues` (Holm for the family-wise error rate, Benjamini-Hochberg for the
false discovery rate).

**What comes from scipy.** McNemar's test is :func:`scipy.stats.binomtest`, the bootstrap
resamples and bootstrap distributions are :func:`scipy.stats.bootstrap`'s, and
Benjamini-Hochberg is :func:`scipy.stats.false_discovery_control`. The wrappers keep their
seeds and their numbers: scipy draws the resamples from the same ``numpy.random.Generator``
stream the earlier hand-written loop drew, and the interval is the same ``numpy.quantile``
of that distribution. Two pieces stay ours, each a few lines: Holm's step-down (scipy has
none) and the sign-flip resampler of :func:`paired_permutation_test` (see there why).

Example:
    >>> base = evaluate(model, items)
    >>> steered = evaluate(model, items, rp.Addition(vec, layer=15, alpha=3.0))
    >>> accuracy(base)[["accuracy", "ci_low", "ci_high", "pred_A", "majority_baseline"]]
    >>> row = compare(base, steered)
    >>> adjust_pvalues([row["mcnemar_p"], ...], method="holm")
"""

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as scipy_stats

from roleprobe.data.benchmarks import LETTERS

ADJUST_METHODS = ("holm", "bh")
EXACT_PERMUTATION_MAX_N = 16
"""Up to this many items :func:`paired_permutation_test` enumerates all sign flips."""
_BOOTSTRAP_BATCH_VALUES = 2_000_000
"""Values per batch of bootstrap resamples (``batch * n_items``): bounds their memory."""

# Sequence[int] admits lists of bools (beartype does not treat int as float).
ArrayLike: TypeAlias = npt.NDArray[Any] | pd.Series | Sequence[float] | Sequence[int]
Statistic: TypeAlias = Callable[[npt.NDArray[Any]], Any]

_ACCURACY_COLUMNS = ("answer", "pred", "correct")
_COMPARE_COLUMNS = ("id", "correct", "logprob_correct")
UNRECORDED = "unrecorded"
"""The ``tie_rule`` reported for a table without a ``tie_rule`` column."""


class McNemarResult(TypedDict):
    """Discordant counts and exact two-sided p-value of McNemar's test."""

    b: int
    c: int
    p_value: float


class PairedAccuracyResult(TypedDict):
    """A paired test of per-item credits: items that lost / gained credit, p-value, test."""

    b: int
    c: int
    p_value: float
    test: str


def tie_rule_of(df: pd.DataFrame, name: str = "df") -> str:
    """The tie rule a per-item table was scored with (``"unrecorded"`` without the column).

    Raises:
        ValueError: the table mixes several rules.
    """
    if "tie_rule" not in df.columns:
        return UNRECORDED
    rules = sorted(map(str, df["tie_rule"].dropna().unique()))
    if len(rules) > 1:
        raise ValueError(f"{name} mixes tie rules {rules}; score it with one rule")
    return rules[0] if rules else UNRECORDED


SETUP_COLUMNS = ("system_policy", "prompt_format", "model", "dtype")
"""Per-item columns that say how a question was asked (:func:`roleprobe.evaluate` writes
them): the system-turn policy before any persona (``"default"``, ``"none"`` or a text), the
question format, the model and its dtype. Two tables compared item by item must agree on
each (:func:`check_same_setup`)."""


def check_same_setup(
    base_df: pd.DataFrame, other_df: pd.DataFrame, names: tuple[str, str] = ("base", "runs")
) -> None:
    """Refuse to pair tables whose questions were asked differently.

    Every column of :data:`SETUP_COLUMNS` that both tables have must hold one and the same
    value in both. Tables from before those columns existed are compared on ``system`` (the
    chat template's system turn) instead, leaving out persona rows (a persona in system mode
    changes it on purpose).

    Args:
        base_df, other_df: per-item tables (e.g. a baseline and steered runs).
        names: how the message calls them.

    Raises:
        ValueError: naming the column and the values, e.g. a baseline with the template's
            default system turn against runs scored with ``system="none"``.
    """
    columns = [c for c in SETUP_COLUMNS if c in base_df.columns and c in other_df.columns]
    if "system_policy" not in columns and "system" in base_df and "system" in other_df:
        columns.append("system")
    for column in columns:
        tables = [
            df[df["persona_mode"].isna()]  # a persona's system turn is its own
            if column == "system" and "persona_mode" in df.columns
            else df
            for df in (base_df, other_df)
        ]
        values = {
            name: sorted(map(str, df[column].dropna().unique()))
            for name, df in zip(names, tables, strict=True)
        }
        seen = set(values[names[0]]) | set(values[names[1]])
        if len(seen) > 1:
            raise ValueError(
                f"{names[0]} and {names[1]} were scored with different {column}: "
                f"{names[0]} {values[names[0]]}, {names[1]} {values[names[1]]}; "
                "evaluate both the same way (e.g. the same system= and dtype)"
            )


def tied_count(df: pd.DataFrame) -> int | float:
    """Items whose top letter logit is shared (``tied > 1``); NaN without a ``tied`` column."""
    if "tied" not in df.columns:
        return math.nan
    return int((df["tied"].to_numpy() > 1).sum())


def _as_1d(values: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    """``values`` as a 1-D float array; raises if it is empty, not 1-D or has NaNs."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one item")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN")
    return array


def _check_ci_args(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _percentile_interval(stats: npt.NDArray[np.float64], level: float) -> tuple[float, float]:
    """The percentile interval, as ``numpy.quantile`` (linear interpolation) computes it.

    scipy's own interval (``scipy.stats.quantile``) can differ in the last bit; numpy's keeps
    every interval identical to the earlier releases'.
    """
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def require_columns(
    df: pd.DataFrame, columns: Sequence[str], name: str, *, allow_empty: bool = True
) -> None:
    """Check that a table has the columns a function needs (the one check of the package).

    Args:
        df: the table.
        columns: the column names it must have.
        name: how the error message calls the table (e.g. ``"base_df"``).
        allow_empty: ``False`` also rejects a table without rows.

    Raises:
        ValueError: naming the missing columns and the ones present, or saying the table is
            empty.
    """
    missing = [col for col in columns if col not in df.columns]
    if missing:
        raise ValueError(
            f"{name} lacks required column(s) {missing}; it has {list(map(str, df.columns))}"
        )
    if not allow_empty and len(df) == 0:
        raise ValueError(f"{name} is empty: need at least one item")


def _vectorized(statistic: Statistic) -> bool:
    """Whether ``statistic`` takes ``axis`` (as numpy's reductions do), as scipy decides it."""
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):  # a callable without an inspectable signature
        return False


def _bootstrap_distribution(
    samples: tuple[npt.NDArray[np.float64], ...],
    statistic: Callable[..., Any],
    n_boot: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """``n_boot`` values of ``statistic`` over paired resamples of the items (scipy's bootstrap).

    :func:`scipy.stats.bootstrap` draws the item indices as ``rng.integers(0, n, (batch, n))``
    from ``numpy.random.default_rng(seed)``: the same stream as ``n_boot`` draws of ``n``
    indices, so the distribution equals the one of the former hand-written loop. Its resamples
    are taken in batches of at most ~2 million values to bound memory. scipy needs two items;
    one item resamples to itself, so its distribution is the statistic of that item.
    """
    n = samples[0].size
    if n == 1:
        return np.full(n_boot, float(statistic(*samples)), dtype=np.float64)
    with warnings.catch_warnings():
        if n_boot < 2:  # scipy's standard error of a single resample warns; we do not use it
            warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.bootstrap(
            samples,
            statistic,
            n_resamples=n_boot,
            batch=max(1, _BOOTSTRAP_BATCH_VALUES // n),
            vectorized=_vectorized(statistic),
            paired=len(samples) > 1,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return np.asarray(result.bootstrap_distribution, dtype=np.float64)


def bootstrap_ci(
    values: ArrayLike,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over items (:func:`scipy.stats.bootstrap`).

    Args:
        values: one value per item (e.g. 0/1 correctness or a log-probability).
        statistic: maps a 1-D array of item values to a number (default: the mean). One
            that takes ``axis`` (numpy's reductions do) is applied to all resamples at once.
        n_boot: bootstrap resamples.
        seed: seed of the ``numpy.random.Generator`` that draws the resamples.
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        statistic over resamples of the items drawn with replacement.

    Raises:
        ValueError: if ``values`` is empty, not 1-D or has NaNs, ``n_boot < 1`` or ``level``
            is not in (0, 1).
    """
    array = _as_1d(values, "values")
    _check_ci_args(n_boot, level)
    stats = _bootstrap_distribution((array,), statistic, n_boot, seed)
    return _percentile_interval(stats, level)


def paired_bootstrap_ci(
    base: ArrayLike,
    other: ArrayLike,
    statistic: Statistic = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(other) - statistic(base)`` for paired items.

    Each resample draws item indices with replacement and applies the *same* indices to both
    conditions, so the pairing (and the correlation between conditions) is kept.

    Args:
        base: one value per item under the baseline condition.
        other: one value per item under the other condition, same items in the same order.
        statistic: maps a 1-D array of item values to a number (default: the mean).
        n_boot: bootstrap resamples.
        seed: seed of the ``numpy.random.Generator`` that draws the resamples.
        level: coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)`` of the difference ``statistic(other) - statistic(base)``.

    Raises:
        ValueError: if either input is empty, not 1-D or has NaNs, their lengths differ,
            ``n_boot < 1`` or ``level`` is not in (0, 1).
    """
    a = _as_1d(base, "base")
    b = _as_1d(other, "other")
    if a.size != b.size:
        raise ValueError(f"base has {a.size} items but other has {b.size}: they must be paired")
    _check_ci_args(n_boot, level)
    difference: Callable[..., Any]
    if _vectorized(statistic):

        def difference(x: npt.NDArray[Any], y: npt.NDArray[Any], axis: int = -1) -> Any:
            return statistic(y, axis=axis) - statistic(x, axis=axis)  # type: ignore[call-arg]

    else:

        def difference(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> Any:
            return statistic(y) - statistic(x)

    stats = _bootstrap_distribution((a, b), difference, n_boot, seed)
    return _percentile_interval(stats, level)


def accuracy(df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> pd.Series:
    """Accuracy with a bootstrap interval, beside the letter distributions that explain it.

    Args:
        df: per-item evaluation with columns ``answer``, ``pred`` and ``correct``.
        n_boot: bootstrap resamples for the interval.
        seed: seed of the bootstrap.
        level: coverage of the interval.

    Returns:
        ``accuracy`` (mean credit under the table's tie rule), ``ci_low``, ``ci_high``, ``n``;
        ``tie_rule`` (the rule, ``"unrecorded"`` without a ``tie_rule`` column) and
        ``n_tied`` (items with a tie at the top, NaN without a ``tied`` column);
        ``pred_A`` … ``pred_D`` (fraction of items
        predicted as each letter; they sum to less than 1 if some predictions are not A-D);
        ``majority_letter`` (most common correct letter, ties to the earlier letter) and
        ``majority_baseline`` (accuracy of always answering it); ``answer_A`` … ``answer_D``
        (fraction of items whose correct letter is each letter).

    Raises:
        ValueError: if columns are missing (named in the message), the table is empty or it
            mixes tie rules.
    """
    require_columns(df, _ACCURACY_COLUMNS, "df", allow_empty=False)
    rule = tie_rule_of(df)
    correct = _as_1d(df["correct"].to_numpy(dtype=np.float64), "correct")
    low, high = bootstrap_ci(correct, np.mean, n_boot=n_boot, seed=seed, level=level)
    n = len(df)
    pred = df["pred"].astype(str)
    answer = df["answer"].astype(str)
    pred_frac = {f"pred_{x}": float((pred == x).sum()) / n for x in LETTERS}
    answer_frac = {f"answer_{x}": float((answer == x).sum()) / n for x in LETTERS}
    majority = max(LETTERS, key=lambda x: (answer_frac[f"answer_{x}"], -LETTERS.index(x)))
    return pd.Series(
        {
            "accuracy": float(correct.mean()),
            "ci_low": low,
            "ci_high": high,
            "n": n,
            "tie_rule": rule,
            "n_tied": tied_count(df),
            **pred_frac,
            "majority_letter": majority,
            "majority_baseline": answer_frac[f"answer_{majority}"],
            **answer_frac,
        },
        dtype=object,
    )


def accuracy_by(
    df: pd.DataFrame, by: str | Sequence[str] = "domain", n_boot: int = 2000, seed: int = 0
) -> pd.DataFrame:
    """:func:`accuracy` for every group of items (e.g. per domain or per subject).

    Args:
        df: per-item evaluation.
        by: the grouping column(s), e.g. ``"domain"``, ``"subject"`` or ``["role", "domain"]``.
        n_boot: bootstrap resamples per group.
        seed: seed of every group's bootstrap.

    Returns:
        One row per group, indexed by it, with :func:`accuracy`'s fields as columns.
    """
    keys = [by] if isinstance(by, str) else list(by)
    require_columns(df, keys, "df", allow_empty=False)
    grouping = keys[0] if len(keys) == 1 else keys
    rows = {name: accuracy(group, n_boot=n_boot, seed=seed) for name, group in df.groupby(grouping)}
    table = pd.DataFrame(rows).T.infer_objects()
    table.index.names = keys
    return table


def relative_change(baseline: float | int, value: float | int) -> float:
    """Relative change in percent, ``100 * (value - baseline) / baseline``, as the paper reports.

    Args:
        baseline: the reference value (e.g. unsteered accuracy).
        value: the new value (e.g. steered accuracy).

    Returns:
        The change as a percentage of ``baseline`` (``relative_change(0.5, 0.55) == 10.0``).

    Raises:
        ValueError: if ``baseline`` is 0.
    """
    if baseline == 0:
        raise ValueError("relative change is undefined for a baseline of 0")
    return 100.0 * (value - baseline) / baseline


def _as_bool(values: ArrayLike, name: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: need at least one item")
    if array.dtype != np.bool_:
        numeric = array.astype(np.float64)
        if not np.isin(numeric, (0.0, 1.0)).all():
            raise ValueError(f"{name} must hold booleans or 0/1 values")
        return numeric == 1.0
    return array


def mcnemar_exact(base_correct: ArrayLike, other_correct: ArrayLike) -> McNemarResult:
    """McNemar's exact test of paired correctness (two-sided binomial test on discordant pairs).

    Args:
        base_correct: per-item correctness (bool or 0/1) under the baseline.
        other_correct: per-item correctness under the other condition, same items and order.

    Returns:
        ``b`` (right at baseline, wrong under the other condition), ``c`` (wrong, then right)
        and ``p_value = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``:
        the two-sided :func:`scipy.stats.binomtest` of ``b`` successes in ``b + c`` trials
        (exact binomial probabilities, well under a millisecond at ``b + c = 10**6``); 1
        when there are no discordant pairs.

    Raises:
        ValueError: if an input is empty, not 1-D or not boolean, or the lengths differ.
    """
    base = _as_bool(base_correct, "base_correct")
    other = _as_bool(other_correct, "other_correct")
    if base.size != other.size:
        raise ValueError(
            f"base_correct has {base.size} items but other_correct has {other.size}: "
            "they must be paired"
        )
    b = int(np.sum(base & ~other))
    c = int(np.sum(~base & other))
    n = b + c
    if n == 0:
        return McNemarResult(b=b, c=c, p_value=1.0)
    # With p = 1/2 the null is symmetric, so scipy's two-sided p (outcomes no more likely than
    # the observed one) is min(1, 2 * P(X <= min(b, c))).
    p = scipy_stats.binomtest(b, n, 0.5, alternative="two-sided").pvalue
    return McNemarResult(b=b, c=c, p_value=min(1.0, float(p)))


def paired_permutation_test(diff: ArrayLike, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation test that the mean paired difference is 0.

    Under the null each item's difference is symmetric around 0, so its sign is a coin flip.
    The p-value is the share of sign assignments whose ``|mean|`` reaches the observed one
    (ties within floating-point rounding count as reaching it).

    This is :func:`scipy.stats.permutation_test` with ``permutation_type="samples"`` on one
    sample (a sign flip per item), statistic ``|sum|`` and ``alternative="greater"``, and
    ``tests/test_stats.py`` checks the two agree. The resampler stays our own, vectorised
    numpy code: scipy enumerates the ``2**16`` flips through Python tuples (about 20 times
    slower) and draws its random flips from another stream (about 40 times slower at 500
    items, and different p-values for the same seed), while :func:`compare` runs this test
    for every cell of an effect table.

    Args:
        diff: per-item differences (other minus base).
        n_perm: random sign assignments when there are more than
            :data:`EXACT_PERMUTATION_MAX_N` items.
        seed: seed of the ``numpy.random.Generator`` for the random assignments.

    Returns:
        The p-value: exact (all ``2**n`` assignments, the observed one included) for
        ``n <= 16``; otherwise ``(count + 1) / (n_perm + 1)`` where ``count`` is the number of
        random assignments at least as extreme as the observed one.

    Raises:
        ValueError: if ``diff`` is empty, not 1-D or has NaNs, or ``n_perm < 1``.
    """
    d = _as_1d(diff, "diff")
    if n_perm < 1:
        raise ValueError(f"n_perm must be at least 1, got {n_perm}")
    n = d.size
    observed = abs(float(d.sum()))
    # Equal sums computed in a different order can differ by rounding; count them as ties.
    threshold = observed - 1e-9 * float(np.abs(d).sum())
    if n <= EXACT_PERMUTATION_MAX_N:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        signs = 1.0 - 2.0 * bits
        return float(np.mean(np.abs(signs @ d) >= threshold))
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)
    count = 0
    for start in range(0, n_perm, chunk):
        size = min(chunk, n_perm - start)
        # One random byte gives eight signs: much faster than one draw per sign.
        packed = rng.integers(0, 256, size=(size, (n + 7) // 8), dtype=np.uint8)
        signs = np.unpackbits(packed, axis=1, count=n).astype(np.float64) * 2.0 - 1.0
        count += int(np.sum(np.abs(signs @ d) >= threshold))
    return (count + 1) / (n_perm + 1)


def paired_accuracy_test(
    base_credit: ArrayLike, other_credit: ArrayLike, n_perm: int = 10000, seed: int = 0
) -> PairedAccuracyResult:
    """Paired test that two conditions earn the same mean credit on the same items.

    On 0/1 credits: McNemar's exact test (:func:`mcnemar_exact`). With fractional credits
    (ties scored ``1/k``): the two-sided sign-flip permutation test
    (:func:`paired_permutation_test`) on the non-zero per-item differences ``other - base``
    — exact for at most 16 of them, else ``n_perm`` random flips. On 0/1 credits the two
    tests coincide (each discordant item is a ±1 coin flip).

    Args:
        base_credit: per-item credit in [0, 1] under the baseline.
        other_credit: per-item credit under the other condition, same items and order.
        n_perm: random sign flips when more than 16 items differ.
        seed: seed of the random flips.

    Returns:
        ``b`` (items whose credit fell), ``c`` (rose), ``p_value`` and ``test``
        (``"mcnemar"`` or ``"sign-flip"``).

    Raises:
        ValueError: empty, not 1-D, NaN, outside [0, 1], or lengths that differ.
    """
    base = _as_1d(base_credit, "base_credit")
    other = _as_1d(other_credit, "other_credit")
    if base.size != other.size:
        raise ValueError(
            f"base_credit has {base.size} items but other_credit has {other.size}: "
            "they must be paired"
        )
    for name, values in (("base_credit", base), ("other_credit", other)):
        if ((values < 0.0) | (values > 1.0)).any():
            raise ValueError(f"{name} must lie in [0, 1]")
    if np.isin(base, (0.0, 1.0)).all() and np.isin(other, (0.0, 1.0)).all():
        result = mcnemar_exact(base, other)
        return PairedAccuracyResult(
            b=result["b"], c=result["c"], p_value=result["p_value"], test="mcnemar"
        )
    diff = other - base
    moved = diff[diff != 0.0]
    p = paired_permutation_test(moved, n_perm=n_perm, seed=seed) if moved.size else 1.0
    return PairedAccuracyResult(
        b=int((diff < 0).sum()), c=int((diff > 0).sum()), p_value=p, test="sign-flip"
    )


def compare(
    base_df: pd.DataFrame,
    other_df: pd.DataFrame,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
) -> pd.Series:
    """Paired comparison of two evaluations of the same items (baseline vs e.g. steered).

    Args:
        base_df: baseline evaluation with columns ``id``, ``correct``, ``logprob_correct``.
        other_df: the other evaluation, same ids in the same order.
        n_boot: bootstrap resamples for the intervals.
        n_perm: random sign flips for the permutation test (exact for at most 16 items).
        seed: seed of the bootstrap and permutation draws.

    Returns:
        ``base_accuracy``, ``accuracy`` (mean credits under the tie rule), ``delta_accuracy``
        (other minus base) with a paired bootstrap interval ``delta_ci_low``/
        ``delta_ci_high``, ``relative_change_pct`` (NaN if the base accuracy is 0),
        ``mcnemar_b``, ``mcnemar_c`` (items whose credit fell / rose), ``mcnemar_p`` (from
        :func:`paired_accuracy_test`: McNemar's exact test on 0/1 credits, else the sign-flip
        test on credit differences), ``accuracy_test`` (which one), ``tie_rule``,
        ``delta_logprob`` (mean per-item change of ``logprob_correct``) with
        ``delta_logprob_ci_low``/``delta_logprob_ci_high`` and its permutation p-value
        ``logprob_p``, and ``n``. Read it beside :func:`accuracy` of both tables: an accuracy
        change can be a shift in letter bias.

    Raises:
        ValueError: if columns are missing, a table is empty, the tables differ in length,
            their ids differ anywhere (the message counts the differing positions) or they
            were scored with different tie rules or set-ups (:func:`check_same_setup`).
    """
    require_columns(base_df, _COMPARE_COLUMNS, "base_df", allow_empty=False)
    require_columns(other_df, _COMPARE_COLUMNS, "other_df", allow_empty=False)
    if len(base_df) != len(other_df):
        raise ValueError(
            f"base_df has {len(base_df)} items but other_df has {len(other_df)}: "
            "compare needs the same items in the same order"
        )
    base_rule, other_rule = tie_rule_of(base_df, "base_df"), tie_rule_of(other_df, "other_df")
    if UNRECORDED not in (base_rule, other_rule) and base_rule != other_rule:
        raise ValueError(
            f"base_df was scored with tie_rule {base_rule!r} but other_df with {other_rule!r}: "
            "compare needs the same rule"
        )
    check_same_setup(base_df, other_df, ("base_df", "other_df"))
    rule = base_rule if base_rule != UNRECORDED else other_rule
    differ = int((base_df["id"].to_numpy() != other_df["id"].to_numpy()).sum())
    if differ:
        raise ValueError(
            f"ids differ at {differ} of {len(base_df)} positions: "
            "compare needs the same items in the same order"
        )
    base_correct = _as_1d(base_df["correct"].to_numpy(dtype=np.float64), "base_df.correct")
    other_correct = _as_1d(other_df["correct"].to_numpy(dtype=np.float64), "other_df.correct")
    base_lp = _as_1d(base_df["logprob_correct"].to_numpy(dtype=np.float64), "base logprob")
    other_lp = _as_1d(other_df["logprob_correct"].to_numpy(dtype=np.float64), "other logprob")
    base_acc = float(base_correct.mean())
    acc = float(other_correct.mean())
    low, high = paired_bootstrap_ci(base_correct, other_correct, n_boot=n_boot, seed=seed)
    test = paired_accuracy_test(base_correct, other_correct, n_perm=n_perm, seed=seed)
    lp_diff = other_lp - base_lp
    lp_low, lp_high = bootstrap_ci(lp_diff, n_boot=n_boot, seed=seed)
    return pd.Series(
        {
            "base_accuracy": base_acc,
            "accuracy": acc,
            "delta_accuracy": acc - base_acc,
            "delta_ci_low": low,
            "delta_ci_high": high,
            "relative_change_pct": relative_change(base_acc, acc) if base_acc else math.nan,
            "mcnemar_b": test["b"],
            "mcnemar_c": test["c"],
            "mcnemar_p": test["p_value"],
            "accuracy_test": test["test"],
            "tie_rule": rule,
            "delta_logprob": float(lp_diff.mean()),
            "delta_logprob_ci_low": lp_low,
            "delta_logprob_ci_high": lp_high,
            "logprob_p": paired_permutation_test(lp_diff, n_perm=n_perm, seed=seed),
            "n": len(base_df),
        },
        dtype=object,
    )


def adjust_pvalues(
    p: Sequence[float] | npt.NDArray[Any], method: str = "holm"
) -> npt.NDArray[np.float64]:
    """Adjust p-values for multiple comparisons.

    Args:
        p: the p-values, each in [0, 1].
        method: ``"holm"`` (Holm-Bonferroni step-down; controls the family-wise error rate) or
            ``"bh"`` (Benjamini-Hochberg step-up, :func:`scipy.stats.false_discovery_control`;
            controls the false discovery rate).

    Returns:
        Adjusted p-values in the input order, monotone in the raw p-values and capped at 1.
        Reject the hypotheses whose adjusted p-value is at most the target level.

    Raises:
        ValueError: for an unknown method (the message lists the allowed ones), NaNs, values
            outside [0, 1] or input that is not 1-D.
    """
    if method not in ADJUST_METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(ADJUST_METHODS)}")
    values = np.asarray(p, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"p must be one-dimensional, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("p contains NaN")
    if ((values < 0.0) | (values > 1.0)).any():
        raise ValueError("p-values must lie in [0, 1]")
    m = values.size
    if m == 0:
        return values
    if method == "bh":
        return np.asarray(scipy_stats.false_discovery_control(values, method="bh"), np.float64)
    # Holm's step-down (scipy has none): the k-th smallest p times (m - k + 1), made monotone.
    order = np.argsort(values, kind="stable")
    adjusted = np.maximum.accumulate(values[order] * np.arange(m, 0, -1))
    out = np.empty(m, dtype=np.float64)
    out[order] = np.minimum(adjusted, 1.0)
    return out
