"""The run folder: its stages, their order and every file they write, spelled once here.

A run folder holds ``config.json`` and one numbered sub-folder per stage (:data:`STAGES`);
a stage is complete when its ``done.json`` exists (written last, atomically).
:class:`RunPaths` names every file a stage writes (``run.paths.picks("paper")``,
``run.paths.sweep_store``, ...), so the pipeline that writes them, the report that reads
them and the command line that points at them never spell a path themselves.

This module only knows the folder: it loads no model and runs nothing (the stages'
computations are in :mod:`roleprobe.app.pipeline`).

Example:
    >>> run = Run.open("runs/demo")
    >>> run.is_done(SELECTION)
    True
    >>> pd.read_csv(run.paths.picks("held-out"))
"""

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roleprobe.app.run_config import RunConfig
from roleprobe.core.io import create_text, is_temporary, remove_stale_temporaries, write_json
from roleprobe.data.roles import ROLES
from roleprobe.experiments.claims import Claims

logger = logging.getLogger(__name__)

__all__ = [
    "DIRECTIONS",
    "EVALUATION",
    "FIRST_STAGE",
    "PROMPTS",
    "READOUTS",
    "REPORT",
    "SELECTION",
    "STAGES",
    "SWEEP",
    "VALIDATION",
    "Run",
    "RunPaths",
    "Stage",
    "read_config_json",
    "stage_named",
]

CONFIG = "config.json"
DONE = "done.json"
CLAIMS = "claims"
"""The run folder's stage claims (one worker makes each stage; see
:mod:`roleprobe.experiments.claims`)."""


@dataclass(frozen=True)
class Stage:
    """One numbered stage of a run.

    Attributes:
        number: its place in the order (1-based).
        key: its short name (``roleprobe run --until KEY``).
        summary: what its folder holds (one line, for the docs and the report).
        aliases: earlier names still accepted by ``--until`` (old keys and folder names).
    """

    number: int
    key: str
    summary: str
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The folder name, e.g. ``05_selection``."""
        return f"{self.number:02d}_{self.key}"

    def __str__(self) -> str:
        return self.name


PROMPTS = Stage(1, "prompts", "role and generic prompts as used, split train / held-out")
DIRECTIONS = Stage(
    2,
    "directions",
    "float64 mean activations and role directions (RoleDirections, safetensors + JSON)",
    aliases=("means", "02_means"),
)
VALIDATION = Stage(
    3,
    "validation",
    "per role, position, layer: norm, cosine to the base mean, held-out AUROC",
    aliases=("03_directions",),
)
SWEEP = Stage(
    4,
    "sweep",
    "the sweep's result store (resumable, shardable) and its score tables",
)
SELECTION = Stage(5, "selection", "picks by each rule (paper, held-out), with statistics")
EVALUATION = Stage(
    6,
    "evaluation",
    "every role's pick on every domain: per-item runs and the effect table",
)
READOUTS = Stage(
    7,
    "readouts",
    "what the model says each picked direction is: patchscope and logit lens",
)
REPORT = Stage(
    8, "report", "figures, report.html (self-contained) and summary.md", aliases=("07_report",)
)

STAGES: tuple[Stage, ...] = (
    PROMPTS,
    DIRECTIONS,
    VALIDATION,
    SWEEP,
    SELECTION,
    EVALUATION,
    READOUTS,
    REPORT,
)
"""Every stage, in the order a run makes them."""


FIRST_STAGE: dict[str, Stage | None] = {
    "roles": PROMPTS,
    "prompts": PROMPTS,
    "prompt_revision": PROMPTS,
    "data": PROMPTS,
    "heldout_fraction": PROMPTS,
    "seed": PROMPTS,
    "model": DIRECTIONS,
    "model_revision": DIRECTIONS,
    "trust_remote_code": DIRECTIONS,
    "dtype": DIRECTIONS,
    "system": DIRECTIONS,
    "layers": DIRECTIONS,
    "positions": DIRECTIONS,
    "batch_size": DIRECTIONS,
    "benchmark": SWEEP,
    "split": SWEEP,
    "questions_per_domain": SWEEP,
    "alphas": SWEEP,
    "ablation": SWEEP,
    "controls": SWEEP,
    "specific": SWEEP,
    "scope": SWEEP,
    "tie_rule": SWEEP,
    "ablation_at": SWEEP,
    "rules": SELECTION,
    "select_fraction": SELECTION,
    "correction": SELECTION,
    "evaluate_all_domains": EVALUATION,
    "evaluate_rules": EVALUATION,
    "round_accuracies": EVALUATION,
    "patchscope": READOUTS,
    "patchscope_mode": READOUTS,
    "device": None,
    "device_map": None,
    "n_devices": None,
    "prefix_memory_gib": None,
    "lease_s": None,
}
"""For every :class:`~roleprobe.app.run_config.RunConfig` setting, the first stage whose
result it changes (``None``: where the run computes, not what). A rerun may change a
setting freely while that stage has not started; changing it after re-makes the stages
from there on, unless that would throw away the sweep or an earlier stage (refused). A
test keeps this table equal to the config's fields."""


def stage_named(name: "str | Stage") -> Stage:
    """The stage called ``name``: its folder name, key or an alias.

    Raises:
        ValueError: no stage has that name (the message lists the names).
    """
    if isinstance(name, Stage):
        return name
    for stage in STAGES:
        if name in (stage.name, stage.key, *stage.aliases):
            return stage
    keys = [s.key for s in STAGES]
    folders = [s.name for s in STAGES]
    raise ValueError(f"unknown stage {name!r}; use one of {keys} or {folders}")


class RunPaths:
    """Every file of a run folder (paths only: nothing is created or read).

    Args:
        root: the run folder.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, stage: "str | Stage") -> Path:
        """A stage's folder."""
        return self.root / stage_named(stage).name

    def done(self, stage: "str | Stage") -> Path:
        """A stage's completion marker."""
        return self.folder(stage) / DONE

    @property
    def config(self) -> Path:
        """The run's configuration (JSON)."""
        return self.root / CONFIG

    # jobs of roleprobe submit
    @property
    def jobs(self) -> Path:
        """The folder of ``roleprobe submit``'s jobs (submitit's scripts, logs, results)."""
        return self.root / "jobs"

    @property
    def submission(self) -> Path:
        """What ``roleprobe submit`` submitted: job ids, how to follow them (JSON)."""
        return self.jobs / "submission.json"

    # 01_prompts
    def prompts(self, part: str) -> Path:
        """The prompts as used: ``part`` is ``train`` or ``heldout`` (JSON)."""
        if part not in ("train", "heldout"):
            raise ValueError(f"unknown prompt part {part!r}; use 'train' or 'heldout'")
        return self.folder(PROMPTS) / f"{part}.json"

    # 02_directions
    @property
    def directions(self) -> Path:
        """The :class:`~roleprobe.RoleDirections` folder."""
        return self.folder(DIRECTIONS) / "directions"

    # 03_validation
    @property
    def validation(self) -> Path:
        """Per role, position and layer: norm, base cosine, held-out AUROC (CSV)."""
        return self.folder(VALIDATION) / "validation.csv"

    @property
    def shared_share(self) -> Path:
        """Per role, position and layer: the share of the direction that is the shared "any
        role" direction (:func:`roleprobe.shared_share`, CSV; 2 roles or more)."""
        return self.folder(VALIDATION) / "shared_share.csv"

    @property
    def confusion(self) -> Path:
        """Per rule, position and layer: held-out role-vs-role accuracy and mean one-vs-rest
        AUROC (:meth:`roleprobe.RoleConfusion.to_dataframe`, CSV; held-out prompts and 2
        roles or more)."""
        return self.folder(VALIDATION) / "confusion.csv"

    @property
    def confusion_matrix(self) -> Path:
        """The held-out confusion matrix at the best layer (rows: true role, columns:
        assigned role; CSV with the layer and position in its first columns)."""
        return self.folder(VALIDATION) / "confusion_matrix.csv"

    # 04_sweep
    @property
    def sweep_store(self) -> Path:
        """The sweep's :class:`~roleprobe.ResultStore` folder."""
        return self.folder(SWEEP) / "store"

    @property
    def sweep_scores(self) -> Path:
        """Per candidate: the sweep's scores (:meth:`roleprobe.SweepResult.scores`, CSV)."""
        return self.folder(SWEEP) / "scores.csv"

    @property
    def sweep_baseline(self) -> Path:
        """Per (group, question): the unsteered answers of the sweep (CSV)."""
        return self.folder(SWEEP) / "baseline.csv"

    # 05_selection
    def picks(self, rule: str) -> Path:
        """The picks of one selection rule, with their statistics (CSV)."""
        return self.folder(SELECTION) / f"picks_{rule}.csv"

    # 06_evaluation
    def evaluation_runs(self, rule: str) -> Path:
        """Per (pick, question): the steered answers of one rule's picks (parquet)."""
        return self.folder(EVALUATION) / f"runs_{rule}.parquet"

    @property
    def evaluation_baseline(self) -> Path:
        """Per question: the unsteered answers on the evaluated questions (parquet)."""
        return self.folder(EVALUATION) / "baseline.parquet"

    def effects(self, rule: str) -> Path:
        """One rule's table: per (role, condition, domain) the effect with paired tests and
        ``part`` (CSV). Runs made before stage 6 evaluated several rules wrote one table,
        ``effects.csv`` (:attr:`legacy_effects`)."""
        return self.folder(EVALUATION) / f"effects_{rule}.csv"

    @property
    def legacy_effects(self) -> Path:
        """The one effect table of a run made before ``evaluate_rules`` existed (CSV)."""
        return self.folder(EVALUATION) / "effects.csv"

    # 07_readouts
    @property
    def patchscope(self) -> Path:
        """Per pick: the steered and unsteered patchscope answers (CSV)."""
        return self.folder(READOUTS) / "patchscope.csv"

    @property
    def logit_lens(self) -> Path:
        """Per pick, sign and rank: the direction's top tokens (CSV)."""
        return self.folder(READOUTS) / "logit_lens.csv"

    @property
    def components(self) -> Path:
        """Per pick: every head's, MLP's and the embedding's write along the picked
        direction (:func:`roleprobe.component_attribution`, CSV)."""
        return self.folder(READOUTS) / "components.csv"

    # 08_report
    @property
    def figures(self) -> Path:
        """The figures folder (one HTML page each, sharing ``plotly.min.js``)."""
        return self.folder(REPORT) / "figures"

    def figure(self, name: str) -> Path:
        """One figure's page."""
        return self.figures / f"{name}.html"

    @property
    def report_html(self) -> Path:
        """The self-contained HTML report."""
        return self.folder(REPORT) / "report.html"

    @property
    def summary_md(self) -> Path:
        """The Markdown summary."""
        return self.folder(REPORT) / "summary.md"


_LEGACY = ("02_means", "03_directions", "07_report")


class Run:
    """A run folder: its config (checked against the stored one), paths and stage marks.

    Args:
        config: what the run does.
        out: the run folder (created). If it holds a ``config.json`` already, ``config``
            must equal it (settings added after the run was started read as their
            defaults).

    Attributes:
        claims: the stage claims of the folder (``<out>/claims/``).
        pending: ``None``, or one line saying what keeps the stages asked of
            :func:`~roleprobe.app.pipeline.run_pipeline` from finishing (sweep items or a
            stage other workers hold) and who holds it.

    Raises:
        ValueError: the folder holds a run with another configuration (the message names
            the differing settings), or a run made with the earlier stage layout.
    """

    def __init__(self, config: RunConfig, out: str | os.PathLike[str]) -> None:
        self.config = config
        self.out = Path(out)
        self.paths = RunPaths(self.out)
        self.timings: dict[str, float] = {}
        self.pending: str | None = None
        check_run_folder(self.out)  # before anything is written into it
        self.out.mkdir(parents=True, exist_ok=True)
        mark_run_folder(self.out)
        remove_stale_temporaries(self.out)
        self.claims = Claims(self.out / CLAIMS, config.lease_s)
        path = self.paths.config
        if path.exists():
            stored = _canonical({**RunConfig().to_dict(), **read_config_json(path)})
            wanted = config.to_dict()
            changed = sorted(k for k in wanted if stored.get(k) != wanted[k])
            if changed:
                self._reconcile(changed, stored, wanted)
                write_json(path, wanted)
        else:
            write_json(path, config.to_dict())

    def _reconcile(
        self, changed: list[str], stored: Mapping[str, Any], wanted: Mapping[str, Any]
    ) -> None:
        """Accept a rerun whose config differs in ``changed``, or refuse it.

        A setting may change while the first stage it affects (:data:`FIRST_STAGE`) has
        not started. If that stage comes after the sweep, the finished stages from there
        on are removed and made again; a change that would alter a finished stage up to
        the sweep (or a sweep under way) is refused, naming the settings and stages.
        """
        affected: dict[str, Stage] = {}
        for key in changed:
            stage = FIRST_STAGE.get(key, PROMPTS)  # a setting not in the table: the earliest
            if stage is not None:
                affected[key] = stage
        free = [k for k in changed if k not in affected]
        if free:
            logger.info("%s: %s changed (where the run computes, not what)", self.out, free)
        if not affected:
            return
        first = min(affected.values(), key=lambda s: s.number)
        started = [s for s in STAGES if s.number >= first.number and self.is_done(s)]
        if first.number <= SWEEP.number and (self.paths.sweep_store / "manifest.json").exists():
            started.append(SWEEP)
        locked = sorted({s for s in started if s.number <= SWEEP.number}, key=lambda s: s.number)
        if locked:
            detail = ", ".join(
                f"{k} ({stored.get(k)!r} -> {wanted[k]!r}, used from {affected[k]} on)"
                for k in sorted(affected, key=lambda k: (affected[k].number, k))
            )
            raise ValueError(
                f"{self.out} holds a run whose finished stages {[s.name for s in locked]} "
                f"were made with other settings: {detail}; use a new --out folder (or delete "
                "those stage folders to make them again)"
            )
        remade = [s for s in STAGES if s.number >= first.number and self.paths.folder(s).exists()]
        for stage in remade:
            shutil.rmtree(self.paths.folder(stage))
        logger.warning(
            "%s: %s changed; stages %s will be made again",
            self.out,
            sorted(affected),
            [s.name for s in remade] or "(none started yet)",
        )

    @classmethod
    def open(cls, out: str | os.PathLike[str]) -> "Run":
        """An existing run folder, with the config stored in it.

        Raises:
            ValueError: ``out`` is not a run folder (no ``config.json``) or its config is bad.
        """
        path = RunPaths(out).config
        if not path.exists():
            raise ValueError(f"{Path(out)} is not a run folder (no {CONFIG})")
        return cls(RunConfig.from_dict(read_config_json(path), str(path)), out)

    def folder(self, stage: "str | Stage") -> Path:
        """A stage's folder (created)."""
        folder = self.paths.folder(stage)
        folder.mkdir(exist_ok=True)
        return folder

    def is_done(self, stage: "str | Stage") -> bool:
        """Whether the stage finished."""
        return self.paths.done(stage).exists()

    def finished(self) -> list[Stage]:
        """The finished stages, in order."""
        return [s for s in STAGES if self.is_done(s)]

    def finish(self, stage: "str | Stage", summary: Mapping[str, Any], seconds: float) -> None:
        """Mark a stage done, with its one-line summary and wall time."""
        stage = stage_named(stage)
        write_json(self.paths.done(stage), {"seconds": round(seconds, 1), **summary})
        self.timings[stage.name] = seconds
        logger.info("%s done in %.0fs: %s", stage.name, seconds, _one_line(summary))

    def summary(self, stage: "str | Stage") -> dict[str, Any]:
        """What a finished stage reported (its ``done.json``).

        Raises:
            ValueError: the marker is damaged (names it, and how to make the stage again).
        """
        stage = stage_named(stage)
        path = self.paths.done(stage)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = f"not JSON: {err}"
        else:
            if isinstance(data, dict):
                return data
            why = f"a JSON {type(data).__name__}, not an object"
        raise ValueError(
            f"{path}, the completion mark of {stage.name}, is damaged ({why}); delete it and "
            f"rerun the same `roleprobe run` command: it makes {stage.name} again"
        )

    def roles(self) -> tuple[str, ...]:
        """The run's roles (all 29 when the config lists none)."""
        return self.config.roles or tuple(role.name for role in ROLES)


MARKER = ".roleprobe-run"
"""The file that makes a folder a run folder (written first, before ``config.json``)."""
_OURS = {CONFIG, MARKER, CLAIMS, "jobs", *(s.name for s in STAGES)}


def is_run_folder(out: str | os.PathLike[str]) -> bool:
    """Whether ``out`` is a run folder: it holds :data:`MARKER`, or it is a run made before
    the marker existed (a ``config.json`` of run settings and nothing but stage folders)."""
    folder = Path(out)
    if (folder / MARKER).is_file():
        return True
    if not (folder / CONFIG).is_file():
        return False
    names = {p.name for p in folder.iterdir()}
    if not names <= _OURS:
        return False
    try:
        data = read_config_json(folder / CONFIG)
    except (OSError, ValueError):
        return False
    known = {f.name for f in dataclasses.fields(RunConfig)}
    return bool(data) and set(data) <= known and "model" in data


def check_run_folder(out: str | os.PathLike[str]) -> None:
    """Refuse ``out`` unless it is missing, empty, or a run folder (nothing is written).

    A folder that holds other files — someone's ``config.json`` included — is never
    written into: a run folder is recognised by :data:`MARKER`, not by a file name others
    use.

    Raises:
        ValueError: ``out`` is a file, or a non-empty folder that is not a run folder.
    """
    folder = Path(out)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"out = {str(out)!r} is a file, not a run folder")
    legacy = [name for name in _LEGACY if (folder / name).exists()]
    if legacy:
        raise ValueError(
            f"{folder} was made with the earlier stage layout ({legacy}); use a new --out"
            " folder (copy its 04_sweep/ there to reuse the sweep)"
        )
    if is_run_folder(folder):
        return
    names = sorted(p.name for p in folder.iterdir() if not is_temporary(p))
    if names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise ValueError(
            f"{folder} is not empty and is not a roleprobe run folder (it holds {shown}, "
            f"and no {MARKER}); choose a new --out folder or an empty one"
        )


def mark_run_folder(out: Path) -> None:
    """Write :data:`MARKER` into ``out`` unless it is there (exclusive create)."""
    from importlib import metadata

    try:
        version = metadata.version("roleprobe")
    except metadata.PackageNotFoundError:  # pragma: no cover - always installed
        version = "unknown"
    create_text(out / MARKER, json.dumps({"roleprobe_run": 1, "version": version}) + "\n")


def _canonical(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config as the current code spells it (canonical role names, ...), so that
    a rerun differing only in spelling is no change; as it is when it no longer validates."""
    try:
        return RunConfig.from_dict(stored).to_dict()
    except ValueError:
        return stored


def read_config_json(path: Path) -> dict[str, Any]:
    """A run folder's stored config as a dict.

    Raises:
        ValueError: the file is not a JSON object (names the file).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a valid run config (JSON): {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of settings, got {type(data).__name__}")
    return data


def _one_line(summary: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict | list))
