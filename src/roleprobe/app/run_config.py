"""What a run does: :class:`RunConfig` (validated, TOML and dict round-trip) and the presets.

A run folder (:class:`roleprobe.app.run.Run`) stores its config as ``config.json`` and refuses
another one; :func:`load_config` layers a preset, a TOML file and explicit overrides.

Presets (:data:`PRESETS`): ``demo`` (embedded model, built-in data, a small grid; minutes
on two CPU cores), ``paper`` (29 roles, the paper's prompts and questions, every layer and
post-instruction position, α ∈ {1, 3}, ablation, controls, the authors' dtype, tie rule and
ablation placement; stage 6 makes the paper's table — the paper rule's picks, own domain
on the questions they were picked on, accuracies rounded to 2 decimals — and the held-out
table beside it; GPU hours), ``smoke`` (every
stage on the four-layer ``tiny-random`` model in seconds, both rules: a check that an
install works) and ``custom`` (the
defaults of :class:`RunConfig`, to be overridden by a TOML file or flags).

Example:
    >>> cfg = load_config("demo", "run.toml", {"model": "tiny-random"})
    >>> RunConfig.from_dict(cfg.to_dict()) == cfg
    True
"""

import dataclasses
import logging
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from roleprobe.model.paper_dtype import PAPER_DTYPE, paper_dtype

__all__ = ["CHOICES", "PRESETS", "RunConfig", "load_config"]

logger = logging.getLogger(__name__)

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
        model_revision: a hub model's branch, tag or commit (``""``: the default branch);
            recorded in every manifest as ``org/model@<revision>``.
        trust_remote_code: run a hub or folder model's own modelling code.
        device: ``auto``, ``cpu``, ``cuda``, ...
        dtype: ``float32``, ``bfloat16``, ``float16``, ``float64``, or ``paper`` (the paper
            preset): the dtype the authors loaded the model's family in (Gemma and Llama-3
            bfloat16, Qwen float16; :mod:`roleprobe.model.paper_dtype`), float32 for a family
            they had no loader for. ``paper`` is resolved when the config is built, so the
            run's ``config.json`` states the dtype used.
        device_map: a ``transformers`` device map name (``auto``, ``balanced``, ...) to
            spread a hub model over devices (``""``: none; leave ``device`` at ``auto``).
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
        specific: the sweep also runs each role's specific part (its direction minus the
            mean over the run's roles, :func:`roleprobe.specific_directions`) as source
            ``specific``, with its own controls (``sweep(specific=True)``; 2 roles or more).
        rules: selection rules to run in stage 5 (``picks_<rule>.csv`` each).
        evaluate_rules: the rules whose picks stage 6 applies to every domain, each into
            its own table (``effects_<rule>.csv``); the first is the run's headline table,
            which the report and the readouts (stage 7) use. Each must be one of
            ``rules``. ``()`` (default): the last of ``rules``, resolved when the config is
            built. The paper preset: ``["paper", "held-out"]`` (the paper's table, and the
            held-out one beside it).
        round_accuracies: stage 6 computes the relative change from accuracies rounded to
            2 decimals, as the authors' table notebook (``round(np.mean(scores), 2)``);
            the paper preset. Off: unrounded. Only ``relative_change_pct`` changes.
        select_fraction: share of each role's questions used for held-out selection.
        correction: ``holm`` or ``bh``.
        evaluate_all_domains: stage 6 applies every role's pick to every domain of the
            benchmark (the paper's table); otherwise to every domain the sweep covered.
            A role's own domain is read on the questions held-out selection did not see
            (``part = heldout``), or in full, the very questions it was picked on, for
            ``paper`` and ``paper-rounded`` (``part = selected``, as the paper).
        patchscope: write what the model says a picked direction is (stage 7,
            ``07_readouts``).
        patchscope_mode: ``placeholder`` (add at the placeholder's tokens; default) or
            ``paper`` (add at every position, 512 new tokens, as the authors; the paper
            preset). See :func:`roleprobe.patchscope`.
        system: the system-turn policy of every prompt and question: ``default`` (the
            template's own, date pinned), ``none`` (no system turn: the paper's format; the
            paper preset) or a system prompt text. See :mod:`roleprobe.model.system_turn`.
        ablation_at: where the ablation sits on models with post-norms (Gemma-2/3):
            ``stream`` (after them, default) or ``paper`` (before them, as the authors'
            hooks; the paper preset). See :class:`roleprobe.Ablation`.
        tie_rule: how a tie at the top of the letter logits scores: ``fractional``
            (1/k credit, default), ``paper`` (correct if the correct letter is among the
            tied, as the authors; the paper preset) or ``first``.
        batch_size: questions and prompts per forward pass.
        prefix_memory_gib: GiB one batch's saved residuals may take in the sweep's prefix
            reuse (layers beyond it are captured in chunks; results are the same). ``0``:
            the device's default (an eighth of a GPU's memory, 2 GiB on a CPU); see
            :func:`roleprobe.experiments.sweeps.default_prefix_budget`.
        lease_s: seconds without a heartbeat after which another worker's claim (on a
            sweep item or a stage) is stale and taken over; holders refresh theirs every
            tenth of it (see :mod:`roleprobe.experiments.claims`).
        seed: seed of every split and control.
    """

    model: str = "smollm2-135m-instruct"
    model_revision: str = ""
    trust_remote_code: bool = False
    device: str = "auto"
    device_map: str = ""
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
    specific: bool = False
    scope: str = "domain"
    rules: tuple[str, ...] = ("paper", "held-out")
    evaluate_rules: tuple[str, ...] = ()
    round_accuracies: bool = False
    select_fraction: float = 0.5
    correction: str = "holm"
    evaluate_all_domains: bool = False
    patchscope: bool = True
    patchscope_mode: str = "placeholder"
    system: str = "default"
    ablation_at: str = "stream"
    tie_rule: str = "fractional"
    batch_size: int = 16
    prefix_memory_gib: float = 0.0
    lease_s: float = 300.0
    seed: int = 0

    def __post_init__(self) -> None:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in _check_types(fields).items():
            object.__setattr__(self, name, value)  # widened ints, tuples for lists
        if self.questions_per_domain < 0:
            raise ValueError(
                f"questions_per_domain must be 0 (all) or a positive count, "
                f"got {self.questions_per_domain}"
            )
        if self.n_devices < 1:
            raise ValueError(f"n_devices must be at least 1, got {self.n_devices}")
        if not (math.isfinite(self.prefix_memory_gib) and self.prefix_memory_gib >= 0):
            raise ValueError(
                f"prefix_memory_gib must be 0 (the device's default) or a positive number of "
                f"GiB, got {self.prefix_memory_gib}"
            )
        if not (math.isfinite(self.lease_s) and self.lease_s > 0):
            raise ValueError(f"lease_s must be a positive number of seconds, got {self.lease_s}")
        if not 0 < self.select_fraction < 1:
            raise ValueError(
                f"select_fraction must be strictly between 0 and 1, got {self.select_fraction}"
            )
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        from roleprobe.experiments.selection import RULES

        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            raise ValueError(f"unknown rules {bad or '(none)'}; use some of {list(RULES)}")
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"rules {list(self.rules)} repeat a rule")
        if not self.evaluate_rules:
            object.__setattr__(self, "evaluate_rules", self.rules[-1:])
        stray = [r for r in self.evaluate_rules if r not in self.rules]
        if stray or len(set(self.evaluate_rules)) != len(self.evaluate_rules):
            raise ValueError(
                f"evaluate_rules {list(self.evaluate_rules)} must be distinct rules among "
                f"rules {list(self.rules)}" + (f" ({stray} are not)" if stray else "")
            )
        if self.dtype == PAPER_DTYPE:
            resolved = paper_dtype(self.model)
            if resolved is None:
                logger.info(
                    "dtype = 'paper': the authors had no loader for %r; float32", self.model
                )
            object.__setattr__(self, "dtype", resolved or "float32")
        from roleprobe.model.system_turn import normalize_system

        normalize_system(self.system)  # a blank text is refused, naming the choices
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
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed}")
        object.__setattr__(self, "roles", canonical_roles(self.roles))
        if self.specific and len(self.roles) == 1:
            raise ValueError(
                f"specific = true needs 2 roles or more (the shared part is their mean), "
                f"got roles {list(self.roles)}"
            )

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
            if _is_tuple_type(names[key].type) and isinstance(value, str | int | float):
                value = [value]  # a single value for a list setting
            values[key] = value
        try:
            return cls(**_check_types(values))
        except ValueError as err:
            message = str(err)
            raise ValueError(
                message if message.startswith(f"{where}:") else f"{where}: {message}"
            ) from None


_KINDS: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}

_PLURALS: dict[type, str] = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _is_tuple_type(tp: Any) -> bool:
    return get_origin(tp) is tuple


def _conform(key: str, tp: type, value: Any) -> Any:
    """``value`` as type ``tp`` (an int for a float widens), or a ValueError naming ``key``."""
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ValueError(f"{key} must be {_KINDS.get(tp, tp.__name__)}, got {value!r}")
    return value


def canonical_roles(roles: tuple[str, ...]) -> tuple[str, ...]:
    """Role names as the catalogue spells them (``" Lawyer"`` -> ``"lawyer"``); a name
    outside the catalogue (a custom prompt folder's role) without surrounding whitespace.

    Raises:
        ValueError: a blank name, or two names that are one role.
    """
    from roleprobe.data.roles import get_role

    out = []
    for name in roles:
        if not name.strip():
            raise ValueError(f"roles {list(roles)} hold a blank name")
        try:
            out.append(get_role(name).name)
        except ValueError:
            out.append(name.strip())
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        raise ValueError(f"roles {list(roles)} name {repeated} more than once")
    return tuple(out)


def _check_types(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a subset of the fields) checked against the fields' annotations.

    Generic over the field types (``bool``, ``int``, ``float``, ``str`` and
    ``tuple[T, ...]`` of those): a bool is never an int or a float, an int for a float
    field is widened to ``float``, a list for a tuple field becomes a tuple (so that the
    frozen config stays hashable and ``config.json`` keeps the checked values). Runs
    before every other check (:meth:`RunConfig.from_dict` and ``__post_init__``).

    Returns:
        The conformed values.

    Raises:
        ValueError: ``KEY must be an integer, got '16'`` (or a list's element:
            ``layers[0] must be an integer, got 1.5``).
    """
    types = {f.name: f.type for f in dataclasses.fields(RunConfig)}
    out: dict[str, Any] = {}
    for name, value in values.items():
        tp = types[name]
        if _is_tuple_type(tp):
            (inner, *_) = get_args(tp)
            if not isinstance(value, list | tuple):
                kind = _PLURALS.get(inner, inner.__name__)
                raise ValueError(f"{name} must be a list of {kind}, got {value!r}")
            out[name] = tuple(_conform(f"{name}[{i}]", inner, v) for i, v in enumerate(value))
        else:
            if not isinstance(tp, type):  # a new field with an annotation not handled here
                raise TypeError(f"RunConfig.{name}: unsupported field type {tp!r}")
            out[name] = _conform(name, tp, value)
    return out


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
        "dtype": "paper",
        "ablation_at": "paper",
        "tie_rule": "paper",
        "evaluate_rules": ["paper", "held-out"],
        "round_accuracies": True,
        "heldout_fraction": 0.0,
        "evaluate_all_domains": True,
        "patchscope_mode": "paper",
        "batch_size": 32,
    },
    "smoke": {
        "model": "tiny-random",
        "device": "cpu",
        "roles": ["lawyer", "mathematician"],
        "layers": [1, 2],
        "positions": [-1],
        "questions_per_domain": 8,
        "batch_size": 8,
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
            text = file.read_bytes().decode("utf-8")
            loaded = tomllib.loads(text)
        except OSError as err:
            raise ValueError(f"cannot read config {file}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise ValueError(
                f"config {file} is not UTF-8 text (byte {err.start}: {err.reason})"
            ) from err
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config {file} is not valid TOML: {err}") from err
        if "run" in loaded:
            table = loaded["run"]
            if not isinstance(table, dict):
                raise ValueError(f"{file}: run must be a [run] table of settings, got {table!r}")
            outside = sorted(set(loaded) - {"run", "submit"})
            if outside:
                raise ValueError(
                    f"{file}: settings {outside} are outside the [run] table; "
                    "put every setting under [run] or none"
                )
            loaded = table
        else:  # top-level settings; a [submit] table is roleprobe submit's
            loaded = {k: v for k, v in loaded.items() if k != "submit"}
        values |= loaded
    values |= {k: v for k, v in (overrides or {}).items() if v is not None}
    return RunConfig.from_dict(values, where=str(path) if path else "config")
