"""Peak memory of merging a paper-sized sweep store (issue 16: "Scale of the result tables").

Builds a synthetic sweep store with the columns and dtypes of real parts (29 catalogue roles,
3 sources, 2 alphas + ablation, ``--positions`` x ``--layers`` candidates, ``--items``
questions per domain) and measures, each in a fresh process, the peak RSS and time of
``rp.merge(store)`` followed by ``result.scores()`` (streamed) and, with ``--eager``, of the
whole per-item table in pandas as ``merge`` loaded it before (``candidate_scores`` on
``result.table``).

Usage::

    .venv/bin/python benchmarks/merge_memory.py --store /tmp/big-store            # 13 M rows
    .venv/bin/python benchmarks/merge_memory.py --store /tmp/small --layers 2 --eager

The default grid (6 positions x 29 layers x 29 roles x 3 sources x 3 conditions = 45,414
candidates x 300 questions) is 13.6 M rows in about 5,000 parts.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LETTERS = ["A", "B", "C", "D"]


def build_store(
    root: Path,
    roles: list[str],
    layers: int,
    positions: int,
    items: int,
    batch_size: int = 16,
    seed: int = 0,
    tie_rule: str = "fractional",
) -> int:
    """Write a synthetic sweep store into ``root``; returns its number of per-item rows.

    Every ``layer*`` part holds all candidates of one (layer, domain, batch), as a sweep
    writes them; the scores are random but well formed (fractional credit on ties).
    """
    from roleprobe.data.roles import DOMAIN_SUBJECTS, get_role
    from roleprobe.experiments.store import ResultStore, code_versions
    from roleprobe.experiments.sweeps import SweepConfig, WorkItem

    rng = np.random.default_rng(seed)
    domains = sorted({get_role(r).domain for r in roles})
    layer_ids = list(range(1, layers + 1))
    pos_ids = list(range(-positions, 0))
    cfg = SweepConfig(
        roles=tuple(roles),
        layers=tuple(layer_ids),
        positions=tuple(pos_ids),
        batch_size=batch_size,
        tie_rule=tie_rule,
    )
    batches = {
        d: [list(range(s, min(s + batch_size, items))) for s in range(0, items, batch_size)]
        for d in domains
    }
    work = [WorkItem(d, b) for d in domains for b in range(len(batches[d]))] + [
        WorkItem(d, b, layer)
        for layer in layer_ids
        for d in domains
        for b in range(len(batches[d]))
    ]
    manifest = {
        "config": {
            "sweep": cfg.to_dict(),
            "model": "synthetic",
            "n_layers": layers + 8,
            "plan": [w.key for w in work],
        },
        "versions": code_versions(),
    }
    store = ResultStore(root, manifest)
    donors = dict(zip(roles, roles[1:] + roles[:1], strict=True))
    conditions = [("addition", 1.0), ("addition", 3.0), ("ablation", float("nan"))]
    rows = 0
    for item in work:
        d = item.group
        idx = np.array(batches[d][item.batch])
        subjects = DOMAIN_SUBJECTS[d]
        q = {
            "id": [f"{d}-{i:04d}" for i in idx],
            "subject": [subjects[i % len(subjects)] for i in idx],
            "domain": [d] * len(idx),
            "answer": [LETTERS[i % 4] for i in idx],
        }
        if item.layer is None:
            cells = [{}]
        else:
            cells = []
            for role in (r for r in roles if get_role(r).domain == d):
                for pos in pos_ids:
                    for source, donor in (
                        ("role", role),
                        ("random", ""),
                        ("shuffled", donors[role]),
                    ):
                        for condition, alpha in conditions:
                            cells.append(
                                {
                                    "role": role,
                                    "source": source,
                                    "donor": donor,
                                    "position": pos,
                                    "layer": item.layer,
                                    "condition": condition,
                                    "alpha": alpha,
                                }
                            )
        k, m = len(cells), len(idx)
        n = k * m
        logp = -rng.gamma(2.0, 0.7, size=(n, 4))
        pred_i = logp.argmax(1)
        ans_i = np.tile(idx % 4, k)
        tied = np.where(rng.random(n) < 0.02, 2, 1)
        correct = np.where(pred_i == ans_i, 1.0 / tied, 0.0)
        lp_correct = logp[np.arange(n), ans_i]
        other = np.where(np.eye(4, dtype=bool)[ans_i], -np.inf, logp).max(1)
        cols: dict[str, pa.Array] = {
            **{
                c: pa.array(np.tile(np.array(v, dtype=object), k), pa.large_string())
                for c, v in q.items()
            },
            "pred": pa.array(np.array(LETTERS, dtype=object)[pred_i], pa.large_string()),
            "correct": pa.array(correct),
            **{f"logprob_{x}": pa.array(logp[:, j]) for j, x in enumerate(LETTERS)},
            "logprob_correct": pa.array(lp_correct),
            "margin": pa.array(lp_correct - other),
            "tied": pa.array(tied.astype(np.int64)),
            "tie_rule": pa.array([tie_rule] * n, pa.large_string()),
        }
        if item.layer is not None:
            for c in ("role", "source", "donor", "condition"):
                cols[c] = pa.array(
                    np.repeat(np.array([x[c] for x in cells], dtype=object), m), pa.large_string()
                )
            for c, t in (("position", pa.int64()), ("layer", pa.int64()), ("alpha", pa.float64())):
                cols[c] = pa.array(np.repeat(np.array([x[c] for x in cells]), m), t)
            order = ["role", "source", "donor", "position", "layer", "condition", "alpha"]
            cols = {
                **{c: v for c, v in cols.items() if c not in order},
                **{c: cols[c] for c in order},
            }
            rows += n
        cols["group"] = pa.array([d] * n, pa.large_string())
        pq.write_table(pa.table(cols), store.part_path(item.key))
    return rows


_MEASURE = """
import json, resource, sys, time
sys.path.insert(0, {src!r})
t0 = time.perf_counter()
import roleprobe as rp
from roleprobe.experiments.sweeps import candidate_scores
t1 = time.perf_counter()
result = rp.merge({store!r})
if {eager!r}:
    table = result.table
    scores = candidate_scores(table, result.baseline, result.config.scope)
else:
    scores = result.scores()
t2 = time.perf_counter()
print(json.dumps({{"rows": result.n_rows, "candidates": len(scores),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "import_s": t1 - t0, "merge_scores_s": t2 - t1}}))
"""


def measure(store: Path, eager: bool) -> dict[str, float]:
    """Peak RSS (MB) and time of merge + scores in a fresh interpreter."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = _MEASURE.format(src=src, store=str(store), eager=eager)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from roleprobe.data.roles import ROLES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--roles", type=int, default=29)
    parser.add_argument("--layers", type=int, default=29)
    parser.add_argument("--positions", type=int, default=6)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--eager", action="store_true", help="also measure the pandas way")
    args = parser.parse_args()
    if not (args.store / "manifest.json").exists():
        t = time.perf_counter()
        names = [r.name for r in ROLES][: args.roles]
        rows = build_store(args.store, names, args.layers, args.positions, args.items)
        sys.stderr.write(f"built {rows:,} rows in {time.perf_counter() - t:.0f} s\n")
    sys.stdout.write(json.dumps({"streamed": measure(args.store, eager=False)}) + "\n")
    if args.eager:
        sys.stdout.write(json.dumps({"eager": measure(args.store, eager=True)}) + "\n")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stderr.write(f"(this builder process peaked at {peak:.0f} MB)\n")


if __name__ == "__main__":
    main()
