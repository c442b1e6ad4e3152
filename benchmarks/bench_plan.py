"""Benchmark 7: a sweep's set-up on directions of the paper's size, in seconds.

The paper preset on Gemma-2-9B sweeps 29 roles × 5 post-instruction positions × 42 layers
with a residual of 3,584: the directions' means are 29 × 5 × 42 × 3,584 float64 numbers
(175 MB). Before any forward pass a sweep builds its plan (``_Plan``: question batches,
the zero candidates, the work items), hashes the directions for its store's manifest
(``directions_hash``) and, per work item, the candidate vectors of one layer
(``_variants``: each role direction and its random and shuffled controls, as rows of one
tensor). None of that may cost more than the model: the goal is ≤ 1 s for the three
together. The directions are random (synthetic, of that shape; the plan does not check
their width against the model, whose tokenizer only encodes the questions), the
benchmark is the built-in bank, the config the paper-like one (all 29 roles, every layer,
the 5 positions, stack 4, batches of 32, controls on), the work item one domain's roles
at one layer. Each part is timed on its own (best of ``repeats`` after a warm-up) and the
goal is checked on their sum; the hash runs on a fresh copy of the directions each time
(``RoleDirections.vectors`` is cached per object). ``run_all.py`` runs it as benchmark 7.

    python benchmarks/bench_plan.py --repeats 3
"""

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from _models import load
from _report import best_of, machine_info, report, row

import roleprobe as rp
from roleprobe.experiments.sweeps import (
    SweepConfig,
    _derangement,
    _Plan,
    _variants,
    directions_hash,
)

GOAL = "<= 1"
PAPER = {"n_layers": 42, "n_positions": 5, "d_model": 3584}
"""Gemma-2-9B's depth and width, and the paper's 5 post-instruction positions."""


def random_directions(
    roles: Sequence[str],
    n_layers: int,
    positions: Sequence[int],
    d_model: int,
    scale: float = 1.0,
    seed: int = 0,
) -> rp.RoleDirections:
    """Random float64 role and base means of the given shape (no zero direction)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (len(positions), n_layers, d_model)
    role_means = torch.randn((len(roles), *shape), generator=gen, dtype=torch.float64) * scale
    base_mean = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    return rp.RoleDirections(
        role_means=role_means,
        base_mean=base_mean,
        role_counts=tuple(100 for _ in roles),
        base_count=100,
        roles=tuple(roles),
        layers=tuple(range(n_layers)),
        positions=tuple(positions),
        model_name="synthetic",
    )


def paper_directions(d_model: int = PAPER["d_model"], n_layers: int = PAPER["n_layers"]) -> Any:
    """Random directions of the paper preset's shape on Gemma-2-9B (all 29 roles)."""
    positions = list(range(-PAPER["n_positions"], 0))
    return random_directions([r.name for r in rp.ROLES], n_layers, positions, d_model)


def paper_config(rd: rp.RoleDirections) -> SweepConfig:
    """The paper-like sweep over every role, layer and position of ``rd``."""
    return SweepConfig(
        roles=rd.roles,
        layers=rd.layers,
        positions=rd.positions,
        alphas=(1.0, 3.0),
        ablation=True,
        controls=True,
        batch_size=32,
        stack=4,
    )


def run(
    model: Any,
    repeats: int = 3,
    directions: rp.RoleDirections | None = None,
    group: str | None = None,
    layer: int | None = None,
) -> dict[str, Any]:
    """Seconds of the plan, the directions' hash and one work item's variants.

    Args:
        model: any model (its tokenizer encodes the questions; the work runs on its device).
        repeats: timed rounds after the warm-up.
        directions: default :func:`paper_directions`.
        group: the work item's domain (default: the one with the most roles).
        layer: the work item's layer (default: the middle one).
    """
    rd = directions if directions is not None else paper_directions()
    bench = rp.load_benchmark("builtin")
    cfg = paper_config(rd)
    plan = _Plan(model, rd, bench, cfg)
    if group is None:
        group = max(sorted(plan.groups), key=lambda g: len(plan.groups[g]))
    layer = rd.layers[len(rd.layers) // 2] if layer is None else layer
    device = model.cfg.device

    def planned() -> dict[str, str]:
        _Plan(model, rd, bench, cfg)
        return _derangement(rd.roles, cfg.seed)

    def hashed() -> str:
        return directions_hash(dataclasses.replace(rd))

    donors = planned()

    def variants() -> int:
        out = _variants(rd, plan.groups[group], layer, cfg, donors, None, plan.null, device)
        return len(out)

    timed = best_of({"plan": planned, "hash": hashed, "variants": variants}, repeats, device)
    best = timed["best"]
    total = sum(best.values())
    return {
        "shape": {
            "roles": len(rd.roles),
            "positions": len(rd.positions),
            "layers": len(rd.layers),
            "d_model": rd.d_model,
            "means_mib": rd.role_means.numel() * 8 / 2**20,
        },
        "work_items": len(plan.work),
        "item": {"group": group, "layer": layer, "roles": len(plan.groups[group])},
        "variants": timed["last"]["variants"],
        "repeats": repeats,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "seconds_total": total,
        "goal": GOAL,
    }


def table_rows(r: dict[str, Any], suffix: str = "", label: str = "") -> list[dict[str, Any]]:
    """Row 7 of a :func:`run` result: the seconds, checked against the goal."""
    shape = r["shape"]
    name = (
        f"sweep set-up at paper size ({shape['roles']} roles × {shape['positions']} pos × "
        f"{shape['layers']} layers × {shape['d_model']:,}): plan + directions hash + one "
        f"item's {r['variants']} variants (s)"
    )
    return [row("7" + suffix, name + label, r["seconds_total"], None, "s", None, r["goal"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=rp.TINY_MODEL, help="for its tokenizer only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {"model": args.model, "machine": machine_info("cpu")}
    result |= run(load(args.model), args.repeats)
    report(result, args.out)


if __name__ == "__main__":
    main()
