"""Selection rules: pick one (position, layer) per role from a sweep, honestly or as the paper.

A rule is a strategy callable ``rule(candidates, baseline, n_layers) -> Pick`` over one
role's (or one control's) candidates for one α: a table with ``position, layer,
add_accuracy, abl_accuracy`` (NaN without ablation), ``add_logprob``, and the baseline
accuracy on the same questions.

* :func:`paper_rule` — the paper's: drop layers ``>= int(0.8 * n_layers)`` and candidates
  whose addition accuracy is below the baseline (rounded to 2 decimals, as the paper does);
  sort by addition accuracy (ties to the earliest layer, then position); take the first
  whose ablation accuracy is below that baseline, else the best. If every candidate is
  below the baseline, the best remaining one is returned with ``passed=False``.
* :func:`select` with ``rule="paper"`` applies it to the sweep's questions and reports on
  the *same* questions (the paper's procedure: optimistic). With ``rule="held-out"`` (our
  default) the questions of each role are split (seeded, stratified by subject), the rule
  runs on the selection part only, and the pick is reported on the questions it never saw,
  with a paired bootstrap CI, an exact McNemar test and a paired permutation test on the
  correct-letter log-prob; p-values are corrected across all picks (Holm or BH), and the
  number of grid candidates that look significant on the selection part after correction
  is reported beside them.

Controls go through the same rule, so ``passed`` on the random and shuffled-role rows says
how often the rule finds a "role effect" in a direction that has none.

Example:
    >>> picks = rp.select(result, rule="held-out")
    >>> picks.groupby("source")["passed"].mean()
"""

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from roleprobe.activations import PositionLabel
from roleprobe.stats import (
    adjust_pvalues,
    mcnemar_exact,
    paired_bootstrap_ci,
    paired_permutation_test,
    relative_change,
)
from roleprobe.sweeps import SweepResult

RULES = ("paper", "held-out")
CORRECTIONS = ("holm", "bh")


@dataclass(frozen=True)
class Pick:
    """A rule's choice for one role (or control) and α.

    Attributes:
        position: the chosen position label.
        layer: the chosen layer.
        passed: whether the pick meets the rule (above baseline with addition, below with
            ablation, for the paper's rule), rather than being a fallback.
        reason: why the pick was made, in words.
    """

    position: PositionLabel
    layer: int
    passed: bool
    reason: str


Rule = Callable[[pd.DataFrame, float, int], Pick]


def paper_rule(candidates: pd.DataFrame, baseline: float, n_layers: int) -> Pick:
    """The paper's rule (see the module docstring).

    Args:
        candidates: one row per (position, layer): ``position, layer, add_accuracy,
            abl_accuracy`` (NaN if ablation was not run).
        baseline: baseline accuracy on the same questions.
        n_layers: the model's depth.

    Raises:
        ValueError: no candidates, or none below ``int(0.8 * n_layers)``.
    """
    if candidates.empty:
        raise ValueError("no candidates to select from")
    cutoff = int(0.8 * n_layers)
    allowed = candidates[candidates["layer"] < cutoff]
    if allowed.empty:
        raise ValueError(f"every candidate layer is >= {cutoff} (0.8 of {n_layers} layers)")
    base = round(baseline, 2)
    ranked = _rank(allowed)
    above = ranked[ranked["add_accuracy"] >= base]
    if above.empty:
        best = ranked.iloc[0]
        return _make_pick(best, False, "all below baseline: best")
    if above["abl_accuracy"].isna().all():
        best = above.iloc[0]
        return _make_pick(best, True, "addition >= base (no ablation)")
    ablated_below = above[above["abl_accuracy"] < base]
    if not ablated_below.empty:
        first = ablated_below.iloc[0]
        return _make_pick(first, True, "addition >= base, ablation < base")
    best = above.iloc[0]
    return _make_pick(best, False, "no ablation below base: best")


def _rank(candidates: pd.DataFrame) -> pd.DataFrame:
    """Best addition accuracy first; ties to the earliest layer, then the earliest position."""
    order = candidates.assign(_pos=[_position_order(p) for p in candidates["position"]])
    order = order.sort_values(
        ["add_accuracy", "layer", "_pos"], ascending=[False, True, True], kind="mergesort"
    )
    return order.drop(columns="_pos")


def _make_pick(row: "pd.Series[Any]", passed: bool, reason: str) -> Pick:
    position = row["position"]
    # a row of a mixed-type frame comes back as floats: -1.0 is the label -1
    numeric = isinstance(position, int | float | np.number) and float(position).is_integer()
    label = int(position) if numeric else str(position)
    return Pick(label, int(row["layer"]), passed, reason)


def _position_order(position: Any) -> float:
    return float(position) if isinstance(position, int | float | np.integer) else math.inf


def _candidate_table(scores: pd.DataFrame, alpha: float) -> pd.DataFrame:
    keys = ["position", "layer"]
    add = scores[(scores["condition"] == "addition") & np.isclose(scores["alpha"], alpha)]
    add = add.set_index(keys)[["accuracy", "logprob_correct"]].rename(
        columns={"accuracy": "add_accuracy", "logprob_correct": "add_logprob"}
    )
    abl = scores[scores["condition"] == "ablation"].set_index(keys)[["accuracy"]]
    out = add.join(abl.rename(columns={"accuracy": "abl_accuracy"}), how="left")
    return out.reset_index()


def split_ids(items: pd.DataFrame, fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Question ids into (selection, report) parts, stratified by subject, seeded."""
    if not 0 < fraction < 1:
        raise ValueError(f"select_fraction must be strictly between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    chosen: list[Any] = []
    rest: list[Any] = []
    for _, group in items.groupby("subject", sort=True):
        ids = sorted(group["id"].tolist(), key=str)
        rng.shuffle(ids)
        k = round(fraction * len(ids))
        chosen += ids[:k]
        rest += ids[k:]
    if not chosen or not rest:
        raise ValueError(f"{len(items)} questions are too few to split {fraction:.0%}/rest")
    return chosen, rest


def select(
    result: SweepResult,
    rule: str | Rule = "held-out",
    select_fraction: float = 0.5,
    seed: int = 0,
    correction: str = "holm",
    criterion: Rule = paper_rule,
    n_boot: int = 2000,
    n_perm: int = 10000,
) -> pd.DataFrame:
    """Pick a (position, layer) per role, control and α, and report it with statistics.

    Args:
        result: a complete sweep.
        rule: ``"held-out"`` (select on one part of each role's questions, report on the
            rest), ``"paper"`` (select and report on the same questions) or a rule callable
            (applied held-out).
        select_fraction: share of each role's questions used for selection (held-out).
        seed: seed of the split.
        correction: ``"holm"`` or ``"bh"``, for p-values across picks and across the grid.
        criterion: the rule used inside the held-out split (default: the paper's).
        n_boot, n_perm: resamples of the bootstrap CI and the permutation test.

    Returns:
        One row per (role, source, alpha): ``role, source, donor, alpha, rule, position,
        layer, passed, reason, select_n, select_base_accuracy, select_accuracy,
        select_ablation_accuracy, grid_significant`` (candidates with corrected McNemar
        p < 0.05 on the selection questions), ``report_n, report_base_accuracy,
        report_accuracy, delta_accuracy, delta_ci_low, delta_ci_high,
        relative_change_pct, mcnemar_p, delta_logprob, logprob_p`` and their corrected
        ``mcnemar_p_adj, logprob_p_adj``.
    """
    if not result.complete:
        raise ValueError(
            f"the sweep is incomplete ({len(result.missing)} parts missing): merge first"
        )
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; use one of {CORRECTIONS}")
    if isinstance(rule, str) and rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES} or a callable")
    if not result.config.alphas:
        raise ValueError("the sweep has no additions (alphas=()) to select by")
    held_out = rule != "paper"
    chooser: Rule = criterion if isinstance(rule, str) else rule
    label = rule if isinstance(rule, str) else getattr(rule, "__name__", "custom")
    rows = []
    for role in result.config.roles:
        ids = result.role_items(role)
        items = result.baseline[result.baseline["id"].isin(ids)].drop_duplicates("id")
        sel_ids, rep_ids = split_ids(items, select_fraction, seed) if held_out else (ids, ids)
        sel_scores = result.scores(sel_ids)
        sel_scores = sel_scores[sel_scores["role"] == role]
        table = result.table[result.table["role"] == role]
        base_rep = _items(result.baseline, result.role_group(role), rep_ids)
        for (source, donor), scores in sel_scores.groupby(["source", "donor"], sort=False):
            grid = _grid_significance(table, result, role, source, sel_ids, correction)
            for alpha in result.config.alphas:
                cands = _candidate_table(scores, alpha)
                base = float(scores["base_accuracy"].iloc[0])
                pick = chooser(cands, base, result.n_layers)
                chosen = cands[
                    (cands["layer"] == pick.layer) & (cands["position"] == pick.position)
                ]
                picked = table[
                    (table["source"] == source)
                    & (table["condition"] == "addition")
                    & np.isclose(table["alpha"], alpha)
                    & (table["layer"] == pick.layer)
                    & (table["position"] == pick.position)
                ]
                other = picked.set_index("id").loc[base_rep["id"]].reset_index()
                rows.append(
                    {
                        "role": role,
                        "source": source,
                        "donor": donor,
                        "alpha": alpha,
                        "rule": label,
                        "position": pick.position,
                        "layer": pick.layer,
                        "passed": pick.passed,
                        "reason": pick.reason,
                        "select_n": len(sel_ids),
                        "select_base_accuracy": base,
                        "select_accuracy": float(chosen["add_accuracy"].iloc[0]),
                        "select_ablation_accuracy": float(chosen["abl_accuracy"].iloc[0]),
                        "grid_significant": grid,
                        **_report(base_rep, other, n_boot, n_perm, seed),
                    }
                )
    out = pd.DataFrame(rows)
    method = "holm" if correction == "holm" else "bh"
    for col in ("mcnemar_p", "logprob_p"):
        out[f"{col}_adj"] = adjust_pvalues(out[col].tolist(), method)
    return out


def _items(baseline: pd.DataFrame, group: str, ids: Sequence[Any]) -> pd.DataFrame:
    rows = baseline[baseline["group"] == group].set_index("id")
    return rows.loc[list(ids)].reset_index()


def _report(
    base: pd.DataFrame, other: pd.DataFrame, n_boot: int, n_perm: int, seed: int
) -> dict[str, Any]:
    b = base["correct"].to_numpy(dtype=float)
    o = other["correct"].to_numpy(dtype=float)
    low, high = paired_bootstrap_ci(b, o, n_boot=n_boot, seed=seed)
    diff = other["logprob_correct"].to_numpy(dtype=float) - base["logprob_correct"].to_numpy(
        dtype=float
    )
    base_acc, acc = float(b.mean()), float(o.mean())
    return {
        "report_n": len(b),
        "report_base_accuracy": base_acc,
        "report_accuracy": acc,
        "delta_accuracy": acc - base_acc,
        "delta_ci_low": low,
        "delta_ci_high": high,
        "relative_change_pct": relative_change(base_acc, acc) if base_acc else math.nan,
        "mcnemar_p": mcnemar_exact(b, o)["p_value"],
        "delta_logprob": float(diff.mean()),
        "logprob_p": paired_permutation_test(diff, n_perm=n_perm, seed=seed),
    }


def _grid_significance(
    table: pd.DataFrame,
    result: SweepResult,
    role: str,
    source: str,
    ids: Sequence[Any],
    correction: str,
) -> int:
    """How many grid candidates beat or trail the baseline with corrected McNemar p < 0.05."""
    rows = table[(table["source"] == source) & table["id"].isin(set(ids))]
    base = _items(result.baseline, result.role_group(role), ids).set_index("id")["correct"]
    pvalues = []
    for _, cell in rows.groupby(["position", "layer", "condition", "alpha"], dropna=False):
        other = cell.set_index("id")["correct"].loc[base.index]
        pvalues.append(mcnemar_exact(base.to_numpy(float), other.to_numpy(float))["p_value"])
    if not pvalues:
        return 0
    adjusted = adjust_pvalues(pvalues, "holm" if correction == "holm" else "bh")
    return int(sum(p < 0.05 for p in adjusted))


def evaluate_picks(
    model: Any,
    directions: Any,
    benchmark: Any,
    picks: pd.DataFrame,
    source: str = "role",
    ablation: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Apply each role's pick to a whole benchmark (e.g. all eight domains), as the paper.

    Args:
        model: the bridge.
        directions: the :class:`~roleprobe.RoleDirections` the sweep used.
        benchmark: the questions to report on.
        picks: output of :func:`select` (rows of other sources are ignored).
        source: which rows of ``picks`` to apply (``"role"`` by default; a control's name
            evaluates the control's pick with the role's label, for comparison).
        ablation: also ablate the direction picked for the smallest α (one ablation per
            role, the paper's third column).
        seed: the sweep's seed (for ``source="random"``).
        batch_size: questions per forward pass; progress: tqdm bars.

    Returns:
        Per-item rows of :func:`roleprobe.evaluate` with ``role``, ``condition``
        (``addition``/``ablation``), ``alpha`` (NaN for ablation), ``position`` and
        ``layer`` — the input of :func:`roleprobe.effect_table`.
    """
    from roleprobe.evaluation import evaluate
    from roleprobe.interventions import Ablation, Addition
    from roleprobe.sweeps import random_control

    chosen = picks[picks["source"] == source]
    if chosen.empty:
        raise ValueError(
            f"no picks with source {source!r} (sources: {sorted(set(picks['source']))})"
        )
    tables = []
    first_alpha = chosen.groupby("role")["alpha"].transform("min")
    for (_, row), lowest in zip(chosen.iterrows(), first_alpha, strict=True):
        role, layer = str(row["role"]), int(row["layer"])
        position = _make_pick(row, True, "").position
        vector = directions.vector(row["donor"] or role, layer, position)
        if source == "random":
            d = directions.vector(role, layer, position)
            vector = random_control(d, role, position, layer, seed)
        labels = {"role": role, "position": position, "layer": layer, "source": source}
        alpha = float(row["alpha"])
        add = evaluate(
            model, benchmark, Addition(vector, layer, alpha), batch_size, progress=progress
        )
        tables.append(add.assign(**labels, alpha=alpha, condition="addition"))
        if ablation and alpha == lowest:
            abl = evaluate(model, benchmark, Ablation(vector), batch_size, progress=progress)
            tables.append(abl.assign(**labels, alpha=math.nan, condition="ablation"))
    return pd.concat(tables, ignore_index=True)
