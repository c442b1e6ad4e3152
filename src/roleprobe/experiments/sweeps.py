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
  with the same store skips finished items. ``shard=(i, n)`` (or ``"i/n"``) takes items
  ``i, i+n, i+2n, …`` of the deterministic plan, so the jobs of an array write disjoint parts
  into one store; :func:`merge` checks that nothing is missing and builds the tables.

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
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.hooks import check_layers
from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.data.roles import get_role
from roleprobe.experiments.evaluation import (
    FORMATS,
    check_tie_rule,
    encode_questions,
    length_batches,
    letter_logits,
    score_table,
    subject_domain,
)
from roleprobe.experiments.store import MANIFEST, ResultStore, code_versions, read_manifest
from roleprobe.model.chat import ChatBatch, ChatTemplate, answer_letter_ids, collate, pad_token_id
from roleprobe.model.models import model_fingerprint, model_name
from roleprobe.model.system_turn import normalize_system
from roleprobe.steering.interventions import (
    ABLATION_PLACEMENTS,
    Ablation,
    Addition,
    HookFn,
    Intervention,
    SteerState,
    check_intervention,
    steer,
)
from roleprobe.steering.prefix import letter_only_supported, letters_from
from roleprobe.vectors.activations import PositionLabel, residual_norms
from roleprobe.vectors.directions import RoleDirections

logger = logging.getLogger(__name__)

SCOPES = ("domain", "all")
ALPHA_UNITS = ("raw", "norm")
"""``"raw"``: ``alpha * d`` (the paper); ``"norm"``: ``alpha * |resid_pre[l]| * d_hat``."""
BUILTIN_CONDITIONS = ("addition", "ablation")
CANDIDATE = ["role", "source", "donor", "position", "layer", "condition", "alpha"]

MakeIntervention = Callable[[Float[Tensor, " d_model"], int], Intervention]
"""``make(direction, layer)``: the intervention a sweep condition applies for a candidate."""


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep runs (validated; round-trips through :meth:`to_dict`).

    Attributes:
        roles: the roles swept.
        layers: candidate layers (the direction's layer = the addition's layer).
        positions: candidate positions (labels of the directions).
        alphas: addition strengths (raw direction, as in the paper).
        ablation: also ablate each candidate direction at every layer.
        controls: add the random and shuffled-role control directions.
        scope: ``"domain"`` (each role on its own domain) or ``"all"``.
        batch_size: questions per batch (and per work item).
        stack: variants stacked into one upper-layer forward pass.
        prompt_format: question format (see :func:`roleprobe.format_question`).
        seed: seed of the control directions.
        tie_rule: how a tie at the top of the letter logits is scored (see
            :func:`roleprobe.score_table`); a manifest written before the field existed
            reads as ``"first"``, the rule such sweeps used.
        ablation_at: where the ablation projects the direction out of the sub-layer outputs
            (``"stream"`` or ``"paper"``; see :class:`roleprobe.Ablation`; they differ only on
            models with post-norms, e.g. Gemma-2).
        system: the system-turn policy the questions are formatted with (``"default"``,
            ``"none"`` or a text; see :mod:`roleprobe.model.system_turn`).
        alpha_unit: ``"raw"`` (``alpha * d``, the paper) or ``"norm"`` (``alpha`` in units
            of the layer's mean residual norm: ``Addition(..., reference_norm=...)``).
        conditions: names of the user-defined conditions swept besides the additions and
            the ablation (their interventions are built by the callables passed to
            :func:`sweep`; the name identifies them in the table and the store).
    """

    roles: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[PositionLabel, ...]
    alphas: tuple[float, ...] = (1.0, 3.0)
    ablation: bool = True
    controls: bool = True
    scope: str = "domain"
    batch_size: int = 16
    stack: int = 4
    prompt_format: str = "paper"
    seed: int = 0
    tie_rule: str = "fractional"
    ablation_at: str = "stream"
    system: str = "default"
    alpha_unit: str = "raw"
    conditions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("roles", "layers", "positions"):
            if not getattr(self, name):
                raise ValueError(f"the sweep has no {name} (the list is empty)")
        if len(set(self.roles)) != len(self.roles):
            raise ValueError(f"roles are repeated: {list(self.roles)}")
        if not self.alphas and not self.ablation and not self.conditions:
            raise ValueError("nothing to sweep: no alphas, ablation=False and no conditions")
        if any(not np.isfinite(a) for a in self.alphas):
            raise ValueError(f"alphas must be finite, got {list(self.alphas)}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}; use one of {SCOPES}")
        if self.prompt_format not in FORMATS:
            raise ValueError(f"unknown prompt format {self.prompt_format!r}; use one of {FORMATS}")
        check_tie_rule(self.tie_rule)
        if self.ablation_at not in ABLATION_PLACEMENTS:
            raise ValueError(
                f"unknown ablation_at {self.ablation_at!r}; use one of {ABLATION_PLACEMENTS}"
            )
        object.__setattr__(self, "system", normalize_system(self.system))
        if self.alpha_unit not in ALPHA_UNITS:
            raise ValueError(f"unknown alpha_unit {self.alpha_unit!r}; use one of {ALPHA_UNITS}")
        bad = [c for c in self.conditions if not c.strip() or c in BUILTIN_CONDITIONS]
        if bad or len(set(self.conditions)) != len(self.conditions):
            raise ValueError(
                f"condition names must be unique, non-empty and not {BUILTIN_CONDITIONS}, "
                f"got {list(self.conditions)}"
            )
        if self.batch_size < 1 or self.stack < 1:
            raise ValueError(f"batch_size and stack must be >= 1 ({self.batch_size}, {self.stack})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``alpha_unit`` and ``conditions`` only when not their
        defaults, so that stores written before they existed still resume)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key, default in (("alpha_unit", "raw"), ("conditions", [])):
            if out[key] == default:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SweepConfig":
        """Inverse of :meth:`to_dict`."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        fields.setdefault("tie_rule", "first")  # stores written before ties were counted
        fields.setdefault("ablation_at", "stream")  # ... and before the placement was a choice
        fields.setdefault("system", "default")
        return cls(**fields)


def parse_shard(shard: "str | tuple[int, int] | None") -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` with ``0 <= i < n`` (``None``: the whole plan, ``(0, 1)``)."""
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        parts = shard.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"bad shard {shard!r}: write it as i/n, e.g. 0/4 (0-based)")
        index, count = int(parts[0]), int(parts[1])
    else:
        index, count = (int(x) for x in shard)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {shard!r}: need 0 <= i < n (0-based, e.g. 0/4 .. 3/4)")
    return index, count


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: a baseline batch, or all cells of one layer for one batch."""

    group: str
    batch: int
    layer: int | None = None

    @property
    def key(self) -> str:
        """The store part name."""
        if self.layer is None:
            return f"baseline-{self.group}-b{self.batch:04d}"
        return f"layer{self.layer:03d}-{self.group}-b{self.batch:04d}"


@dataclass
class SweepResult:
    """What a sweep produced (possibly partial: see ``missing``).

    Attributes:
        table: one row per (candidate, question): ``role, source, donor, position, layer,
            condition, alpha, group`` and the per-item scores of :func:`roleprobe.evaluate`.
        baseline: one row per (group, question), unsteered.
        config: the sweep's configuration.
        n_layers: the model's depth (the paper's rule drops layers >= 0.8 of it).
        missing: store parts of the plan not finished yet.
        store: the store folder (``None`` for an in-memory sweep).
    """

    table: pd.DataFrame
    baseline: pd.DataFrame
    config: SweepConfig
    n_layers: int
    missing: list[str] = field(default_factory=list)
    store: Path | None = None

    @property
    def complete(self) -> bool:
        """Whether every work item of the plan is done."""
        return not self.missing

    def role_group(self, role: str) -> str:
        """The question group the role was swept on."""
        return role_group(role, self.config.scope)

    def role_items(self, role: str) -> list[Any]:
        """Ids of the questions the role was swept on."""
        group = self.role_group(role)
        return self.baseline.loc[self.baseline["group"] == group, "id"].tolist()

    def scores(self, ids: Sequence[Any] | None = None) -> pd.DataFrame:
        """Per candidate: ``n``, ``accuracy``, ``base_accuracy``, ``delta_accuracy``,
        ``logprob_correct``, ``delta_logprob``, ``margin``, the predicted-letter shares
        ``pred_A..pred_D``, ``n_tied`` (items with a tie at the top) and ``tie_rule`` (how
        ties were scored) (optionally on a subset of question ids only)."""
        return candidate_scores(self.table, self.baseline, self.config.scope, ids)


def role_group(role: str, scope: str) -> str:
    """The question group a role is swept on: its domain, or ``"all"``."""
    if scope == "all":
        return "all"
    try:
        return get_role(role).domain
    except ValueError as err:
        raise ValueError(f"{err}; roles outside the catalogue need scope='all'") from err


def candidate_scores(
    table: pd.DataFrame, baseline: pd.DataFrame, scope: str, ids: Sequence[Any] | None = None
) -> pd.DataFrame:
    """Aggregate a sweep table per candidate, beside the baseline on the same questions.

    ``accuracy`` is the mean credit under the table's tie rule (``tie_rule`` column; tables
    without one, written before ties were counted, read as ``"first"``).
    """
    counted = "tied" in table.columns
    table = _with_tie_columns(table)
    baseline = _with_tie_columns(baseline)
    rules = set(table["tie_rule"].unique()) | set(baseline["tie_rule"].unique())
    if len(rules) > 1:
        raise ValueError(f"the sweep mixes tie rules {sorted(rules)}: rescore with one rule")
    if ids is not None:
        wanted = set(ids)
        table = table[table["id"].isin(wanted)]
        baseline = baseline[baseline["id"].isin(wanted)]
    if table.empty:
        return pd.DataFrame(columns=[*CANDIDATE, "n", "accuracy", "base_accuracy", "tie_rule"])
    table = table.assign(_tie=table["tied"] > 1)
    grouped = table.groupby(CANDIDATE, dropna=False, sort=False)
    out = grouped.agg(
        n=("correct", "size"),
        accuracy=("correct", "mean"),
        logprob_correct=("logprob_correct", "mean"),
        margin=("margin", "mean"),
        n_tied=("_tie", "sum"),
    )
    shares = table.assign(**{f"pred_{x}": table["pred"] == x for x in LETTERS})
    out = out.join(
        shares.groupby(CANDIDATE, dropna=False, sort=False)[[f"pred_{x}" for x in LETTERS]].mean()
    ).reset_index()
    base = baseline.groupby("group").agg(
        base_n=("correct", "size"),
        base_accuracy=("correct", "mean"),
        base_logprob=("logprob_correct", "mean"),
    )
    out["group"] = [role_group(r, scope) for r in out["role"]]
    out = out.join(base, on="group")
    if (out["n"] != out["base_n"]).any():
        raise ValueError("candidates and baseline cover different questions (incomplete sweep?)")
    out["delta_accuracy"] = out["accuracy"] - out["base_accuracy"]
    out["delta_logprob"] = out["logprob_correct"] - out["base_logprob"]
    out["tie_rule"] = rules.pop() if rules else "first"
    if not counted:
        out["n_tied"] = np.nan
    return out.drop(columns=["base_n"])


def _with_tie_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``tied`` and ``tie_rule``; tables from before they existed scored a
    tie as the earliest letter and did not count ties (``n_tied`` reads NaN for them)."""
    missing = {"tied": 1, "tie_rule": "first"}
    extra = {k: v for k, v in missing.items() if k not in table.columns}
    return table.assign(**extra) if extra else table


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


@dataclass(frozen=True)
class _Variant:
    role: str
    source: str
    donor: str
    position: PositionLabel
    vector: Tensor


def _variants(
    rd: RoleDirections, roles: Sequence[str], layer: int, cfg: SweepConfig, donors: dict[str, str]
) -> list[_Variant]:
    out = []
    for role in roles:
        for pos in cfg.positions:
            d = rd.vector(role, layer, pos)
            if is_null_direction(rd, role, layer, pos):
                continue
            out.append(_Variant(role, "role", role, pos, d))
            if cfg.controls:
                out.append(
                    _Variant(role, "random", "", pos, random_control(d, role, pos, layer, cfg.seed))
                )
                if role in donors:
                    donor = donors[role]
                    out.append(_Variant(role, "shuffled", donor, pos, rd.vector(donor, layer, pos)))
    return out


def is_null_direction(rd: RoleDirections, role: str, layer: int, pos: PositionLabel) -> bool:
    """Whether the direction is zero up to rounding (e.g. at layer 0, where the template
    tokens' embeddings are the same for every prompt); such candidates are skipped."""
    r, p, li = rd.role_index(role), rd.position_index(pos), rd.layer_index(layer)
    base = float(rd.base_mean[p, li].norm())
    return float(rd.vectors[r, p, li].double().norm()) <= 1e-6 * (1.0 + base)


def _directions_hash(rd: RoleDirections) -> str:
    digest = hashlib.sha256()
    for role in sorted(set(rd.roles)):
        digest.update(role.encode())
        digest.update(rd.vectors[rd.role_index(role)].numpy().tobytes())
    return digest.hexdigest()[:16]


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
        null = set(self.skipped)
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
        shard: ``"i/n"`` — do only every n-th work item starting at i.
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

    Returns:
        A :class:`SweepResult` over everything in the store (``missing`` lists unfinished
        parts, e.g. those of other shards).

    Raises:
        TypeError: a condition's ``make`` is not callable or does not return an
            :class:`~roleprobe.Intervention` (before any forward pass).
        ValueError: a bad argument (named).
    """
    extra = dict(conditions or {})
    directions.check_model(model, strict=False)
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
    )
    for role in cfg.roles:
        directions.role_index(role)
    for layer in cfg.layers:
        directions.layer_index(layer)
    for pos in cfg.positions:
        directions.position_index(pos)
    index, count = parse_shard(shard)
    _check_conditions(model, directions, cfg, extra)
    plan = _Plan(model, directions, benchmark, cfg)
    letter_only_supported(model)  # probe the output head once, before any hooks are on
    norms = residual_norms(model) if cfg.alpha_unit == "norm" else None
    swept = _conditions(cfg, extra, norms)
    donors = _derangement(directions.roles, cfg.seed) if cfg.controls else {}
    if cfg.controls and not donors:
        logger.warning("one role in the directions: no shuffled-role control")
    manifest = {
        "config": {
            "sweep": cfg.to_dict(),
            "model": model_name(model),
            "fingerprint": model_fingerprint(model),
            "n_layers": int(model.cfg.n_layers),
            "benchmark": benchmark.hash,
            "directions": _directions_hash(directions),
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
    with tempfile.TemporaryDirectory(prefix="roleprobe-sweep-") as scratch:
        root = Path(store) if store is not None else Path(scratch)
        results = ResultStore(root, manifest, resume=resume)
        done = results.done()
        todo = [w for i, w in enumerate(plan.work) if i % count == index and w.key not in done]
        logger.info(
            "sweep: %d work items in the plan, shard %d/%d, %d to do",
            len(plan.work),
            index,
            count,
            len(todo),
        )
        # batch-major: each batch's residuals at every layer it needs come from one pass
        by_batch: dict[tuple[str, int], list[WorkItem]] = {}
        for item in todo:
            by_batch.setdefault((item.group, item.batch), []).append(item)
        bars = bar(total=len(todo), enabled=progress, desc="sweep", unit="item")
        for (group, b), items in by_batch.items():
            batch = _batch(model, plan, group, b)
            prefix = bool(cfg.alphas or cfg.conditions)  # conditions that may reuse it
            layers = [w.layer for w in items if w.layer is not None] if prefix else []
            resids, base = _prefix_pass(
                model, batch, layers, plan.letters, any(w.layer is None for w in items)
            )
            for item in items:
                if item.layer is None:
                    assert base is not None
                    table = score_table(
                        _rows(plan, item), base, {"group": item.group}, cfg.tie_rule
                    )
                else:
                    resid = resids.pop(item.layer, None)
                    table = _run_item(model, directions, plan, item, donors, batch, resid, swept)
                results.write(item.key, table)
                bars.update(1)
        bars.close()
        result = merge(root, allow_partial=count > 1)
        if store is None:
            result.store = None
        return result


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
    model: Model, batch: ChatBatch, layers: Sequence[int], letters: Sequence[int], baseline: bool
) -> tuple[dict[int, Tensor], Tensor | None]:
    """One forward pass: ``resid_pre`` at each of ``layers`` and, if asked, the baseline
    letter logits (otherwise the pass stops at the last layer needed)."""
    captured: dict[int, Tensor] = {}
    wanted = sorted(set(layers))

    def grab(act: Tensor, hook: Any, layer: int) -> Tensor:
        captured[layer] = act.clone()
        if not baseline and layer == wanted[-1]:
            raise _Enough
        return act

    hooks = [(f"blocks.{layer}.hook_resid_pre", partial(grab, layer=layer)) for layer in wanted]
    base = None
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        if baseline:
            base = letter_logits(model, batch.input_ids, batch.attention_mask, letters)
            base = base.double().cpu()
        elif wanted:
            with contextlib.suppress(_Enough):
                model(batch.input_ids, attention_mask=batch.attention_mask)
    return captured, base


@dataclass(frozen=True)
class _Condition:
    """One swept condition: a name, the alpha column, and how to build its intervention."""

    name: str
    alpha: float
    make: MakeIntervention


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


def _run_item(
    model: Model,
    rd: RoleDirections,
    plan: _Plan,
    item: WorkItem,
    donors: dict[str, str],
    batch: ChatBatch,
    resid: Tensor | None,
    conditions: Sequence[_Condition],
) -> pd.DataFrame:
    """Every (variant, condition) of one layer on one batch.

    Interventions whose hooks all sit at this layer's ``hook_resid_pre`` are applied to the
    saved residual and run through the upper blocks only, ``stack`` variants per forward
    pass; the others run a full pass under :func:`steer`.
    """
    cfg = plan.cfg
    items = _rows(plan, item)
    ids, mask = batch.input_ids, batch.attention_mask
    assert item.layer is not None
    layer = item.layer
    point = f"blocks.{layer}.hook_resid_pre"
    stacked_jobs: list[_Job] = []
    full_jobs: list[_Job] = []
    for v in _variants(rd, plan.groups[item.group], layer, cfg, donors):
        for condition in conditions:
            spec = condition.make(v.vector, layer)
            hooks = spec.hooks(model, SteerState(attention_mask=mask))
            job = _Job(v, condition, spec, hooks)
            at_input = resid is not None and all(name == point for name, _ in hooks)
            (stacked_jobs if at_input else full_jobs).append(job)
    tables = []
    with torch.inference_mode():
        for start in range(0, len(stacked_jobs), cfg.stack):
            assert resid is not None
            chunk = stacked_jobs[start : start + cfg.stack]
            stacked = torch.stack([_at_prefix(model, resid, job.hooks) for job in chunk])
            k, b = len(chunk), resid.shape[0]
            logits = letters_from(
                model, stacked.flatten(0, 1), layer, mask.repeat(k, 1), plan.letters
            ).reshape(k, b, -1)
            for job, scores in zip(chunk, logits, strict=True):
                tables.append(_cell(items, scores, job, layer, item.group, cfg.tie_rule))
        for job in full_jobs:
            with steer(model, job.spec, attention_mask=mask):
                scores = letter_logits(model, ids, mask, plan.letters)
            tables.append(_cell(items, scores, job, layer, item.group, cfg.tie_rule))
    return pd.concat(tables, ignore_index=True)


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
    return score_table(items, scores.double().cpu(), labels, tie_rule)


def merge(store: str | os.PathLike[str], allow_partial: bool = False) -> SweepResult:
    """The tables of a sweep store (e.g. after all shards finished).

    Raises:
        ValueError: parts of the plan are missing (listed) and ``allow_partial`` is False,
            or the folder holds no sweep manifest.
    """
    root = Path(store)
    try:
        manifest = read_manifest(root)
    except FileNotFoundError as err:
        raise ValueError(f"{root} is not a sweep store (no {MANIFEST})") from err
    try:
        config = manifest["config"]
        cfg = SweepConfig.from_dict(config["sweep"])
        plan = list(config["plan"])
        n_layers = int(config["n_layers"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{root / MANIFEST} is not a sweep manifest: {err}") from err
    results = ResultStore(root, manifest)
    done = results.done()
    missing = [key for key in plan if key not in done]
    if missing and not allow_partial:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        raise ValueError(
            f"the sweep in {root} is incomplete: {len(missing)} of {len(plan)} parts "
            f"missing ({shown})"
        )
    finished = [key for key in plan if key in done]
    baseline = results.read([k for k in finished if k.startswith("baseline-")])
    table = results.read([k for k in finished if k.startswith("layer")])
    return SweepResult(table, baseline, cfg, n_layers, missing, root)
