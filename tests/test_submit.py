"""``roleprobe submit``: the job graph on submitit's local executor (a killed worker
included), the Slurm scripts it writes (with a stand-in ``sbatch``), its settings and the
sizing of the array; ``roleprobe status``."""

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from roleprobe.app.cli import _minutes, main
from roleprobe.app.pipeline import STAGES, RunConfig, load_config, run_pipeline
from roleprobe.app.status import run_status
from roleprobe.app.submit import (
    PipelineJob,
    SubmitSettings,
    load_submit_settings,
    size_workers,
    submit_run,
)

submitit = pytest.importorskip("submitit")


def _config(model, **kw):
    base = {
        "model": model,
        "device": "cpu",
        "roles": ["lawyer", "nurse", "mathematician"],
        "layers": [1, 2, 3],
        "positions": [-1],
        "questions_per_domain": 8,
        "batch_size": 2,
        "patchscope": False,
    }
    return RunConfig.from_dict({**base, **kw})


def _parts(out):
    folder = Path(out) / "04_sweep" / "store" / "parts"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture(scope="module")
def single(tiny4, tmp_path_factory):
    """One worker's sweep of the same run: the reference for the graph's store."""
    out = tmp_path_factory.mktemp("single")
    run_pipeline(_config(tiny4), out, until="sweep")
    return _parts(out)


def test_the_local_graph_finishes_the_run_when_a_worker_is_killed_mid_batch(
    tiny4, single, tmp_path
):
    """prep, 3 sweep workers (one SIGKILLed while it holds a claim), finish: every stage is
    done, the killed worker's items were taken over, the store equals one worker's byte
    for byte and the job ids are in the run folder."""
    out = tmp_path / "run"
    settings = SubmitSettings(executor="local", workers=3, time_min=10, gpus_per_task=0)
    done: dict[str, object] = {}

    def submit():
        try:
            done["submission"] = submit_run(_config(tiny4), out, settings)
        except BaseException as err:  # reported by the main thread
            done["error"] = err

    thread = threading.Thread(target=submit)
    thread.start()
    claims = out / "04_sweep" / "store" / "claims"
    killed = None
    deadline = time.time() + 240
    while killed is None and thread.is_alive() and time.time() < deadline:
        for path in claims.glob("*.claim") if claims.exists() else []:
            try:
                pid = json.loads(path.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                continue
            killed = (path.stem, pid)
            break
        time.sleep(0.01)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in done, done.get("error")
    assert killed is not None, "no worker was seen holding a claim"
    sub = done["submission"]
    failed = [job for job, res in sub.results.items() if isinstance(res, dict) and "failed" in res]
    assert len(failed) == 1 and failed[0] in sub.sweep  # the killed task
    for stage in STAGES:
        assert (out / stage.name / "done.json").exists(), stage.name
    assert _parts(out) == single
    assert not list(claims.glob("*.claim")) and not list((out / "claims").glob("*.claim"))
    record = json.loads((out / "jobs" / "submission.json").read_text())
    assert record["executor"] == "local" and record["workers"] == 3
    assert record["jobs"]["prep"] == sub.prep and len(record["jobs"]["sweep"]) == 3
    status = "\n".join(run_status(out))
    assert "04_sweep         done" in status and "submitted (local" in status


SBATCH = """#!/bin/sh
# a stand-in for sbatch: keeps the script, answers with the next job id
n=$(cat "$FAKE_SLURM/n" 2>/dev/null || echo 100)
n=$((n + 1))
echo $n > "$FAKE_SLURM/n"
cp "$1" "$FAKE_SLURM/job$n.sh"
echo "Submitted batch job $n"
"""


def test_slurm_gets_three_jobs_with_their_dependencies(tiny4, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(SBATCH)
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for tool in ("sbatch", "srun"):
        (fake / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[run]\nmodel = "{tiny4}"\nroles = ["lawyer", "nurse"]\nlayers = [1, 2]\n'
        "positions = [-1]\nquestions_per_domain = 4\n\n"
        '[submit]\npartition = "gpu"\naccount = "lab"\ntime_min = 90\nworkers = 4\n'
        'slurm_args = {mail_type = "END"}\n'
    )
    out = tmp_path / "run"
    argv = ["submit", "--config", str(toml), "--out", str(out), "--time", "2:00:00"]
    assert main([*argv, "--slurm-arg", "comment=rp"]) == 0
    printed = capsys.readouterr().out
    prep, array, finish = (
        (fake / "job101.sh").read_text(),
        (fake / "job102.sh").read_text(),
        (fake / "job103.sh").read_text(),
    )
    for script in (prep, array, finish):
        assert "#SBATCH --partition=gpu" in script and "#SBATCH --account=lab" in script
        assert "#SBATCH --time=120" in script  # --time overrides the TOML's 90
        assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --mail-type=END" in script
        assert "#SBATCH --comment=rp" in script
    assert "dependency" not in prep
    assert "#SBATCH --array=0-3%4" in array and "#SBATCH --dependency=afterok:101" in array
    assert "#SBATCH --kill-on-invalid-dep=yes" in array
    assert "#SBATCH --dependency=afterany:102" in finish
    assert "squeue -j 101,102,103" in printed and "roleprobe status --out" in printed
    record = json.loads((out / "jobs" / "submission.json").read_text())
    assert record["jobs"] == {
        "prep": "101",
        "sweep": ["102_0", "102_1", "102_2", "102_3"],
        "finish": "103",
    }
    assert json.loads((out / "config.json").read_text())["roles"] == ["lawyer", "nurse"]
    assert not (out / "01_prompts").exists()  # nothing ran here


def test_submit_refuses_bad_settings_before_anything_is_written(tiny4, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["submit", "--preset", "demo", "--model", tiny4, "--out", str(out)]
    with pytest.raises(SystemExit) as usage:
        main([*base, "--executor", "local", "--time", "0"])
    assert usage.value.code == 2 and "at least 1 minute" in capsys.readouterr().err
    assert main([*base, "--slurm-arg", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main([*base, "--roles", "plumber"]) == 1
    assert "plumber" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="unknown submit settings"):
        SubmitSettings.from_dict({"partitoin": "gpu"})
    with pytest.raises(ValueError, match="executor"):
        SubmitSettings(executor="pbs")
    with pytest.raises(ValueError, match="workers must be an integer"):
        SubmitSettings.from_dict({"workers": 1.5})
    with pytest.raises(ValueError, match="utilisation"):
        SubmitSettings.from_dict({"utilisation": 0})


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("90:30", 91), ("2:00:00", 120), ("1-0", 1440), ("1-2:30", 1590), ("0:60", 1)],
)
def test_time_limits_read_as_slurm_writes_them(text, minutes):
    assert _minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "x", "0", "0:30", "1:2:3:4", "a-1", "-5"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        _minutes(text)


def test_the_submit_table_sits_beside_the_run_table(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nroles = ["lawyer"]\n\n[submit]\nworkers = 3\npartition = "a"\n')
    assert load_config("demo", toml).roles == ("lawyer",)
    settings = load_submit_settings(toml, {"partition": "b", "qos": None})
    assert (settings.workers, settings.partition, settings.qos) == (3, "b", "")
    top = tmp_path / "top.toml"
    top.write_text('roles = ["nurse"]\n[submit]\nworkers = 2\n')
    assert load_config("demo", top).roles == ("nurse",)
    assert load_submit_settings(top).workers == 2


def test_the_array_is_sized_from_the_plan(tmp_path):
    config = load_config("demo", overrides={"model": "tiny-random", "layers": [1, 2]})
    asked = size_workers(config, SubmitSettings(workers=5))
    assert asked == (5, "5 workers (asked)")
    one, why = size_workers(config, SubmitSettings(time_min=60))
    assert one == 1 and "GPU-h" in why  # a tiny model's sweep is seconds of GPU time
    # a budget far below the sweep's estimate: as many workers as the estimate needs
    from roleprobe.app.plan import build_plan
    from roleprobe.experiments.gpus import resolve_gpu

    plan = build_plan(config, resolve_gpu("1e9"), 0.4)  # a very slow "GPU"
    hours = plan.gpu_hours(sum(r.flops for r in plan.rows if r.stage == "sweep"))
    many, _ = size_workers(config, SubmitSettings(time_min=1, gpu="1e9"))
    expected = min(plan.sweep.work_items, -(-hours // (1 / 60 * 0.8)))
    assert many == expected and many > 1


def test_status_names_stages_parts_and_claims(tiny4, tmp_path):
    out = tmp_path / "run"
    run_pipeline(_config(tiny4, layers=[1]), out, until="validation")
    lines = run_status(out)
    assert lines[1].startswith("01_prompts       done")
    assert any(line.startswith("04_sweep         not started") for line in lines)
    with pytest.raises(ValueError, match="not a run folder"):
        run_status(tmp_path)


def test_a_job_that_times_out_requeues_itself_with_the_same_arguments():
    """submitit calls ``checkpoint`` on a timeout or preemption signal and requeues what it
    returns: the same job, the same arguments (the pipeline resumes from the folder)."""
    from submitit.helpers import DelayedSubmission

    job = PipelineJob("sweep", threads=2)
    again = job.checkpoint({"model": "m"}, "runs/x", "sweep", False, 16)
    assert isinstance(again, DelayedSubmission) and again.function is job
    assert again.args == ({"model": "m"}, "runs/x", "sweep", False, 16)
    assert again.function.threads == 2


def test_status_command_prints_the_folder(tiny4, tmp_path, capsys):
    out = tmp_path / "run"
    run_pipeline(_config(tiny4, layers=[1]), out, until="prompts")
    capsys.readouterr()
    assert main(["status", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "01_prompts       done" in printed and "02_directions    not started" in printed
    assert main(["status", "--out", str(tmp_path)]) == 1
