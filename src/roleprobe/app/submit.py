"""``roleprobe submit``: a whole run as three jobs on Slurm (or on this machine), via submitit.

The job graph, submitted in one call (:func:`submit_run`)::

    prep     stages 1-3 (prompts, directions, validation)          one job
    sweep    stage 4, ``workers`` tasks on one store                a job array, after prep
                                                                    succeeded (afterok)
    finish   the sweep's leftovers, then stages 5-8                 one job, after every
                                                                    array task ended (afterany)

Each job is :func:`~roleprobe.app.pipeline.run_pipeline` on the run folder, so everything
the pipeline guarantees holds: the sweep's items are split between the array's tasks by
claims (a killed task's items are taken over, see :mod:`roleprobe.experiments.claims`),
a rerun resumes, the merged store equals one worker's. The finish job depends on the array
with ``afterany``, not ``afterok``: a task that died leaves items behind, and the finish
job (it holds a GPU too) computes them before stages 5-8, taking over their claims at once
(the task's Slurm job has ended). A job that times out or is preempted is checkpointed and
requeued by submitit (``max_requeues`` times); it resumes where it stopped.

``executor="local"`` runs the same graph on this machine with submitit's local executor,
one job after the other (the array's tasks at once); that is how the graph is tested.
Without ``workers``, the array is sized from :func:`~roleprobe.experiments.cost.plan_run`'s
estimate of the sweep's GPU-hours (at ``utilisation`` of ``gpu``'s peak): enough tasks that
each needs at most 80 % of ``time_min``.

The job ids, the executor's folder and how to follow the jobs are written to
``<out>/jobs/submission.json`` (:attr:`~roleprobe.app.run.RunPaths.submission`).

Example:
    >>> sub = submit_run(load_config("paper", overrides={"model": "google/gemma-2-9b-it"}),
    ...                  "runs/gemma9", SubmitSettings(partition="gpu", time_min=720))
    >>> print("\\n".join(sub.follow()))
"""

import dataclasses
import logging
import math
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roleprobe.app.inputs import preflight
from roleprobe.app.run import SWEEP, VALIDATION, Run, RunPaths
from roleprobe.app.run_config import RunConfig
from roleprobe.core.io import write_json

logger = logging.getLogger(__name__)

__all__ = [
    "EXECUTORS",
    "PipelineJob",
    "Submission",
    "SubmitSettings",
    "load_submit_settings",
    "size_workers",
    "submit_run",
]

EXECUTORS = ("slurm", "local")
TIME_SHARE = 0.8
"""A sized array gives each task at most this share of ``time_min`` of sweep work."""


@dataclass(frozen=True)
class SubmitSettings:
    """Where and how the jobs of :func:`submit_run` run (the ``[submit]`` table of a run's
    TOML, or ``roleprobe submit``'s flags).

    Attributes:
        executor: ``slurm`` or ``local`` (this machine, submitit's local executor).
        workers: tasks of the sweep's array (``0``: sized from the plan's estimate).
        partition, account, qos, constraint: Slurm's (empty: the site's default).
        gpus_per_task, cpus_per_task, mem_gb: resources of every job (``mem_gb = 0``: the
            partition's default).
        time_min: each job's time limit in minutes.
        max_requeues: how often a job that timed out or was preempted is requeued.
        gpu, utilisation: what the plan prices the sweep at when sizing the array.
        slurm_args: further ``sbatch`` options, e.g. ``{"mail_type": "END"}``.
    """

    executor: str = "slurm"
    workers: int = 0
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 0
    time_min: int = 720
    max_requeues: int = 3
    gpu: str = "h100"
    utilisation: float = 0.4
    slurm_args: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_types({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; use one of {EXECUTORS}")
        for name in ("workers", "gpus_per_task", "mem_gb", "max_requeues"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"submit setting {name} must be 0 or more, got {getattr(self, name)}"
                )
        for name in ("cpus_per_task", "time_min"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"submit setting {name} must be at least 1, got {getattr(self, name)}"
                )
        u = self.utilisation
        if not 0 < u <= 1:
            raise ValueError(f"submit setting utilisation must be in (0, 1], got {u!r}")
        if not isinstance(self.slurm_args, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in self.slurm_args.items()
        ):
            raise ValueError(
                f"submit setting slurm_args must map sbatch option names to values, "
                f"got {self.slurm_args!r}"
            )
        object.__setattr__(
            self, "slurm_args", {k: str(v) for k, v in dict(self.slurm_args).items()}
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "submit") -> "SubmitSettings":
        """Settings from a mapping (unknown keys refused, naming ``where``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown submit settings {unknown}; use {sorted(known)}")
        try:
            return cls(**_check_types(data))  # checked before the constructor's own checks
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def _check_types(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with integers widened where a float is expected; a submit setting of the
    wrong type refused, naming it (``ValueError``)."""
    kinds = {f.name: f.type for f in dataclasses.fields(SubmitSettings)}
    out = dict(values)
    for name, value in values.items():
        kind = kinds.get(name)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"submit setting {name} must be an integer, got {value!r}")
        if kind is str and not isinstance(value, str):
            raise ValueError(f"submit setting {name} must be a string, got {value!r}")
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"submit setting {name} must be a number, got {value!r}")
            out[name] = float(value)
    return out


def load_submit_settings(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> SubmitSettings:
    """The ``[submit]`` table of a run's TOML file (if any), then ``overrides`` (``None``
    values ignored; ``slurm_args`` add to the table's)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"cannot read config {path}: {err}") from None
        table = loaded.get("submit", {})
        if not isinstance(table, dict):
            raise ValueError(f"{path}: submit must be a [submit] table, got {table!r}")
        values |= table
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(values.get("slurm_args"), dict) and isinstance(given.get("slurm_args"), dict):
        given["slurm_args"] = {**values["slurm_args"], **given["slurm_args"]}  # flags add
    values |= given
    return SubmitSettings.from_dict(values, str(path) if path is not None else "submit")


def size_workers(config: RunConfig, settings: SubmitSettings) -> tuple[int, str]:
    """Tasks for the sweep's array, and one line saying why.

    ``settings.workers`` when set; otherwise the plan's sweep GPU-hours at
    ``settings.utilisation`` of ``settings.gpu``'s peak, divided by
    :data:`TIME_SHARE` of the time limit (at least 1, at most the sweep's work items).

    Raises:
        ValueError: no ``workers`` and the plan cannot be made here (e.g. the model's config
            is not in the local cache): the message says to pass ``--workers``.
    """
    if settings.workers:
        return settings.workers, f"{settings.workers} workers (asked)"
    from roleprobe.app.plan import build_plan
    from roleprobe.experiments.gpus import resolve_gpu

    try:
        plan = build_plan(config, resolve_gpu(settings.gpu), settings.utilisation)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"cannot size the sweep's array from the plan ({err}); pass --workers N"
        ) from None
    flops = sum(r.flops for r in plan.rows if r.stage == "sweep")
    hours = plan.gpu_hours(flops)
    per_task = settings.time_min / 60 * TIME_SHARE
    workers = max(1, min(plan.sweep.work_items, math.ceil(hours / per_task)))
    why = (
        f"{workers} workers: the sweep is ~{hours:.2f} GPU-h at {settings.utilisation:.0%} of "
        f"{plan.gpu.name} peak ({plan.sweep.work_items:,} work items), at most "
        f"{per_task:.1f} h each ({TIME_SHARE:.0%} of the {settings.time_min} min limit)"
    )
    return workers, why


class PipelineJob:
    """One job of the graph: :func:`~roleprobe.app.pipeline.run_pipeline` on the run folder.

    Picklable (submitit sends it to the job); :meth:`checkpoint` makes a job that timed out
    or was preempted requeue itself with the same arguments (the pipeline resumes).

    Args:
        name: ``prep``, ``sweep`` or ``finish`` (for the logs).
        threads: torch's CPU threads in the job (``None``: torch's default, which under
            Slurm follows ``--cpus-per-task``); the local executor's concurrent sweep tasks
            share this machine's cores instead of oversubscribing them.
    """

    def __init__(self, name: str, threads: int | None = None) -> None:
        self.name = name
        self.threads = threads

    def __call__(
        self,
        config: Mapping[str, Any],
        out: str,
        until: str | None,
        wait: bool,
        workers: int | None,
    ) -> dict[str, Any]:
        """Run the pipeline; returns ``{"pending": ..., "finished": [stage, ...]}``."""
        from roleprobe.app.pipeline import run_pipeline
        from roleprobe.core.progress import set_progress

        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        set_progress(False)  # a job's log is a file: plain log lines, no bars
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        run = run_pipeline(
            RunConfig.from_dict(config), out, until=until, wait=wait, workers=workers
        )
        if run.pending:
            logger.info("%s job: %s", self.name, run.pending)
        return {"pending": run.pending, "finished": [s.name for s in run.finished()]}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same job again (submitit requeues it)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@dataclass
class Submission:
    """What :func:`submit_run` submitted.

    Attributes:
        executor: ``slurm`` or ``local``.
        out: the run folder; folder: the executor's folder (job scripts, logs, results).
        prep, finish: job ids; sweep: the array's task ids (``<array>_<i>`` on Slurm).
        workers, sizing: the array's size and why.
        results: per job id, what the job returned (local executor only).
    """

    executor: str
    out: Path
    folder: Path
    prep: str
    sweep: list[str]
    finish: str
    workers: int
    sizing: str
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def array(self) -> str:
        """The sweep's array job id."""
        return self.sweep[0].split("_")[0] if self.sweep else ""

    def follow(self) -> list[str]:
        """Lines saying what was submitted and how to follow it."""
        after = "ran" if self.executor == "local" else "submitted"
        lines = [
            f"{after} with the {self.executor} executor ({self.sizing}):",
            f"  stages 1-3   job {self.prep}",
            f"  sweep        array {self.array}: {len(self.sweep)} tasks, after {self.prep} "
            "succeeds",
            f"  stages 5-8   job {self.finish}, after every task of {self.array} ends",
        ]
        if self.executor == "slurm":
            ids = ",".join([self.prep, self.array, self.finish])
            lines += [
                f"follow: squeue -j {ids}   (after: sacct -j {ids})",
            ]
        lines += [
            f"progress: roleprobe status --out {self.out}",
            f"logs: {self.folder}/<job id>_0_log.out and .err",
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what ``submission.json`` holds)."""
        return {
            "executor": self.executor,
            "out": str(self.out),
            "folder": str(self.folder),
            "jobs": {"prep": self.prep, "sweep": self.sweep, "finish": self.finish},
            "array": self.array,
            "workers": self.workers,
            "sizing": self.sizing,
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "follow": self.follow(),
            **({"results": self.results} if self.results else {}),
        }


def _executor(settings: SubmitSettings, folder: Path) -> Any:
    try:
        import submitit
    except ImportError:
        raise ValueError(
            "roleprobe submit needs submitit: pip install 'roleprobe[slurm]' (or use the "
            "manual --shard array described in the README)"
        ) from None
    executor = submitit.AutoExecutor(
        folder=folder, cluster=settings.executor, slurm_max_num_timeout=settings.max_requeues
    )
    params: dict[str, Any] = {
        "timeout_min": settings.time_min,
        "gpus_per_node": settings.gpus_per_task,
        "cpus_per_task": settings.cpus_per_task,
        "tasks_per_node": 1,
        "nodes": 1,
        "name": "roleprobe",
    }
    if settings.mem_gb:
        params["mem_gb"] = settings.mem_gb
    for name in ("partition", "account", "qos", "constraint"):
        if getattr(settings, name):
            params[f"slurm_{name}"] = getattr(settings, name)
    executor.update_parameters(**params)
    return executor


def _depends(executor: Any, settings: SubmitSettings, dependency: str | None) -> None:
    """Set the next submission's Slurm dependency (no-op for the local executor)."""
    if settings.executor != "slurm":
        return
    extra = dict(settings.slurm_args)
    if dependency:
        extra |= {"dependency": dependency, "kill_on_invalid_dep": "yes"}
    executor.update_parameters(slurm_additional_parameters=extra)


def submit_run(
    config: RunConfig, out: str | os.PathLike[str], settings: SubmitSettings
) -> Submission:
    """Submit a whole run as the job graph of the module docstring.

    The run is checked first (:func:`~roleprobe.app.inputs.preflight`, as ``roleprobe
    run`` does; the device is checked by the jobs, where it exists) and its folder opened
    (a rerun into a folder of another config is refused as ``run`` refuses it).

    Returns:
        The :class:`Submission` (Slurm: at once; local: once every job has ended).

    Raises:
        ValueError: a bad setting (named), submitit missing, or (local) a job that failed
            (the prep job, or the finish job: the sweep's tasks may fail, the finish job
            completes their work).
    """
    preflight(config, out, None, device_here=settings.executor == "local")
    workers, sizing = size_workers(config, settings)
    run = Run(config, out)
    paths = RunPaths(run.out)
    folder = paths.jobs
    executor = _executor(settings, folder)
    data = config.to_dict()
    local = settings.executor == "local"
    cores = os.cpu_count() or 1
    prep_job = PipelineJob("prep")
    sweep_job = PipelineJob("sweep", max(1, cores // workers) if local else None)
    finish_job = PipelineJob("finish")
    results: dict[str, Any] = {}

    _depends(executor, settings, None)
    prep = executor.submit(prep_job, data, str(run.out), VALIDATION.key, False, workers)
    logger.info("submitted stages 1-3: job %s", prep.job_id)
    if local:
        results[prep.job_id] = _result(prep, "prep (stages 1-3)")
    _depends(executor, settings, f"afterok:{prep.job_id}")
    executor.update_parameters(slurm_array_parallelism=workers)
    tasks = executor.map_array(
        sweep_job,
        [data] * workers,
        [str(run.out)] * workers,
        [SWEEP.key] * workers,
        [False] * workers,
        [workers] * workers,
    )
    array = tasks[0].job_id.split("_")[0] if tasks else ""
    logger.info("submitted the sweep: array %s, %d tasks", array, len(tasks))
    if local:
        for task in tasks:
            try:
                results[task.job_id] = task.result()
            except Exception as err:  # the finish job completes a failed task's items
                logger.warning(
                    "sweep task %s failed (%s); the finish job takes over",
                    task.job_id,
                    _first_line(err),
                )
                results[task.job_id] = {"failed": _first_line(err)}
    _depends(executor, settings, f"afterany:{array}")
    finish = executor.submit(finish_job, data, str(run.out), None, True, workers)
    logger.info("submitted stages 5-8: job %s", finish.job_id)
    if local:
        results[finish.job_id] = _result(finish, "finish (stages 5-8)")
    submission = Submission(
        executor=settings.executor,
        out=run.out,
        folder=folder,
        prep=str(prep.job_id),
        sweep=[str(t.job_id) for t in tasks],
        finish=str(finish.job_id),
        workers=workers,
        sizing=sizing,
        results=results,
    )
    write_json(paths.submission, submission.to_dict())
    return submission


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # submitit's FailedJobError holds the job's traceback: its last line is the error
    return lines[-1] if lines else type(err).__name__


def _result(job: Any, what: str) -> Any:
    try:
        return job.result()
    except Exception as err:
        raise ValueError(f"the {what} job {job.job_id} failed: {_first_line(err)}") from None
