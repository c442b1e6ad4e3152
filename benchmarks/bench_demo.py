"""Benchmark: wall time of ``roleprobe run --preset demo`` (the whole numbered pipeline).

Runs the installed ``roleprobe`` command as a subprocess into a fresh temporary run folder
each time (so nothing is resumed), on the preset's own model (the embedded SmolLM2). Model
loading, caching checks and report writing are included: this is what a user waits for.
``run_all.py`` runs it as benchmark 6 (skip it with ``--skip-demo``).
"""

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def roleprobe_command() -> list[str]:
    """The ``roleprobe`` console script next to this Python, else
    ``python -m roleprobe.app.cli``."""
    script = Path(sys.executable).with_name("roleprobe")
    if script.exists():
        return [str(script)]
    found = shutil.which("roleprobe")
    return [found] if found else [sys.executable, "-m", "roleprobe.app.cli"]


def run(device: str | None = None, repeats: int = 1) -> dict[str, Any]:
    """Wall seconds of each run (best and all)."""
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="roleprobe-bench-demo-") as tmp:
            out = Path(tmp) / "run"
            command = [*roleprobe_command(), "run", "--preset", "demo", "--out", str(out)]
            if device is not None:
                command += ["--device", device]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
                )
    return {
        "command": "roleprobe run --preset demo",
        "seconds_best": min(seconds),
        "seconds": seconds,
    }
