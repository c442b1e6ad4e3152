"""Benchmark: a layer sweep with prefix reuse vs naive reruns of ``evaluate``.

One role, every non-zero layer (1..L-1), position -1, alphas 1 and 3, no ablation, no
controls, on the role's own domain of the built-in bank. ``rp.sweep`` computes each batch's
residual entering layer l once and runs only blocks l..L-1 per α, stacked into one forward
pass (``stack``); the naive loop calls ``rp.evaluate(model, questions, rp.Addition(d, l, α))``
for every (l, α) over the same questions (the sweep also scores the unsteered baseline, the
loop does not). The two must predict the same letters. Also times ``stack=1`` against the
default ``stack=4``. ``run_all.py`` runs it as benchmark 5.
"""

from typing import Any

import pandas as pd
import torch
from _report import best_of

import roleprobe as rp

GOAL = ">= 1.8"
ALPHAS = (1.0, 3.0)


def run(
    model: Any,
    role: str = "lawyer",
    repeats: int = 3,
    bench: "rp.MultipleChoice | None" = None,
    directions: "rp.RoleDirections | None" = None,
) -> dict[str, Any]:
    """Seconds of the sweep (stack 4 and 1) and of the naive loop, on the same questions."""
    n_layers = int(model.cfg.n_layers)
    layers = list(range(1, n_layers))
    if not layers:
        raise ValueError("the sweep benchmark needs a model with at least 2 layers")
    bench = bench if bench is not None else rp.load_benchmark("builtin")
    questions = bench.subset(domain=rp.get_role(role).domain)
    if directions is None:
        directions = rp.compute_directions(model, roles=[role], progress=False)

    def swept(stack: int) -> Any:
        return lambda: (
            rp.sweep(
                model,
                directions,
                questions,
                roles=[role],
                layers=layers,
                positions=[-1],
                alphas=ALPHAS,
                ablation=False,
                controls=False,
                store=None,
                stack=stack,
                progress=False,
            ).table
        )

    def naive() -> pd.DataFrame:
        tables = []
        for layer in layers:
            d = directions.vector(role, layer, -1)
            for alpha in ALPHAS:
                table = rp.evaluate(model, questions, rp.Addition(d, layer, alpha), progress=False)
                tables.append(table.assign(layer=layer, alpha=alpha))
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
        "alphas": list(ALPHAS),
        "cells": len(layers) * len(ALPHAS),
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


def _tolerance(model: Any) -> float:
    """How close two letters' log-probs may be for a flip between them to count as a tie:
    the stacked and the plain forward pass round differently (much more so in half precision)."""
    return 1e-4 if model.cfg.dtype in (torch.float32, torch.float64) else 0.05


_COLUMNS = ["pred", "logprob_correct", *(f"logprob_{x}" for x in rp.LETTERS)]


def _joined(swept: pd.DataFrame, naive: pd.DataFrame) -> pd.DataFrame:
    keys = ["id", "layer", "alpha"]
    left = swept[swept["condition"] == "addition"][[*keys, *_COLUMNS]]
    joined = left.merge(naive[[*keys, *_COLUMNS]], on=keys, how="outer")
    if joined.isna().any().any() or len(joined) != len(naive):
        raise AssertionError("the sweep and the naive loop cover different (question, layer, α)")
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
