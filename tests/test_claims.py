"""Several workers on one store: claims split the work and never block after a crash."""

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.claims import LEASE, Claims, Holder, SlurmJobs, check_lease
from roleprobe.experiments.store import ResultStore
from roleprobe.experiments.sweeps import SweepConfig, _Plan, _units, merge, sweep
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
    store.release_all()


def test_a_foreign_claim_holds_while_its_heartbeat_is_within_the_lease(tmp_path, caplog):
    path = _claim_file(tmp_path, "k", host="node-7", pid=123, time=time.time() - 100)
    store = ResultStore(tmp_path, {"config": {}}, lease=500)
    assert not store.claim("k")
    assert json.loads(path.read_text())["host"] == "node-7"
    short = ResultStore(tmp_path, {"config": {}}, lease=50)
    with caplog.at_level(logging.WARNING):
        assert short.claim("k")
    assert "node-7" in caplog.text and "no heartbeat for 100 s > lease 50 s" in caplog.text
    short.release_all()
    assert LEASE == 300
    for bad in (0, -1, float("nan"), float("inf"), "6h", True):
        with pytest.raises(ValueError, match="lease"):
            check_lease(bad)


def test_a_sweep_respects_and_reports_a_running_workers_claim(model, directions, single, tmp_path):
    held = _claim_file(tmp_path, "layer002-law-b0001", host="node-7", pid=123)
    result = sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, **KW)
    assert not result.complete
    assert result.missing == result.in_flight == result.pending == ["layer002-law-b0001"]
    assert "being computed by other workers" in repr(result)
    with pytest.raises(ValueError, match="1 of them claimed by running workers"):
        merge(tmp_path)
    with pytest.raises(ValueError, match="lease"):
        sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, lease=0, **KW)
    # the worker died on its host: after the lease its item is taken over
    held.write_text(json.dumps({**json.loads(held.read_text()), "time": time.time() - 60}))
    done = sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, lease=30, **KW)
    assert done.complete and done.in_flight == [] and done.pending == []
    pd.testing.assert_frame_equal(done.table, single.table)
    assert not list((tmp_path / "claims").glob("*.claim"))


def test_a_waiting_sweep_finishes_the_item_of_a_worker_that_dies(
    model, directions, single, tmp_path
):
    """``wait=True``: the last item is held by a live foreign worker (its heartbeat kept
    fresh by a thread); once the sweep waits for it, the worker dies (3 polls later its
    heartbeat stops) and the waiting sweep takes the item over a lease after the last
    heartbeat, and not before."""
    import threading

    lease = 1.0
    held = _claim_file(tmp_path, "layer002-law-b0001", host="node-7", pid=123, lease=lease)
    dead, last = threading.Event(), {"beat": time.time()}

    def heartbeat():  # the foreign worker, alive until told otherwise
        while not dead.is_set():
            last["beat"] = time.time()
            held.write_text(json.dumps({**json.loads(held.read_text()), "time": last["beat"]}))
            dead.wait(0.05)

    polls = {"n": 0}
    sleep = time.sleep

    def counting_sleep(seconds):  # the sweep's waiting loop
        polls["n"] += 1
        if polls["n"] == 3:
            dead.set()
        sleep(seconds)

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    try:
        with pytest.MonkeyPatch.context() as mp_:
            mp_.setattr("roleprobe.experiments.sweeps.time.sleep", counting_sleep)
            done = sweep(
                model,
                directions,
                _bench(),
                roles=ROLES,
                store=tmp_path,
                lease=lease,
                wait=True,
                **KW,
            )
    finally:
        dead.set()
        beating.join(timeout=10)
    assert done.complete and done.pending == [] and polls["n"] >= 3
    assert time.time() - last["beat"] >= lease  # taken over only after a silent lease
    pd.testing.assert_frame_equal(done.table, single.table)


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
    if shards[0]:  # shard 0 of 2: its part of the cost-balanced partition
        cfg = SweepConfig.from_dict(
            json.loads((store / "manifest.json").read_text())["config"]["sweep"]
        )
        units = _units(_Plan(_model(), directions, _bench(), cfg), True, (0, 2), 1)
        mine = [k for u in units for k in u.keys]
        assert 0 < len(mine) < len(plan)
    else:
        mine = plan
    assert computed[0] and computed[1], "both workers did some of the work"
    assert not set(computed[0]) & set(computed[1]), "an item was computed twice"
    assert sorted(computed[0] + computed[1]) == sorted(mine)
    merged = merge(store, allow_partial=shards[0] is not None)
    assert merged.in_flight == [] and not list((store / "claims").glob("*.claim"))
    if shards[0] is None:
        pd.testing.assert_frame_equal(merged.table, single.table)
        pd.testing.assert_frame_equal(merged.baseline, single.baseline)
        pd.testing.assert_frame_equal(merged.scores(), single.scores(), check_exact=True)


# -- claims themselves: heartbeat, liveness from facts, lock-free take-over ------------------


def test_a_holder_refreshes_its_heartbeat_and_releases(tmp_path):
    claims = Claims(tmp_path, lease=0.5)  # heartbeat every 0.05 s
    assert claims.claim("k") and claims.held() == {"k"}
    first = Holder.parse((tmp_path / "k.claim").read_text())
    assert first is not None and first.lease == 0.5 and first.pid == os.getpid()
    time.sleep(0.3)
    later = Holder.parse((tmp_path / "k.claim").read_text())
    assert later is not None and later.heartbeat > first.heartbeat and later.token == first.token
    assert later.started == first.started
    assert claims.why_stale(later) is None  # held by a live object of this process
    assert not Claims(tmp_path, lease=0.5).claim("k")  # another object, same process
    claims.release("k")
    assert not (tmp_path / "k.claim").exists() and claims.held() == set()


def test_a_claim_left_by_an_interrupted_call_of_this_process_is_taken_quietly(tmp_path, caplog):
    _claim_file(tmp_path, "k", pid=os.getpid())  # our pid, a token no live object holds
    (tmp_path / "claims").rename(tmp_path / "c")
    with caplog.at_level(logging.WARNING):
        assert Claims(tmp_path / "c").claim("k")
    assert caplog.text == ""


def test_a_claim_names_its_slurm_job(tmp_path, monkeypatch):
    env = {"SLURM_JOB_ID": "901", "SLURM_ARRAY_JOB_ID": "900", "SLURM_ARRAY_TASK_ID": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    claims = Claims(tmp_path, slurm=SlurmJobs(command=""))
    assert claims.claim("k")
    holder = Holder.parse((tmp_path / "k.claim").read_text())
    assert holder is not None and holder.slurm["job"] == "901" and holder.job == "900_1"
    assert "(Slurm job 900_1)" in claims.describe(["k"])
    claims.close()


SQUEUE = """#!/bin/sh
# a stand-in for squeue: answers from $FAKE_SQUEUE ("STATE|HOST", or "invalid")
if [ "$FAKE_SQUEUE" = invalid ]; then
  echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1
fi
[ "$FAKE_SQUEUE" = empty ] && exit 0
echo "{job}|$FAKE_SQUEUE"
"""


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("RUNNING|node-7", None),
        ("COMPLETING|node-7", None),
        ("COMPLETED|node-7", "its Slurm job 55_3 is completed"),
        ("PENDING|", "its Slurm job 55_3 is pending"),  # requeued: the holder is gone
        ("RUNNING|node-9", "was requeued and runs on node-9"),
        ("invalid", "its Slurm job 55_3 is gone"),
        ("empty", "its Slurm job 55_3 is gone"),
    ],
)
def test_a_foreign_claim_is_stale_when_its_slurm_job_is_not_running(
    tmp_path, monkeypatch, answer, why
):
    script = tmp_path / "squeue"
    script.write_text(SQUEUE.format(job="56"))
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_SQUEUE", answer)
    slurm = {"job": "56", "array_job": "55", "array_task": "3"}
    _claim_file(tmp_path, "k", host="node-7", pid=123, slurm=slurm)  # fresh heartbeat
    claims = Claims(tmp_path / "claims", slurm=SlurmJobs(command=str(script)))
    holder = Holder.parse((tmp_path / "claims" / "k.claim").read_text())
    reason = claims.why_stale(holder)
    assert reason is None if why is None else why in reason
    assert claims.claim("k") == (why is not None)
    # without squeue the heartbeat decides: fresh, so it holds
    assert Claims(tmp_path / "claims", slurm=SlurmJobs(command="")).why_stale(holder) is None


def _take(folder, barrier, results):
    barrier.wait(timeout=120)
    results.put(Claims(folder).claim("k"))


def test_of_several_workers_taking_over_one_stale_claim_exactly_one_wins(tmp_path):
    _claim_file(tmp_path, "k", pid=_dead_pid())
    ctx = mp.get_context("fork")  # file operations only: no torch in the children
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_take, args=(tmp_path / "claims", barrier, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    won = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(won) == [False, False, False, True]
    assert [p.name for p in (tmp_path / "claims").iterdir()] == ["k.claim"]  # nothing aside


HOLDER = """
import socket, sys, time
socket.gethostname = lambda: "node-far"   # a worker on another host
from roleprobe.experiments.claims import Claims
claims = Claims(sys.argv[1], lease=float(sys.argv[2]))
assert claims.claim("k")
print("held", flush=True)
time.sleep(600)
"""


def test_a_foreign_claim_whose_heartbeat_stops_is_taken_over_within_the_lease(tmp_path):
    """A worker "on another host" holds a claim with a live heartbeat: it holds for longer
    than the lease; once the worker freezes (SIGSTOP), it is taken over one lease after
    its last heartbeat."""
    lease = 2.5  # generous: a loaded CI machine may starve the holder's heartbeat thread
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), str(lease)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        mine = Claims(tmp_path, lease=lease)
        start = time.time()
        while time.time() - start < 2 * lease:  # alive: its heartbeat keeps it
            assert not mine.claim("k")
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGSTOP)
        last = Holder.parse((tmp_path / "k.claim").read_text()).heartbeat
        while not mine.claim("k"):
            assert time.time() - last < lease + 5, "not taken over within the lease"
            time.sleep(0.05)
        assert time.time() - last >= lease
        assert Holder.parse((tmp_path / "k.claim").read_text()).host == socket.gethostname()
    finally:
        proc.kill()
        proc.wait()


def test_a_worker_lists_the_parts_folder_once_not_once_per_item(
    model, directions, single, tmp_path, request
):
    """The done set is read once per store object and kept up to date; a sweep of many
    items (half of them finished by "another worker") lists the folder a fixed number of
    times (the worker's store, then merge's)."""

    plan = json.loads((single.store / "manifest.json").read_text())["config"]["plan"]
    assert len(plan) >= 10
    for key in plan[::2]:  # finished elsewhere
        (tmp_path / "parts").mkdir(exist_ok=True)
        (tmp_path / "parts" / f"{key}.parquet").write_bytes(
            (single.store / "parts" / f"{key}.parquet").read_bytes()
        )
    listings = request.getfixturevalue("parts_listings")  # from here on
    result = sweep(model, directions, _bench(), roles=ROLES, store=tmp_path, **KW)
    assert result.complete
    assert len(listings) == 2, listings
    pd.testing.assert_frame_equal(result.table, single.table)
