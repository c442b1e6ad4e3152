"""The benchmark suite (benchmarks/run_all.py, benchmarks/bench_gpu.py) runs end to end.

Slow tier: the whole driver in a subprocess with ``--quick`` sizes (a minute or two, two
more subprocesses for the memory benchmark), and the GPU benchmark's CPU mode on a toy
Gemma-2 shape; both check the table and the JSON. Fast tier: benchmarks 7-9 with
``--quick`` on the tiny model, and the pieces they rest on (the plain reference computes
what the bridge computes; the sync stand-in counts what a GPU would). The numbers
themselves mean nothing on a random tiny model.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import roleprobe as rp

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
DRIVER = BENCHMARKS / "run_all.py"
GPU_DRIVER = BENCHMARKS / "bench_gpu.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
ROW_KEYS = {"id", "benchmark", "ours", "reference", "unit", "ratio", "goal", "met"}


def _run(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture
def bench_path(monkeypatch):
    """The benchmark scripts importable as modules (they import each other by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


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
    assert {"1", "2", "3", "4", "5", "5b", "7", "8", "9", "9b", "S1", "S2", "S3"} <= set(rows)
    for r in rows.values():
        assert set(r) == ROW_KEYS
        assert r["ratio"] is None or r["ratio"] > 0
    for bench_id in ("1", "3", "4", "5", "7", "8", "9"):
        assert rows[bench_id]["goal"] is not None and rows[bench_id]["met"] in (True, False)

    results = data["results"]
    assert results["1"]["real_tokens"] > 0
    assert results["2"]["means_max_abs_diff"] <= 1e-4 * max(1.0, results["2"]["means_max_abs"])
    assert set(results["3"]["runs"]) == {"64", "512"}
    assert results["4"]["same_predictions"]
    assert results["5"]["prediction_mismatches"] == {"sweep_stack4": 0, "sweep_stack1": 0}
    assert "ablation" in results["5"]["conditions"]


def test_quick_items_rows_on_the_tiny_model(tmp_path, bench_path, capsys):
    """Benchmarks 7, 8 and 9 (9b, S1-S3) with --quick: every row, ratio and sync count
    (in this process: the driver's imports are already paid for)."""
    import run_all

    out = tmp_path / "bench.json"
    argv = ["--model", "tiny-random", "--quick", "--only", "7,8,9", "--out", str(out)]
    assert run_all.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| 7 |" in printed and "| 9b |" in printed
    data = json.loads(out.read_text())
    assert data["errors"] == {}
    rows = {r["id"]: r for r in data["rows"]}
    assert set(rows) == {"7", "8", "9", "9b", "S1", "S2", "S3"}
    for bench_id in ("8", "9", "9b"):
        assert math.isfinite(rows[bench_id]["ratio"]) and rows[bench_id]["ratio"] > 0
    assert rows["7"]["goal"] == "<= 1" and rows["7"]["met"] in (True, False)
    assert rows["7"]["ours"] == pytest.approx(data["results"]["7"]["seconds_total"])
    assert data["results"]["7"]["shape"] == {
        "roles": 29,
        "positions": 5,
        "layers": 42,
        "d_model": 3584,
        "means_mib": 166.5234375,
    }
    for bench_id in ("S1", "S2", "S3"):
        assert isinstance(rows[bench_id]["ours"], int) and rows[bench_id]["ours"] >= 1
    item = data["results"]["9"]["item"]
    # ablations: as many per pass as this device stacks (one on a CPU)
    assert data["results"]["9"]["9"]["passes"] == item["variants"]
    assert data["results"]["9"]["9b"]["passes"] == item["passes"]["addition"]


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_with_a_toy_shape(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run(str(GPU_DRIVER), *("--device", "cpu", "--shape", "toy", "--out", str(out)))
    assert "| # | benchmark | ours | reference | ratio | goal | met? |" in done.stdout
    data = json.loads(out.read_text())
    assert data["model"]["shape"] == "toy" and data["model"]["dtype"] == "bfloat16"
    assert set(data["ratios"]) == {
        "means_over_plain",
        "ablation_item_plain_over_item",
        "addition_item_plain_over_item",
    }
    for name, value in data["ratios"].items():
        assert math.isfinite(value) and value > 0, name
    syncs = data["syncs"]
    assert syncs["method"].startswith("cpu-stand-in")
    for name in ("means", "addition_item", "ablation_item"):
        assert isinstance(syncs[name], int) and syncs[name] >= 1, name  # the scores' read-back
        assert isinstance(syncs["plain_" + name.removesuffix("_item")], int)
    assert data["memory"]["peak"] > 0 and set(data["memory"]["stages"]) >= {"weights", "items"}
    rows = {r["id"]: r for r in data["rows"]}
    assert {"7", "8", "9", "9b", "S1", "S2", "S3", "M"} <= set(rows)
    assert all(set(r) == ROW_KEYS for r in rows.values())
    assert data["seconds"]["total"] < 600


def test_plain_reference_computes_what_the_bridge_computes(bench_path):
    from _plain import plain_pass, shared_copy
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from roleprobe.steering.prefix import position_ids, resid_at
    from roleprobe.vectors.activations import batches

    tokenizer = rp.family_tokenizer("gemma2")
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        pad_token_id=tokenizer.pad_token_id,
    )
    hf = Gemma2ForCausalLM(config).eval()
    plain = shared_copy(hf)
    model = rp.wrap_hf_model(hf, tokenizer, "tiny-gemma2", device="cpu")
    assert all(a is b for a, b in zip(plain.parameters(), hf.parameters(), strict=True))
    prompts = list(rp.builtin_generic().instructions)[:3]
    _, batch = next(iter(batches(model, prompts, 3)))
    ids, mask = batch.input_ids, batch.attention_mask
    assert not bool(mask.all())  # left padding, so the positions matter
    resid = resid_at(model, ids, mask, 2)  # the bridge's residual entering block 2
    real = mask.bool()
    ours = plain_pass(plain, ids, mask, 0, 2)  # blocks 0-1, then the final norm
    torch.testing.assert_close(ours[real], plain.model.norm(resid)[real])
    full = plain_pass(plain, ids, mask)
    from_resid = plain_pass(plain, resid, mask, start=2)  # block 2 only, from the residual
    torch.testing.assert_close(from_resid[real], full[real])
    with torch.inference_mode():
        own = plain.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    torch.testing.assert_close(full, own.last_hidden_state)
    assert len(plain.model.layers) == 3 and plain.config.layer_types[2] == "sliding_attention"


def test_sync_stand_in_counts_device_read_backs_only(bench_path):
    from _host_syncs import counting_syncs

    w = torch.randn(3, 3)
    with counting_syncs("cpu") as count:
        float((w @ w).sum())  # a read-back of a model-side value
        scores = (w @ w).cpu()  # the copy itself syncs ...
        scores.numpy(), float(scores.softmax(-1).max()), scores.tolist()  # ... its uses do not
        int(torch.tensor([1, 2]).sum())  # made on the host
    assert count.count == 2
    assert sorted(k.split(" @ ")[0] for k in count.where) == ["__float__", "cpu"]
    assert all(k.split(" @ ")[1].startswith("test_benchmarks_smoke.py:") for k in count.where)


def test_goal_of_a_row_without_ratio_is_checked_on_ours(bench_path):
    from _report import row

    assert row("7", "set-up (s)", 0.5, None, "s", None, "<= 1")["met"] is True
    assert row("7", "set-up (s)", 1.5, None, "s", None, "<= 1")["met"] is False
    assert row("8", "x", 0.5, 1.0, "tok/s", 1.2, ">= 0.98")["met"] is True
    assert row("6", "x", 140.0, None, "s", None)["met"] is None


def test_sweep_benchmark_spreads_its_layers(bench_path):
    from bench_sweep import spread_layers

    assert spread_layers(42, 4) == [1, 14, 28, 41]
    assert spread_layers(5, 4) == [1, 2, 3, 4]
    assert spread_layers(2, 4) == [1]
    assert spread_layers(30, 1) == [29]
    with pytest.raises(ValueError, match="at least 2 layers"):
        spread_layers(1, 4)
