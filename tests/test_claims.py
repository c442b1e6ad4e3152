"""Several workers on one store: claims split the work and never block after a crash."""

import json
import logging
import multiprocessing as mp
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.store import CLAIM_TIMEOUT, ResultStore, check_claim_timeout
from roleprobe.experiments.sweeps import merge, sweep
from roleprobe.model.tiny import TinyConfig

ROLES = ["lawyer", "nurse"]
KW = {"layers": [1, 2, 3], "positions": [-1], "batch_size": 2, "progress": False}


def _model():
    return rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(n_layers=4)), rp.tiny_tokenizer(), "tiny-4", device="cpu"
    )


def _bench():
    items = rp.load_benchmark("builtin").items
    law = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["law"])].head(4)
    med = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["medicine"])].head(4)
    return MultipleChoice(pd.concat([law, med]), "builtin-law-med")


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def directions(model):
    return rp.compute_directions(model, roles=ROLES, progress=False)


@pytest.fixture(scope="module")
def single(model, directions, tmp_path_factory):
    return sweep(
        model, directions, _bench(), roles=ROLES, store=tmp_path_factory.mktemp("one"), **KW
    )


def _claim_file(root, key, **info):
    (root / "claims").mkdir(parents=True, exist_ok=True)
    text = {"host": socket.gethostname(), "pid": 1, "time": time.time(), "token": "x", **info}
    path = root / "claims" / f"{key}.claim"
    path.write_text(json.dumps(text))
    return path


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_claim_goes_to_one_worker_and_is_released_by_the_write(tmp_path):
    a = ResultStore(tmp_path, {"config": {}})
    b = ResultStore(tmp_path, {"config": {}})
    assert a.claim("k1")
    claim = json.loads((tmp_path / "claims" / "k1.claim").read_text())
    assert claim["host"] == socket.gethostname() and isinstance(claim["time"], float)
    # b is another worker: pretend it is another process on another host
    (tmp_path / "claims" / "k1.claim").write_text(json.dumps({**claim, "host": "elsewhere"}))
    assert not b.claim("k1")
    assert set(a.claimed()) == {"k1"} and a.claimed()["k1"]["host"] == "elsewhere"
    (tmp_path / "claims" / "k1.claim").write_text(json.dumps(claim))
    a.write("k1", pd.DataFrame({"x": [1]}))
    assert a.claimed() == {} and "k1" in a.done()
    assert not b.claim("k1")  # done: nothing to claim
    with pytest.raises(ValueError, match="bad part key"):
        a.claim("../x")


def test_a_claim_by_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
    _claim_file(tmp_path, "k", pid=_dead_pid())
    store = ResultStore(tmp_path, {"config": {}})
    with caplog.at_level(logging.WARNING):
        assert store.claim("k")
    assert "has ended" in caplog.text
    assert json.loads((tmp_path / "claims" / "k.claim").read_text())["pid"] != 1


def test_a_foreign_claim_holds_until_the_timeout(tmp_path, caplog):
    path = _claim_file(tmp_path, "k", host="node-7", pid=123, time=time.time() - 100)
    store = ResultStore(tmp_path, {"config": {}})
    assert not store.claim("k") and not store.claim("k", timeout=500)
    assert json.loads(path.read_text())["host"] == "node-7"
    with caplog.at_level(logging.WARNING):
        assert store.claim("k", timeout=50)
    assert "node-7" in caplog.text and "claim_timeout" in caplog.text
    assert CLAIM_TIMEOUT == 6 * 3600
    for bad in (0, -1, float("nan"), float("inf"), "6h", True):
        with pytest.raises(ValueError, match="claim_timeout"):
            check_claim_timeout(bad)


def test_a_sweep_respects_and_reports_a_running_workers_claim(model, directions, single, tmp_path):
    held = _claim_file(tmp_path, "layer002-law-b0001", host="node-7", pid=123)
    result = sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, **KW)
    assert not result.complete
    assert result.missing == result.in_flight == ["layer002-law-b0001"]
    assert "being computed by other workers" in repr(result)
    with pytest.raises(ValueError, match="1 of them claimed by running workers"):
        merge(tmp_path)
    with pytest.raises(ValueError, match="claim_timeout"):
        sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, claim_timeout=0, **KW)
    # the worker died on its host: after the timeout its item is taken over
    held.write_text(json.dumps({**json.loads(held.read_text()), "time": time.time() - 60}))
    done = sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, claim_timeout=30, **KW)
    assert done.complete and done.in_flight == []
    pd.testing.assert_frame_equal(done.table, single.table)
    assert not list((tmp_path / "claims").glob("*.claim"))


def _worker(store, rd_path, barrier, log_path, shard):
    """One worker process: the same sweep on a shared store, each item a little slow."""
    handler = logging.FileHandler(log_path)
    logger = logging.getLogger("roleprobe.experiments.sweeps")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    write = ResultStore.write

    def slow_write(self, key, table):
        time.sleep(0.1)  # hold the claim a while, so that the workers interleave
        write(self, key, table)

    ResultStore.write = slow_write  # type: ignore[method-assign]
    model = _model()
    rd = rp.RoleDirections.load(rd_path)
    bench = _bench()
    barrier.wait(timeout=300)
    sweep(model, rd, bench, roles=ROLES, store=store, shard=shard, **KW)


@pytest.mark.parametrize("shards", [(None, None), ("0/2", "0/2")])
def test_two_processes_split_one_sweep(directions, single, tmp_path, shards):
    rd_path = directions.save(tmp_path / "rd")
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    store = tmp_path / "store"
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [
        ctx.Process(target=_worker, args=(store, rd_path, barrier, logs[i], shards[i]))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    computed = [
        [
            line.split()[-1]
            for line in log.read_text().splitlines()
            if line.startswith("sweep: computed ")
        ]
        for log in logs
    ]
    plan = json.loads((store / "manifest.json").read_text())["config"]["plan"]
    mine = plan[0::2] if shards[0] else plan
    assert computed[0] and computed[1], "both workers did some of the work"
    assert not set(computed[0]) & set(computed[1]), "an item was computed twice"
    assert sorted(computed[0] + computed[1]) == sorted(mine)
    merged = merge(store, allow_partial=shards[0] is not None)
    assert merged.in_flight == [] and not list((store / "claims").glob("*.claim"))
    if shards[0] is None:
        pd.testing.assert_frame_equal(merged.table, single.table)
        pd.testing.assert_frame_equal(merged.baseline, single.baseline)
        pd.testing.assert_frame_equal(merged.scores(), single.scores(), check_exact=True)
