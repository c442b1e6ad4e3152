"""Benchmark: peak memory (RSS) of ``collect_means`` for few vs many prompts.

Each size runs in a fresh subprocess (so peaks never mix): load the model, collect the means
of N prompts (the built-in generic instructions, cycled with a numeric suffix so that all N
differ), then read ``getrusage(RUSAGE_SELF).ru_maxrss``. Streaming into float64 sums keeps
memory independent of N, so the peak for 2,048 prompts should be within 5% of the peak for
128. ``run_all.py`` runs it as benchmark 3; this file is also the worker:

    python benchmarks/bench_rss.py --worker --model tiny-random --n 2048
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GOAL = "<= 1.05"


def varied_prompts(n: int) -> list[str]:
    """``n`` distinct prompts: the built-in generic instructions, cycled, with a suffix."""
    import roleprobe as rp

    base = list(rp.builtin_generic().instructions)
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]


def _maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, else KiB


def worker(model_name: str, device: str, n: int, batch_size: int) -> dict[str, Any]:
    """What one subprocess measures."""
    from _models import load

    from roleprobe.vectors.activations import collect_means

    model = load(model_name, device=device)
    prompts = varied_prompts(n)
    after_load = _maxrss_mib()
    start = time.perf_counter()
    means = collect_means(model, prompts, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    return {
        "prompts": n,
        "count": means.count,
        "maxrss_after_load_mib": after_load,
        "maxrss_mib": _maxrss_mib(),
        "seconds": seconds,
    }


def run(
    model_name: str, device: str, sizes: tuple[int, int] = (128, 2048), batch_size: int = 16
) -> dict[str, Any]:
    """Peak RSS of a fresh process per size, and the ratio large ÷ small."""
    runs = {}
    for n in sizes:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "--model",
            model_name,
            "--device",
            device,
            "--n",
            str(n),
            "--batch-size",
            str(batch_size),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"RSS worker for {n} prompts failed:\n{done.stderr[-3000:]}")
        runs[str(n)] = json.loads(done.stdout.strip().splitlines()[-1])
    small, large = (runs[str(n)] for n in sizes)
    return {
        "sizes": list(sizes),
        "batch_size": batch_size,
        "runs": runs,
        "ratio_large_over_small": large["maxrss_mib"] / small["maxrss_mib"],
        "growth_over_load_mib": {
            k: v["maxrss_mib"] - v["maxrss_after_load_mib"] for k, v in runs.items()
        },
        "goal": GOAL,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="measure one size and print JSON")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--sizes", default="128,2048", help="without --worker: small,large")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.model, args.device, args.n, args.batch_size)))
        return
    small, large = (int(x) for x in args.sizes.split(","))
    print(json.dumps(run(args.model, args.device, (small, large), args.batch_size), indent=1))


if __name__ == "__main__":
    main()
