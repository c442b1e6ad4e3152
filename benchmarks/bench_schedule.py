"""Sweep scheduling: how long workers take to share the paper sweep, against the ideal.

The paper preset on gemma-2-9b-it (42 layers, 29 roles in 8 domains, the paper's MMLU
questions in 81 batches of 32: 3,402 work items) is planned as ``roleprobe plan --preset
paper`` plans it (``sweep_jobs``, no weights), each item's cost estimated in block-tokens
(:mod:`roleprobe.experiments.scheduling`), and ``workers`` greedy workers are simulated,
each taking the next unit when free:

* ``plan_order_whole``: one unit per batch, in plan order (today's worker loop);
* ``lpt_whole``: one unit per batch, largest first;
* ``lpt_split``: batches cut into units of at most ``split_target(total, workers)`` item
  cost (each with its own prefix pass), largest first.

and, for ``--shard i/n`` arrays (static parts, no claims between them), the largest
shard's cost / ideal:

* ``shards_round_robin``: items ``i, i+n, ...`` of the plan (the earlier rule), each shard
  paying one prefix pass per batch it touches;
* ``shards_balanced``: the split units dealt largest first to the least-loaded shard
  (``balanced_shards``).

Each is reported as makespan / ideal, ideal = the whole-batch units' total cost / workers
(so the extra prefix passes of splitting count against ``lpt_split``), with the split's
units and extra cost in % of the total. Needs the paper's data (``../shared/data``, or
``--data``); without it, it says so in one line and exits 0.

    python benchmarks/bench_schedule.py
"""

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

from _report import report

from roleprobe.app.inputs import run_benchmark, run_roles
from roleprobe.app.run_config import load_config
from roleprobe.experiments import cost
from roleprobe.experiments.scheduling import (
    PER_WORKER,
    Job,
    balanced_shards,
    make_units,
    makespan_ratio,
    split_target,
)
from roleprobe.experiments.sweep_cost import sweep_jobs
from roleprobe.model.plan_model import load_plan_model

ROOT = Path(__file__).resolve().parents[1]
GEMMA = ROOT / "tests" / "data" / "configs" / "gemma-2-9b-it.json"
SHARED_DATA = Path(os.environ.get("ROLEPROBE_SHARED_DATA", ROOT / ".." / "shared" / "data"))
WORKERS = (8, 16, 32)
GOAL = "<= 1.1"
"""``lpt_split`` at 32 workers."""


def run(data: Path, workers: tuple[int, ...] = WORKERS, per_worker: int = PER_WORKER) -> Any:
    """The three schedules' makespan / ideal at each number of workers."""
    start = time.perf_counter()
    config = load_config("paper", None, {"model": str(GEMMA), "data": str(data)})
    model = load_plan_model(str(GEMMA), system=config.system)
    cfg = cost.sweep_config(config, model, run_roles(config))
    jobs, shapes = sweep_jobs(model, run_benchmark(config), cfg)
    planned = time.perf_counter() - start
    n_layers = model.arch.n_layers
    whole = make_units(jobs, shapes, n_layers, math.inf)
    total = sum(u.cost for u in whole)
    first = {j.key: i for i, j in reversed(list(enumerate(jobs)))}
    plan_order = sorted(whole, key=lambda u: first[u.keys[0]])
    rows = {}
    for n in workers:
        split = make_units(jobs, shapes, n_layers, split_target(total, n, per_worker))
        rows[str(n)] = {
            "plan_order_whole": makespan_ratio(plan_order, n, total),
            "lpt_whole": makespan_ratio(whole, n, total),
            "lpt_split": makespan_ratio(split, n, total),
            "split_units": len(split),
            "shards_round_robin": _round_robin(jobs, shapes, n_layers, n) / (total / n),
            "shards_balanced": max(sum(u.cost for u in part) for part in balanced_shards(split, n))
            / (total / n),
            "split_extra_prefix_pct": 100 * (sum(u.cost for u in split) - total) / total,
        }
    return {
        "model": GEMMA.name,
        "n_layers": n_layers,
        "work_items": len(jobs),
        "batches": len(shapes),
        "whole_units": len(whole),
        "per_worker": per_worker,
        "total_block_tokens": total,
        "seconds_to_plan": planned,
        "makespan_over_ideal": rows,
        "goal_lpt_split_at_32": GOAL,
        "met": rows.get("32", {}).get("lpt_split", math.inf) <= float(GOAL.split()[1]),
    }


def _round_robin(
    jobs: list[Job], shapes: dict[tuple[str, int], tuple[int, int]], n_layers: int, n: int
) -> float:
    """The largest shard's cost when shard i takes items i, i+n, ... of the plan."""
    loads = []
    for i in range(n):
        mine = jobs[i::n]
        units = make_units(mine, shapes, n_layers, math.inf)  # its items of each batch
        loads.append(sum(u.cost for u in units))
    return max(loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED_DATA / "role-vectors-paper"))
    parser.add_argument("--per-worker", type=int, default=PER_WORKER)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data = Path(args.data).resolve()
    if not (data / "MANIFEST.json").exists():
        print(f"bench_schedule: the paper's data is not at {data} (--data); nothing to run")
        return
    try:
        result = run(data, per_worker=args.per_worker)
    except FileNotFoundError as err:
        print(f"bench_schedule: the paper's data is incomplete ({err}); nothing to run")
        return
    report(result, args.out)


if __name__ == "__main__":
    main()
