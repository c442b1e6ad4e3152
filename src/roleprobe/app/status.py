"""``roleprobe status``: where a run folder stands — its stages, the sweep's parts, who holds
what, and the jobs ``roleprobe submit`` sent. Reads files only (no model, nothing written).

Example:
    >>> for line in run_status("runs/gemma9"):
    ...     print(line)
    01_prompts       done (3 s)
    04_sweep         1,204 of 3,402 parts; 16 claims held (...), 1 stale (...)
"""

import json
import os
from pathlib import Path

from roleprobe.app.run import CLAIMS, STAGES, SWEEP, RunPaths, read_config_json
from roleprobe.app.run_config import RunConfig
from roleprobe.experiments.claims import Claims

__all__ = ["run_status"]


def run_status(out: str | os.PathLike[str]) -> list[str]:
    """Lines describing the run folder ``out``.

    Raises:
        ValueError: ``out`` is not a run folder (no ``config.json``).
    """
    paths = RunPaths(out)
    if not paths.config.exists():
        raise ValueError(f"{Path(out)} is not a run folder (no {paths.config.name})")
    stored = read_config_json(paths.config)
    lease = float(stored.get("lease_s", RunConfig().lease_s))
    stages = Claims(paths.root / CLAIMS, lease)
    holders = stages.holders()
    lines = [f"run folder {paths.root}: model {stored.get('model')}"]
    for stage in STAGES:
        if paths.done(stage).exists():
            seconds = json.loads(paths.done(stage).read_text()).get("seconds", "?")
            state = f"done ({seconds} s)"
        elif stage == SWEEP and (paths.sweep_store / "manifest.json").exists():
            state = _sweep_state(paths, lease)
        elif f"stage-{stage.name}" in holders:
            state = "being made: " + stages.describe([f"stage-{stage.name}"])
        else:
            state = "not started"
        lines.append(f"{stage.name:16} {state}")
    if paths.submission.exists():
        sub = json.loads(paths.submission.read_text(encoding="utf-8"))
        jobs = sub.get("jobs", {})
        lines.append(
            f"submitted ({sub.get('executor')}, {sub.get('submitted')}): stages 1-3 job "
            f"{jobs.get('prep')}, sweep array {sub.get('array')} ({len(jobs.get('sweep', []))} "
            f"tasks), stages 5-8 job {jobs.get('finish')}; logs in {sub.get('folder')}"
        )
    return lines


def _sweep_state(paths: RunPaths, lease: float) -> str:
    """``N of M parts`` and the sweep's claims: live ones, and stale ones with why."""
    manifest = json.loads((paths.sweep_store / "manifest.json").read_text(encoding="utf-8"))
    plan = manifest.get("config", {}).get("plan", [])
    parts = paths.sweep_store / "parts"
    done = {p.stem for p in parts.glob("*.parquet")} if parts.exists() else set()
    claims = Claims(paths.sweep_store / CLAIMS, lease)
    holders = claims.holders()
    stale = {k: claims.why_stale(h, claims.path(k)) for k, h in holders.items()}
    live = [k for k, why in stale.items() if why is None]
    dead = {k: why for k, why in stale.items() if why is not None}
    text = f"{len(done & set(plan)):,} of {len(plan):,} parts"
    if live:
        workers = {(h.host, h.pid) for k, h in holders.items() if k in live and h is not None}
        text += f"; {len(live)} items being computed by {len(workers)} workers"
    if dead:
        key, why = next(iter(dead.items()))
        text += f"; {len(dead)} stale claims (taken over by the next worker; e.g. {key}: {why})"
    return text
