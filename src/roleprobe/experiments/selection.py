"""Selection rules: pick one (position, layer) per role from a sweep, honestly or as the paper.

A rule is a strategy callable ``rule(candidates, baseline, n_layers) -> Pick`` over one
role's (or one control's) candidates for one α: a table with ``position, layer,
add_accuracy, abl_accuracy`` (NaN without ablation), ``add_logprob``, optionally
``ref_add_accuracy`` (the addition accuracy at α = 1, whose list the paper takes the
ablation values from), and the baseline accuracy on the same questions.

* :func:`paper_rule` — the authors' code (``select_direction.py`` and the table notebook
  ``results_add_abl.ipynb`` at cfa1e6e), step by step:

  1. scores are float32 means as their GPU computed them: ``scores.mean()`` of a CUDA
     float32 tensor is ``float32(float32(sum) * float32(1/n))``, which differs from the exact
     mean rounded to float32 for 29-231 of the n + 1 possible counts at the paper's domain
     sizes (:func:`float32_mean`; needs the candidates' ``n``);
  2. drop layers ``>= int(n_layers * (1 - 0.2))`` and candidates whose addition accuracy
     is below the *unrounded* baseline (``filter_fn``);
  3. visit candidates position-major (``for pos in range(-n_pos, 0): for layer in ...``)
     and stable-sort by addition accuracy, best first: ties go to the earliest position
     (the most negative), then the earliest layer;
  4. round the baseline to 2 decimals as the notebook does (``round`` of a numpy float:
     numpy's half-to-even on the scaled value, so 0.445 -> 0.44) and take the first
     candidate with addition ``>=`` and ablation ``<`` that rounded baseline;
  5. at α != 1 the ablation values come from the α = 1 list: a candidate counts in step 4
     only if it survived the α = 1 filter of step 2 (``ref_add_accuracy``);
  6. else the best candidate (``passed=False``).

  **Zero candidates.** The authors score every (position, layer), layer 0 included. At a
  post-instruction position the layer-0 direction is exactly zero (every prompt has the
  same template tokens there), so its addition and ablation accuracies *are* the baseline:
  it always survives step 2 and comes first among equals in step 3. Whenever no non-zero
  candidate beats the baseline, the authors' fallback in step 6 is that zero direction,
  and the paper's table shows +0.0 % for it. The sweep does not run zero directions (it
  lists them in its manifest, :attr:`SweepResult.skipped`); :func:`select` with
  ``rule="paper"`` gives them back to the rule as candidates at the baseline's scores
  (``zero_candidates``), without running the model, and marks a pick of one
  ``zero_direction=True``. Because of them the authors' ``assert len(filtered_scores) > 0``
  can never fire; here step 2 can leave nothing only on a grid without zero candidates
  (layer 0 not swept, or another rule), and then the best candidate below the baseline is
  returned with ``passed=False`` and a reason saying so.

  For the authors' numbers end to end, sweep with ``tie_rule="paper"`` (their argmax
  credits a tie that includes the correct letter) and select with ``rule="paper"``.
* :func:`paper_rounded_rule` — roleprobe's earlier reading of the rule: only the rounded
  baseline (Python's rounding), float64 accuracies, ties to the earliest layer, then
  position, one ablation list for every α. Simpler, but it can pass a candidate below the
  baseline (baseline 0.4449, addition 0.444) and picks differently on ties.
* :func:`select` with ``rule="paper"`` (or ``"paper-rounded"``) applies it to the sweep's
  questions and reports on the *same* questions (the paper's procedure: optimistic). With
  ``rule="held-out"`` (our default) the questions of each role are split (seeded,
  stratified by subject), the rule runs on the selection part only, and the pick is
  reported on the questions it never saw, with a paired bootstrap CI, an exact McNemar test
  (the sign-flip test on credit differences when ties earn fractional credit) and a paired
  permutation test on the correct-letter log-prob; p-values are corrected across all
  picks (Holm or BH), and the number of grid candidates that look significant on the
  selection part after correction is reported beside them. Accuracies are mean credits
  under the sweep's tie rule (``tie_rule`` column).

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

from roleprobe.experiments.sweeps import SweepResult
from roleprobe.results.stats import (
    adjust_pvalues,
    paired_accuracy_test,
    paired_bootstrap_ci,
    paired_permutation_test,
    relative_change,
)
from roleprobe.vectors.activations import PositionLabel

RULES = ("paper", "paper-rounded", "held-out")
PRUNE_LAYER_FRACTION = 0.2
"""The authors' ``prune_layer_percentage``: the last 20% of the layers are never picked."""
CORRECTIONS = ("holm", "bh")


def layer_cutoff(n_layers: int) -> int:
    """The first layer the paper rule never picks: ``int(n_layers * 0.8)``, as the authors."""
    return int(n_layers * (1.0 - PRUNE_LAYER_FRACTION))


@dataclass(frozen=True)
class Pick:
    """A rule's choice for one role (or control) and α.

    Attributes:
        position: the chosen position label.
        layer: the chosen layer.
        passed: whether the pick meets the rule (above baseline with addition, below with
            ablation, for the paper's rule), rather than being a fallback.
        reason: why the pick was made, in words.
        zero_direction: the pick is a zero direction (the authors' layer-0 candidate): its
            addition and ablation are the unsteered model.
    """

    position: PositionLabel
    layer: int
    passed: bool
    reason: str
    zero_direction: bool = False


Rule = Callable[[pd.DataFrame, float, int], Pick]


def paper_rule(candidates: pd.DataFrame, baseline: float, n_layers: int) -> Pick:
    """The authors' rule, bit for bit (see the module docstring).

    Args:
        candidates: one row per (position, layer): ``position, layer, add_accuracy,
            abl_accuracy`` (NaN if ablation was not run), optionally ``n`` (the number of
            questions: with it every accuracy is the float32 value the authors' GPU
            computed, :func:`float32_mean`; without it, the exact mean rounded to float32),
            ``ref_add_accuracy`` (the α = 1 addition accuracy; with it, only candidates
            that survive the α = 1 filter can pass on their ablation, as at α = 3 in the
            paper) and ``zero_direction`` (the candidate is a zero direction scored at the
            baseline: :func:`select` adds them for ``rule="paper"``).
        baseline: baseline accuracy on the same questions (unrounded).
        n_layers: the model's depth.

    Returns:
        The pick; ``passed`` says whether it met addition >= and ablation < the rounded
        baseline (addition alone without ablation).

    Raises:
        ValueError: no candidates, or none below ``int(0.8 * n_layers)``.

    Example:
        >>> paper_rule(candidates, baseline=0.4449, n_layers=30)
    """
    allowed = _allowed(candidates, n_layers)
    n = _question_count(allowed)
    base32 = float32_mean(baseline, n)
    add32 = _float32_means(allowed["add_accuracy"], n)
    kept = allowed[add32 >= base32]  # filter_fn: below the unrounded baseline (or NaN) goes
    if kept.empty:
        best = _rank_position_major(allowed, n).iloc[0]
        return _make_pick(
            best,
            False,
            "all below the unrounded baseline (no zero candidate to fall back on): best",
        )
    ranked = _rank_position_major(kept, n)
    rounded = float(np.round(np.float64(baseline), 2))
    add = _float32_means(ranked["add_accuracy"], n)
    abl = _float32_means(ranked["abl_accuracy"], n)
    if abl.isna().all():
        best = ranked.iloc[0]
        return _make_pick(best, bool(add.iloc[0] >= rounded), "best addition (no ablation)")
    listed = pd.Series(True, index=ranked.index)
    if "ref_add_accuracy" in ranked.columns:
        listed = _float32_means(ranked["ref_add_accuracy"], n) >= base32
    hits = ranked[listed & (add >= rounded) & (abl < rounded)]
    if not hits.empty:
        return _make_pick(hits.iloc[0], True, "addition >= base, ablation < base")
    return _make_pick(ranked.iloc[0], False, "no ablation below base: best")


def float32_mean(accuracy: float, n: int | None) -> float:
    """An accuracy as the authors' GPU held it: ``scores.mean()`` of ``n`` float32 scores.

    PyTorch's CUDA mean sums in float32 (exact for counts below 2**24) and multiplies the
    sum by the float32 reciprocal of ``n``: ``float32(float32(sum) * float32(1 / n))``. For
    the paper's domain sizes (200 to 590 questions) that differs by one float32 step from
    the exact mean rounded to float32 for 29 to 231 of the ``n + 1`` possible counts, and
    the comparison with a baseline rounded to 2 decimals flips for 30 counts at n = 200.

    Args:
        accuracy: the mean credit (the sum is ``accuracy * n``, rounded to float32).
        n: the number of scores; ``None``: the exact mean rounded to float32 (what a CPU
            ``mean``, which divides, gives).

    Returns:
        The float32 value as a Python float (NaN stays NaN).

    Example:
        >>> float32_mean(90 / 200, 200)  # the GPU's 0.45, one float32 step from float32(0.45)
    """
    if n is None or not math.isfinite(accuracy):
        return float(np.float32(accuracy))
    total = np.float32(accuracy * n)
    return float(np.float32(total * (np.float32(1.0) / np.float32(n))))


def _float32_means(values: "pd.Series[float]", n: int | None) -> "pd.Series[float]":
    return values.map(lambda v: float32_mean(float(v), n))


def _question_count(candidates: pd.DataFrame) -> int | None:
    """The candidates' common number of questions (``n``), or ``None`` without the column."""
    if "n" not in candidates.columns:
        return None
    counts = set(candidates["n"].dropna().astype(int))
    if len(counts) > 1:
        raise ValueError(f"candidates are scored on different numbers of questions: {counts}")
    return counts.pop() if counts else None


def paper_rounded_rule(candidates: pd.DataFrame, baseline: float, n_layers: int) -> Pick:
    """roleprobe's earlier, simpler reading of the paper's rule (see the module docstring).

    Candidates with addition accuracy ``>=`` the baseline rounded to 2 decimals (Python's
    rounding), sorted best first with ties to the earliest layer, then position; the first
    whose ablation accuracy is below that baseline passes, else the best (``passed=False``).

    Args:
        candidates: ``position, layer, add_accuracy, abl_accuracy`` (NaN without ablation).
        baseline: baseline accuracy on the same questions.
        n_layers: the model's depth.

    Raises:
        ValueError: no candidates, or none below ``int(0.8 * n_layers)``.
    """
    allowed = _allowed(candidates, n_layers)
    base = round(baseline, 2)
    ranked = _rank_layer_major(allowed)
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


def _allowed(candidates: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """Candidates below the pruned top layers (``int(n_layers * 0.8)``, as the authors)."""
    if candidates.empty:
        raise ValueError("no candidates to select from")
    cutoff = layer_cutoff(n_layers)
    allowed = candidates[candidates["layer"] < cutoff]
    if allowed.empty:
        raise ValueError(f"every candidate layer is >= {cutoff} (0.8 of {n_layers} layers)")
    return allowed


def _rank_position_major(candidates: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """The authors' order: visited position-major (earliest position, then layer), then
    stable-sorted by float32 addition accuracy, best first."""
    visit = candidates.assign(
        _pos=[_position_order(p) for p in candidates["position"]],
        _add=_float32_means(candidates["add_accuracy"], n),
    ).sort_values(["_pos", "layer"], kind="mergesort")
    ranked = visit.sort_values("_add", ascending=False, kind="mergesort")
    return ranked.drop(columns=["_pos", "_add"])


def _rank_layer_major(candidates: pd.DataFrame) -> pd.DataFrame:
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
    zero = "zero_direction" in row.index and bool(row["zero_direction"])
    if zero:
        reason += " (a zero direction: the baseline, +0.0 %)"
    return Pick(label, int(row["layer"]), passed, reason, zero)


def _position_order(position: Any) -> float:
    return float(position) if isinstance(position, int | float | np.integer) else math.inf


def _candidate_table(scores: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """Candidates for one α; with α = 1 in the sweep, ``ref_add_accuracy`` is the α = 1
    addition accuracy (the list the paper reads ablation values from); ``n`` the number of
    questions each was scored on (when the scores have it)."""
    keys = ["position", "layer"]
    additions = scores[scores["condition"] == "addition"]
    add = additions[np.isclose(additions["alpha"], alpha)]
    counted = ["n"] if "n" in add.columns else []
    add = add.set_index(keys)[["accuracy", "logprob_correct", *counted]].rename(
        columns={"accuracy": "add_accuracy", "logprob_correct": "add_logprob"}
    )
    abl = scores[scores["condition"] == "ablation"].set_index(keys)[["accuracy"]]
    out = add.join(abl.rename(columns={"accuracy": "abl_accuracy"}), how="left")
    ref = additions[np.isclose(additions["alpha"], 1.0)]
    if not ref.empty:
        ref = ref.set_index(keys)[["accuracy"]].rename(columns={"accuracy": "ref_add_accuracy"})
        out = out.join(ref, how="left")
    return out.reset_index()


def _with_zero_candidates(
    cands: pd.DataFrame,
    zeros: Sequence[tuple[PositionLabel, int]],
    base: float,
    base_logprob: float,
    ablation: bool,
) -> pd.DataFrame:
    """``cands`` and the zero directions at ``zeros`` (position, layer), scored as the
    baseline (on the same ``n`` questions): adding or ablating a zero vector leaves the
    model as it is."""
    if not zeros:
        return cands.assign(zero_direction=False)
    extra = pd.DataFrame(
        {
            "position": [p for p, _ in zeros],
            "layer": [layer for _, layer in zeros],
            "add_accuracy": base,
            "add_logprob": base_logprob,
            "abl_accuracy": base if ablation else math.nan,
            "zero_direction": True,
        }
    )
    if "n" in cands.columns:
        extra["n"] = _question_count(cands)
    if "ref_add_accuracy" in cands.columns:
        extra["ref_add_accuracy"] = base
    both = pd.concat([cands.assign(zero_direction=False), extra], ignore_index=True)
    return both[[*cands.columns, "zero_direction"]]


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
    zero_candidates: bool | None = None,
) -> pd.DataFrame:
    """Pick a (position, layer) per role, control and α, and report it with statistics.

    Args:
        result: a complete sweep.
        rule: ``"held-out"`` (select on one part of each role's questions with
            ``criterion``, report on the rest), ``"paper"`` (:func:`paper_rule`, selecting
            and reporting on the same questions), ``"paper-rounded"``
            (:func:`paper_rounded_rule`, same questions) or a rule callable (applied
            held-out).
        select_fraction: share of each role's questions used for selection (held-out).
        seed: seed of the split.
        correction: ``"holm"`` or ``"bh"``, for p-values across picks and across the grid.
        criterion: the rule used inside the held-out split (default: the paper's).
        n_boot, n_perm: resamples of the bootstrap CI and the permutation test.
        zero_candidates: give the rule the zero directions the sweep skipped
            (:attr:`SweepResult.skipped`, e.g. layer 0 at post-instruction positions) as
            candidates scored at the baseline, as the authors' code scores them (see the
            module docstring). ``None`` (default): for ``rule="paper"`` only.

    Returns:
        One row per (role, source, alpha): ``role, source, donor, alpha, rule, tie_rule``
        (how the sweep scored ties; accuracies are mean credits under it), ``position,
        layer, passed, reason, select_n, select_base_accuracy, select_accuracy,
        select_ablation_accuracy, grid_significant`` (candidates with corrected McNemar
        p < 0.05 on the selection questions), ``report_n, report_base_accuracy,
        report_accuracy, delta_accuracy, delta_ci_low, delta_ci_high,
        relative_change_pct, mcnemar_p, accuracy_test`` (``"mcnemar"``, or ``"sign-flip"``
        on fractional credits), ``delta_logprob, logprob_p`` and their corrected
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
    held_out = rule not in ("paper", "paper-rounded")
    fixed: dict[str, Rule] = {"paper": paper_rule, "paper-rounded": paper_rounded_rule}
    chooser: Rule = rule if callable(rule) else fixed.get(rule, criterion)
    label = rule if isinstance(rule, str) else getattr(rule, "__name__", "custom")
    with_zeros = rule == "paper" if zero_candidates is None else zero_candidates
    tie_rule = str(result.config.tie_rule)
    rows = []
    for role in result.config.roles:
        ids = result.role_items(role)
        items = result.baseline[result.baseline["id"].isin(ids)].drop_duplicates("id")
        sel_ids, rep_ids = split_ids(items, select_fraction, seed) if held_out else (ids, ids)
        sel_scores = result.scores(sel_ids)
        sel_scores = sel_scores[sel_scores["role"] == role]
        table = result.read_table(roles=[role])  # one role's parts, not the whole store
        base_rep = _items(result.baseline, result.role_group(role), rep_ids)
        zeros = [(p, layer) for r, p, layer in result.skipped if r == role] if with_zeros else []
        for (source, donor), scores in sel_scores.groupby(["source", "donor"], sort=False):
            grid = _grid_significance(table, result, role, source, sel_ids, correction)
            for alpha in result.config.alphas:
                cands = _candidate_table(scores, alpha)
                base = float(scores["base_accuracy"].iloc[0])
                if with_zeros:
                    cands = _with_zero_candidates(
                        cands,
                        zeros,
                        base,
                        float(scores["base_logprob"].iloc[0]),
                        result.config.ablation,
                    )
                pick = chooser(cands, base, result.n_layers)
                chosen = cands[
                    (cands["layer"] == pick.layer) & (cands["position"] == pick.position)
                ]
                if pick.zero_direction:
                    other = base_rep  # a zero vector added: the unsteered model
                else:
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
                        "tie_rule": tie_rule,
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
                        "zero_direction": pick.zero_direction,
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
    test = paired_accuracy_test(b, o, n_perm=n_perm, seed=seed)
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
        "mcnemar_p": test["p_value"],
        "accuracy_test": test["test"],
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
    """How many grid candidates beat or trail the baseline with corrected p < 0.05 (McNemar,
    or the sign-flip test on fractional credits: :func:`roleprobe.paired_accuracy_test`)."""
    rows = table[(table["source"] == source) & table["id"].isin(set(ids))]
    base = _items(result.baseline, result.role_group(role), ids).set_index("id")["correct"]
    pvalues = []
    for _, cell in rows.groupby(["position", "layer", "condition", "alpha"], dropna=False):
        other = cell.set_index("id")["correct"].loc[base.index]
        test = paired_accuracy_test(base.to_numpy(float), other.to_numpy(float), seed=0)
        pvalues.append(test["p_value"])
    if not pvalues:
        return 0
    adjusted = adjust_pvalues(pvalues, "holm" if correction == "holm" else "bh")
    return int(sum(p < 0.05 for p in adjusted))
