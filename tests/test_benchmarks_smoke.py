"""The benchmark suite (benchmarks/run_all.py) runs end to end on the tiny model.

Slow tier: it starts the driver in a subprocess with ``--quick`` sizes (a minute or two,
two more subprocesses for the memory benchmark) and checks the table and the JSON. The
numbers themselves mean nothing on a random four-layer model.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "benchmarks" / "run_all.py"


@pytest.mark.slow
def test_quick_suite_on_the_tiny_model_writes_the_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    command = [
        sys.executable,
        str(DRIVER),
        *("--model", "tiny-random", "--device", "cpu", "--quick", "--skip-demo"),
        *("--out", str(out)),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| # | benchmark | ours | reference | ratio | goal | met? |" in done.stdout

    data = json.loads(out.read_text())
    assert {"settings", "machine", "rows", "results", "skipped", "errors", "table"} <= set(data)
    machine = data["machine"]
    for key in ("cpu", "torch_threads", "torch", "transformers", "transformer-lens", "device"):
        assert machine[key] is not None, key
    assert data["errors"] == {}
    assert "6" in data["skipped"]
    if not machine["cuda_available"]:
        assert "gpu" in data["skipped"]

    rows = {r["id"]: r for r in data["rows"]}
    assert {"1", "2", "3", "4", "5", "5b"} <= set(rows)
    for r in rows.values():
        assert set(r) == {"id", "benchmark", "ours", "reference", "unit", "ratio", "goal", "met"}
        assert r["ratio"] is None or r["ratio"] > 0
    for bench_id in ("1", "3", "4", "5"):
        assert rows[bench_id]["goal"] is not None and rows[bench_id]["met"] in (True, False)

    results = data["results"]
    assert results["1"]["real_tokens"] > 0
    assert results["2"]["means_max_abs_diff"] <= 1e-4 * max(1.0, results["2"]["means_max_abs"])
    assert set(results["3"]["runs"]) == {"64", "512"}
    assert results["4"]["same_predictions"]
    assert results["5"]["prediction_mismatches"] == {"sweep_stack4": 0, "sweep_stack1": 0}
