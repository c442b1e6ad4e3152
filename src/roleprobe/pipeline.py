"""The numbered pipeline behind ``roleprobe run``: each stage writes its own sub-folder.

::

    <out>/config.json          the run's configuration (a rerun must match it)
    <out>/01_prompts/          the role and generic prompts, split into train and held-out
    <out>/02_means/            float64 mean activations (a RoleDirections, safetensors + JSON)
    <out>/03_directions/       per role, position and layer: norm, cosine to the base mean,
                               held-out AUROC of the role vs generic prompts
    <out>/04_sweep/            the sweep's result store (resumable, shardable)
    <out>/05_selection/        picks by each rule (paper, held-out), with statistics
    <out>/06_evaluation/       the held-out picks on questions selection never saw:
                               per-item runs and the effect table (paired tests)
    <out>/07_report/           figures (HTML), report.html (self-contained) and summary.md

A stage is complete when its ``done.json`` exists (written last, atomically); a rerun
skips complete stages, and the sweep resumes inside its store. With ``shard="i/n"`` the
run stops after its part of the sweep; run again without a shard once every shard is done
(or ``roleprobe merge``) to finish.

Presets (:data:`PRESETS`): ``demo`` (embedded model, built-in data, a small grid; minutes
on two CPU cores), ``paper`` (29 roles, the paper's prompts and questions, every layer and
post-instruction position, α ∈ {1, 3}, ablation, controls; GPU hours) and ``custom``
(the defaults below, to be overridden by a TOML file or flags).
"""

import dataclasses
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

STAGES = (
    "01_prompts",
    "02_means",
    "03_directions",
    "04_sweep",
    "05_selection",
    "06_evaluation",
    "07_report",
)
DONE = "done.json"


@dataclass(frozen=True)
class RunConfig:
    """Everything a run does (validated; loads from TOML, round-trips through dicts).

    Attributes:
        model: a name for :func:`roleprobe.load_model` (embedded, ``tiny-random``, a folder
            or a hub name).
        device: ``auto``, ``cpu``, ``cuda``, ...; dtype: ``float32``, ``bfloat16``, ...
        n_devices: GPUs to split a big hub model over (TransformerLens multi-device).
        roles: the roles (``()``: all 29).
        prompts: ``builtin``, ``paper`` or a folder of prompt files.
        data: the paper's data folder (for ``prompts="paper"`` / ``benchmark="paper"``) or
            the MMLU release folder (``benchmark="mmlu-local"``).
        heldout_fraction: share of every prompt set kept out of the means, for AUROC.
        benchmark: ``builtin``, ``paper``, ``mmlu-local`` or ``mmlu``.
        split: the benchmark split.
        questions_per_domain: keep only the first N questions of each domain (0: all), for
            quick runs.
        layers: candidate layers (``()``: every layer).
        positions: candidate positions (offsets; ``()``: every post-instruction position).
        alphas, ablation, controls, scope: the sweep (see :func:`roleprobe.sweep`).
        rules: selection rules to run; the last one's picks are evaluated in stage 6.
        select_fraction: share of each role's questions used for held-out selection.
        correction: ``holm`` or ``bh``.
        evaluate_all_domains: also apply the picks to every other domain's questions
            (the paper's table; costs forward passes); otherwise stage 6 uses the held-out
            part of the sweep only.
        patchscope: write what the model says a picked direction is (stage 7).
        batch_size: questions and prompts per forward pass.
        seed: seed of every split and control.
    """

    model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "float32"
    n_devices: int = 1
    roles: tuple[str, ...] = ("lawyer", "nurse", "mathematician")
    prompts: str = "builtin"
    data: str = ""
    heldout_fraction: float = 0.25
    benchmark: str = "builtin"
    split: str = "test"
    questions_per_domain: int = 0
    layers: tuple[int, ...] = ()
    positions: tuple[int, ...] = ()
    alphas: tuple[float, ...] = (1.0, 3.0)
    ablation: bool = True
    controls: bool = True
    scope: str = "domain"
    rules: tuple[str, ...] = ("paper", "held-out")
    select_fraction: float = 0.5
    correction: str = "holm"
    evaluate_all_domains: bool = False
    patchscope: bool = True
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        bad = [r for r in self.rules if r not in ("paper", "held-out")]
        if bad or not self.rules:
            raise ValueError(f"unknown rules {bad or '(none)'}; use paper and/or held-out")
        if self.benchmark not in ("builtin", "paper", "mmlu-local", "mmlu"):
            raise ValueError(
                f"unknown benchmark {self.benchmark!r}; use builtin, paper, mmlu-local or mmlu"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> "RunConfig":
        """Build from a mapping; unknown keys are an error naming them and ``where``."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(names)}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            default = names[key].default
            if isinstance(default, tuple):
                if isinstance(value, str | int | float):
                    value = [value]
                if not isinstance(value, list | tuple):
                    raise ValueError(f"{where}: {key} must be a list, got {value!r}")
                value = tuple(value)
            elif isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{where}: {key} must be true or false, got {value!r}")
            values[key] = value
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "roles": ["lawyer", "mathematician"],
        "layers": [8, 16],
        "positions": [-1],
    },
    "paper": {
        "roles": [],
        "prompts": "paper",
        "benchmark": "paper",
        "data": "../shared/data/role-vectors-paper",
        "heldout_fraction": 0.0,
        "evaluate_all_domains": True,
        "batch_size": 32,
    },
    "custom": {},
}


def load_config(
    preset: str | None = None,
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """A preset, then a TOML file, then explicit overrides (later wins).

    Raises:
        ValueError: unknown preset, unreadable or malformed TOML, unknown or bad settings.
    """
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}")
        values |= PRESETS[preset]
    if path is not None:
        file = Path(path)
        try:
            loaded = tomllib.loads(file.read_text())
        except OSError as err:
            raise ValueError(f"cannot read config {file}: {err.strerror or err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config {file} is not valid TOML: {err}") from err
        values |= loaded.get("run", loaded)
    values |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return RunConfig.from_dict(values, where=str(path) if path else "config")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)


class Run:
    """A run folder: its config, its model (loaded on first use) and its stages."""

    def __init__(self, config: RunConfig, out: str | os.PathLike[str]) -> None:
        self.config = config
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "config.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if stored != config.to_dict():
                keys = sorted(
                    k
                    for k in stored.keys() | config.to_dict().keys()
                    if stored.get(k) != config.to_dict().get(k)
                )
                raise ValueError(
                    f"{self.out} holds a run with a different configuration (differs in {keys});"
                    " use a new --out folder"
                )
        else:
            _write_json(path, config.to_dict())
        self._model: Any = None
        self.timings: dict[str, float] = {}

    @property
    def model(self) -> Any:
        """The model, loaded once."""
        if self._model is None:
            from roleprobe.models import load_model

            self._model = load_model(
                self.config.model,
                device=self.config.device,
                dtype=self.config.dtype,
                n_devices=self.config.n_devices,
            )
        return self._model

    def stage(self, name: str) -> Path:
        """A stage's folder (created)."""
        folder = self.out / name
        folder.mkdir(exist_ok=True)
        return folder

    def is_done(self, name: str) -> bool:
        """Whether the stage finished."""
        return (self.out / name / DONE).exists()

    def finish(self, name: str, summary: Mapping[str, Any], seconds: float) -> None:
        """Mark a stage done, with its one-line summary and wall time."""
        _write_json(self.stage(name) / DONE, {"seconds": round(seconds, 1), **summary})
        self.timings[name] = seconds
        logger.info("%s done in %.0fs: %s", name, seconds, _one_line(summary))

    def summary(self, name: str) -> dict[str, Any]:
        """What a finished stage reported."""
        data: dict[str, Any] = json.loads((self.out / name / DONE).read_text())
        return data

    # -- shared inputs -----------------------------------------------------------------
    def roles(self) -> tuple[str, ...]:
        """The run's roles (all 29 when the config lists none)."""
        from roleprobe.roles import ROLES

        return self.config.roles or tuple(role.name for role in ROLES)

    def prompt_sets(self) -> tuple[Any, Any]:
        """(train, held-out) role prompts; held-out is ``None`` when no fraction is kept."""
        from roleprobe.prompts import load_prompts

        cfg = self.config
        prompts = load_prompts(cfg.prompts, list(self.roles()), cfg.data or None)
        if cfg.heldout_fraction == 0:
            return prompts, None
        train, held = prompts.split(cfg.heldout_fraction, cfg.seed)
        return train, held

    def directions(self) -> Any:
        """The directions of stage 2."""
        from roleprobe.directions import RoleDirections

        return RoleDirections.load(self.out / "02_means" / "directions", self.model)

    def benchmark(self) -> Any:
        """The questions."""
        from roleprobe.benchmarks import MultipleChoice, load_benchmark
        from roleprobe.evaluation import subject_domain

        cfg = self.config
        bench = load_benchmark(cfg.benchmark, split=cfg.split, path=cfg.data or None)
        if cfg.questions_per_domain <= 0:
            return bench
        items = bench.items
        domain = items["subject"].map(subject_domain)
        kept = items[items.groupby(domain).cumcount() < cfg.questions_per_domain]
        return MultipleChoice(kept, f"{bench.name}[{cfg.questions_per_domain}/domain]", bench.split)


def _one_line(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list))


def stage_prompts(run: Run) -> dict[str, Any]:
    """Stage 1: the prompts, as used (train and held-out), with their hashes."""
    train, held = run.prompt_sets()
    folder = run.stage("01_prompts")
    for label, prompts in (("train", train), ("heldout", held)):
        if prompts is None:
            continue
        data = {role: list(prompts.roles[role].instructions) for role in prompts.role_names}
        data["base"] = list(prompts.base.instructions)
        _write_json(folder / f"{label}.json", {"hashes": prompts.hashes(), "prompts": data})
    return {
        "roles": len(train.role_names),
        "train_prompts": sum(len(train.roles[r].instructions) for r in train.role_names),
        "heldout_prompts": 0
        if held is None
        else sum(len(held.roles[r].instructions) for r in held.role_names),
    }


def stage_means(run: Run) -> dict[str, Any]:
    """Stage 2: float64 mean activations at every layer and candidate position."""
    from roleprobe.directions import compute_directions

    cfg = run.config
    train, _ = run.prompt_sets()
    rd = compute_directions(
        run.model,
        source=train,
        positions=list(cfg.positions) or "post_instruction",
        layers=list(cfg.layers) or None,
        batch_size=cfg.batch_size,
    )
    rd.save(run.stage("02_means") / "directions")
    return {"roles": len(rd.roles), "layers": len(rd.layers), "positions": len(rd.positions)}


def stage_directions(run: Run) -> dict[str, Any]:
    """Stage 3: per role, position and layer: norm, base cosine and held-out AUROC."""
    from roleprobe.validation import separation_auroc

    rd = run.directions()
    table = rd.to_dataframe()
    _, held = run.prompt_sets()
    if held is not None:
        auc = separation_auroc(run.model, rd, held, batch_size=run.config.batch_size)
        table["auroc"] = auc.flatten().tolist()
    _write_csv(run.stage("03_directions") / "directions.csv", table)
    out: dict[str, Any] = {"rows": len(table)}
    if held is not None:
        by_layer = table.groupby("layer")["auroc"].median()
        out["median_auroc_by_layer"] = {int(k): round(float(v), 3) for k, v in by_layer.items()}
    return out


def stage_sweep(run: Run, shard: str | None = None) -> dict[str, Any]:
    """Stage 4: the sweep (resumes; with a shard, only that part)."""
    from roleprobe.sweeps import sweep

    cfg = run.config
    rd = run.directions()
    result = sweep(
        run.model,
        rd,
        run.benchmark(),
        roles=list(run.roles()),
        alphas=cfg.alphas,
        ablation=cfg.ablation,
        controls=cfg.controls,
        store=run.stage("04_sweep") / "store",
        shard=shard,
        scope=cfg.scope,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    return {"complete": result.complete, "missing": len(result.missing), "rows": len(result.table)}


def stage_selection(run: Run) -> dict[str, Any]:
    """Stage 5: picks by each rule, with statistics."""
    from roleprobe.selection import select
    from roleprobe.sweeps import merge

    cfg = run.config
    result = merge(run.out / "04_sweep" / "store")
    folder = run.stage("05_selection")
    out: dict[str, Any] = {}
    for rule in cfg.rules:
        picks = select(
            result,
            rule=rule,
            select_fraction=cfg.select_fraction,
            seed=cfg.seed,
            correction=cfg.correction,
        )
        _write_csv(folder / f"picks_{rule}.csv", picks)
        passed = picks.groupby("source")["passed"].mean()
        out[f"{rule}_passed"] = {k: round(float(v), 3) for k, v in passed.items()}
    return out


def stage_evaluation(run: Run) -> dict[str, Any]:
    """Stage 6: the last rule's picks on questions selection never saw."""
    from roleprobe.benchmarks import MultipleChoice
    from roleprobe.evaluation import evaluate
    from roleprobe.selection import evaluate_picks, split_ids
    from roleprobe.sweeps import merge
    from roleprobe.tables import effect_table

    cfg = run.config
    result = merge(run.out / "04_sweep" / "store")
    rule = cfg.rules[-1]
    picks = pd.read_csv(run.out / "05_selection" / f"picks_{rule}.csv", keep_default_na=False)
    picks["alpha"] = picks["alpha"].astype(float)
    picks = picks[picks["source"] == "role"]
    runs, bases = [], []
    for role in run.roles():
        ids = result.role_items(role)
        items = result.baseline[result.baseline["id"].isin(ids)].drop_duplicates("id")
        report = ids if rule == "paper" else split_ids(items, cfg.select_fraction, cfg.seed)[1]
        t = result.table
        mine = picks[picks["role"] == role]
        lowest = mine["alpha"].min()
        for _, pick in mine.iterrows():
            cell = t[(t["role"] == role) & (t["source"] == "role")]
            cell = cell[
                (cell["layer"] == int(pick["layer"])) & (cell["position"] == int(pick["position"]))
            ]
            add = cell[(cell["condition"] == "addition") & (cell["alpha"] == pick["alpha"])]
            runs.append(add[add["id"].isin(report)])
            if pick["alpha"] == lowest and cfg.ablation:
                abl = cell[cell["condition"] == "ablation"]
                runs.append(abl[abl["id"].isin(report)])
        base = result.baseline[result.baseline["id"].isin(report)]
        bases.append(base[base["group"] == result.role_group(role)])
    own = pd.concat(runs, ignore_index=True)
    base = pd.concat(bases, ignore_index=True).drop_duplicates("id")
    if cfg.evaluate_all_domains:
        bench = run.benchmark()
        seen = set(result.baseline["id"])
        other = MultipleChoice(bench.items[~bench.items["id"].isin(seen)], f"{bench.name}-unseen")
        if len(other):
            rd = run.directions()
            more = evaluate_picks(run.model, rd, other, picks, batch_size=cfg.batch_size)
            own = pd.concat([own, more], ignore_index=True)
            base = pd.concat([base, evaluate(run.model, other, batch_size=cfg.batch_size)])
    folder = run.stage("06_evaluation")
    own.to_parquet(folder / "runs.parquet", index=False)
    base.to_parquet(folder / "baseline.parquet", index=False)
    effects = effect_table(
        base, own[["role", "condition", "alpha", "id", "correct", "logprob_correct"]]
    )
    _write_csv(folder / "effects.csv", effects)
    return {
        "rule": rule,
        "cells": len(effects),
        "significant_accuracy": int((effects["mcnemar_p_adj"] < 0.05).sum()),
        "significant_logprob": int((effects["logprob_p"] < 0.05).sum()),
    }


StageFn = Callable[[Run], dict[str, Any]]


def stage_report(run: Run) -> dict[str, Any]:
    """Stage 7: figures, a self-contained report.html and summary.md."""
    from roleprobe.report import write_report

    return write_report(run)


def run_pipeline(
    config: RunConfig,
    out: str | os.PathLike[str],
    shard: str | None = None,
    until: str | None = None,
    resume: bool = True,
) -> Run:
    """Run (or resume) every stage in order; stop after ``until`` or after a shard's sweep.

    ``resume=False`` refuses a folder that already holds finished stages.

    Returns:
        The :class:`Run` (its ``timings`` hold the seconds of the stages run now).
    """
    if until is not None and until not in STAGES and until not in _ALIASES:
        raise ValueError(f"unknown stage {until!r}; use one of {list(_ALIASES)} or {list(STAGES)}")
    last = _ALIASES.get(until or "", until) or STAGES[-1]
    run = Run(config, out)
    finished = [name for name in STAGES if run.is_done(name)]
    if finished and not resume:
        raise ValueError(
            f"{run.out} already holds finished stages {finished}; drop --no-resume to "
            "continue it, or choose a new --out folder"
        )
    steps: list[tuple[str, StageFn]] = [
        ("01_prompts", stage_prompts),
        ("02_means", stage_means),
        ("03_directions", stage_directions),
        ("04_sweep", lambda r: stage_sweep(r, shard)),
        ("05_selection", stage_selection),
        ("06_evaluation", stage_evaluation),
        ("07_report", stage_report),
    ]
    for name, fn in steps:
        if run.is_done(name):
            logger.info("%s already done; skipped", name)
        else:
            start = time.perf_counter()
            summary = fn(run)
            if name == "04_sweep" and not summary["complete"]:
                logger.info(
                    "shard %s finished; %d parts of the sweep are still missing: run again "
                    "without --shard once every shard is done",
                    shard,
                    summary["missing"],
                )
                return run
            run.finish(name, summary, time.perf_counter() - start)
        if name == last:
            break
    return run


_ALIASES = {
    "prompts": "01_prompts",
    "means": "02_means",
    "directions": "03_directions",
    "sweep": "04_sweep",
    "selection": "05_selection",
    "evaluation": "06_evaluation",
    "report": "07_report",
}
