"""A run's cost as counted by :func:`~roleprobe.experiments.cost.plan_run`: the result data.

A :class:`RunPlan` holds counts and shapes only (no model data): every (stage, part, role)
:class:`~roleprobe.experiments.sweep_cost.CostRow`, the sweep's
:class:`~roleprobe.experiments.sweep_cost.SweepCount`, the GPU it is priced on and the
assumptions the counts rest on. Its tables (:meth:`RunPlan.stages`, :meth:`RunPlan.by_role`,
:meth:`RunPlan.to_frame`) add GPU-hours at each utilisation shown; :meth:`RunPlan.to_dict`
is what ``roleprobe plan --json`` writes.

Example:
    >>> plan.stages()[["stage", "passes", "gpu_hours_50"]]
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from roleprobe.experiments.gpus import UTILISATIONS, Gpu, check_utilisation
from roleprobe.experiments.sweep_cost import CostRow, SweepCount
from roleprobe.model.plan_model import Architecture

__all__ = ["RunPlan"]


@dataclass(frozen=True)
class RunPlan:
    """A run's cost, stage by stage and role by role (no model data: counts and shapes).

    Attributes:
        model: the model's name; arch: its shapes; dtype: the run's dtype.
        tokenizer: what counted the tokens; proxy: whether it stands in for the model's own.
        n_post, n_post_source: the candidate positions and where their number comes from.
        gpu, utilisation: what GPU-hours are priced at.
        sweep: the sweep's :class:`SweepCount` (stacked as asked).
        rows: every (stage, part, role) :class:`CostRow`.
        roles: the run's roles; groups: each role's question group.
        notes: the assumptions the counts rest on.
    """

    model: str
    arch: Architecture
    dtype: str
    tokenizer: str
    proxy: bool
    n_post: int
    n_post_source: str
    gpu: Gpu
    utilisation: float
    sweep: SweepCount
    rows: tuple[CostRow, ...]
    roles: tuple[str, ...]
    groups: dict[str, str]
    notes: tuple[str, ...]

    @property
    def utilisations(self) -> tuple[float, ...]:
        """The utilisations shown: 40, 50 and 60 % and the one asked for."""
        return tuple(sorted({*UTILISATIONS, self.utilisation}))

    def gpu_hours(self, flops: float, utilisation: float | None = None) -> float:
        """GPU-hours of ``flops`` at ``utilisation`` (default: the plan's) of the GPU's peak."""
        u = check_utilisation(self.utilisation if utilisation is None else utilisation)
        return flops / (self.gpu.peak_flops * u) / 3600.0

    @property
    def total_flops(self) -> float:
        """FLOPs of every stage."""
        return sum(r.flops for r in self.rows)

    def _hours(self, frame: pd.DataFrame) -> pd.DataFrame:
        for u in self.utilisations:
            frame[f"gpu_hours_{round(u * 100)}"] = [self.gpu_hours(f, u) for f in frame["flops"]]
        return frame

    def to_frame(self) -> pd.DataFrame:
        """One row per (stage, part, role): passes, tokens, FLOPs, estimate, GPU-hours at each
        of :attr:`utilisations` (``gpu_hours_50``, ...)."""
        frame = pd.DataFrame([dataclasses.asdict(r) for r in self.rows])
        return self._hours(frame)

    def stages(self) -> pd.DataFrame:
        """Per stage (in run order) and a ``total`` row: passes, tokens, FLOPs, GPU-hours;
        ``work_items`` for the sweep; ``estimate`` where any part is one."""
        frame = pd.DataFrame([dataclasses.asdict(r) for r in self.rows])
        order = list(dict.fromkeys(frame["stage"]))
        table = frame.groupby("stage", sort=False)[["passes", "tokens", "flops"]].sum()
        table["estimate"] = frame.groupby("stage", sort=False)["estimate"].any()
        table = table.loc[order].reset_index()
        total = {"stage": "total", **table[["passes", "tokens", "flops"]].sum().to_dict()}
        table = pd.concat([table, pd.DataFrame([{**total, "estimate": table["estimate"].any()}])])
        table["passes"] = table["passes"].round().astype(int)
        table["work_items"] = [self.sweep.work_items if s == "sweep" else 0 for s in table["stage"]]
        return self._hours(table.reset_index(drop=True))

    def by_role(self) -> pd.DataFrame:
        """Per role: its group, its passes in each stage (shares of shared passes), its
        FLOPs and GPU-hours (the shared parts, e.g. the sweep's prefix passes, excluded)."""
        frame = pd.DataFrame([dataclasses.asdict(r) for r in self.rows])
        frame = frame[frame["role"] != ""]
        passes = frame.pivot_table(
            index="role", columns="stage", values="passes", aggfunc="sum", fill_value=0.0
        )
        passes = passes[[s for s in dict.fromkeys(frame["stage"]) if s in passes.columns]]
        passes.columns = [f"{c}_passes" for c in passes.columns]
        table = passes.join(frame.groupby("role")[["tokens", "flops"]].sum())
        table = table.reindex(list(self.roles)).fillna(0.0)
        table.insert(0, "group", [self.groups.get(r, "") for r in table.index])
        return self._hours(table.reset_index())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the model, the counts, the tables and the assumptions."""
        sweep = dataclasses.asdict(self.sweep)
        sweep.pop("rows")
        sweep["total_passes"] = self.sweep.total_passes
        sweep["prefix_bytes_all_layers"] = self.prefix_bytes()[0]
        sweep["prefix_bytes_chunked"] = self.prefix_bytes()[1]
        return {
            "model": self.model,
            "architecture": dataclasses.asdict(self.arch),
            "flops_per_token_per_block_at_seq_1": self.arch.block_flops(1),
            "dtype": self.dtype,
            "tokenizer": self.tokenizer,
            "tokenizer_is_proxy": self.proxy,
            "n_post": self.n_post,
            "n_post_source": self.n_post_source,
            "gpu": dataclasses.asdict(self.gpu),
            "utilisation": self.utilisation,
            "utilisations": list(self.utilisations),
            "total_flops": self.total_flops,
            "total_gpu_hours": {
                str(u): self.gpu_hours(self.total_flops, u) for u in self.utilisations
            },
            "sweep": sweep,
            "stages": self.stages().to_dict(orient="records"),
            "roles": self.by_role().to_dict(orient="records"),
            "rows": self.to_frame().to_dict(orient="records"),
            "notes": list(self.notes),
        }

    def prefix_bytes(self) -> tuple[int, int]:
        """Peak bytes of one batch's saved prefix: every live layer at once, and the largest
        chunk the budget allows."""
        s = self.sweep
        return (
            s.prefix_bytes_per_layer * len(s.live_layers),
            s.prefix_bytes_per_layer * s.prefix_layers_at_once,
        )
