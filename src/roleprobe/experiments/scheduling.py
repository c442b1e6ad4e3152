"""How a sweep's workers share its work: cost-estimated units, claimed largest first.

A sweep's plan is a list of work items (:class:`~roleprobe.experiments.sweep_config.WorkItem`):
one baseline item per (group, question batch) and one per (layer, group, batch). Their
costs differ by orders of magnitude: a layer item runs its additions through blocks
``l..L-1`` (cheaper the higher ``l``) and its ablations through every block, for each of its
group's variants, and batches differ in rows and padded length. Workers that take whole
batches in plan order finish far apart (the last one starts a big batch when the others
are nearly done). Here, with no model and no torch:

* **Costs** in block-tokens (rows x padded length x transformer blocks run):
  :func:`item_cost` for one item, :func:`prefix_cost` for the pass that saves a batch's
  ``resid_pre`` (or scores its baseline). Stacking several variants to a pass changes the
  number of passes, not the block-tokens, so it is not a parameter.
* **Units** (:func:`make_units`): a batch's layer items, sorted by layer, cut into
  consecutive runs of at most ``target`` cost, each run with its own prefix pass (a worker
  runs a unit's items together, as the sweep runs a batch's claimed items); the baseline
  item joins the run with the highest layers, whose pass then goes to the end of the model.
  Returned in LPT order (largest first), which greedy workers claim in turn.
* **Target** (:func:`split_target`): the total cost over ``workers x per_worker``, so that
  each worker takes several units and the last ones to finish are small.
* **Checks** (:func:`simulate`, :func:`makespan_ratio`): the makespan of workers that each
  take the next unit when free, against the ideal ``total / workers``; and
  :func:`balanced_shards`, the same LPT rule for a fixed split into ``n`` shards.

On the paper preset with gemma-2-9b-it (``benchmarks/bench_schedule.py``), 32 workers taking
whole batches in plan order end at 1.69x the ideal time, whole batches largest first at
1.14x, split units largest first at 1.006x, for 0.03 % more block-tokens (the extra prefix
passes).

Footguns: the costs leave out attention's quadratic term, the embedding and the letter head,
so they rank units well but are not FLOPs (:mod:`roleprobe.experiments.sweep_cost` counts
those); a sweep with no additions and no conditions saves no prefix, so its units' prefix
passes are over-counted (by little: one pass against many ablation passes).

Example:
    >>> jobs, shapes = sweep_jobs(model, benchmark, cfg)      # sweep_cost.sweep_jobs
    >>> whole = make_units(jobs, shapes, n_layers, math.inf)  # one unit per batch
    >>> target = split_target(sum(u.cost for u in whole), workers=32)
    >>> units = make_units(jobs, shapes, n_layers, target)
    >>> makespan_ratio(units, 32, sum(u.cost for u in whole))  # ~1.0: balanced
"""

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "PER_WORKER",
    "Job",
    "Unit",
    "balanced_shards",
    "item_cost",
    "make_units",
    "makespan_ratio",
    "prefix_cost",
    "simulate",
    "split_target",
]

PER_WORKER = 8
"""Units per worker :func:`split_target` aims at, chosen on the paper grid (gemma-2-9b-it,
81 batches, 41 live layers; ``benchmarks/bench_schedule.py``): at 32 workers 1 gives
1.055x the ideal makespan, 4 gives 1.018x, 8 gives 1.006x (<= 1.01x at 8 to 32 workers) for
0.03 % more block-tokens (the extra prefix passes); 32 gives 1.004x for 0.15 %. Beyond 8
the gain is smaller than the costs' own error, while prefix passes (and batches moved to
the device) grow with the units."""


@dataclass(frozen=True)
class Job:
    """One work item and its estimated cost.

    Attributes:
        key: the item's store key (:attr:`~roleprobe.experiments.sweep_config.WorkItem.key`).
        group: its question group; batch: its batch's index in the group.
        layer: its layer, ``None`` for the batch's baseline item.
        cost: its block-tokens beyond the batch's prefix pass (:func:`item_cost`).
    """

    key: str
    group: str
    batch: int
    layer: int | None
    cost: float


@dataclass(frozen=True)
class Unit:
    """Items of one batch that one worker claims and runs together.

    Attributes:
        keys: the items' keys, in the order of the jobs they came from.
        group: their question group; batch: their batch's index.
        cost: their costs plus the unit's own prefix pass (:func:`prefix_cost`).
    """

    keys: tuple[str, ...]
    group: str
    batch: int
    cost: float


def item_cost(
    rows: int,
    seq: int,
    layer: int | None,
    n_layers: int,
    n_variants: int,
    n_alphas: int,
    ablation: bool,
    n_conditions: int = 0,
) -> float:
    """One work item's block-tokens, its batch's prefix pass not included.

    Additions run blocks ``layer..n_layers-1`` for every (variant, alpha); ablations and user
    conditions run every block for each variant (a condition that reuses the prefix runs
    fewer, so theirs is an upper bound). A baseline item (``layer=None``) costs nothing
    beyond the full prefix pass that scores it.

    Args:
        rows: the batch's questions; seq: its padded length.
        layer: the item's layer, or ``None`` for a baseline item.
        n_layers: the model's transformer blocks.
        n_variants: the item's variants (candidate directions and their controls).
        n_alphas: addition strengths; ablation: whether each variant is also ablated.
        n_conditions: user-defined conditions per variant.

    Returns:
        Block-tokens (rows x padded length x blocks run, summed).
    """
    if layer is None:
        return 0.0
    tokens = rows * seq * n_variants
    additions = n_alphas * (n_layers - layer)
    full = (int(ablation) + n_conditions) * n_layers
    return float(tokens * (additions + full))


def prefix_cost(rows: int, seq: int, top_layer: int | None, n_layers: int, baseline: bool) -> float:
    """Block-tokens of a unit's prefix pass.

    ``resid_pre[l]`` is block ``l``'s input: the pass captures it in a hook before block
    ``l`` runs and stops there, so saving the residuals up to ``top_layer`` runs blocks
    ``0..top_layer-1``, ``top_layer`` of them (the embedding is not counted). A unit that
    holds its batch's baseline item runs all ``n_layers`` blocks (and scores the baseline).

    Args:
        rows: the batch's questions; seq: its padded length.
        top_layer: the highest layer of the unit's layer items (``None``: none).
        n_layers: the model's transformer blocks.
        baseline: whether the unit holds the batch's baseline item.

    Returns:
        Block-tokens (0.0 for a unit that needs no pass).
    """
    if baseline:
        return float(rows * seq * n_layers)
    return 0.0 if top_layer is None else float(rows * seq * top_layer)


def _runs(jobs: Sequence[Job], target: float) -> list[list[Job]]:
    """``jobs`` in consecutive runs whose summed cost is at most ``target`` (a job that
    alone exceeds it makes a run of its own)."""
    runs: list[list[Job]] = []
    total = 0.0
    for job in jobs:
        if runs and total + job.cost <= target:
            runs[-1].append(job)
            total += job.cost
        else:
            runs.append([job])
            total = job.cost
    return runs


def make_units(
    jobs: Sequence[Job],
    shapes: Mapping[tuple[str, int], tuple[int, int]],
    n_layers: int,
    target: float,
) -> list[Unit]:
    """Each batch's jobs as units of at most ``target`` item cost, largest first.

    Per (group, batch), the layer jobs sorted by layer are cut into consecutive runs whose
    summed cost stays at most ``target`` (a job is never split: one above ``target`` is a
    unit of its own); the baseline job joins the run with the highest layers (alone if the
    batch has no layer jobs). A unit's cost adds its prefix pass (:func:`prefix_cost`).

    Args:
        jobs: the plan's jobs (their order breaks ties).
        shapes: (rows, padded length) of every (group, batch) of ``jobs``.
        n_layers: the model's transformer blocks.
        target: the most item cost a unit holds; ``math.inf``: one unit per batch.

    Returns:
        The units in claim order: cost descending (LPT); equal costs in the order of their
        first job in ``jobs``.

    Raises:
        ValueError: ``target`` not positive (or NaN), a repeated key, or a batch with no shape.
    """
    if not target > 0:  # NaN too
        raise ValueError(f"target must be a positive cost (or math.inf), got {target!r}")
    position: dict[str, int] = {}
    batches: dict[tuple[str, int], list[Job]] = {}
    for i, job in enumerate(jobs):
        if job.key in position:
            raise ValueError(f"job key {job.key!r} is repeated")
        position[job.key] = i
        batches.setdefault((job.group, job.batch), []).append(job)
    units: list[Unit] = []
    for (group, batch), members in batches.items():
        if (group, batch) not in shapes:
            raise ValueError(f"no (rows, padded length) for batch {batch} of group {group!r}")
        rows, seq = shapes[(group, batch)]
        layered = sorted((j for j in members if j.layer is not None), key=lambda j: j.layer or 0)
        baseline = [j for j in members if j.layer is None]
        runs = _runs(layered, target)
        if baseline:
            runs = [*runs[:-1], runs[-1] + baseline] if runs else [baseline]
        for run in runs:
            top = max((j.layer for j in run if j.layer is not None), default=None)
            has_base = any(j.layer is None for j in run)
            cost = sum(j.cost for j in run) + prefix_cost(rows, seq, top, n_layers, has_base)
            keys = tuple(sorted((j.key for j in run), key=position.__getitem__))
            units.append(Unit(keys, group, batch, float(cost)))
    units.sort(key=lambda u: (-u.cost, position[u.keys[0]]))
    return units


def _check_count(value: int, name: str) -> None:
    """Refuse anything but an integer >= 1 (a bool included), naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def split_target(total_cost: float, workers: int, per_worker: int = PER_WORKER) -> float:
    """The unit size that gives each of ``workers`` about ``per_worker`` units.

    Args:
        total_cost: the work's total cost (e.g. of its whole-batch units).
        workers: the workers sharing it; per_worker: units per worker (:data:`PER_WORKER`).

    Returns:
        ``total_cost / (workers * per_worker)``; ``math.inf`` (one unit per batch) for a
        total of 0.

    Raises:
        ValueError: ``workers`` or ``per_worker`` below 1, or a negative or non-finite total.
    """
    _check_count(workers, "workers")
    _check_count(per_worker, "per_worker")
    if not math.isfinite(total_cost) or total_cost < 0:
        raise ValueError(f"total_cost must be a finite cost >= 0, got {total_cost!r}")
    return total_cost / (workers * per_worker) if total_cost > 0 else math.inf


def balanced_shards(units: Sequence[Unit], n: int) -> list[list[Unit]]:
    """``units`` in ``n`` shards of balanced cost (LPT: by cost descending, equal costs in
    their given order, each to the least-loaded shard, the lowest index among equals).

    Args:
        units: the units (e.g. :func:`make_units`'); n: the number of shards.

    Returns:
        ``n`` lists (some empty when there are fewer units), each in assignment order.

    Raises:
        ValueError: ``n`` below 1.
    """
    _check_count(n, "n")
    shards: list[list[Unit]] = [[] for _ in range(n)]
    loads = [(0.0, s) for s in range(n)]
    for unit in sorted(units, key=lambda u: -u.cost):
        load, s = heapq.heappop(loads)
        shards[s].append(unit)
        heapq.heappush(loads, (load + unit.cost, s))
    return shards


def simulate(units: Sequence[Unit], workers: int) -> float:
    """The makespan of ``workers`` that each, when free, take the next unit in order (the
    lowest worker index first among those free at once), in cost units.

    Args:
        units: the units in claim order; workers: how many take them.

    Returns:
        When the last unit ends (0.0 for no units).

    Raises:
        ValueError: ``workers`` below 1.
    """
    _check_count(workers, "workers")
    free = [(0.0, w) for w in range(workers)]
    end = 0.0
    for unit in units:
        start, w = heapq.heappop(free)
        end = max(end, start + unit.cost)
        heapq.heappush(free, (start + unit.cost, w))
    return end


def makespan_ratio(units: Sequence[Unit], workers: int, ideal_total: float) -> float:
    """:func:`simulate`'s makespan over the ideal ``ideal_total / workers`` (1.0: perfect).

    Args:
        units: the units in claim order; workers: how many take them.
        ideal_total: the cost the ideal shares out (e.g. of the whole-batch units, so that
            splitting's extra prefix passes count against the split).

    Returns:
        The ratio (>= 1 when ``ideal_total`` is the units' own total).

    Raises:
        ValueError: ``workers`` below 1, or ``ideal_total`` not positive and finite.
    """
    if not math.isfinite(ideal_total) or ideal_total <= 0:
        raise ValueError(f"ideal_total must be a positive finite cost, got {ideal_total!r}")
    return simulate(units, workers) / (ideal_total / workers)
