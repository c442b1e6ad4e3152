"""The GPUs a plan is priced on: bf16 dense peak FLOP/s and memory, and the utilisations shown.

GPU-hours = FLOPs / (peak x utilisation) / 3600
(:meth:`~roleprobe.experiments.run_plan.RunPlan.gpu_hours`). A GPU's memory sets the
sweep's default prefix budget (:attr:`Gpu.prefix_budget`).

Example:
    >>> resolve_gpu("h100").peak_flops, resolve_gpu("312e12").memory_gb
    (989000000000000.0, 80.0)
"""

import math
from dataclasses import dataclass

from roleprobe.experiments.sweeps import CUDA_PREFIX_FRACTION

__all__ = ["GPUS", "UTILISATIONS", "Gpu", "check_utilisation", "resolve_gpu"]

UTILISATIONS = (0.4, 0.5, 0.6)
"""The utilisations every plan is shown at (beside the one asked for)."""


@dataclass(frozen=True)
class Gpu:
    """An accelerator: its name, bf16 dense peak FLOP/s and memory (GB)."""

    name: str
    peak_flops: float
    memory_gb: float = 80.0

    @property
    def prefix_budget(self) -> int:
        """The sweep's default budget for one batch's saved residuals on this GPU (bytes):
        :data:`~roleprobe.experiments.sweeps.CUDA_PREFIX_FRACTION` of its memory."""
        return int(self.memory_gb * 2**30 * CUDA_PREFIX_FRACTION)


GPUS: dict[str, Gpu] = {
    "h100": Gpu("h100", 989e12, 80.0),
    "h200": Gpu("h200", 989e12, 141.0),
    "a100": Gpu("a100", 312e12, 80.0),
    "l40s": Gpu("l40s", 362e12, 48.0),
}
"""bf16 dense peak FLOP/s (no sparsity) of the GPUs a plan can be priced on."""


def resolve_gpu(value: str) -> Gpu:
    """A GPU by name (:data:`GPUS`) or its peak FLOP/s as a number (memory: 80 GB)."""
    key = value.strip().lower()
    if key in GPUS:
        return GPUS[key]
    try:
        peak = float(key)
    except ValueError:
        raise ValueError(
            f"unknown GPU {value!r}; use one of {sorted(GPUS)} or a peak FLOP/s (e.g. 989e12)"
        ) from None
    if not math.isfinite(peak) or peak <= 0:
        raise ValueError(f"a GPU's peak FLOP/s must be a positive number, got {value!r}")
    return Gpu(f"{peak:.3g} FLOP/s", peak)


def check_utilisation(value: float) -> float:
    """``value`` if it is a share of peak in (0, 1], else a ValueError."""
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"utilisation must be in (0, 1] (a share of peak), got {value}")
    return value
