"""What a sweep runs: its configuration, its shards, its work items and its question groups.

Kept apart from :mod:`roleprobe.experiments.sweeps` (which runs the model) so that reading
a store (:mod:`roleprobe.experiments.merging`) needs no model code.
"""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from roleprobe.data.roles import get_role
from roleprobe.experiments.evaluation import FORMATS, check_tie_rule
from roleprobe.model.system_turn import normalize_system
from roleprobe.steering.interventions import ABLATION_PLACEMENTS
from roleprobe.vectors.activations import PositionLabel

SCOPES = ("domain", "all")
ALPHA_UNITS = ("raw", "norm")
"""``"raw"``: ``alpha * d`` (the paper); ``"norm"``: ``alpha * |resid_pre[l]| * d_hat``."""
BUILTIN_CONDITIONS = ("addition", "ablation")
SOURCES = ("role", "random", "shuffled")
"""Sources of a sweep's candidates: the role direction and its two controls."""
SPECIFIC_SOURCES = ("specific", "specific-random", "specific-shuffled")
"""With ``specific=True``: the role-specific part ``d_r - mean_r d_r`` and its controls (a
random direction of its norm, another role's specific part)."""
CANDIDATE = ["role", "source", "donor", "position", "layer", "condition", "alpha"]


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
    specific: bool = False

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
        if not isinstance(self.specific, bool):
            raise ValueError(f"specific must be True or False, got {self.specific!r}")
        if self.batch_size < 1 or self.stack < 1:
            raise ValueError(f"batch_size and stack must be >= 1 ({self.batch_size}, {self.stack})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``alpha_unit``, ``conditions`` and ``specific`` only when not
        their defaults, so that stores written before they existed still resume)."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key, default in (("alpha_unit", "raw"), ("conditions", []), ("specific", False)):
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


def role_group(role: str, scope: str) -> str:
    """The question group a role is swept on: its domain, or ``"all"``."""
    if scope == "all":
        return "all"
    try:
        return get_role(role).domain
    except ValueError as err:
        raise ValueError(f"{err}; roles outside the catalogue need scope='all'") from err
