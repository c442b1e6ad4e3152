""":mod:`roleprobe.experiments.scheduling`: work units claimed largest first.

Oracles: costs computed by hand; list scheduling simulated by hand (including LPT's classic
7-against-6 case); the sweep's own plan (``_Plan``) for :func:`sweep_jobs`'s keys and batch
shapes; and on a synthetic grid of the paper's size, plan-order whole batches against
split LPT units.
"""

import math
import random
from typing import Any

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.scheduling import (
    PER_WORKER,
    Job,
    Unit,
    balanced_shards,
    item_cost,
    make_units,
    makespan_ratio,
    prefix_cost,
    simulate,
    split_target,
)
from roleprobe.experiments.sweep_config import WorkItem
from roleprobe.experiments.sweep_cost import sweep_jobs
from roleprobe.experiments.sweeps import SweepConfig, _Plan
from roleprobe.model.plan_model import load_plan_model


def _units(*costs: float) -> list[Unit]:
    return [Unit((f"u{i}",), "g", i, float(c)) for i, c in enumerate(costs)]


def _job(group: str, batch: int, layer: int | None, cost: float) -> Job:
    return Job(WorkItem(group, batch, layer).key, group, batch, layer, cost)


# ------------------------------------------------------------------------------- costs -----


def test_item_cost_counts_block_tokens_by_hand() -> None:
    # 4 rows x 10 tokens, layer 3 of 8, 5 variants, 2 alphas: additions 5x2x40x5 blocks
    assert item_cost(4, 10, 3, 8, 5, 2, ablation=False) == 5 * 2 * 40 * 5 == 2000
    # + ablations: 5 variants x 40 tokens x 8 blocks
    assert item_cost(4, 10, 3, 8, 5, 2, ablation=True) == 2000 + 1600
    # + 3 user conditions: 5 x 3 x 40 x 8
    assert item_cost(4, 10, 3, 8, 5, 2, ablation=True, n_conditions=3) == 3600 + 4800
    assert item_cost(4, 10, None, 8, 5, 2, ablation=True) == 0.0  # the baseline: its pass only
    assert isinstance(item_cost(1, 1, 0, 1, 1, 1, True), float)


def test_prefix_cost_runs_the_blocks_below_the_top_layer_or_the_whole_model() -> None:
    # resid_pre[5] is block 5's input: blocks 0..4 run
    assert prefix_cost(4, 10, 5, 8, baseline=False) == 4 * 10 * 5
    assert prefix_cost(4, 10, 5, 8, baseline=True) == 4 * 10 * 8
    assert prefix_cost(4, 10, None, 8, baseline=True) == 320
    assert prefix_cost(4, 10, None, 8, baseline=False) == 0.0


# ------------------------------------------------------------------------------- units -----


def _batch_jobs(group: str = "law", batch: int = 0) -> list[Job]:
    """A baseline and layers 1..4 costing 40, 30, 20, 10."""
    return [
        _job(group, batch, None, 0.0),
        *(_job(group, batch, layer, 10.0 * (5 - layer)) for layer in (1, 2, 3, 4)),
    ]


def test_a_batch_is_cut_under_the_target_with_the_baseline_on_top() -> None:
    jobs = _batch_jobs()
    rows, seq, n_layers = 2, 3, 6
    units = make_units(jobs, {("law", 0): (rows, seq)}, n_layers, target=50.0)
    by_keys = {u.keys: u for u in units}
    low = ("layer001-law-b0000",)  # 40, then 40 + 30 > 50
    mid = ("layer002-law-b0000", "layer003-law-b0000")  # 30 + 20
    top = ("baseline-law-b0000", "layer004-law-b0000")  # 10 + the baseline
    assert set(by_keys) == {low, mid, top}
    assert by_keys[low].cost == 40 + rows * seq * 1
    assert by_keys[mid].cost == 50 + rows * seq * 3
    assert by_keys[top].cost == 10 + rows * seq * n_layers  # the baseline's full pass
    assert [u.keys for u in units] == [mid, top, low]  # 68, 46, 46: the baseline's place wins
    assert all(u.group == "law" and u.batch == 0 for u in units)


def test_a_job_above_the_target_is_a_unit_of_its_own() -> None:
    units = make_units(_batch_jobs(), {("law", 0): (1, 1)}, 6, target=5.0)
    assert sorted(len(u.keys) for u in units) == [1, 1, 1, 2]


def test_an_infinite_target_gives_one_unit_per_batch() -> None:
    jobs = [*_batch_jobs("law", 0), *_batch_jobs("law", 1)[1:], _job("med", 0, None, 0.0)]
    shapes = {("law", 0): (2, 3), ("law", 1): (4, 5), ("med", 0): (1, 7)}
    units = make_units(jobs, shapes, 6, math.inf)
    assert len(units) == 3
    by_batch = {(u.group, u.batch): u for u in units}
    assert by_batch[("law", 0)].cost == 100 + 2 * 3 * 6  # with its baseline: full pass
    assert by_batch[("law", 1)].cost == 100 + 4 * 5 * 4  # no baseline: up to layer 4
    assert by_batch[("med", 0)].cost == 1 * 7 * 6  # a baseline alone
    assert by_batch[("med", 0)].keys == ("baseline-med-b0000",)
    assert by_batch[("law", 0)].keys == tuple(j.key for j in jobs[:5])  # in the jobs' order
    assert sorted(k for u in units for k in u.keys) == sorted(j.key for j in jobs)


def test_units_come_largest_first_and_equal_costs_in_the_jobs_order() -> None:
    jobs = [_job("b", 0, 1, 5.0), _job("a", 0, 1, 9.0), _job("c", 0, 1, 5.0), _job("d", 0, 1, 5.0)]
    shapes = {(g, 0): (1, 1) for g in "abcd"}
    units = make_units(jobs, shapes, 4, math.inf)
    assert [u.group for u in units] == ["a", "b", "c", "d"]
    units = make_units(list(reversed(jobs)), shapes, 4, math.inf)
    assert [u.group for u in units] == ["a", "d", "c", "b"]
    assert make_units(jobs, shapes, 4, math.inf) == make_units(jobs, shapes, 4, math.inf)


@pytest.mark.parametrize("target", [0.0, -1.0, math.nan, -math.inf])
def test_a_bad_target_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        make_units(_batch_jobs(), {("law", 0): (1, 1)}, 6, target)


def test_repeated_keys_and_missing_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="repeated"):
        make_units([*_batch_jobs(), _batch_jobs()[0]], {("law", 0): (1, 1)}, 6, 1.0)
    with pytest.raises(ValueError, match="law"):
        make_units(_batch_jobs(), {}, 6, 1.0)


def test_split_target_divides_the_total() -> None:
    assert split_target(640.0, 4, 8) == 20.0
    assert split_target(640.0, 4) == 640.0 / (4 * PER_WORKER)
    assert split_target(0.0, 4) == math.inf
    with pytest.raises(ValueError, match="workers"):
        split_target(10.0, 0)
    with pytest.raises(ValueError, match="per_worker"):
        split_target(10.0, 2, per_worker=0)
    with pytest.raises(ValueError, match="total_cost"):
        split_target(-1.0, 2)
    with pytest.raises(ValueError, match="total_cost"):
        split_target(math.inf, 2)


# ---------------------------------------------------------------------- shards and time -----


def test_balanced_shards_cover_every_unit_once_and_beat_round_robin() -> None:
    units = _units(10, 1, 1, 9, 1, 1, 8, 1, 1, 1, 1, 1)
    shards = balanced_shards(units, 3)
    assert len(shards) == 3
    assert sorted(u.keys for s in shards for u in s) == sorted(u.keys for u in units)
    loads = [sum(u.cost for u in s) for s in shards]
    robin = [sum(u.cost for u in units[i::3]) for i in range(3)]
    assert max(loads) == 12 < max(robin) == 28
    assert [u.cost for u in shards[2]] == [8, 1, 1, 1, 1]  # equal loads: the lowest index first
    assert balanced_shards(units, 3) == shards
    assert balanced_shards(units[:2], 4)[2:] == [[], []]
    with pytest.raises(ValueError, match="n must"):
        balanced_shards(units, 0)


def test_simulate_by_hand() -> None:
    # LPT's classic case: 3 | 3 at t=0, then 2 and 2 at t=3, the last 2 at t=5 -> 7 (best: 6)
    assert simulate(_units(3, 3, 2, 2, 2), 2) == 7.0
    assert simulate(_units(3, 2, 2, 3, 2), 2) == 6.0  # {3, 3} and {2, 2, 2}
    assert simulate(_units(5, 1, 1, 1), 1) == 8.0
    assert simulate(_units(4, 1), 5) == 4.0
    assert simulate([], 3) == 0.0
    assert makespan_ratio(_units(3, 3, 2, 2, 2), 2, 12.0) == 7.0 / 6.0
    with pytest.raises(ValueError, match="workers"):
        simulate(_units(1), 0)
    with pytest.raises(ValueError, match="ideal_total"):
        makespan_ratio(_units(1), 1, 0.0)


# --------------------------------------------------------------- the sweep's own plan -----


def _bench() -> MultipleChoice:
    """Eleven short questions of varied length: seven law, four medicine."""
    rows = [
        {
            "id": f"q{i}",
            "subject": "professional_law" if i < 7 else "clinical_knowledge",
            "question": "Is it so?" + " Why?" * (i % 4),
            "A": "yes",
            "B": "no",
            "C": "maybe",
            "D": "never",
            "answer": "ABCD"[i % 4],
        }
        for i in range(11)
    ]
    return MultipleChoice(pd.DataFrame(rows), "short")


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, rp.RoleDirections]:
    model = rp.load_model("tiny-random", device="cpu")
    prompts = rp.custom_prompts(
        {
            "lawyer": ["How do I appeal?", "Draft a clause."],
            "nurse": ["Dress a wound.", "Check a pulse."],
        },
        base=["Explain inflation.", "Write a haiku."],
    )
    return model, rp.compute_directions(model, source=prompts, positions=[-1], progress=False)


@pytest.mark.parametrize(
    ("roles", "layers", "given"),
    [(("lawyer", "nurse"), (2, 0, 1), True), (("nurse",), (0, 1, 3), False)],
    ids=["directions", "assumed"],
)
def test_sweep_jobs_follow_the_sweeps_plan(
    tiny: tuple[Any, rp.RoleDirections],
    roles: tuple[str, ...],
    layers: tuple[int, ...],
    given: bool,
) -> None:
    model, rd = tiny
    bench = _bench()
    cfg = SweepConfig(roles=roles, layers=layers, positions=(-1,), batch_size=3, system=rd.system)
    plan_model = load_plan_model("tiny-random", system=rd.system)
    extra = {"directions": rd} if given else {"direction_roles": rd.roles}
    jobs, shapes = sweep_jobs(plan_model, bench, cfg, **extra)
    plan = _Plan(model, rd, bench, cfg)
    assert [j.key for j in jobs] == [w.key for w in plan.work]
    assert [(j.group, j.batch, j.layer) for j in jobs] == [
        (w.group, w.batch, w.layer) for w in plan.work
    ]
    assert shapes == {
        (g, b): (len(rows), max(len(plan.encoded[g][i].ids) for i in rows))
        for g, batches in plan.batches.items()
        for b, rows in enumerate(batches)
    }
    n_layers = plan_model.arch.n_layers
    for j in jobs:  # one role per group, one position: the role, random and shuffled rows
        rows, seq = shapes[(j.group, j.batch)]
        expected = 0.0 if j.layer is None else item_cost(rows, seq, j.layer, n_layers, 3, 2, True)
        assert j.cost == expected
    assert len(make_units(jobs, shapes, n_layers, math.inf)) == len(shapes)


# --------------------------------------------------------------- a paper-sized grid -----


def _paper_like(seed: int) -> tuple[list[Job], dict[tuple[str, int], tuple[int, int]]]:
    """The paper's grid on gemma-2-9b-it, drawn at random: 8 groups of 7-19 length-sorted
    batches (32 rows, the last 8-31; 60 tokens plus an exponential tail of mean 60), 15
    variants per role and 1-6 roles per group, 42 layers of which 41 live, 2 alphas and
    ablations; jobs in the plan's order (baselines, then layer by layer)."""
    rng = random.Random(seed)
    n_layers = 42
    shapes: dict[tuple[str, int], tuple[int, int]] = {}
    variants: dict[str, int] = {}
    for i in range(8):
        group, n = f"g{i}", rng.randint(7, 19)
        lengths = sorted(60 + int(rng.expovariate(1 / 60)) for _ in range(n))
        for b, seq in enumerate(lengths):
            shapes[(group, b)] = (32 if b < n - 1 else rng.randint(8, 31), seq)
        variants[group] = 15 * rng.randint(1, 6)
    jobs = [_job(g, b, None, 0.0) for (g, b) in shapes]
    for layer in range(1, n_layers):
        for (g, b), (rows, seq) in shapes.items():
            cost = item_cost(rows, seq, layer, n_layers, variants[g], 2, ablation=True)
            jobs.append(_job(g, b, layer, cost))
    return jobs, shapes


def test_split_lpt_units_balance_paper_sized_grids() -> None:
    plan_ratios = []
    for seed in range(10):
        jobs, shapes = _paper_like(seed)
        whole = make_units(jobs, shapes, 42, math.inf)
        ideal = sum(u.cost for u in whole)
        first = {j.key: i for i, j in reversed(list(enumerate(jobs)))}
        plan_order = sorted(whole, key=lambda u: first[u.keys[0]])  # today's: batch by batch
        plan_ratios.append(makespan_ratio(plan_order, 32, ideal))
        split = make_units(jobs, shapes, 42, split_target(ideal, 32))
        assert makespan_ratio(split, 32, ideal) <= 1.1, seed
        assert sum(u.cost for u in split) < 1.01 * ideal  # the extra prefix passes
        assert sorted(k for u in split for k in u.keys) == sorted(j.key for j in jobs)
    assert min(plan_ratios) > 1.2
    assert sum(plan_ratios) / len(plan_ratios) > 1.3
