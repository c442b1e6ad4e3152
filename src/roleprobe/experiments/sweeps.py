"""Sweeps: every role × layer × position × condition, with controls, resumable and shardable.

The paper scores every (position, layer) candidate of a role — the direction computed at
post-instruction position ``i`` and layer ``l`` — by adding it at layer ``l`` with each α
and by ablating it everywhere, on the role's own domain, and then picks one
(:mod:`roleprobe.experiments.selection`). :func:`sweep` runs that grid:

* **Scope.** ``scope="domain"`` (default): each role on the questions of its own domain;
  ``"all"``: every role on every question.
* **Controls** in the same grid, same layers and α: a random direction with the role
  vector's norm (seeded by role, position and layer) and a shuffled-role direction (another
  role's vector at the same position and layer; a seeded derangement of the roles in the
  directions). Selection rules run on them exactly as on the roles — how often they "pass"
  is how often a pick is chance.
* **Role-specific parts** (``specific=True``): every role direction shares a large "any
  role" component (:mod:`roleprobe.vectors.decomposition`); the sweep then also runs each
  role's specific part ``d_r - mean_r d_r`` (the mean over the roles *of the directions*,
  not only the swept ones) as source ``"specific"``, with its own controls:
  ``"specific-random"`` (a random direction of the specific part's norm, seeded apart from
  the raw random control) and ``"specific-shuffled"`` (the donor role's specific part).
  Selection, picks and effect tables treat them as any other source. Off (the default),
  the sweep and its store are exactly those of a sweep without the option.
* **Conditions are interventions.** Each candidate direction ``d`` at layer ``l`` is turned
  into interventions by the same specs :func:`roleprobe.evaluate` runs:
  ``Addition(d, l, α)`` per α (with ``alpha_unit="norm"``, ``reference_norm`` = the layer's
  mean residual norm), ``Ablation(d, at=ablation_at)``, and any ``conditions={name:
  make}`` of your own, ``make(d, l)`` returning any :class:`~roleprobe.Intervention`.
* **Prefix reuse.** An intervention whose hooks all sit at ``blocks.{l}.hook_resid_pre``
  (an addition, a clamp, ...) leaves the residual below ``l`` unchanged, so each batch's
  ``resid_pre[l]`` is computed once, the intervention's own hook functions are applied to
  it, and only blocks ``l..L-1`` run for each (role, source, position, condition) —
  stacked several to a forward pass (:mod:`roleprobe.steering.prefix`). Any other intervention (an
  ablation changes every layer) runs in full under :func:`~roleprobe.steer`.
* **Work items.** The unit of work is (domain, layer, question batch): all of that layer's
  cells for one batch, written as one part of a :class:`roleprobe.ResultStore`, plus
  one baseline item per (domain, batch). A crash loses at most the item in flight; rerunning
  with the same store skips finished items. :func:`merge` checks that nothing is missing
  and builds the tables.
* **Units, largest first.** A worker claims and runs together consecutive layer items of
  one batch (a *unit*: one prefix pass serves them), and takes units in descending
  estimated cost (:mod:`roleprobe.experiments.scheduling`: rows × padded length × blocks
  run), so that the long units start first and the short ones fill the tail. With several
  ``workers`` a batch is cut into units of at most 1/(8·workers) of the sweep's cost.
  ``shard=(i, n)`` (or ``"i/n"``) takes the i-th of n shards balanced by estimated cost,
  so the jobs of an array write disjoint parts into one store.
* **Concurrent workers.** Several processes may run the *same* sweep on one store (no
  shards needed: two notebooks, a job array on a lab's shared folder). Each claims a work
  item before computing it (:meth:`roleprobe.ResultStore.claim`), so they split the work
  instead of doubling it, and the merged table is the one a single worker writes. A
  worker that runs out of items while others still compute returns an incomplete result
  whose ``in_flight`` lists them (``wait=True``: it waits for them instead, taking over
  those whose holder dies). A holder refreshes a heartbeat in its claims; a claim whose
  process is gone, whose Slurm job has ended or whose heartbeat is older than ``lease``
  (5 minutes) is taken over (:mod:`roleprobe.experiments.claims`). Shards and claims
  combine (``shard`` picks the units, claims split them further).

Example:
    >>> result = rp.sweep(model, rd, rp.load_benchmark("builtin"), roles=["lawyer"],
    ...                   store="runs/sweep")
    >>> result.scores().sort_values("delta_accuracy").tail()
    >>> rp.select(result, rule="held-out")
"""

import contextlib
import hashlib
import logging
import math
import os
import random
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.hooks import check_layers
from roleprobe.core.progress import bar
from roleprobe.core.types import Model, check_model_arg
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.experiments.claims import LEASE, check_lease, heartbeat_interval
from roleprobe.experiments.evaluation import (
    check_scores,
    encode_questions,
    length_batches,
    letter_logits,
    score_table,
    subject_domain,
)
from roleprobe.experiments.merging import SweepResult as SweepResult
from roleprobe.experiments.merging import candidate_scores as candidate_scores
from roleprobe.experiments.merging import merge as merge
from roleprobe.experiments.scheduling import (
    Job,
    Unit,
    balanced_shards,
    item_cost,
    make_units,
    split_target,
)
from roleprobe.experiments.store import ResultStore, code_versions
from roleprobe.experiments.sweep_config import ALPHA_UNITS as ALPHA_UNITS
from roleprobe.experiments.sweep_config import BUILTIN_CONDITIONS as BUILTIN_CONDITIONS
from roleprobe.experiments.sweep_config import CANDIDATE as CANDIDATE
from roleprobe.experiments.sweep_config import SCOPES as SCOPES
from roleprobe.experiments.sweep_config import SOURCES as SOURCES
from roleprobe.experiments.sweep_config import SPECIFIC_SOURCES as SPECIFIC_SOURCES
from roleprobe.experiments.sweep_config import SweepConfig as SweepConfig
from roleprobe.experiments.sweep_config import WorkItem as WorkItem
from roleprobe.experiments.sweep_config import parse_shard as parse_shard
from roleprobe.experiments.sweep_config import role_group as role_group
from roleprobe.model.chat import ChatBatch, ChatTemplate, answer_letter_ids, collate, pad_token_id
from roleprobe.model.models import model_fingerprint, model_name
from roleprobe.steering.interventions import (
    Ablation,
    Addition,
    HookFn,
    Intervention,
    OnDevice,
    SteerState,
    check_intervention,
    position_hook,
    steer,
)
from roleprobe.steering.operators import project_out_stacked, work_dtype
from roleprobe.steering.prefix import (
    last_letter_logits,
    letter_only_supported,
    letters_from,
    run_from,
)
from roleprobe.vectors.activations import PositionLabel, residual_norms
from roleprobe.vectors.decomposition import specific_directions
from roleprobe.vectors.directions import RoleDirections

logger = logging.getLogger(__name__)

MakeIntervention = Callable[[Float[Tensor, " d_model"], int], Intervention]
"""``make(direction, layer)``: the intervention a sweep condition applies for a candidate."""


def _derangement(roles: Sequence[str], seed: int) -> dict[str, str]:
    """A seeded permutation of ``roles`` with no fixed point (empty for fewer than 2)."""
    if len(roles) < 2:
        return {}
    rng = random.Random(seed)
    order = list(roles)
    while True:
        rng.shuffle(order)
        if all(a != b for a, b in zip(roles, order, strict=True)):
            return dict(zip(roles, order, strict=True))


def random_control(
    direction: Float[Tensor, " d_model"], role: str, position: PositionLabel, layer: int, seed: int
) -> Float[Tensor, " d_model"]:
    """A random direction with ``direction``'s norm, the same for the same (role, pos, layer)."""
    key = f"{seed}|{role}|{position}|{layer}".encode()
    gen = torch.Generator().manual_seed(zlib.crc32(key))
    noise = torch.randn(direction.shape[0], generator=gen, dtype=torch.float64)
    return (noise / noise.norm() * direction.double().norm()).to(direction.dtype)


def _random_key(source: str, role: str) -> str:
    """The role part of a random control's seed key (``"specific:<role>"`` for the
    specific part's control, so that it is not the raw control's direction rescaled)."""
    return f"specific:{role}" if source.startswith("specific") else role


def candidate_vector(
    directions: RoleDirections,
    source: str,
    role: str,
    donor: str,
    layer: int,
    position: PositionLabel,
    seed: int,
    specific: RoleDirections | None = None,
) -> Float[Tensor, " d_model"]:
    """The direction a sweep candidate of ``source`` applies (what :func:`sweep` ran).

    Args:
        directions: the raw role directions the sweep was given.
        source: one of :data:`SOURCES` or :data:`SPECIFIC_SOURCES`.
        role: the candidate's role; donor: the shuffled control's donor role.
        layer, position: the candidate.
        seed: the sweep's seed (random controls).
        specific: ``specific_directions(directions)`` if already computed (else computed
            here for the specific sources).

    Raises:
        ValueError: an unknown source, or a shuffled control without a donor.
    """
    if source not in SOURCES + SPECIFIC_SOURCES:
        raise ValueError(f"unknown source {source!r}; use one of {SOURCES + SPECIFIC_SOURCES}")
    rd = directions
    if source in SPECIFIC_SOURCES:
        rd = specific if specific is not None else specific_directions(directions)
    kind = source.removeprefix("specific").lstrip("-") or "role"
    if kind == "shuffled":
        if not donor:
            raise ValueError(f"a {source!r} candidate needs its donor role")
        return rd.vector(donor, layer, position)
    d = rd.vector(role, layer, position)
    if kind == "random":
        return random_control(d, _random_key(source, role), position, layer, seed)
    return d


@dataclass(frozen=True)
class _Variant:
    """One candidate direction of a work item: ``vector`` on the CPU (what conditions build
    their interventions from, validated there without waiting for a GPU) and the same row
    on the model's device (what the stacked maths use; moved with the others at once)."""

    role: str
    source: str
    donor: str
    position: PositionLabel
    vector: Tensor
    on_device: Tensor


def _variants(
    rd: RoleDirections,
    roles: Sequence[str],
    layer: int,
    cfg: SweepConfig,
    donors: dict[str, str],
    specific: RoleDirections | None,
    null: set[tuple[str, PositionLabel, int]],
    device: "str | torch.device | None" = None,
) -> list[_Variant]:
    """Each live candidate's role direction and controls, then (``specific``) its specific
    part and their controls; their vectors are rows of one ``[variant, d_model]`` tensor
    on ``device``, built from this layer's slices of the directions only.

    ``null``: the (role, position, layer) candidates that are zero (``_Plan.null``).
    """
    needed = list(dict.fromkeys([*roles, *(donors[r] for r in roles if r in donors)]))
    kinds: list[tuple[RoleDirections, tuple[str, str, str]]] = [(rd, SOURCES)]
    if specific is not None:
        kinds.append((specific, SPECIFIC_SOURCES))
    slices = [directions.layer_vectors(needed, layer, cfg.positions) for directions, _ in kinds]
    labels: list[tuple[str, str, str, PositionLabel]] = []
    rows: list[Tensor] = []
    for role in roles:
        r = needed.index(role)
        for p, pos in enumerate(cfg.positions):
            if (role, pos, layer) in null:
                continue
            for (directions, (own, random_source, shuffled)), vectors in zip(
                kinds, slices, strict=True
            ):
                if directions is specific and is_null_direction(directions, role, layer, pos):
                    continue
                d = vectors[r, p]
                labels.append((role, own, role, pos))
                rows.append(d)
                if cfg.controls:
                    key = _random_key(own, role)
                    labels.append((role, random_source, "", pos))
                    rows.append(random_control(d, key, pos, layer, cfg.seed))
                    if role in donors:
                        donor = donors[role]
                        labels.append((role, shuffled, donor, pos))
                        rows.append(vectors[needed.index(donor), p])
    if not rows:
        return []
    stacked = torch.stack(rows)
    on_device = stacked.to(device=device if device is not None else "cpu")
    return [
        _Variant(role, source, donor, pos, stacked[i], on_device[i])
        for i, (role, source, donor, pos) in enumerate(labels)
    ]


def is_null_direction(rd: RoleDirections, role: str, layer: int, pos: PositionLabel) -> bool:
    """Whether the direction is zero up to rounding (e.g. at layer 0, where the template
    tokens' embeddings are the same for every prompt); such candidates are skipped."""
    base = float(rd.base_mean[rd.position_index(pos), rd.layer_index(layer)].norm())
    return float(rd.vector(role, layer, pos).double().norm()) <= 1e-6 * (1.0 + base)


def directions_hash(rd: RoleDirections, roles: Sequence[str] | None = None) -> str:
    """The hash of a sweep's directions (every role's vectors) its store's manifest records
    as ``config.directions``: directions loaded or recomputed later must give the same.
    ``roles``: hash only these roles' vectors (the sweep's directions may have had fewer
    roles than ``rd``)."""
    digest = hashlib.sha256()
    for role in sorted(set(rd.roles if roles is None else roles)):
        digest.update(role.encode())
        digest.update(rd.vectors[rd.role_index(role)].contiguous().numpy().data)
    return digest.hexdigest()[:16]


def variants_per_candidate(cfg: SweepConfig, has_donor: bool, specific_live: bool = True) -> int:
    """Variants one live (role, position) candidate of a layer contributes to a work item:
    the role direction, its random and (with a donor) shuffled controls, and with
    ``cfg.specific`` (where the specific part is not zero) the same again for the part."""
    per_kind = 1 + (int(cfg.controls) * (1 + int(has_donor)))
    return per_kind * (2 if cfg.specific and specific_live else 1)


def item_passes(n_variants: int, cfg: SweepConfig) -> dict[str, int]:
    """Forward passes of one layer work item with ``n_variants`` variants.

    Additions run ``cfg.stack`` (variant, α) jobs per pass from the saved prefix (blocks
    ``l..L-1`` only); ablations run ``cfg.stack`` variants per full pass (on a GPU; a CPU
    sweep runs one per pass, see ``stack_ablations``); each user
    condition is counted as one full pass per variant (one that hooks only this layer's
    input reuses the prefix and is stacked like the additions, so this is an upper bound).
    """
    return {
        "addition": math.ceil(n_variants * len(cfg.alphas) / cfg.stack),
        "ablation": math.ceil(n_variants / cfg.stack) if cfg.ablation else 0,
        "conditions": n_variants * len(cfg.conditions),
    }


CPU_PREFIX_BUDGET = 2 * 2**30
"""Default budget (bytes) of one batch's saved prefix residuals on a CPU."""
CUDA_PREFIX_FRACTION = 0.125
"""Default budget of the saved prefix residuals on a GPU: this share of its memory."""


def default_prefix_budget(device: "str | torch.device") -> int:
    """Bytes one batch's saved ``resid_pre`` may take by default on ``device``: an eighth
    of a GPU's memory (10 GiB on an 80 GB H100), 2 GiB elsewhere."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        total = torch.cuda.get_device_properties(device).total_memory
        return int(total * CUDA_PREFIX_FRACTION)
    return CPU_PREFIX_BUDGET


def prefix_chunks(layers: Sequence[int], layer_bytes: int, budget: int) -> list[list[int]]:
    """The sorted distinct ``layers`` in consecutive chunks whose saved residuals
    (``layer_bytes`` each) fit in ``budget`` bytes; a chunk holds at least one layer."""
    per_chunk = max(1, budget // max(1, layer_bytes))
    wanted = sorted(set(layers))
    return [wanted[i : i + per_chunk] for i in range(0, len(wanted), per_chunk)]


class _Plan:
    """The deterministic list of work items, and what each needs."""

    def __init__(self, model: Model, rd: RoleDirections, bench: MultipleChoice, cfg: SweepConfig):
        self.cfg = cfg
        self.template = ChatTemplate.from_tokenizer(model.tokenizer, cfg.system)
        self.letters = answer_letter_ids(model.tokenizer, LETTERS, cfg.system)
        domains = [subject_domain(s) for s in bench.items["subject"]]
        self.groups: dict[str, list[str]] = {}
        for role in cfg.roles:
            self.groups.setdefault(role_group(role, cfg.scope), []).append(role)
        self.items: dict[str, pd.DataFrame] = {}
        self.encoded: dict[str, list[Any]] = {}
        self.batches: dict[str, list[list[int]]] = {}
        for group in sorted(self.groups):
            rows = bench.items if group == "all" else bench.items[[d == group for d in domains]]
            if rows.empty:
                raise ValueError(
                    f"benchmark {bench.name!r} has no {group} questions for roles "
                    f"{self.groups[group]}; use another benchmark or scope='all'"
                )
            self.items[group] = rows.reset_index(drop=True)
            self.encoded[group] = encode_questions(
                model, self.items[group], self.template, cfg.prompt_format
            )
            self.batches[group] = length_batches(self.encoded[group], cfg.batch_size)
        self.skipped = [
            (role, pos, layer)
            for layer in cfg.layers
            for role in cfg.roles
            for pos in cfg.positions
            if is_null_direction(rd, role, layer, pos)
        ]
        if self.skipped:
            logger.info(
                "skipping %d zero directions (role, position, layer), e.g. %s",
                len(self.skipped),
                self.skipped[0],
            )
        null = self.null = set(self.skipped)
        # ablations per full pass: ``stack`` on a GPU; one on a CPU, where a pass of
        # ``stack`` times the rows is slower per row (measured on 2 cores: benchmark 9)
        on_cpu = torch.device(cast(str, model.cfg.device)).type == "cpu"
        self.ablation_stack = 1 if on_cpu else cfg.stack
        live = {
            (group, layer)
            for group, members in self.groups.items()
            for layer in cfg.layers
            if any((r, p, layer) not in null for r in members for p in cfg.positions)
        }
        self.work = [
            WorkItem(group, b)
            for group in sorted(self.groups)
            for b in range(len(self.batches[group]))
        ] + [
            WorkItem(group, b, layer)
            for layer in cfg.layers
            for group in sorted(self.groups)
            if (group, layer) in live
            for b in range(len(self.batches[group]))
        ]
        self.by_key = {w.key: w for w in self.work}
        self.n_layers = int(model.cfg.n_layers)


def sweep(
    model: Model,
    directions: RoleDirections,
    benchmark: MultipleChoice,
    roles: Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    positions: Sequence[PositionLabel] | None = None,
    alphas: Sequence[float] = (1.0, 3.0),
    ablation: bool = True,
    controls: bool = True,
    store: str | os.PathLike[str] | None = None,
    resume: bool = True,
    shard: "str | tuple[int, int] | None" = None,
    scope: str = "domain",
    batch_size: int = 16,
    stack: int = 4,
    prompt_format: str = "paper",
    seed: int = 0,
    progress: bool = True,
    tie_rule: str = "fractional",
    ablation_at: str = "stream",
    system: str | None = None,
    conditions: Mapping[str, MakeIntervention] | None = None,
    alpha_unit: str = "raw",
    lease: float | int = LEASE,
    specific: bool = False,
    prefix_memory: int | None = None,
    stack_ablations: bool | None = None,
    workers: int | None = None,
    wait: bool = False,
    check_model: bool = True,
) -> SweepResult:
    """Score every candidate (role, position, layer) × condition on a benchmark.

    Args:
        model: the TransformerLens bridge the directions were computed on.
        directions: the role directions (their layers and positions bound the grid).
        benchmark: the questions (selection and report splits are made later by
            :func:`roleprobe.select`, from the same table).
        roles, layers, positions: the grid (default: everything in ``directions``).
        alphas: addition strengths; ablation: also ablate; controls: random and
            shuffled-role directions in the same grid.
        store: a folder for the results (default: a temporary one, deleted afterwards).
        resume: continue a store that already holds parts of this same sweep.
        shard: ``"i/n"`` — do only the i-th of n parts of the plan, balanced by estimated
            cost (0-based; the n parts together are the whole plan).
        scope: ``"domain"`` (each role on its own domain's questions) or ``"all"``.
        batch_size: questions per batch; stack: variants per upper-layer forward pass.
        prompt_format: question format; seed: seed of the control directions.
        progress: a tqdm bar over work items.
        tie_rule: how a tie at the top of the letter logits is scored (``"fractional"``,
            ``"paper"`` or ``"first"``; recorded in the store's config).
        ablation_at: ``"stream"`` or ``"paper"`` (see :class:`roleprobe.Ablation`).
        system: the system-turn policy of the questions (default: the directions' own,
            so questions and directions share one chat format).
        conditions: more conditions, by name: ``make(direction, layer)`` returns any
            :class:`~roleprobe.Intervention` (a class of your own included) for a candidate
            direction at its layer; rows get ``condition=name`` and ``alpha=NaN``. Each is
            built and checked against the model before any question runs. A store records
            the names only: resuming with other callables under the same names mixes them.
        alpha_unit: ``"raw"`` (``alpha * d``, the paper) or ``"norm"`` (``alpha`` in units
            of the layer's mean residual norm, :func:`roleprobe.residual_norms`).
        lease: seconds without a heartbeat after which another worker's claim on a work
            item is stale and taken over (default 5 minutes; claims of dead processes on
            this host and of ended Slurm jobs are taken over at once). Holders refresh
            theirs every tenth of it, so it need not exceed the time an item takes.
        specific: also sweep each role's specific part (direction minus the mean direction
            over the roles of ``directions``) as source ``"specific"``, with the controls
            ``"specific-random"`` and ``"specific-shuffled"`` (see the module docstring).
            Needs at least 2 roles in ``directions``; recorded in the store only when on.
        prefix_memory: bytes one batch's saved ``resid_pre`` residuals may take (prefix
            reuse). Layers beyond it are captured in chunks, each chunk's pass starting
            from the previous chunk's top residual (no block runs twice; the results equal
            one chunk's to float rounding). ``None``: :func:`default_prefix_budget` of the
            model's device (an eighth of a GPU's memory, 2 GiB on a CPU). Not part of the
            store's config: it changes where the work is held, not what is computed.
        stack_ablations: run ``stack`` ablations per full pass (one block of rows each);
            ``None``: on a GPU yes, on a CPU no (there a pass of ``stack`` times the rows
            is slower per row). Equal results to float rounding; not part of the store's
            config.
        workers: how many workers share the store (cuts batches into units small enough
            for the tail to balance; ``None``: ``SLURM_ARRAY_TASK_COUNT`` if set, else 1,
            whole batches). Any value gives the same results.
        wait: when other workers hold the last items, wait for them (taking over any
            whose holder dies) instead of returning an incomplete result.
        check_model: refuse directions computed on a model with other weights (their
            recorded fingerprint against ``model``'s, before any forward pass). ``False``
            uses them anyway, with a warning (width and layers are still checked).

    Returns:
        A :class:`SweepResult` over everything in the store (``missing`` lists unfinished
        parts, e.g. those of other shards; ``in_flight`` those that other workers are
        computing now: ``complete`` is False until they finish, then :func:`merge`).

    Raises:
        TypeError: a condition's ``make`` is not callable or does not return an
            :class:`~roleprobe.Intervention` (before any forward pass).
        ValueError: a bad argument (named), or directions of another model
            (``check_model``).
    """
    check_model_arg(model)
    extra = dict(conditions or {})
    directions.check_model(model, strict=check_model, opt_out="sweep(check_model=False)")
    cfg = SweepConfig(
        roles=tuple(roles) if roles is not None else directions.roles,
        layers=check_layers(model, layers if layers is not None else directions.layers),
        positions=tuple(positions) if positions is not None else directions.positions,
        alphas=tuple(float(a) for a in alphas),
        ablation=ablation,
        controls=controls,
        scope=scope,
        batch_size=batch_size,
        stack=stack,
        prompt_format=prompt_format,
        seed=seed,
        tie_rule=tie_rule,
        ablation_at=ablation_at,
        system=directions.system if system is None else system,
        alpha_unit=alpha_unit,
        conditions=tuple(extra),
        specific=specific,
    )
    if cfg.specific and len(directions.roles) < 2:
        raise ValueError(
            f"specific=True needs directions of at least 2 roles (their mean is the shared "
            f"part); these have {list(directions.roles)}"
        )
    for role in cfg.roles:
        directions.role_index(role)
    for layer in cfg.layers:
        directions.layer_index(layer)
    for pos in cfg.positions:
        directions.position_index(pos)
    index, count = parse_shard(shard)
    lease = check_lease(lease)
    n_workers = _check_workers(workers)
    budget = _check_budget(prefix_memory, model)
    _check_conditions(model, directions, cfg, extra)
    plan = _Plan(model, directions, benchmark, cfg)
    if stack_ablations is not None:
        plan.ablation_stack = cfg.stack if stack_ablations else 1
    letter_only_supported(model)  # probe the output head once, before any hooks are on
    norms = residual_norms(model) if cfg.alpha_unit == "norm" else None
    swept = _conditions(cfg, extra, norms)
    donors = _derangement(directions.roles, cfg.seed) if cfg.controls else {}
    spec = specific_directions(directions) if cfg.specific else None
    if cfg.controls and not donors:
        logger.warning("one role in the directions: no shuffled-role control")
    manifest = {
        "config": {
            "sweep": cfg.to_dict(),
            "model": model_name(model),
            "fingerprint": model_fingerprint(model),
            "n_layers": int(model.cfg.n_layers),
            "benchmark": benchmark.hash,
            "directions": directions_hash(directions),
            "donors": donors,
            "plan": [w.key for w in plan.work],
            "skipped": [list(x) for x in plan.skipped],
        },
        **({} if norms is None else {"reference_norms": norms.tolist()}),
        "benchmark_name": benchmark.name,
        "chat_format": plan.template.render(model.tokenizer),
        "directions_prompts": {"source": directions.source, **directions.prompt_hashes},
        "versions": code_versions(),
    }
    _probe_alphas(model, directions, plan, norms)  # before the store exists: a setting error
    with tempfile.TemporaryDirectory(prefix="roleprobe-sweep-") as scratch:
        root = Path(store) if store is not None else Path(scratch)
        results = ResultStore(root, manifest, resume=resume, lease=lease)
        units = _units(plan, len(directions.roles) >= 2, (index, count), n_workers)
        work = partial(
            _work, model, directions, plan, results, donors, swept, progress, spec, budget
        )
        try:
            busy = work(units)
            poll, said = min(10.0, heartbeat_interval(lease)), 0.0
            while busy and wait:
                if time.monotonic() - said > 60:
                    logger.info(
                        "sweep: waiting for %d items held by other workers (%s)",
                        len(busy),
                        results.claims.describe(busy),
                    )
                    said = time.monotonic()
                time.sleep(poll)
                wanted = set(busy)
                busy = work([u for u in units if wanted.intersection(u.keys)])
        finally:
            results.release_all()  # claims of an interrupted item
        result = merge(root, allow_partial=count > 1 or bool(busy))
        result.pending = busy
        if busy:
            logger.warning(
                "sweep: %d work items are being computed by other workers (%s); "
                "merge the store when they finish",
                len(busy),
                results.claims.describe(busy),
            )
        if store is None:
            result.table = result.table  # read before the scratch folder goes
            result.store = None
        return result


def _check_budget(prefix_memory: int | None, model: Model) -> int:
    """``prefix_memory`` in bytes (a positive integer), or the default for the model's device."""
    if prefix_memory is None:
        return default_prefix_budget(cast(str, model.cfg.device))
    if isinstance(prefix_memory, bool) or not isinstance(prefix_memory, int) or prefix_memory < 1:
        raise ValueError(f"prefix_memory must be a positive number of bytes, got {prefix_memory!r}")
    return prefix_memory


def _check_workers(workers: int | None) -> int:
    """``workers`` (a positive integer), or the Slurm array's task count, or 1."""
    if workers is None:
        env = os.environ.get("SLURM_ARRAY_TASK_COUNT", "")
        return int(env) if env.isdigit() and int(env) > 0 else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _jobs(
    plan: "_Plan", has_donor: bool
) -> tuple[list[Job], dict[tuple[str, int], tuple[int, int]]]:
    """Every work item of ``plan`` with its estimated cost, and each batch's (rows, padded
    length)."""
    cfg = plan.cfg
    n_layers = plan.n_layers
    shapes = {
        (group, b): (len(rows), max(len(plan.encoded[group][i].ids) for i in rows))
        for group, batches in plan.batches.items()
        for b, rows in enumerate(batches)
    }
    per_candidate = variants_per_candidate(cfg, has_donor)
    variants = {
        (group, layer): per_candidate
        * sum((r, p, layer) not in plan.null for r in members for p in cfg.positions)
        for group, members in plan.groups.items()
        for layer in cfg.layers
    }
    jobs = []
    for item in plan.work:
        rows, seq = shapes[(item.group, item.batch)]
        n = 0 if item.layer is None else variants[(item.group, item.layer)]
        cost = item_cost(
            rows,
            seq,
            item.layer,
            n_layers,
            n,
            len(cfg.alphas),
            cfg.ablation,
            len(cfg.conditions),
        )
        jobs.append(Job(item.key, item.group, item.batch, item.layer, cost))
    return jobs, shapes


def _units(plan: "_Plan", has_donor: bool, shard: tuple[int, int], workers: int) -> list[Unit]:
    """This worker's units in claim order: the plan's items grouped into units (whole
    batches for one worker; cut for the tail to balance for several), largest first; a
    shard takes its part of a cost-balanced partition."""
    jobs, shapes = _jobs(plan, has_donor)
    total = sum(j.cost for j in jobs)
    parallel = max(workers, shard[1])
    target = split_target(total, parallel) if parallel > 1 and total > 0 else math.inf
    units = make_units(jobs, shapes, plan.n_layers, target)
    if shard[1] > 1:
        mine = {u.keys for u in balanced_shards(units, shard[1])[shard[0]]}
        units = [u for u in units if u.keys in mine]
    return units


def _work(
    model: Model,
    directions: RoleDirections,
    plan: "_Plan",
    results: ResultStore,
    donors: dict[str, str],
    swept: "list[_Condition]",
    progress: bool,
    specific: RoleDirections | None,
    budget: int,
    units: Sequence[Unit],
) -> list[str]:
    """Compute the items of ``units`` (in order) that are not done or held by a live
    worker into the store; returns the keys other workers hold."""
    done = results.done()
    todo = [[k for k in u.keys if k not in done] for u in units]
    n_todo = sum(len(keys) for keys in todo)
    logger.info(
        "sweep: %d work items in the plan, %d in this worker's %d units, %d to do",
        len(plan.work),
        sum(len(u.keys) for u in units),
        len(units),
        n_todo,
    )
    busy: list[str] = []
    bars = bar(total=n_todo, enabled=progress, desc="sweep", unit="item")
    for unit, keys in zip(units, todo, strict=True):
        items = []
        for key in keys:  # claimed one unit at a time, so that workers interleave
            if results.claim(key):
                items.append(plan.by_key[key])
            elif results.is_done(key):
                bars.update(1)
            else:
                busy.append(key)
        if not items:
            continue
        batch = _batch(model, plan, unit.group, unit.batch)
        _run_batch(model, directions, plan, results, items, batch, donors, swept, budget, specific)
        bars.update(len(items))  # a unit's items finish together
    bars.close()
    return [key for key in busy if not results.is_done(key)]


def _run_batch(
    model: Model,
    directions: RoleDirections,
    plan: "_Plan",
    results: ResultStore,
    items: Sequence[WorkItem],
    batch: ChatBatch,
    donors: dict[str, str],
    swept: "list[_Condition]",
    budget: int,
    specific: RoleDirections | None,
) -> None:
    """One batch's claimed items: the saved prefix residuals in layer chunks of at most
    ``budget`` bytes (each chunk's pass starts from the previous chunk's top residual), the
    items of each chunk's layers, and the baseline from the last chunk's full pass."""
    cfg = plan.cfg
    prefix = bool(cfg.alphas or cfg.conditions)  # conditions that may reuse it
    layer_items = sorted((w for w in items if w.layer is not None), key=lambda w: w.layer or 0)
    base_items = [w for w in items if w.layer is None]
    layers = sorted({cast(int, w.layer) for w in layer_items}) if prefix else []
    element = torch.finfo(_model_dtype(model)).bits // 8
    layer_bytes = batch.input_ids.numel() * int(model.cfg.d_model) * element
    chunks = prefix_chunks(layers, layer_bytes, budget) or [[]]
    if len(chunks) > 1:
        logger.debug("sweep: prefix of %d layers in %d chunks", len(layers), len(chunks))
    start: tuple[int, Tensor] | None = None
    for j, chunk in enumerate(chunks):
        last = j == len(chunks) - 1
        resids, base = _prefix_pass(
            model, batch, chunk, plan.letters, last and bool(base_items), start
        )
        if chunk and not last:
            start = (chunk[-1], resids[chunk[-1]])
        for item in base_items if last else []:
            assert base is not None
            table = score_table(_rows(plan, item), base, {"group": item.group}, cfg.tie_rule)
            results.write(item.key, table)  # releases the claim
            logger.debug("sweep: computed %s", item.key)
        todo = [w for w in layer_items if (w.layer in chunk if prefix else last)]
        for item in todo:
            resid = resids.pop(cast(int, item.layer), None)
            table = _run_item(model, directions, plan, item, donors, batch, resid, swept, specific)
            results.write(item.key, table)
            logger.debug("sweep: computed %s", item.key)


def _model_dtype(model: Model) -> torch.dtype:
    """The dtype of the model's residual stream (its parameters')."""
    dtype = getattr(model.cfg, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return next(model.parameters()).dtype


def _rows(plan: _Plan, item: WorkItem) -> pd.DataFrame:
    rows = plan.batches[item.group][item.batch]
    return plan.items[item.group].iloc[rows].reset_index(drop=True)


def _batch(model: Model, plan: _Plan, group: str, index: int) -> ChatBatch:
    rows = plan.batches[group][index]
    pad = pad_token_id(model.tokenizer)
    batch = collate([plan.encoded[group][i] for i in rows], plan.template.n_post, pad)
    return batch.to(cast(str, model.cfg.device))


class _Enough(Exception):
    pass


def _prefix_pass(
    model: Model,
    batch: ChatBatch,
    layers: Sequence[int],
    letters: Sequence[int],
    baseline: bool,
    start: tuple[int, Tensor] | None = None,
) -> tuple[dict[int, Tensor], Tensor | None]:
    """One forward pass: ``resid_pre`` at each of ``layers`` and, if asked, the baseline
    letter logits (otherwise the pass stops at the last layer needed).

    ``start=(layer, resid)``: the pass starts from a residual saved at ``layer`` (an
    earlier chunk's) and runs the blocks from there only.
    """
    captured: dict[int, Tensor] = {}
    wanted = sorted(set(layers))
    if start is not None:
        wanted = [layer for layer in wanted if layer > start[0]]

    def grab(act: Tensor, hook: Any, layer: int) -> Tensor:
        captured[layer] = act.clone()
        if not baseline and layer == wanted[-1]:
            raise _Enough
        return act

    hooks = [(f"blocks.{layer}.hook_resid_pre", partial(grab, layer=layer)) for layer in wanted]
    inputs = batch.input_ids if start is None else start[1]
    at = None if start is None else start[0]
    base = None
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        if baseline:
            base = last_letter_logits(model, inputs, batch.attention_mask, letters, at)
            base = base.double().cpu()
        elif wanted:
            with contextlib.suppress(_Enough):
                run_from(model, inputs, batch.attention_mask, at)
    return captured, base


@dataclass(frozen=True)
class _Condition:
    """One swept condition: a name, the alpha column, and how to build its intervention."""

    name: str
    alpha: float
    make: MakeIntervention


def _probe_alphas(
    model: Model, directions: RoleDirections, plan: "_Plan", norms: Tensor | None
) -> None:
    """One batch under the strongest addition of the grid (the largest ``|alpha|`` times
    the longest candidate direction), before the store is made: an ``alpha`` that
    overflows the residual stream is refused as a setting (:func:`check_scores`), not found
    in the middle of a sweep whose folder then keeps it."""
    cfg = plan.cfg
    if not cfg.alphas:
        return
    alpha = max(cfg.alphas, key=abs)
    best: tuple[float, str, PositionLabel, int] | None = None
    for layer in cfg.layers:
        rows = directions.layer_vectors(list(cfg.roles), layer, list(cfg.positions))
        norm = rows.norm(dim=-1)
        flat = int(norm.argmax())
        if best is None or float(norm.flatten()[flat]) > best[0]:
            r, p = divmod(flat, len(cfg.positions))
            best = (float(norm.flatten()[flat]), cfg.roles[r], cfg.positions[p], layer)
    if best is None or best[0] == 0:
        return
    _, role, pos, layer = best
    group = sorted(plan.groups)[0]
    batch = _batch(model, plan, group, 0)
    spec = _addition(directions.vector(role, layer, pos), layer, alpha, norms)
    with torch.inference_mode(), steer(model, spec, attention_mask=batch.attention_mask):
        scores = letter_logits(model, batch.input_ids, batch.attention_mask, plan.letters)
    check_scores(
        scores.double().cpu(),
        f"alphas {list(cfg.alphas)}: alpha={alpha:g} on {role!r} at layer {layer}, position "
        f"{pos} (the grid's strongest addition, tried on one batch before the sweep)",
    )


def _addition(
    direction: Float[Tensor, " d_model"], layer: int, alpha: float, norms: Tensor | None
) -> Intervention:
    reference = None if norms is None else float(norms[layer])
    return Addition(direction, layer, alpha, reference_norm=reference)


def _ablation(direction: Float[Tensor, " d_model"], layer: int, at: str) -> Intervention:
    return Ablation(direction, at=at)


def _conditions(
    cfg: SweepConfig, extra: Mapping[str, MakeIntervention], norms: Tensor | None
) -> list[_Condition]:
    """The sweep's conditions in table order: additions by α, the ablation, the extras."""
    out = [
        _Condition("addition", alpha, partial(_addition, alpha=alpha, norms=norms))
        for alpha in cfg.alphas
    ]
    if cfg.ablation:
        out.append(_Condition("ablation", math.nan, partial(_ablation, at=cfg.ablation_at)))
    out += [_Condition(name, math.nan, extra[name]) for name in cfg.conditions]
    return out


def _check_conditions(
    model: Model, rd: RoleDirections, cfg: SweepConfig, extra: Mapping[str, MakeIntervention]
) -> None:
    """Build each extra condition once, on the first candidate, and check it fits the model."""
    if not extra:
        return
    layer, position = cfg.layers[-1], cfg.positions[0]
    direction = rd.vector(cfg.roles[0], layer, position)
    for name, make in extra.items():
        if not callable(make):
            raise TypeError(
                f"sweep condition {name!r} must be a callable make(direction, layer) -> "
                f"Intervention, got {type(make).__name__}"
            )
        spec = check_intervention(make(direction, layer), f"sweep condition {name!r}'s make()")
        spec.hooks(model, SteerState())  # a spec that does not fit the model fails here


@dataclass
class _Job:
    variant: _Variant
    condition: _Condition
    spec: Intervention
    hooks: list[tuple[str, HookFn]]


def _at_prefix(model: Model, resid: Tensor, hooks: Sequence[tuple[str, HookFn]]) -> Tensor:
    """``resid`` after the hook functions of an intervention acting at the layer's input."""
    x = resid.clone()  # a hook may edit in place; the residual serves every variant
    for name, fn in hooks:
        out = fn(x, hook=model.hook_dict[name])
        x = x if out is None else out
    return x


def _plain_addition(spec: Intervention, point: str) -> bool:
    """An :class:`Addition` at ``point`` on every position: applied to a stack of residuals
    at once (the same arithmetic as its hook)."""
    return (
        type(spec) is Addition
        and f"blocks.{spec.layer}.{spec.hook}" == point
        and spec.positions == "all"
    )


def _stackable_ablation(spec: Intervention) -> bool:
    """A sweep :class:`Ablation` (every position): several run in one pass, one per block
    of rows."""
    return type(spec) is Ablation and spec.positions == "all"


def _add_stacked(resid: Tensor, vectors: Tensor, mask: Tensor, padded: bool) -> Tensor:
    """``k`` additions at once: ``[k * batch, pos, d_model]``, block ``j`` = ``resid + v_j``
    on real tokens (padding untouched), computed as :func:`~roleprobe.steering.operators.shift`
    computes one."""
    work = vectors.to(device=resid.device, dtype=work_dtype(resid.dtype))
    new = (resid[None].to(work.dtype) + work[:, None, None, :]).to(resid.dtype)
    if padded:
        real = mask.to(device=resid.device, dtype=torch.bool)[None, :, :, None]
        new = torch.where(real, new, resid[None])
    return new.flatten(0, 1)


def _on_device(job: _Job, direction: Tensor) -> Tensor:
    """``direction`` of a job's spec on the model's device: the variant's device row when
    the spec holds the variant's own vector (nothing copied), else a copy."""
    row = job.variant.on_device
    return row if direction is job.variant.vector else direction.to(row.device)


def _ablation_hooks(
    model: Model, chunk: Sequence[_Job], state: SteerState
) -> list[tuple[str, HookFn]]:
    """One set of hooks ablating job ``j``'s direction from the ``j``-th block of rows of a
    batch repeated ``len(chunk)`` times (their specs differ only in their direction). The
    unit vectors are made on the device, from directions already validated non-zero."""
    specs = [cast(Ablation, job.spec) for job in chunk]
    names = specs[0].hook_names(model)
    d = torch.stack(
        [_on_device(job, spec.direction) for job, spec in zip(chunk, specs, strict=True)]
    )
    d = d.to(torch.float64)
    d_hats = OnDevice(d / d.norm(dim=-1, keepdim=True))
    fn = position_hook(lambda x: project_out_stacked(x, d_hats.like(x)), specs[0].positions, state)
    return [(name, fn) for name in names]


def _run_item(
    model: Model,
    rd: RoleDirections,
    plan: _Plan,
    item: WorkItem,
    donors: dict[str, str],
    batch: ChatBatch,
    resid: Tensor | None,
    conditions: Sequence[_Condition],
    specific: RoleDirections | None = None,
) -> pd.DataFrame:
    """Every (variant, condition) of one layer on one batch.

    Interventions whose hooks all sit at this layer's ``hook_resid_pre`` are applied to the
    saved residual and run through the upper blocks only, ``stack`` variants per forward
    pass; the sweep's ablations run ``stack`` directions per full pass (one block of rows
    each); any other intervention runs a full pass of its own under :func:`steer`.
    """
    cfg = plan.cfg
    items = _rows(plan, item)
    ids, mask = batch.input_ids, batch.attention_mask
    assert item.layer is not None
    layer = item.layer
    point = f"blocks.{layer}.hook_resid_pre"
    state = SteerState(attention_mask=mask)
    device = cast(str, model.cfg.device)
    variants = _variants(
        rd, plan.groups[item.group], layer, cfg, donors, specific, plan.null, device
    )
    prefix_jobs: list[_Job] = []
    ablation_jobs: list[_Job] = []
    full_jobs: list[_Job] = []
    for v in variants:
        for condition in conditions:
            spec = condition.make(v.vector, layer)
            if resid is not None and _plain_addition(spec, point):
                prefix_jobs.append(_Job(v, condition, spec, []))
                continue
            if _stackable_ablation(spec):
                ablation_jobs.append(_Job(v, condition, spec, []))
                continue
            hooks = spec.hooks(model, state)
            job = _Job(v, condition, spec, hooks)
            at_input = resid is not None and all(name == point for name, _ in hooks)
            (prefix_jobs if at_input else full_jobs).append(job)
    tables = []
    with torch.inference_mode():
        for start in range(0, len(prefix_jobs), cfg.stack):
            assert resid is not None
            chunk = prefix_jobs[start : start + cfg.stack]
            stacked = _prefix_inputs(model, resid, chunk, mask, state.padded)
            k, b = len(chunk), resid.shape[0]
            logits = letters_from(model, stacked, layer, mask.repeat(k, 1), plan.letters)
            scores = logits.reshape(k, b, -1).double().cpu()
            tables += [
                _cell(items, s, job, layer, item.group, cfg.tie_rule)
                for job, s in zip(chunk, scores, strict=True)
            ]
        for chunk in _ablation_chunks(ablation_jobs, plan.ablation_stack):
            k = len(chunk)
            rows_mask = mask.repeat(k, 1)
            hooks = _ablation_hooks(model, chunk, SteerState(attention_mask=rows_mask))
            with model.hooks(fwd_hooks=hooks):
                logits = letter_logits(model, ids.repeat(k, 1), rows_mask, plan.letters)
            scores = logits.reshape(k, ids.shape[0], -1).double().cpu()
            tables += [
                _cell(items, s, job, layer, item.group, cfg.tie_rule)
                for job, s in zip(chunk, scores, strict=True)
            ]
        for job in full_jobs:
            with steer(model, job.spec, attention_mask=mask):
                scores = letter_logits(model, ids, mask, plan.letters).double().cpu()
            tables.append(_cell(items, scores, job, layer, item.group, cfg.tie_rule))
    return pd.concat(tables, ignore_index=True)


def _ablation_chunks(jobs: Sequence[_Job], stack: int) -> list[list[_Job]]:
    """Ablation jobs in chunks of at most ``stack`` that share everything but the
    direction (layers, hook points, placement, positions), in the jobs' order."""
    groups: dict[tuple[Any, ...], list[_Job]] = {}
    for job in jobs:
        spec = cast(Ablation, job.spec)
        layers = None if spec.layers is None else tuple(spec.layers)
        groups.setdefault((layers, tuple(spec.hooks_at), spec.at, spec.positions), []).append(job)
    return [group[i : i + stack] for group in groups.values() for i in range(0, len(group), stack)]


def _prefix_inputs(
    model: Model, resid: Tensor, chunk: Sequence[_Job], mask: Tensor, padded: bool
) -> Tensor:
    """The stacked inputs of a chunk of prefix jobs: plain additions in one tensor
    operation, any other job through its own hook functions."""
    if all(not job.hooks for job in chunk):
        vectors = torch.stack([_added(job) for job in chunk])
        return _add_stacked(resid, vectors, mask, padded)
    parts = []
    for job in chunk:
        if job.hooks:
            parts.append(_at_prefix(model, resid, job.hooks))
        else:
            parts.append(_add_stacked(resid, _added(job)[None], mask, padded))
    return torch.cat(parts)


def _added(job: _Job) -> Tensor:
    """What a plain addition adds, on the device: ``alpha * d`` from the variant's device
    row (the same float32 product as :attr:`Addition.vector`), or that vector copied over
    for a norm-scaled one."""
    spec = cast(Addition, job.spec)
    if spec.reference_norm is None and spec.direction is job.variant.vector:
        return spec.alpha * job.variant.on_device
    return spec.vector.to(job.variant.on_device.device)


def _cell(
    items: pd.DataFrame, scores: Tensor, job: _Job, layer: int, group: str, tie_rule: str
) -> pd.DataFrame:
    v, condition, alpha = job.variant, job.condition.name, job.condition.alpha
    labels = {
        "role": v.role,
        "source": v.source,
        "donor": v.donor,
        "position": v.position,
        "layer": layer,
        "condition": condition,
        "alpha": alpha,
        "group": group,
    }
    where = "" if condition == "ablation" else f" alpha={alpha:g}"
    check_scores(
        scores, f"sweep: {v.source} direction of {v.role!r} at layer {layer}, {condition}{where}"
    )
    return score_table(items, scores, labels, tie_rule)
