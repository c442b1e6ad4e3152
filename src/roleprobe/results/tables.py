"""Paper-style result tables: per-domain effects, their pivots and cross-model agreement.

**Effects.** :func:`effect_table` pairs each steered run with the unsteered baseline item by
item (by ``id``, never by row order) and reports, per role, condition, α and domain, the
accuracy change, the paper's relative change ``100 * (acc - base) / base``, McNemar's exact
test and the mean change in the log-probability of the correct letter with its sign-flip
permutation test (all from :func:`roleprobe.results.stats.compare`). Stars come from the McNemar
p-values after a Holm correction over the *whole table*: a table of 29 roles × 8 domains ×
4 conditions is ~900 tests, and uncorrected p < 0.05 would star ~45 cells by chance alone.

**Rounding.** The paper computes the relative change from accuracies rounded to 2 decimals
(``round(np.mean(scores), 2)`` in its table notebook), which moves small effects by several
percent; ``effect_table(..., round_accuracies=2)`` does the same (numpy's rounding, half to
even), the default uses the unrounded accuracies. The ``round_accuracies`` column records
which (NaN: unrounded).

**Ties.** Accuracies are mean credits under the evaluations' tie rule (``tie_rule`` column;
see :func:`roleprobe.score_table`); on fractional credits the McNemar columns hold the
sign-flip test on credit differences (``accuracy_test`` says which test ran).

**Agreement between models.** :func:`model_correlation` correlates two models' effects over
the cells both have (Pearson r with its exact two-sided p-value, :func:`scipy.stats.pearsonr`).

Orders and labels (roles in catalogue order, ``"α=3"``, stars) come from
:mod:`roleprobe.results.labels`, which the figures share; figures themselves live in
:mod:`roleprobe.results.plotting`.

Example:
    >>> effects = effect_table(base, pd.concat(runs))
    >>> pivot_effects(effects)  # role × (condition, domain) of % change
    >>> model_correlation({"smollm2": effects, "qwen": other})
"""

import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as scipy_stats

from roleprobe.results.labels import (
    alpha_missing,
    condition_label,
    condition_rank,
    domain_order,
    role_domain,
    role_order,
    significance_stars,
)
from roleprobe.results.stats import (
    adjust_pvalues,
    check_same_setup,
    compare,
    relative_change,
    require_columns,
)
from roleprobe.vectors.activations import PositionLabel

BASE_COLUMNS = ("id", "domain", "correct", "logprob_correct")
RUN_COLUMNS = ("role", "condition", "alpha", "id", "correct", "logprob_correct")
EFFECT_KEYS = ("role", "condition", "alpha", "domain")
_COMPARE_FIELDS = (
    "n",
    "base_accuracy",
    "accuracy",
    "delta_accuracy",
    "delta_ci_low",
    "delta_ci_high",
    "relative_change_pct",
    "mcnemar_b",
    "mcnemar_c",
    "mcnemar_p",
    "delta_logprob",
    "delta_logprob_ci_low",
    "delta_logprob_ci_high",
    "logprob_p",
    "accuracy_test",
    "tie_rule",
)


# ------------------------------------------------------------------ effects -----------------
def effect_table(
    base: pd.DataFrame,
    runs: pd.DataFrame,
    n_boot: int = 2000,
    n_perm: int = 10000,
    seed: int = 0,
    round_accuracies: int | None = None,
) -> pd.DataFrame:
    """Per-domain effect of every steered run against the baseline, as in the paper's tables.

    Args:
        base: the unsteered per-item evaluation (:func:`roleprobe.evaluate`), one row per
            question, with at least ``id, domain, correct, logprob_correct``.
        runs: per-item tables of steered runs concatenated, with at least ``role, condition,
            alpha, id, correct, logprob_correct`` (``alpha`` NaN where it does not apply,
            e.g. ablation and persona). Each (role, condition, alpha) must hold every id once.
        n_boot: bootstrap resamples for the intervals.
        n_perm: random sign flips for the log-prob permutation test (exact up to 16 items).
        seed: seed of the bootstrap and permutation draws.
        round_accuracies: compute ``relative_change_pct`` from accuracies rounded to this
            many decimals (``2``: as the paper); ``None`` (default): unrounded. Only the
            relative change is affected.

    Returns:
        One row per (role, condition, alpha, domain), in catalogue order: ``in_domain`` (the
        role's own domain), ``n``, ``base_accuracy``, ``accuracy``, ``delta_accuracy`` with
        ``delta_ci_low``/``delta_ci_high``, ``relative_change_pct`` (NaN if the base accuracy
        is 0, after rounding if asked), ``mcnemar_b``, ``mcnemar_c``, ``mcnemar_p``,
        ``mcnemar_p_adj`` (Holm over the whole table), ``stars`` (from ``mcnemar_p_adj``),
        ``delta_logprob`` with its interval, ``logprob_p``, ``accuracy_test`` (``"mcnemar"``
        or ``"sign-flip"``, see :func:`roleprobe.results.stats.paired_accuracy_test`), ``tie_rule``
        and ``round_accuracies`` (NaN: unrounded).

    Raises:
        ValueError: a missing column (named), duplicated ids, run ids absent from ``base``
            (the message names the role and condition), a negative ``round_accuracies``, or
            a baseline asked otherwise than the runs: another system-turn policy, question
            format, model or dtype (:func:`roleprobe.results.stats.check_same_setup`; the
            columns :func:`roleprobe.evaluate` writes).
    """
    if round_accuracies is not None and round_accuracies < 0:
        raise ValueError(f"round_accuracies must be >= 0 or None, got {round_accuracies}")
    require_columns(base, BASE_COLUMNS, "base")
    require_columns(runs, RUN_COLUMNS, "runs")
    if len(runs) == 0:
        raise ValueError("runs is empty: need at least one steered run")
    if base["id"].duplicated().any():
        raise ValueError("base has duplicated ids; it must hold one row per question")
    check_same_setup(base, runs)
    scored = [c for c in ("correct", "logprob_correct", "tie_rule") if c in base.columns]
    base_items = base[["id", "domain", *scored]].rename(columns={c: f"{c}_base" for c in scored})
    rows: list[dict[str, Any]] = []
    groups = runs.groupby(["role", "condition", "alpha"], dropna=False, sort=False)
    for (role, condition, alpha), run in groups:
        where = f"role {role!r}, condition {condition!r}" + (
            "" if alpha_missing(alpha) else f", alpha {alpha:g}"
        )
        if run["id"].duplicated().any():
            raise ValueError(
                f"{where}: some ids appear more than once; split runs that differ in another "
                "column (layer, position, ...) before building the table"
            )
        absent = run.loc[~run["id"].isin(base_items["id"]), "id"].tolist()
        if absent:
            raise ValueError(f"{where}: {len(absent)} ids are missing in base, e.g. {absent[:3]}")
        run_scored = [c for c in ("correct", "logprob_correct", "tie_rule") if c in run.columns]
        paired = run[["id", *run_scored]].merge(base_items, on="id", validate="one_to_one")
        own = role_domain(str(role))
        for domain, cell in paired.groupby("domain", sort=False):
            before = cell[["id", *(f"{c}_base" for c in scored)]].set_axis(["id", *scored], axis=1)
            after = cell[["id", *run_scored]]
            stats = compare(before, after, n_boot=n_boot, n_perm=n_perm, seed=seed)
            if round_accuracies is not None:
                stats["relative_change_pct"] = _rounded_change(
                    stats["base_accuracy"], stats["accuracy"], round_accuracies
                )
            rows.append(
                {
                    "role": role,
                    "condition": condition,
                    "alpha": float(alpha),
                    "domain": domain,
                    "in_domain": own == domain,
                    **{key: stats[key] for key in _COMPARE_FIELDS},
                    "round_accuracies": math.nan
                    if round_accuracies is None
                    else float(round_accuracies),
                }
            )
    table = pd.DataFrame(rows).infer_objects()
    table = _sort_effects(table)
    table["mcnemar_p_adj"] = adjust_pvalues(table["mcnemar_p"].to_numpy(np.float64), "holm")
    table["stars"] = [significance_stars(p) for p in table["mcnemar_p_adj"]]
    order = [*EFFECT_KEYS, "in_domain", *_COMPARE_FIELDS[:10], "mcnemar_p_adj", "stars"]
    return table[order + list(_COMPARE_FIELDS[10:]) + ["round_accuracies"]]


def _rounded_change(base: float, value: float, decimals: int) -> float:
    """The paper's relative change: from accuracies rounded as its notebook does
    (``round(np.mean(...), 2)`` on a numpy float: numpy's rounding)."""
    rounded_base = float(np.round(np.float64(base), decimals))
    rounded = float(np.round(np.float64(value), decimals))
    return relative_change(rounded_base, rounded) if rounded_base else math.nan


def _sort_effects(table: pd.DataFrame) -> pd.DataFrame:
    roles = {r: i for i, r in enumerate(role_order(list(table["role"])))}
    domains = {d: i for i, d in enumerate(domain_order(list(table["domain"])))}
    keys = [
        (roles[r], condition_rank(c, a), domains[d])
        for r, c, a, d in zip(
            table["role"], table["condition"], table["alpha"], table["domain"], strict=True
        )
    ]
    order = sorted(range(len(table)), key=keys.__getitem__)
    return table.iloc[order].reset_index(drop=True)


def pivot_effects(effects: pd.DataFrame, value: str = "relative_change_pct") -> pd.DataFrame:
    """One column of :func:`effect_table` as a role × (condition, domain) grid.

    Args:
        effects: the output of :func:`effect_table` (``role, condition, alpha, domain`` and
            ``value``).
        value: the column to spread (e.g. ``"relative_change_pct"``, ``"delta_logprob"``,
            ``"stars"``).

    Returns:
        Rows: roles in catalogue order. Columns: a MultiIndex ``(condition, domain)`` where
        the condition is labelled ``"α=1"``, ``"α=3"``, ``"ablation"``, ``"persona"``
        (additions by α first) and domains follow :data:`roleprobe.data.roles.DOMAINS`. Missing
        cells are NaN.

    Raises:
        ValueError: a missing column, or two rows for one cell.
    """
    require_columns(effects, [*EFFECT_KEYS, value], "effects")
    labelled = effects.assign(
        condition_label=[
            condition_label(c, a)
            for c, a in zip(effects["condition"], effects["alpha"], strict=True)
        ]
    )
    keys = ["role", "condition_label", "domain"]
    if labelled.duplicated(keys).any():
        raise ValueError("effects has several rows for one (role, condition, alpha, domain)")
    ranks = {
        condition_label(c, a): condition_rank(c, a)
        for c, a in zip(effects["condition"], effects["alpha"], strict=True)
    }
    labels = sorted(ranks, key=ranks.__getitem__)
    domains = domain_order(list(effects["domain"]))
    grid = labelled.pivot(index="role", columns=["condition_label", "domain"], values=value)
    columns = pd.MultiIndex.from_product([labels, domains], names=["condition", "domain"])
    present = [c for c in columns if c in grid.columns]
    grid = grid.reindex(index=role_order(list(effects["role"])), columns=present)
    grid.columns = pd.MultiIndex.from_tuples(present, names=["condition", "domain"])
    grid.index.name = "role"
    return grid


# ------------------------------------------------------------------ models ------------------
def pearson_test(
    x: npt.NDArray[Any] | Sequence[float], y: npt.NDArray[Any] | Sequence[float]
) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value, from :func:`scipy.stats.pearsonr`.

    The p-value is the exact one under bivariate normality (the t-test with ``n - 2`` degrees
    of freedom). Unlike scipy, fewer than 3 pairs (where ``|r| = 1`` says nothing) and a
    constant input give NaN for both, without a warning.

    Raises:
        ValueError: ``x`` and ``y`` are not 1-D of one length.
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"x and y must be 1-D of the same length, got {a.shape} and {b.shape}")
    if a.size < 3 or a.std() == 0 or b.std() == 0:
        return math.nan, math.nan
    result = scipy_stats.pearsonr(a, b)
    return float(result.statistic), float(result.pvalue)


def model_correlation(
    effects_by_model: Mapping[str, pd.DataFrame], value: str = "relative_change_pct"
) -> pd.DataFrame:
    """Pearson correlation of effects between every pair of models, over their shared cells.

    Args:
        effects_by_model: model name -> :func:`effect_table` output (``role, condition,
            alpha, domain`` and ``value``), at least two models.
        value: the effect to correlate.

    Returns:
        Long format, one row per pair in the mapping's order: ``model_a, model_b, r, p, n``
        (``n`` shared cells where both values are finite; ``r``/``p`` NaN below 3 cells).
    """
    if len(effects_by_model) < 2:
        raise ValueError("model_correlation needs at least two models")
    keyed = {}
    for name, effects in effects_by_model.items():
        require_columns(effects, [*EFFECT_KEYS, value], f"effects of {name!r}")
        index = pd.MultiIndex.from_arrays(
            [
                effects["role"],
                [
                    condition_label(c, a)
                    for c, a in zip(effects["condition"], effects["alpha"], strict=True)
                ],
                effects["domain"],
            ]
        )
        if index.duplicated().any():
            raise ValueError(f"effects of {name!r} has several rows for one cell")
        keyed[name] = pd.Series(effects[value].to_numpy(np.float64), index=index)
    rows = []
    for a, b in combinations(keyed, 2):
        both = pd.concat([keyed[a], keyed[b]], axis=1, join="inner").dropna()
        r, p = pearson_test(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy())
        rows.append({"model_a": a, "model_b": b, "r": r, "p": p, "n": len(both)})
    return pd.DataFrame(rows, columns=["model_a", "model_b", "r", "p", "n"])


COMPONENT_COLUMNS = (
    "role",
    "domain",
    "position",
    "component",
    "kind",
    "layer",
    "head",
    "value",
    "share",
)
"""The columns of a :func:`roleprobe.component_attribution` table."""


def top_writers(
    df: pd.DataFrame, k: int = 5, position: PositionLabel | None = None
) -> pd.DataFrame:
    """The ``k`` components with the largest ``|value|`` for each role (and position).

    Args:
        df: a :func:`roleprobe.component_attribution` table.
        k: components per role and position.
        position: one position label (default: every position in ``df``).

    Returns:
        Rows ``role, domain, position, rank, component, kind, layer, head, value, share``,
        ``rank`` 1 the largest ``|value|``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    missing = [c for c in COMPONENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"not a component_attribution table: columns {missing} are missing")
    data = df if position is None else df[df["position"] == position]
    if data.empty:
        raise ValueError(
            f"no rows for position {position!r}; have {sorted(set(df['position']), key=str)}"
        )
    ranked = data.assign(_abs=data["value"].abs()).sort_values(
        ["role", "position", "_abs"], ascending=[True, True, False], kind="stable"
    )
    top = ranked.groupby(["role", "position"], sort=False).head(k).drop(columns="_abs")
    top = top.assign(rank=top.groupby(["role", "position"], sort=False).cumcount() + 1)
    order = {r: i for i, r in enumerate(dict.fromkeys(df["role"]))}
    top = top.sort_values(
        ["role", "position", "rank"], key=lambda s: s.map(order) if s.name == "role" else s
    )
    cols = [*COMPONENT_COLUMNS[:3], "rank", *COMPONENT_COLUMNS[3:]]
    return top[cols].reset_index(drop=True)
