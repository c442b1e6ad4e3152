"""The numbered pipeline behind ``roleprobe run``: each stage writes its own sub-folder.

::

    <out>/config.json          the run's configuration (a rerun must match it)
    <out>/01_prompts/          the role and generic prompts, split into train and held-out
                               (train.json, heldout.json)
    <out>/02_directions/       float64 mean activations and the role directions
                               (directions/: a RoleDirections, safetensors + JSON)
    <out>/03_validation/       validation.csv: per role, position and layer the norm, cosine
                               to the base mean and held-out AUROC of role vs generic prompts
    <out>/04_sweep/            store/: the sweep's result store (resumable, shardable);
                               scores.csv (per candidate) and baseline.csv once complete
    <out>/05_selection/        picks_<rule>.csv: picks by each rule (paper, held-out), with
                               statistics
    <out>/06_evaluation/       each of ``evaluate_rules``' picks on every domain (own
                               domain: the questions held-out selection never saw, or
                               for the paper's rule the ones it picked on):
                               runs_<rule>.parquet, effects_<rule>.csv (paired tests,
                               ``part``) and baseline.parquet
    <out>/07_readouts/         what the model says each picked direction is:
                               patchscope.csv and logit_lens.csv
    <out>/08_report/           figures/ (HTML), report.html (self-contained) and summary.md
    <out>/claims/              which worker is making a stage now (empty between runs)
    <out>/jobs/                roleprobe submit's jobs: submission.json, scripts, logs

The stages, their order and every file name are declared once, in :mod:`roleprobe.app.run`
(:data:`~roleprobe.app.run.STAGES`, :class:`~roleprobe.app.run.RunPaths`); this module holds what
each stage computes (:data:`STEPS`) and the loop that runs them. Stages 2, 3, 4, 6 and 7
run the model; the report (stage 8, :mod:`roleprobe.app.report`) only renders what they wrote.

A stage is complete when its ``done.json`` exists (written last, atomically); a rerun
skips complete stages, and the sweep resumes inside its store. With ``shard="i/n"`` the
run stops after its part of the sweep; run again without a shard once every shard is done
(or ``roleprobe merge``) to finish. ``until`` takes a stage's folder name, its key
(``directions``) or an earlier name (``means``, ``02_means``, ``03_directions``,
``07_report``).

Presets (:data:`PRESETS`, in :mod:`roleprobe.app.run_config`): ``demo``, ``paper`` and
``custom``.
"""

import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from roleprobe.app.inputs import check_model_fit, preflight, run_benchmark, run_prompts
from roleprobe.app.run import (
    DIRECTIONS,
    EVALUATION,
    PROMPTS,
    READOUTS,
    REPORT,
    SELECTION,
    STAGES,
    SWEEP,
    VALIDATION,
    Run,
    Stage,
    stage_named,
)
from roleprobe.app.run_config import CHOICES, PRESETS, RunConfig, load_config
from roleprobe.core.io import remove_stale_temporaries, write_csv, write_json, write_parquet
from roleprobe.experiments.claims import heartbeat_interval

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.core.types import Model
    from roleprobe.data.benchmarks import MultipleChoice
    from roleprobe.data.prompts import RolePrompts
    from roleprobe.vectors.directions import RoleDirections

__all__ = [
    "CHOICES",
    "PRESETS",
    "STAGES",
    "STEPS",
    "Context",
    "Run",
    "RunConfig",
    "load_config",
    "rerun_stage",
    "run_pipeline",
]

logger = logging.getLogger(__name__)


class Context:
    """What the stages of one invocation share: the run folder, the model (loaded on
    first use) and the run's inputs.

    Args:
        run: the run folder.
        shard: ``"i/n"``: the sweep does only that part.
        wait: wait for other workers' sweep items and stages instead of stopping.
        workers: how many workers share the sweep (its units' size; ``None``: the Slurm
            array's task count, else 1).
    """

    def __init__(
        self, run: Run, shard: str | None = None, wait: bool = False, workers: int | None = None
    ) -> None:
        self.run = run
        self.config: RunConfig = run.config
        self.shard = shard
        self.wait = wait
        self.workers = workers
        self._model: Model | None = None

    @property
    def model(self) -> "Model":
        """The model, loaded once."""
        if self._model is None:
            from roleprobe.model.models import load_model

            cfg = self.config
            model = load_model(
                cfg.model,
                device=cfg.device,
                dtype=cfg.dtype,
                n_devices=cfg.n_devices,
                revision=cfg.model_revision or None,
                trust_remote_code=cfg.trust_remote_code,
                device_map=cfg.device_map or None,
            )
            check_model_fit(cfg, model)
            self._model = model
        return self._model

    def prompt_sets(self) -> "tuple[RolePrompts, RolePrompts | None]":
        """(train, held-out) role prompts; held-out is ``None`` when no fraction is kept."""
        return run_prompts(self.config)

    def directions(self) -> "RoleDirections":
        """The directions of stage 2, checked against the model."""
        from roleprobe.vectors.directions import RoleDirections

        return RoleDirections.load(self.run.paths.directions, self.model)

    def benchmark(self) -> "MultipleChoice":
        """The questions (the first ``questions_per_domain`` of each domain, if set)."""
        return run_benchmark(self.config)

    def picks(self, rule: str) -> pd.DataFrame:
        """The picks stage 5 wrote for ``rule`` (``alpha`` as float)."""
        picks = pd.read_csv(self.run.paths.picks(rule), keep_default_na=False)
        picks["alpha"] = picks["alpha"].astype(float)
        return picks


# ------------------------------------------------------------------ the stages ---------------
def stage_prompts(ctx: Context) -> dict[str, Any]:
    """Stage 1: the prompts, as used (train and held-out), with their hashes."""
    train, held = ctx.prompt_sets()
    for part, prompts in (("train", train), ("heldout", held)):
        if prompts is None:
            continue
        data = {role: list(prompts.roles[role].instructions) for role in prompts.role_names}
        data["base"] = list(prompts.base.instructions)
        write_json(
            ctx.run.paths.prompts(part),
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


def stage_directions(ctx: Context) -> dict[str, Any]:
    """Stage 2: float64 mean activations at every layer and candidate position."""
    from roleprobe.vectors.directions import compute_directions

    cfg = ctx.config
    train, _ = ctx.prompt_sets()
    rd = compute_directions(
        ctx.model,
        source=train,
        positions=list(cfg.positions) or "post_instruction",
        layers=list(cfg.layers) or None,
        batch_size=cfg.batch_size,
        system=cfg.system,
    )
    rd.save(ctx.run.paths.directions)
    return {
        "roles": len(rd.roles),
        "layers": len(rd.layers),
        "positions": len(rd.positions),
        "source": rd.source,
        "system": rd.system,
        "chat_format": rd.chat_format,
    }


def stage_validation(ctx: Context) -> dict[str, Any]:
    """Stage 3: per role, position and layer: norm, base cosine and held-out AUROC; with 2
    roles or more, the share of each direction that is shared by the roles and (with
    held-out prompts) the held-out role-vs-role confusion."""
    from roleprobe.vectors.decomposition import shared_share
    from roleprobe.vectors.validation import separation_auroc

    rd = ctx.directions()
    paths = ctx.run.paths
    table = rd.to_dataframe()
    _, held = ctx.prompt_sets()
    if held is not None:
        auc = separation_auroc(ctx.model, rd, held, batch_size=ctx.config.batch_size)
        table["auroc"] = auc.flatten().tolist()
    write_csv(paths.validation, table)
    out: dict[str, Any] = {"rows": len(table)}
    if held is not None:
        by_layer = table.groupby("layer")["auroc"].median()
        out["median_auroc_by_layer"] = {int(k): round(float(v), 3) for k, v in by_layer.items()}
    if len(rd.roles) >= 2:
        share = shared_share(rd)
        write_csv(paths.shared_share, share)
        out["mean_shared_share"] = round(float(share["share"].mean()), 3)
    if held is not None and len(rd.roles) >= 2:
        out.update(_confusion(ctx, rd, held))
    return out


def _confusion(ctx: Context, rd: "RoleDirections", held: "RolePrompts") -> dict[str, Any]:
    """Held-out role-vs-role confusion: the table, and the matrix at the best layer."""
    from roleprobe.vectors.confusion import role_confusion

    paths = ctx.run.paths
    confusion = role_confusion(ctx.model, rd, held, batch_size=ctx.config.batch_size)
    table = confusion.to_dataframe()
    write_csv(paths.confusion, table)
    cosine = table[(table["rule"] == "cosine") & table["accuracy"].notna()]
    if cosine.empty:  # every direction is zero (layer 0 only)
        return {"confusion_accuracy": None}
    best = cosine.loc[cosine["accuracy"].idxmax()]
    layer = int(best["layer"])
    position = best["position"] if isinstance(best["position"], str) else int(best["position"])
    matrix = confusion.matrix(layer, position)
    frame = pd.DataFrame(matrix.numpy(), index=list(rd.roles), columns=list(rd.roles))
    frame.index.name = "true"
    frame = frame.reset_index()
    frame.insert(0, "position", position)
    frame.insert(0, "layer", layer)
    write_csv(paths.confusion_matrix, frame)
    return {
        "confusion_accuracy": round(float(best["accuracy"]), 3),
        "confusion_layer": layer,
        "confusion_chance": round(1.0 / len(rd.roles), 3),
    }


def stage_sweep(ctx: Context) -> dict[str, Any]:
    """Stage 4: the sweep (resumes; with a shard, only that part); once complete, its
    per-candidate scores and its baseline as tables."""
    from roleprobe.experiments.sweeps import sweep

    cfg = ctx.config
    paths = ctx.run.paths
    result = sweep(
        ctx.model,
        ctx.directions(),
        ctx.benchmark(),
        roles=list(ctx.run.roles()),
        alphas=cfg.alphas,
        ablation=cfg.ablation,
        controls=cfg.controls,
        specific=cfg.specific,
        store=paths.sweep_store,
        shard=ctx.shard,
        scope=cfg.scope,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        tie_rule=cfg.tie_rule,
        ablation_at=cfg.ablation_at,
        system=cfg.system,
        prefix_memory=max(1, int(cfg.prefix_memory_gib * 2**30)) if cfg.prefix_memory_gib else None,
        lease=cfg.lease_s,
        workers=ctx.workers,
        wait=ctx.wait,
    )
    if result.complete:
        write_csv(paths.sweep_scores, result.scores())
        write_csv(paths.sweep_baseline, result.baseline)
    summary: dict[str, Any] = {
        "complete": result.complete,
        "missing": len(result.missing),
        "in_flight": len(result.in_flight),
        "rows": result.n_rows,
    }
    if not result.complete:  # what the worker reports (not written to done.json)
        from roleprobe.experiments.claims import Claims
        from roleprobe.experiments.store import CLAIMS, read_manifest

        claims = Claims(paths.sweep_store / CLAIMS, cfg.lease_s)
        summary["pending"] = list(result.pending)
        summary["holders"] = claims.describe(result.pending) if result.pending else ""
        summary["plan"] = len(read_manifest(paths.sweep_store)["config"]["plan"])
    return summary


def stage_selection(ctx: Context) -> dict[str, Any]:
    """Stage 5: picks by each rule, with statistics."""
    from roleprobe.experiments.selection import select
    from roleprobe.experiments.sweeps import merge

    cfg = ctx.config
    result = merge(ctx.run.paths.sweep_store)
    out: dict[str, Any] = {}
    for rule in cfg.rules:
        picks = select(
            result,
            rule=rule,
            select_fraction=cfg.select_fraction,
            seed=cfg.seed,
            correction=cfg.correction,
        )
        write_csv(ctx.run.paths.picks(rule), picks)
        passed = picks.groupby("source")["passed"].mean()
        out[f"{rule}_passed"] = {k: round(float(v), 3) for k, v in passed.items()}
    return out


def stage_evaluation(ctx: Context) -> dict[str, Any]:
    """Stage 6: each of ``evaluate_rules``' picks on every domain
    (:func:`roleprobe.apply_picks`), one effect table per rule.

    A role's own-domain cells read only the questions its selection did not see (held-out
    rules) or, for the paper's rules, the very questions it was picked on (``selected``, as
    the paper); other domains are read in full. ``effects_<rule>.csv`` has a ``part``
    column (``heldout``, ``selected``, ``other``) saying which, and the relative change is
    computed from accuracies rounded to 2 decimals with ``round_accuracies`` (the paper
    preset). Picks of a zero direction (the paper rule's layer-0 fallback) reuse the
    baseline's rows. The summary states, per rule, the parts read, the rounding, the tie
    rule and the model's dtype.
    """
    from roleprobe.data.benchmarks import MultipleChoice
    from roleprobe.experiments.evaluation import evaluate
    from roleprobe.experiments.sweeps import merge

    cfg = ctx.config
    paths = ctx.run.paths
    result = merge(paths.sweep_store)
    bench = ctx.benchmark()
    if not cfg.evaluate_all_domains:
        swept = bench.items["id"].isin(set(result.baseline["id"]))
        bench = MultipleChoice(bench.items[swept], f"{bench.name}[swept]", bench.split)
    base = evaluate(
        ctx.model, bench, None, cfg.batch_size, tie_rule=cfg.tie_rule, system=cfg.system
    )
    write_parquet(paths.evaluation_baseline, base)
    rd = ctx.directions()  # loaded and checked once for every rule
    tables = {
        rule: _evaluate_rule(ctx, rule, result, rd, bench, base) for rule in cfg.evaluate_rules
    }
    return {
        "rules": list(cfg.evaluate_rules),
        "headline": cfg.evaluate_rules[0],
        "dtype": str(ctx.model.cfg.dtype).removeprefix("torch."),
        "tie_rule": cfg.tie_rule,
        "round_accuracies": 2 if cfg.round_accuracies else None,
        **{rule: summary for rule, summary in tables.items()},
    }


def _evaluate_rule(
    ctx: Context,
    rule: str,
    result: Any,
    rd: "RoleDirections",
    bench: "MultipleChoice",
    base: pd.DataFrame,
) -> dict[str, Any]:
    """One rule's picks on every domain of ``bench``: its runs and its effect table."""
    from roleprobe.experiments.picks import apply_picks
    from roleprobe.experiments.selection import split_ids
    from roleprobe.results.stats import SETUP_COLUMNS
    from roleprobe.results.tables import RUN_COLUMNS, effect_table

    cfg = ctx.config
    paths = ctx.run.paths
    heldout: dict[str, list[Any]] | None = None
    if rule == "held-out":  # the same split as stage 5's selection
        heldout = {}
        for role in ctx.run.roles():
            ids = result.role_items(role)
            items = result.baseline[result.baseline["id"].isin(ids)].drop_duplicates("id")
            heldout[role] = split_ids(items, cfg.select_fraction, cfg.seed)[1]
    runs = apply_picks(
        ctx.model,
        rd,
        bench,
        ctx.picks(rule),
        heldout_ids=heldout,
        alphas=cfg.alphas,
        ablation=cfg.ablation,
        scope=cfg.scope,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        ablation_at=cfg.ablation_at,
        tie_rule=cfg.tie_rule,
        system=cfg.system,
        baseline=base,
    )
    write_parquet(paths.evaluation_runs(rule), runs)
    used = base[base["id"].isin(set(runs["id"]))]
    columns = [*RUN_COLUMNS, *(c for c in SETUP_COLUMNS if c in runs.columns)]
    effects = effect_table(
        used, runs[columns], round_accuracies=2 if cfg.round_accuracies else None
    )
    parts = runs.drop_duplicates(["role", "domain"]).set_index(["role", "domain"])["part"]
    effects["part"] = [
        parts[(r, d)] for r, d in zip(effects["role"], effects["domain"], strict=True)
    ]
    picked = runs[runs["condition"] == "addition"].drop_duplicates(["role", "alpha"])
    write_csv(paths.effects(rule), effects)
    return {
        "cells": len(effects),
        "domains": int(effects["domain"].nunique()),
        "parts": {k: int(v) for k, v in effects["part"].value_counts().items()},
        "zero_direction_picks": int(picked["zero_direction"].sum()),
        "significant_accuracy": int((effects["mcnemar_p_adj"] < 0.05).sum()),
        "significant_logprob": int((effects["logprob_p"] < 0.05).sum()),
    }


PATCHSCOPE_COLUMNS = ("role", "layer", "position", "mode", "steered", "unsteered")
LOGIT_LENS_COLUMNS = ("role", "layer", "position", "sign", "rank", "token", "token_id", "logit")
LOGIT_LENS_K = 8
"""Tokens per sign in stage 7's logit lens."""
PATCHSCOPE_BATCH_SIZE = 8
"""At most this many of stage 7's patchscope answers decode together (each row keeps a KV
cache of up to 512 tokens in the paper mode); ``batch_size`` when it is smaller."""


def readout_picks(picks: pd.DataFrame) -> pd.DataFrame:
    """The picks stage 7 reads out: each role's own direction at the largest α (a zero
    direction, the paper rule's layer-0 fallback, has nothing to read)."""
    role = picks[picks["source"] == "role"]
    if "zero_direction" in role.columns:
        role = role[~role["zero_direction"].astype(bool)]
    return role[role["alpha"] == role["alpha"].max()].reset_index(drop=True)


def stage_readouts(ctx: Context) -> dict[str, Any]:
    """Stage 7: what the model says each picked direction (the headline rule, the first of
    ``evaluate_rules``; largest α) is.

    ``patchscope.csv`` (when ``patchscope`` is on: the steered and unsteered answers of
    :func:`roleprobe.patchscope` in ``patchscope_mode``, all picks in one
    :func:`roleprobe.patchscopes` call) and ``logit_lens.csv`` (the
    direction's top tokens, :func:`roleprobe.logit_lens`).
    """
    from roleprobe.vectors.readouts import logit_lens, patchscopes

    cfg = ctx.config
    chosen = readout_picks(ctx.picks(cfg.evaluate_rules[0]))
    rd = ctx.directions()
    tokens = 32 if cfg.patchscope_mode == "placeholder" else None  # None: the mode's (512)
    patch, lens = [], []
    picks = [
        (str(pick.role), int(pick.layer), int(pick.position))
        for pick in chosen.itertuples(index=False)
    ]
    if cfg.patchscope:  # one call: the unsteered answer once, the steered ones batched
        results = patchscopes(
            ctx.model,
            [(rd.vector(role, layer, pos), layer) for role, layer, pos in picks],
            max_new_tokens=tokens,
            mode=cfg.patchscope_mode,
            system=rd.system,
            batch_size=min(cfg.batch_size, PATCHSCOPE_BATCH_SIZE),
        )
        patch = [
            dict(
                zip(PATCHSCOPE_COLUMNS, (*pick, res.mode, res.steered, res.unsteered), strict=True)
            )
            for pick, res in zip(picks, results, strict=True)
        ]
    for role, layer, pos in picks:
        table = logit_lens(ctx.model, rd, role, pos, k=LOGIT_LENS_K, layers=[layer])
        lens.append(table.assign(role=role, position=pos))
    paths = ctx.run.paths
    write_csv(paths.patchscope, pd.DataFrame(patch, columns=list(PATCHSCOPE_COLUMNS)))
    lens_table = pd.concat(lens, ignore_index=True) if lens else pd.DataFrame()
    write_csv(paths.logit_lens, lens_table.reindex(columns=list(LOGIT_LENS_COLUMNS)))
    components = _components(ctx, rd, chosen)
    write_csv(paths.components, components)
    return {
        "picks": len(chosen),
        "patchscope": len(patch),
        "logit_lens_rows": len(lens_table),
        "component_rows": len(components),
    }


def _components(ctx: Context, rd: "RoleDirections", chosen: pd.DataFrame) -> pd.DataFrame:
    """Every component's write along each pick's direction, on the training prompts (one
    pass per picked layer; empty for picks at layer 0, whose input is the embedding);
    ``direction_layer`` is the pick's layer (``layer`` is the component's)."""
    from roleprobe.vectors.components import COLUMNS, component_attribution

    train, _ = ctx.prompt_sets()
    frames = []
    picks = chosen[chosen["layer"].astype(int) > 0]
    for layer, group in picks.groupby(picks["layer"].astype(int)):
        for position, part in group.groupby(group["position"].astype(int)):
            table = component_attribution(
                ctx.model,
                train,
                int(layer),
                roles=sorted(set(part["role"].astype(str))),
                positions=[int(position)],
                batch_size=ctx.config.batch_size,
                directions=rd,
                system=rd.system,
            )
            frames.append(table.assign(direction_layer=int(layer)))
    if not frames:
        return pd.DataFrame(columns=[*COLUMNS, "direction_layer"])
    return pd.concat(frames, ignore_index=True)


def stage_report(ctx: Context) -> dict[str, Any]:
    """Stage 8: figures, a self-contained report.html and summary.md (no model is run)."""
    from roleprobe.app.report import write_report
    from roleprobe.vectors.directions import RoleDirections

    return write_report(ctx.run, RoleDirections.load(ctx.run.paths.directions))


StageFn = Callable[[Context], dict[str, Any]]

STEPS: dict[Stage, StageFn] = {
    PROMPTS: stage_prompts,
    DIRECTIONS: stage_directions,
    VALIDATION: stage_validation,
    SWEEP: stage_sweep,
    SELECTION: stage_selection,
    EVALUATION: stage_evaluation,
    READOUTS: stage_readouts,
    REPORT: stage_report,
}
"""What each stage of :data:`~roleprobe.app.run.STAGES` computes."""


# ------------------------------------------------------------------ running them ------------
def _make(ctx: Context, stage: Stage) -> bool:
    """Run one stage and mark it done; ``False`` when the sweep is left unfinished (a
    shard's part done, or items other workers hold: ``run.pending`` says which)."""
    from roleprobe.experiments.store import BadPartError

    start = time.perf_counter()
    paths = ctx.run.paths
    extra = {DIRECTIONS: [paths.directions], SWEEP: [paths.sweep_store]}.get(stage, [])
    for folder in (paths.folder(stage), *extra):  # what a killed writer left there
        remove_stale_temporaries(folder)
    try:
        summary = STEPS[stage](ctx)
    except BadPartError as err:
        if stage == SWEEP or not ctx.run.is_done(SWEEP):
            raise
        raise ValueError(
            f"{err}; the sweep is marked finished, so delete {paths.done(SWEEP)} too"
        ) from err
    if stage == SWEEP and not summary["complete"]:
        pending, missing, total = summary["pending"], summary["missing"], summary["plan"]
        if ctx.shard and not pending:
            logger.info(
                "shard %s done; %d of %d parts of the sweep belong to other shards or "
                "workers: the run finishes when a worker runs without --shard after them",
                ctx.shard,
                missing,
                total,
            )
        elif ctx.shard:
            ctx.run.pending = (
                f"shard {ctx.shard} incomplete: {len(pending)} of its parts are held by other "
                f"workers ({summary['holders']}); run it again once they finish (or add --wait)"
            )
        else:
            held = (
                f"{len(pending)} held by other workers ({summary['holders']})"
                if pending
                else "none held by a live worker"
            )
            ctx.run.pending = (
                f"sweep incomplete: {missing} of {total} parts missing, {held}; run this "
                "command again once they finish (or add --wait)"
            )
        return False
    ctx.run.finish(stage, summary, time.perf_counter() - start)
    return True


def _check_sweep_is_this_runs(run: Run) -> None:
    """Refuse a finished sweep that was not made from this run's directions and settings
    (a ``04_sweep/`` copied from another run): its seed, alphas and the hash of the
    directions it swept must be this run's."""
    from roleprobe.experiments.store import read_manifest
    from roleprobe.experiments.sweeps import directions_hash
    from roleprobe.vectors.directions import RoleDirections

    paths = run.paths
    try:
        stored = read_manifest(paths.sweep_store)["config"]
        sweep = stored["sweep"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{paths.sweep_store} has no readable sweep manifest though {SWEEP.name} is "
            f"marked done; delete {paths.folder(SWEEP)} to make the sweep again"
        ) from None
    cfg = run.config
    differs = []
    if sweep.get("seed") != cfg.seed:
        differs.append(f"seed {sweep.get('seed')!r} vs {cfg.seed!r}")
    if [float(a) for a in sweep.get("alphas", [])] != [float(a) for a in cfg.alphas]:
        differs.append(f"alphas {sweep.get('alphas')!r} vs {list(cfg.alphas)!r}")
    if run.is_done(DIRECTIONS) and not differs:
        rd = RoleDirections.load(paths.directions)
        if stored.get("directions") != directions_hash(rd):
            differs.append("the directions it swept are not this run's 02_directions")
    if differs:
        raise ValueError(
            f"{paths.folder(SWEEP)} was not made by this run ({'; '.join(differs)}): copied "
            f"from another run? Delete {paths.folder(SWEEP)} and the stages after it to make "
            "them again"
        )


def _make_once(ctx: Context, stage: Stage) -> bool:
    """Make ``stage`` unless another worker is making it: then wait for it (stages before
    the sweep, or with ``ctx.wait``) or stop with ``run.pending`` saying who holds it."""
    run = ctx.run
    key = f"stage-{stage.name}"
    said = 0.0
    while True:
        if run.claims.claim(key):
            try:
                return True if run.is_done(stage) else _make(ctx, stage)
            finally:
                run.claims.release(key)
        if run.is_done(stage):
            return True
        holder = run.claims.describe([key])
        if stage.number > SWEEP.number and not ctx.wait:
            run.pending = (
                f"{stage.name} is being made by another worker ({holder}); nothing left for "
                "this one (add --wait to wait for it)"
            )
            return False
        if time.monotonic() - said > 60:
            logger.info("%s is being made by another worker (%s); waiting", stage.name, holder)
            said = time.monotonic()
        time.sleep(min(5.0, heartbeat_interval(run.claims.lease)))


def run_pipeline(
    config: RunConfig,
    out: str | os.PathLike[str],
    shard: str | None = None,
    until: str | None = None,
    resume: bool = True,
    wait: bool = False,
    workers: int | None = None,
) -> Run:
    """Run (or resume) every stage in order; stop after ``until`` or after a shard's sweep.

    Several workers may run this on one folder at once (a Slurm array, ``roleprobe
    submit``): each stage other than the sweep is made by one of them (a claim in
    ``<out>/claims/``; the others wait for stages 1-3 and stop, or wait with ``wait``,
    at the later ones), and the sweep's items are split by claims.

    Args:
        config: what the run does.
        out: the run folder. Resumed if it holds this config; if it holds another, the
            settings that changed must only affect stages after the sweep (those stages are
            made again) or stages not started yet (see :data:`~roleprobe.app.run.FIRST_STAGE`).
        shard: ``"i/n"``: do only that part of the sweep, then stop.
        until: the last stage to make (folder name, key or an earlier name).
        resume: ``False`` refuses a folder that already holds finished stages.
        wait: when other workers hold the last sweep items or a later stage, wait for them
            (taking over from any that dies) instead of stopping.
        workers: how many workers share the sweep (see :func:`roleprobe.sweep`).

    Raises:
        ValueError: a bad setting, file or folder, found by
            :func:`~roleprobe.app.inputs.preflight` before anything is written or any model
            loads; a layer the model does not have, found when it loads.

    Returns:
        The :class:`~roleprobe.app.run.Run` (its ``timings`` hold the seconds of the stages
        made now; ``pending`` is ``None`` when every stage asked for is complete — for a
        shard, its part of the sweep — else one line saying what is left and who holds it).
    """
    last = stage_named(until) if until is not None else STAGES[-1]
    preflight(config, out, shard)  # before anything is written or any model loads
    run = Run(config, out)
    finished = [s.name for s in run.finished()]
    if finished and not resume:
        raise ValueError(
            f"{run.out} already holds finished stages {finished}; drop --no-resume to "
            "continue it, or choose a new --out folder"
        )
    ctx = Context(run, shard, wait=wait, workers=workers)
    if not run.is_done(DIRECTIONS) and last.number >= DIRECTIONS.number:
        _ = ctx.model  # loaded, its layers and positions checked, before stage 1 is written
    try:
        for stage in STAGES:
            if run.is_done(stage) and stage == SWEEP:
                _check_sweep_is_this_runs(run)
            if run.is_done(stage):
                logger.info("%s already done; skipped", stage.name)
            elif not (_make(ctx, stage) if stage == SWEEP else _make_once(ctx, stage)):
                return run
            if stage == last:
                break
    finally:
        run.claims.close()
    return run


def rerun_stage(out: str | os.PathLike[str], stage: str | Stage) -> Run:
    """Make one stage of an existing run folder again (e.g. the report after a code change).

    Raises:
        ValueError: ``out`` is not a run folder, the stage is unknown, a stage before it is
            not finished, or it is the sweep (resume it with :func:`run_pipeline`).
    """
    target = stage_named(stage)
    if target == SWEEP:
        raise ValueError("the sweep resumes inside its store: use run_pipeline (roleprobe run)")
    run = Run.open(out)
    missing = [s.name for s in STAGES[: STAGES.index(target)] if not run.is_done(s)]
    if missing:
        raise ValueError(
            f"{run.out}: stages {missing} are not finished; finish the run (roleprobe run) "
            f"before making {target.name} again"
        )
    _make(Context(run), target)
    return run
