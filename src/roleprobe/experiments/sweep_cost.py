"""What a sweep costs, counted as :func:`roleprobe.sweep` plans it: items, passes, tokens, FLOPs.

The questions are encoded as :func:`~roleprobe.experiments.evaluation.encode_questions`
does (:func:`~roleprobe.experiments.evaluation.encode_items`) and batched by length
(:func:`~roleprobe.experiments.evaluation.length_batches`), grouped by domain
(:func:`~roleprobe.experiments.sweeps.role_group`); one baseline work item per (group,
batch) and one per (live layer, group, batch); each item's passes by
:func:`~roleprobe.experiments.sweeps.item_passes` (additions stacked ``stack`` to a pass
from the saved prefix, blocks ``l..L-1`` only; ablations stacked ``stack`` to a full pass)
and one prefix pass per batch (more when the saved residuals do not fit the prefix budget,
:func:`~roleprobe.experiments.sweeps.prefix_chunks`). Letter scoring reads 4 unembedding
rows (:data:`LETTER_ROWS`), not the full vocabulary.

Also here: the pieces every stage's count is made of, :class:`CostRow` (one part of one
stage) and :func:`pass_cost` (one forward pass's tokens and FLOPs); and :func:`sweep_jobs`,
the same plan as cost-estimated jobs for :mod:`roleprobe.experiments.scheduling`.

Footgun: without directions, every layer-0 candidate is counted as a zero direction (the
sweep skips them) and every other one as live.

Example:
    >>> count = count_sweep(load_plan_model("tiny-random"), benchmark, cfg)
    >>> count.work_items, count.total_passes
"""

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.evaluation import encode_items, length_batches, subject_domain
from roleprobe.experiments.scheduling import Job, item_cost
from roleprobe.experiments.sweep_config import WorkItem
from roleprobe.experiments.sweeps import (
    CPU_PREFIX_BUDGET,
    SweepConfig,
    is_null_direction,
    item_passes,
    prefix_chunks,
    role_group,
    variants_per_candidate,
)
from roleprobe.model.chat import ChatTemplate
from roleprobe.model.plan_model import Architecture, PlanModel
from roleprobe.vectors.decomposition import specific_directions
from roleprobe.vectors.directions import RoleDirections

__all__ = [
    "LETTER_ROWS",
    "CostRow",
    "SweepCount",
    "Tally",
    "count_sweep",
    "pass_cost",
    "sweep_jobs",
]

LETTER_ROWS = 4
"""Unembedding rows letter scoring reads (A-D), at the last position only."""


@dataclass(frozen=True)
class CostRow:
    """One part of one stage (``role`` empty for what the roles share).

    Attributes:
        stage: the run stage's key (``sweep``, ``evaluation``, ...).
        part: what runs (``addition``, ``ablation``, ``prefix``, ``base prompts``, ...).
        role: the role it is for, or ``""``.
        passes: forward passes (a role's share of stacked passes may be fractional).
        tokens: padded tokens, as full-pass equivalents (a pass over blocks ``l..L-1``
            counts ``(L - l) / L`` of its tokens).
        flops: floating-point operations.
        estimate: counted roughly (it depends on what selection picks).
    """

    stage: str
    part: str
    role: str
    passes: float
    tokens: float
    flops: float
    estimate: bool = False


@dataclass
class Tally:
    """Passes, tokens and FLOPs, summed over the passes :meth:`add` is given."""

    passes: float = 0.0
    tokens: float = 0.0
    flops: float = 0.0

    def add(self, passes: float, tokens: float, flops: float) -> None:
        self.passes += passes
        self.tokens += tokens
        self.flops += flops


def pass_cost(
    arch: Architecture, rows: int, seq: int, blocks: int, head: int | None
) -> tuple[float, float]:
    """(full-pass-equivalent tokens, FLOPs) of one pass; ``head``: unembedding rows read at
    the last position (``None``: none; -1: the full vocabulary at every position)."""
    tokens = rows * seq * blocks / arch.n_layers
    flops = rows * seq * blocks * arch.block_flops(seq)
    if head == -1:
        flops += rows * seq * arch.head_flops()
    elif head is not None:
        flops += rows * arch.head_flops(head)
    return tokens, float(flops)


@dataclass(frozen=True)
class SweepCount:
    """What a sweep runs, counted (see :func:`count_sweep`).

    Attributes:
        work_items: the plan's work items (baseline and layer items).
        baseline_items: of which baseline items.
        batches: question batches per group.
        live_layers: the layers with at least one live candidate.
        passes: forward passes by part (``prefix``, ``addition``, ``ablation`` and
            ``probe``: one batch under the grid's strongest addition, before the sweep).
        passes_unstacked: total passes with one ablation per pass (the count before
            ablations were stacked).
        rows: per (part, role) rows of :class:`CostRow`.
        max_padded: the longest batch's padded length.
        prefix_bytes_per_layer: one batch's saved ``resid_pre`` at one layer (``batch_size``
            rows of the longest batch).
        prefix_layers_at_once: the largest chunk of layers held at once within the budget.
        prefix_budget: the budget (bytes).
    """

    work_items: int
    baseline_items: int
    batches: dict[str, int]
    live_layers: tuple[int, ...]
    passes: dict[str, int]
    passes_unstacked: int
    rows: tuple[CostRow, ...]
    max_padded: int
    prefix_bytes_per_layer: int
    prefix_layers_at_once: int
    prefix_budget: int

    @property
    def total_passes(self) -> int:
        """Every forward pass of the sweep."""
        return sum(self.passes.values())


class _Grid(NamedTuple):
    """What a sweep's plan is made of: each group's roles (in ``cfg.roles`` order), each
    group's batches as (rows, padded length), and the variants per role of every (group,
    layer) with a live candidate."""

    groups: dict[str, list[str]]
    shapes: dict[str, list[tuple[int, int]]]
    variants: dict[tuple[str, int], dict[str, int]]


def _grid(
    model: PlanModel,
    benchmark: MultipleChoice,
    cfg: SweepConfig,
    directions: RoleDirections | None,
    direction_roles: Sequence[str] | None,
) -> _Grid:
    """The groups, batch shapes and variants of a sweep, as ``_Plan`` finds them (see
    :func:`count_sweep` for ``directions`` and ``direction_roles``)."""
    template = ChatTemplate.from_tokenizer(model.tokenizer, cfg.system)
    spec = specific_directions(directions) if directions is not None and cfg.specific else None
    roles_of_directions = direction_roles or (directions.roles if directions else cfg.roles)
    has_donor = len(roles_of_directions) >= 2

    def live(role: str, pos: Any, layer: int) -> bool:
        if directions is None:
            return layer != 0
        return not is_null_direction(directions, role, layer, pos)

    def specific_live(role: str, pos: Any, layer: int) -> bool:
        if spec is None:
            return layer != 0
        return not is_null_direction(spec, role, layer, pos)

    groups: dict[str, list[str]] = {}
    for role in cfg.roles:
        groups.setdefault(role_group(role, cfg.scope), []).append(role)
    domains = [subject_domain(s) for s in benchmark.items["subject"]]
    shapes: dict[str, list[tuple[int, int]]] = {}  # group -> (rows, padded length) per batch
    for group in sorted(groups):
        rows = benchmark.items
        if group != "all":
            rows = rows[[d == group for d in domains]]
        if rows.empty:
            raise ValueError(
                f"benchmark {benchmark.name!r} has no {group} questions for roles {groups[group]}"
            )
        encoded = encode_items(model.tokenizer, model.arch.n_ctx, rows, template, cfg.prompt_format)
        shapes[group] = [
            (len(b), max(len(encoded[i].ids) for i in b))
            for b in length_batches(encoded, cfg.batch_size)
        ]
    # variants per (group, layer), per role
    variants: dict[tuple[str, int], dict[str, int]] = {}
    for group, members in groups.items():
        for layer in cfg.layers:
            per_role = {
                role: sum(
                    variants_per_candidate(cfg, has_donor, specific_live(role, pos, layer))
                    for pos in cfg.positions
                    if live(role, pos, layer)
                )
                for role in members
            }
            if any(per_role.values()):
                variants[(group, layer)] = per_role
    return _Grid(groups, shapes, variants)


def count_sweep(
    model: PlanModel,
    benchmark: MultipleChoice,
    cfg: SweepConfig,
    *,
    dtype_bytes: int = 2,
    prefix_budget: int = CPU_PREFIX_BUDGET,
    stack_ablations: bool = True,
    directions: RoleDirections | None = None,
    direction_roles: Sequence[str] | None = None,
) -> SweepCount:
    """Count a sweep's work items, forward passes, tokens and FLOPs as it would run them.

    Args:
        model: the model (shapes and tokenizer).
        benchmark: the questions.
        cfg: the sweep's configuration (roles, layers, positions, stack, ...).
        dtype_bytes: bytes per activation (the model's dtype).
        prefix_budget: bytes one batch's saved residuals may take (chunks beyond it).
        stack_ablations: ``False``: one ablation per pass (the count before ablations were
            stacked).
        directions: the directions, to skip their zero candidates exactly; ``None``: every
            layer-0 candidate is zero and every other one live.
        direction_roles: the roles of the directions (donors need 2 or more; default:
            ``directions``' roles, else ``cfg.roles``).

    Returns:
        A :class:`SweepCount`.
    """
    arch, n_layers = model.arch, model.arch.n_layers
    groups, shapes, variants = _grid(model, benchmark, cfg, directions, direction_roles)
    tallies: dict[tuple[str, str], Tally] = {}
    passes = {"prefix": 0, "addition": 0, "ablation": 0}
    unstacked = 0
    one = dataclasses.replace(cfg, stack=1)
    prefix_needed = bool(cfg.alphas or cfg.conditions)
    max_padded = max(s for batches in shapes.values() for _, s in batches)
    for group in sorted(groups):
        layers = sorted(layer for (g, layer) in variants if g == group)
        for n, seq in shapes[group]:
            chunks = prefix_chunks(layers, n * seq * arch.d_model * dtype_bytes, prefix_budget)
            chunks = chunks if prefix_needed and layers else []
            # each chunk's pass starts where the previous one stopped; the last one runs to
            # the end and scores the batch's baseline
            bounds = [0, *(max(c) for c in chunks[:-1]), n_layers]
            for start, stop in itertools.pairwise(bounds):
                head = LETTER_ROWS if stop == n_layers else None
                tokens, flops = pass_cost(arch, n, seq, stop - start, head)
                tallies.setdefault(("prefix", ""), Tally()).add(1.0, tokens, flops)
            passes["prefix"] += len(bounds) - 1
            unstacked += len(bounds) - 1
            for layer in layers:
                per_role = variants[(group, layer)]
                total = sum(per_role.values())
                counted = item_passes(total, cfg)
                ablations = (
                    counted["ablation"] if stack_ablations else item_passes(total, one)["ablation"]
                )
                passes["addition"] += counted["addition"]
                passes["ablation"] += ablations
                unstacked += counted["addition"] + item_passes(total, one)["ablation"]
                for role, v in per_role.items():
                    share = v / total
                    add_t, add_f = pass_cost(
                        arch, n * v * len(cfg.alphas), seq, n_layers - layer, LETTER_ROWS
                    )
                    tallies.setdefault(("addition", role), Tally()).add(
                        counted["addition"] * share, add_t, add_f
                    )
                    if cfg.ablation:
                        abl_t, abl_f = pass_cost(arch, n * v, seq, n_layers, LETTER_ROWS)
                        tallies.setdefault(("ablation", role), Tally()).add(
                            ablations * share, abl_t, abl_f
                        )
    if cfg.alphas and variants:  # the overflow probe: one batch, strongest addition
        n, seq = shapes[sorted(groups)[0]][0]
        tokens, flops = pass_cost(arch, n, seq, n_layers, LETTER_ROWS)
        tallies.setdefault(("probe", ""), Tally()).add(1.0, tokens, flops)
        passes["probe"] = 1  # not in passes_unstacked: the count of the code before both
    baseline = sum(len(b) for b in shapes.values())
    live_layers = tuple(sorted({layer for (_, layer) in variants}))
    layer_bytes = cfg.batch_size * max_padded * arch.d_model * dtype_bytes
    held = prefix_chunks(live_layers, layer_bytes, prefix_budget) if live_layers else [[]]
    rows = tuple(
        CostRow("sweep", part, role, t.passes, t.tokens, t.flops)
        for (part, role), t in tallies.items()
    )
    return SweepCount(
        work_items=baseline + sum(len(shapes[g]) for (g, _) in variants),
        baseline_items=baseline,
        batches={g: len(b) for g, b in shapes.items()},
        live_layers=live_layers,
        passes=passes,
        passes_unstacked=unstacked,
        rows=rows,
        max_padded=max_padded,
        prefix_bytes_per_layer=layer_bytes,
        prefix_layers_at_once=max(len(c) for c in held),
        prefix_budget=prefix_budget,
    )


def sweep_jobs(
    model: PlanModel,
    benchmark: MultipleChoice,
    cfg: SweepConfig,
    *,
    directions: RoleDirections | None = None,
    direction_roles: Sequence[str] | None = None,
) -> tuple[list[Job], dict[tuple[str, int], tuple[int, int]]]:
    """A sweep's work items as scheduling jobs, with their estimated costs.

    Args:
        model, benchmark, cfg, directions, direction_roles: as :func:`count_sweep`.

    Returns:
        Every work item's :class:`~roleprobe.experiments.scheduling.Job`, in the order of
        the sweep's plan (every baseline item by group and batch, then per layer of
        ``cfg.layers`` each group with a live candidate there, batch by batch), its cost
        by :func:`~roleprobe.experiments.scheduling.item_cost`; and the (rows, padded
        length) of every (group, batch), what
        :func:`~roleprobe.experiments.scheduling.make_units` needs.
    """
    n_layers = model.arch.n_layers
    groups, shapes, variants = _grid(model, benchmark, cfg, directions, direction_roles)
    jobs = [
        Job(WorkItem(group, b).key, group, b, None, 0.0)
        for group in sorted(groups)
        for b in range(len(shapes[group]))
    ]
    for layer in cfg.layers:
        for group in sorted(groups):
            if (group, layer) not in variants:
                continue
            total = sum(variants[(group, layer)].values())
            for b, (rows, seq) in enumerate(shapes[group]):
                cost = item_cost(
                    rows,
                    seq,
                    layer,
                    n_layers,
                    total,
                    len(cfg.alphas),
                    cfg.ablation,
                    len(cfg.conditions),
                )
                jobs.append(Job(WorkItem(group, b, layer).key, group, b, layer, cost))
    batch_shapes = {
        (g, b): shape for g, batches in shapes.items() for b, shape in enumerate(batches)
    }
    return jobs, batch_shapes
