"""Benchmark: a sweep with prefix reuse and stacked ablations vs naive reruns of ``evaluate``.

One role, ``n_layers`` layers spread evenly over 1..L-1 (default 4; all of them on a
shallower model), the last ``n_positions`` post-instruction positions (default 4: one
stacked ablation pass per layer at ``stack=4``), alphas 1 and 3 and the ablation, no
controls, on the role's own domain of the built-in bank. ``rp.sweep`` computes each
batch's residual entering every swept layer in one pass, runs only blocks l..L-1 for the
additions, ``stack`` (position, α) jobs to a forward pass, and ablates ``stack``
directions per full pass (one block of rows each); the naive loop calls
``rp.evaluate(model, questions, spec)`` for every (layer, position) with
``rp.Addition(d, l, α)`` per α and ``rp.Ablation(d)``, over the same questions (the sweep
also scores the unsteered baseline, the loop does not). The two must predict the same
letters. Also times ``stack=1`` against the default ``stack=4``. ``run_all.py`` runs it as
benchmark 5 (goal ≥ 2.2, the issue's).
"""

import math
from typing import Any

import pandas as pd
import torch
from _report import best_of, row

import roleprobe as rp

GOAL = ">= 2.2"
ALPHAS = (1.0, 3.0)


def run(
    model: Any,
    role: str = "lawyer",
    repeats: int = 3,
    bench: "rp.MultipleChoice | None" = None,
    directions: "rp.RoleDirections | None" = None,
    n_layers: int = 4,
    n_positions: int = 4,
) -> dict[str, Any]:
    """Seconds of the sweep (stack 4 and 1) and of the naive loop, on the same questions."""
    layers = spread_layers(int(model.cfg.n_layers), n_layers)
    bench = bench if bench is not None else rp.load_benchmark("builtin")
    questions = bench.subset(domain=rp.get_role(role).domain)
    if directions is None:
        directions = rp.compute_directions(model, roles=[role], progress=False)
    positions = list(directions.positions[-n_positions:])

    def swept(stack: int) -> Any:
        return lambda: (
            rp.sweep(
                model,
                directions,
                questions,
                roles=[role],
                layers=layers,
                positions=positions,
                alphas=ALPHAS,
                ablation=True,
                controls=False,
                store=None,
                stack=stack,
                progress=False,
            ).table
        )

    def naive() -> pd.DataFrame:
        tables = []
        for layer in layers:
            for pos in positions:
                d = directions.vector(role, layer, pos)
                cell = {"layer": layer, "position": pos}
                for alpha in ALPHAS:
                    spec = rp.Addition(d, layer, alpha)
                    table = rp.evaluate(model, questions, spec, progress=False)
                    tables.append(table.assign(**cell, condition="addition", alpha=alpha))
                table = rp.evaluate(model, questions, rp.Ablation(d), progress=False)
                tables.append(table.assign(**cell, condition="ablation", alpha=math.nan))
        return pd.concat(tables, ignore_index=True)

    timed = best_of(
        {"sweep_stack4": swept(4), "naive_evaluate": naive, "sweep_stack1": swept(1)},
        repeats,
        model.cfg.device,
    )
    best, last = timed["best"], timed["last"]
    tol = _tolerance(model)
    mismatches = {
        name: _mismatches(last[name], last["naive_evaluate"], tol)
        for name in ("sweep_stack4", "sweep_stack1")
    }
    if any(real for real, _ in mismatches.values()):
        raise AssertionError(
            f"the sweep and the naive loop predict differently (beyond near-ties of {tol} "
            f"nats): {mismatches}"
        )
    return {
        "role": role,
        "questions": len(questions),
        "layers": layers,
        "positions": positions,
        "alphas": list(ALPHAS),
        "conditions": [*(f"addition α={a:g}" for a in ALPHAS), "ablation"],
        "cells": len(layers) * len(positions) * (len(ALPHAS) + 1),
        "evaluate_calls": len(layers) * len(positions) * (len(ALPHAS) + 1),
        "repeats": repeats,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "ratio_naive_over_sweep": best["naive_evaluate"] / best["sweep_stack4"],
        "ratio_stack1_over_stack4": best["sweep_stack1"] / best["sweep_stack4"],
        "prediction_mismatches": {k: real for k, (real, _) in mismatches.items()},
        "prediction_near_tie_flips": {k: ties for k, (_, ties) in mismatches.items()},
        "near_tie_tolerance_nats": tol,
        "max_abs_logprob_diff": _max_diff(last["sweep_stack4"], last["naive_evaluate"]),
        "goal": GOAL,
    }


def table_rows(r: dict[str, Any], suffix: str = "", label: str = "") -> list[dict[str, Any]]:
    """Rows 5 and 5b of a :func:`run` result (``suffix``: of the ids, e.g. ``-gpu``)."""
    s = r["seconds_best"]
    n, p = len(r["layers"]), len(r["positions"])
    name = (
        f"sweep ({n} layer{'' if n == 1 else 's'} × {p} position{'' if p == 1 else 's'} × "
        "(2 α + ablation)): naive reruns ÷ prefix reuse and stacked ablations (s)"
    )
    if n < 3:
        name += " [degenerate: too few layers]"
    return [
        row(
            "5" + suffix,
            name + label,
            s["sweep_stack4"],
            s["naive_evaluate"],
            "s",
            r["ratio_naive_over_sweep"],
            r["goal"],
        ),
        row(
            "5b" + suffix,
            "sweep: stack=1 ÷ stack=4 (s)",
            s["sweep_stack4"],
            s["sweep_stack1"],
            "s",
            r["ratio_stack1_over_stack4"],
        ),
    ]


def spread_layers(depth: int, n: int) -> list[int]:
    """``n`` layers spread evenly over 1..depth-1, both ends included (all if fewer)."""
    if depth < 2:
        raise ValueError("the sweep benchmark needs a model with at least 2 layers")
    top = depth - 1
    if n >= top:
        return list(range(1, depth))
    if n == 1:
        return [top]
    return sorted({1 + round(i * (top - 1) / (n - 1)) for i in range(n)})


def _tolerance(model: Any) -> float:
    """How close two letters' log-probs may be for a flip between them to count as a tie:
    the stacked and the plain forward pass round differently (much more so in half precision)."""
    return 1e-4 if model.cfg.dtype in (torch.float32, torch.float64) else 0.05


_COLUMNS = ["pred", "logprob_correct", *(f"logprob_{x}" for x in rp.LETTERS)]


_KEYS = ["id", "layer", "position", "condition", "alpha"]


def _keyed(table: pd.DataFrame) -> pd.DataFrame:
    """The key and score columns (the ablation's NaN α as -1, so that it joins)."""
    return table[[*_KEYS, *_COLUMNS]].assign(alpha=table["alpha"].fillna(-1.0))


def _joined(swept: pd.DataFrame, naive: pd.DataFrame) -> pd.DataFrame:
    cells = swept[swept["condition"].isin(["addition", "ablation"]) & (swept["source"] == "role")]
    joined = _keyed(cells).merge(_keyed(naive), on=_KEYS, how="outer")
    if joined.isna().any().any() or len(joined) != len(naive):
        raise AssertionError(
            "the sweep and the naive loop cover different (question, layer, position, condition)"
        )
    return joined


def _mismatches(swept: pd.DataFrame, naive: pd.DataFrame, tol: float) -> tuple[int, int]:
    """(real mismatches, near-tie flips): a flip is a near tie when, in the naive pass, the
    letter the sweep picked is within ``tol`` of the naive pick's log-prob."""
    joined = _joined(swept, naive)
    differ = joined[joined["pred_x"] != joined["pred_y"]]
    gaps = [
        row[f"logprob_{row['pred_y']}_y"] - row[f"logprob_{row['pred_x']}_y"]
        for _, row in differ.iterrows()
    ]
    real = sum(gap > tol for gap in gaps)
    return int(real), len(gaps) - int(real)


def _max_diff(swept: pd.DataFrame, naive: pd.DataFrame) -> float:
    joined = _joined(swept, naive)
    return float((joined["logprob_correct_x"] - joined["logprob_correct_y"]).abs().max())
