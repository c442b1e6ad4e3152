"""The numbered pipeline behind ``roleprobe run``: each stage writes its own sub-folder.

::

    <out>/config.json          the run's configuration (a rerun must match it)
    <out>/01_prompts/          the role and generic prompts, split into train and held-out
    <out>/02_means/            float64 mean activations (a RoleDirections, safetensors + JSON)
    <out>/03_directions/       per role, position and layer: norm, cosine to the base mean,
                               held-out AUROC of the role vs generic prompts
    <out>/04_sweep/            the sweep's result store (resumable, shardable)
    <out>/05_selection/        picks by each rule (paper, held-out), with statistics
    <out>/06_evaluation/       every role's pick on every domain (own domain: only the
                               questions selection never saw): per-item runs and the
                               effect table (paired tests), with each cell's ``part``
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
CHOICES: dict[str, tuple[str, ...]] = {
    "benchmark": ("builtin", "paper", "mmlu-local", "mmlu"),
    "scope": ("domain", "all"),
    "correction": ("holm", "bh"),
    "prompt_revision": ("final", "v1"),
    "patchscope_mode": ("placeholder", "paper"),
    "ablation_at": ("stream", "paper"),
    "tie_rule": ("fractional", "paper", "first"),
}
"""Settings that take one of a few values (kept equal to the library's constants by the
tests: ``prompts.PAPER_REVISIONS``, ``readouts.PATCHSCOPE_MODES``, ...). A new such
setting needs a field and one entry here."""


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
        prompt_revision: which of the paper's two published role prompt sets
            (``prompts="paper"``): ``final`` (the official repository; default) or ``v1``
            (the first pipeline's, which ran the experiments; the paper preset). Recorded
            in the prompts' source, hence in the directions and the sweep manifest.
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
        evaluate_all_domains: stage 6 applies every role's pick to every domain of the
            benchmark (the paper's table); otherwise to every domain the sweep covered.
            Either way a role's own domain is read only on the questions selection did not
            see (the whole own domain for ``rule="paper"``, marked ``selected``).
        patchscope: write what the model says a picked direction is (stage 7).
        patchscope_mode: ``placeholder`` (add at the placeholder's tokens; default) or
            ``paper`` (add at every position, 512 new tokens, as the authors; the paper
            preset). See :func:`roleprobe.patchscope`.
        system: the system-turn policy of every prompt and question: ``default`` (the
            template's own, date pinned), ``none`` (no system turn: the paper's format; the
            paper preset) or a system prompt text. See :mod:`roleprobe.system_turn`.
        ablation_at: where the ablation sits on models with post-norms (Gemma-2/3):
            ``stream`` (after them, default) or ``paper`` (before them, as the authors'
            hooks; the paper preset). See :class:`roleprobe.Ablation`.
        tie_rule: how a tie at the top of the letter logits scores: ``fractional``
            (1/k credit, default), ``paper`` (correct if the correct letter is among the
            tied, as the authors; the paper preset) or ``first``.
        batch_size: questions and prompts per forward pass.
        seed: seed of every split and control.
    """

    model: str = "smollm2-135m-instruct"
    device: str = "auto"
    dtype: str = "float32"
    n_devices: int = 1
    roles: tuple[str, ...] = ("lawyer", "nurse", "mathematician")
    prompts: str = "builtin"
    prompt_revision: str = "final"
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
    patchscope_mode: str = "placeholder"
    system: str = "default"
    ablation_at: str = "stream"
    tie_rule: str = "fractional"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        from roleprobe.selection import RULES

        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            raise ValueError(f"unknown rules {bad or '(none)'}; use some of {list(RULES)}")
        if not isinstance(self.system, str) or not self.system.strip():
            raise ValueError(
                f"system must be 'default', 'none' or a system prompt text, got {self.system!r}"
            )
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {list(allowed)}")
        if self.prompt_revision != "final" and self.prompts == "builtin":
            raise ValueError(
                f"prompt_revision={self.prompt_revision!r} needs the paper's prompts "
                "(prompts = 'paper' or the paper's data folder), not the built-in ones"
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
        "prompt_revision": "v1",
        "system": "none",
        "ablation_at": "paper",
        "tie_rule": "paper",
        "heldout_fraction": 0.0,
        "evaluate_all_domains": True,
        "patchscope_mode": "paper",
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
            # settings added after the run was started read as their defaults (the
            # behaviour the run had)
            stored = {**RunConfig().to_dict(), **json.loads(path.read_text())}
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
        revision = None if cfg.prompt_revision == "final" else cfg.prompt_revision
        prompts = load_prompts(cfg.prompts, list(self.roles()), cfg.data or None, revision)
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
        _write_json(
            folder / f"{label}.json",
            {"source": prompts.source, "hashes": prompts.hashes(), "prompts": data},
        )
    return {
        "source": train.source,
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
        system=cfg.system,
    )
    rd.save(run.stage("02_means") / "directions")
    return {
        "roles": len(rd.roles),
        "layers": len(rd.layers),
        "positions": len(rd.positions),
        "source": rd.source,
        "system": rd.system,
        "chat_format": rd.chat_format,
    }


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
        tie_rule=cfg.tie_rule,
        ablation_at=cfg.ablation_at,
        system=cfg.system,
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
    """Stage 6: the last rule's picks on every domain (:func:`roleprobe.picks.apply_picks`).

    A role's own-domain cells read only the questions its selection did not see (held-out
    rules) or, for ``rule="paper"``, the very questions it was picked on (marked
    ``selected``); other domains are read in full. ``effects.csv`` has a ``part`` column
    (``heldout``, ``selected``, ``other``) saying which.
    """
    from roleprobe.benchmarks import MultipleChoice
    from roleprobe.evaluation import evaluate
    from roleprobe.picks import apply_picks
    from roleprobe.selection import split_ids
    from roleprobe.sweeps import merge
    from roleprobe.tables import RUN_COLUMNS, effect_table

    cfg = run.config
    result = merge(run.out / "04_sweep" / "store")
    rule = cfg.rules[-1]
    picks = pd.read_csv(run.out / "05_selection" / f"picks_{rule}.csv", keep_default_na=False)
    picks["alpha"] = picks["alpha"].astype(float)
    bench = run.benchmark()
    if not cfg.evaluate_all_domains:
        swept = bench.items["id"].isin(set(result.baseline["id"]))
        bench = MultipleChoice(bench.items[swept], f"{bench.name}[swept]", bench.split)
    heldout: dict[str, list[Any]] | None = None
    if rule == "held-out":  # the same split as stage 5's selection
        heldout = {}
        for role in run.roles():
            ids = result.role_items(role)
            items = result.baseline[result.baseline["id"].isin(ids)].drop_duplicates("id")
            heldout[role] = split_ids(items, cfg.select_fraction, cfg.seed)[1]
    runs = apply_picks(
        run.model,
        run.directions(),
        bench,
        picks,
        heldout_ids=heldout,
        alphas=cfg.alphas,
        ablation=cfg.ablation,
        scope=cfg.scope,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        ablation_at=cfg.ablation_at,
        tie_rule=cfg.tie_rule,
        system=cfg.system,
    )
    used = bench.items[bench.items["id"].isin(set(runs["id"]))]
    base = evaluate(
        run.model,
        MultipleChoice(used, bench.name, bench.split),
        None,
        cfg.batch_size,
        tie_rule=cfg.tie_rule,
        system=cfg.system,
    )
    folder = run.stage("06_evaluation")
    runs.to_parquet(folder / "runs.parquet", index=False)
    base.to_parquet(folder / "baseline.parquet", index=False)
    effects = effect_table(base, runs[list(RUN_COLUMNS)])
    parts = runs.drop_duplicates(["role", "domain"]).set_index(["role", "domain"])["part"]
    effects["part"] = [
        parts[(r, d)] for r, d in zip(effects["role"], effects["domain"], strict=True)
    ]
    _write_csv(folder / "effects.csv", effects)
    return {
        "rule": rule,
        "cells": len(effects),
        "domains": int(effects["domain"].nunique()),
        "parts": {k: int(v) for k, v in effects["part"].value_counts().items()},
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
