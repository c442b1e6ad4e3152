"""Shared by the benchmark scripts: timing, table rows, machine info and JSON output."""

import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

import torch


def report(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")


def synchronizer(device: Any) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` (a no-op except on CUDA)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def best_of(
    variants: Mapping[str, Callable[[], Any]], repeats: int, device: Any = "cpu"
) -> dict[str, Any]:
    """Time each variant alternately, ``repeats`` rounds after one warm-up round.

    Returns ``{"best": {name: s}, "all": {name: [s, ...]}, "last": {name: return value}}``:
    the best (minimum) of the rounds per variant, every round, and each variant's result
    from the last round (to check that the variants agree).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    sync = synchronizer(device)
    last = {name: fn() for name, fn in variants.items()}  # warm-up
    sync()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            start = time.perf_counter()
            last[name] = fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {"best": {k: min(v) for k, v in times.items()}, "all": times, "last": last}


def row(
    bench_id: str,
    name: str,
    ours: float | None,
    reference: float | None,
    unit: str,
    ratio: float | None,
    goal: str | None = None,
) -> dict[str, Any]:
    """One line of the summary table. ``goal`` is ``">= x"`` or ``"<= x"`` (or ``None``),
    checked on ``ratio``, or on ``ours`` for a row with no ratio (e.g. seconds ≤ 1)."""
    met = None
    checked = ratio if ratio is not None else ours
    if goal is not None and checked is not None:
        op, value = goal.split()
        met = checked >= float(value) if op == ">=" else checked <= float(value)
    return {
        "id": bench_id,
        "benchmark": name,
        "ours": ours,
        "reference": reference,
        "unit": unit,
        "ratio": ratio,
        "goal": goal,
        "met": met,
    }


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: | # | benchmark | ours | reference | ratio | goal | met? |."""
    lines = [
        "| # | benchmark | ours | reference | ratio | goal | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['id']} | {r['benchmark']} | {_number(r['ours'], r['unit'])} | "
            f"{_number(r['reference'], r['unit'])} | "
            f"{ratio} | {r['goal'] or '—'} | {met} |"
        )
    return "\n".join(lines)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: Any) -> dict[str, Any]:
    """Where the numbers come from: CPU, threads, library versions, device (and GPU name)."""
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "transformer-lens": _version("transformer-lens") or _version("transformer_lens"),
        "roleprobe": _version("roleprobe"),
        "device": str(device),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
