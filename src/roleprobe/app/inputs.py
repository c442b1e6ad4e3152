"""A run's inputs, read from its config without a model, and every check made before one loads.

:func:`preflight` is what ``roleprobe run`` (and :func:`roleprobe.app.pipeline.run_pipeline`)
calls first, before a run folder is created or written and before any model loads: the
config's types and names were checked when it was built (:class:`~roleprobe.app.run_config.
RunConfig`); here come what needs the file system: the run folder, the shard, the model
name, the prompt files and the questions (loaded and checked in full, as the run will use
them) and whether every role has questions in its domain. What only the model can tell
(layers beyond its depth, a paper rule with no layer to pick from) is checked by
:func:`check_model_fit` right after the model loads, before any stage computes.

Example:
    >>> cfg = load_config("demo")
    >>> preflight(cfg, "runs/demo")      # raises ValueError naming the bad setting or file
"""

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from roleprobe.app.run_config import RunConfig
from roleprobe.data.benchmarks import MultipleChoice, load_benchmark
from roleprobe.data.prompts import RolePrompts, load_prompts
from roleprobe.data.roles import ROLES, get_role

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.core.types import Model

__all__ = [
    "check_model_fit",
    "check_model_name",
    "preflight",
    "run_benchmark",
    "run_prompts",
    "run_roles",
]

logger = logging.getLogger(__name__)

NEEDS_DATA = {"prompts": ("paper",), "benchmark": ("paper", "mmlu-local")}
"""Settings whose values read the ``data`` folder."""

HUB_SPLITS = ("test", "validation", "dev")


def run_roles(config: RunConfig) -> tuple[str, ...]:
    """The run's roles (all 29 when the config lists none)."""
    return config.roles or tuple(role.name for role in ROLES)


def run_prompts(config: RunConfig) -> tuple[RolePrompts, RolePrompts | None]:
    """(train, held-out) role prompts as the run uses them; held-out is ``None`` when the
    config keeps no held-out fraction."""
    revision = None if config.prompt_revision == "final" else config.prompt_revision
    prompts = load_prompts(config.prompts, list(run_roles(config)), config.data or None, revision)
    if config.heldout_fraction == 0:
        return prompts, None
    train, held = prompts.split(config.heldout_fraction, config.seed)
    return train, held


def run_benchmark(config: RunConfig) -> MultipleChoice:
    """The run's questions (the first ``questions_per_domain`` of each domain, if set)."""
    from roleprobe.experiments.evaluation import subject_domain

    bench = load_benchmark(config.benchmark, split=config.split, path=config.data or None)
    if config.questions_per_domain <= 0:
        return bench
    items = bench.items
    domain = items["subject"].map(subject_domain)
    kept = items[items.groupby(domain).cumcount() < config.questions_per_domain]
    label = f"{bench.name}[{config.questions_per_domain}/domain]"
    return MultipleChoice(kept, label, bench.split)


def check_model_name(name: str) -> None:
    """Refuse a model name that cannot load, without loading anything.

    A built-in name, a ``tiny-random-<family>`` of a known family, a folder holding a
    ``config.json``, or anything else read as a hub name (checked only when it loads). A
    model TransformerLens cannot wrap (a Qwen-v1 ``QWenLMHeadModel``, by hub name or by its
    folder's ``config.json``) is refused here, before a run folder is written.

    Raises:
        ValueError: an unknown tiny family, a path that is not a model folder, or an
            unsupported model (see :func:`roleprobe.model.models.check_supported`).
    """
    from roleprobe.model.families import FAMILIES
    from roleprobe.model.models import EMBEDDED_MODEL, TINY_MODEL, check_supported

    check_supported(name)

    prefix = f"{TINY_MODEL}-"
    local = Path(name).expanduser()
    if name in (EMBEDDED_MODEL, TINY_MODEL) or local.is_dir():
        if local.is_dir() and not (local / "config.json").is_file():
            raise ValueError(f"model = {name!r}: the folder has no config.json")
        return
    if name.startswith(prefix):
        if name[len(prefix) :] not in FAMILIES:
            known = [TINY_MODEL, *(prefix + f for f in FAMILIES)]
            raise ValueError(f"unknown model {name!r}; the tiny random models are {known}")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep + os.sep in name:
        raise ValueError(f"model = {name!r} is not a folder (and not a hub name 'org/model')")


def preflight(
    config: RunConfig,
    out: str | os.PathLike[str],
    shard: str | None = None,
    device_here: bool = True,
) -> None:
    """Every check of a run that needs no model; nothing is written.

    Args:
        config: the run's config.
        out: the run folder (need not exist).
        shard: ``"i/n"`` (0-based) or ``None``.
        device_here: check that the device exists on this machine (``False``: only that
            its name is valid, for jobs that run elsewhere, e.g. ``roleprobe submit``).

    Raises:
        ValueError: the first problem found, naming the setting, file or value.
    """
    if not str(out).strip():
        raise ValueError("out must name a run folder, got an empty path")
    from roleprobe.app.run import check_run_folder

    check_run_folder(out)  # a file, or a folder of someone else's files: refused
    if shard is not None:
        from roleprobe.experiments.sweeps import parse_shard

        parse_shard(shard)
    check_model_name(config.model)
    from roleprobe.model.models import resolve_device, resolve_dtype

    try:
        resolve_dtype(config.dtype)
        if device_here:
            resolve_device(config.device)
        elif config.device != "auto":
            _device_name(config.device)
    except ValueError as err:
        raise ValueError(f"{err} (dtype = {config.dtype!r}, device = {config.device!r})") from None
    _check_grid(config)
    _check_data_folder(config)
    train, _ = run_prompts(config)
    _check_shape_early(config)
    if config.benchmark == "mmlu":
        if config.split not in HUB_SPLITS:
            raise ValueError(f"split = {config.split!r}: MMLU has the splits {list(HUB_SPLITS)}")
        try:  # read (and cached) now, not after stages 1-3 have run
            bench = run_benchmark(config)
        except (OSError, ConnectionError, RuntimeError) as err:
            raise ValueError(
                f"benchmark = 'mmlu' cannot be read from the hub here ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); use benchmark = "
                "'mmlu-local' with data = the MMLU release folder, or 'paper'"
            ) from None
    else:
        bench = run_benchmark(config)
    _check_domains(config, bench, list(train.role_names))
    _check_split(config, bench, list(train.role_names))


def _device_name(device: str) -> None:
    """Refuse a device name torch cannot parse (``ValueError``)."""
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}") from None


def _check_grid(config: RunConfig) -> None:
    for key in ("layers", "positions", "roles", "alphas"):
        values = getattr(config, key)
        doubled = sorted({v for v in values if values.count(v) > 1}, key=str)
        if doubled:
            raise ValueError(f"{key} lists {doubled} more than once")
    negative = [layer for layer in config.layers if layer < 0]
    if negative:
        raise ValueError(f"layers must be block indices (0 or more), got {negative}")
    if not config.alphas and not config.ablation:
        raise ValueError("alphas is empty and ablation is off: the sweep would have nothing to run")


def _check_data_folder(config: RunConfig) -> None:
    users = [k for k, values in NEEDS_DATA.items() if getattr(config, k) in values]
    if not users:
        return
    what = " and ".join(f"{k} = {getattr(config, k)!r}" for k in users)
    if not config.data:
        raise ValueError(f"{what} needs data = the data folder")
    if not Path(config.data).expanduser().is_dir():
        raise ValueError(f"data = {config.data!r} (needed by {what}) is not a folder")


def _check_domains(config: RunConfig, bench: MultipleChoice, roles: list[str]) -> None:
    from roleprobe.experiments.evaluation import subject_domain

    if bench.items.empty:
        raise ValueError(f"benchmark {bench.name!r} holds no questions")
    if config.scope == "all":
        return
    present = {subject_domain(s) for s in bench.items["subject"]}
    lacking = []
    for role in roles:
        try:
            domain = get_role(role).domain
        except ValueError:
            raise ValueError(
                f"role {role!r} is outside the catalogue: it has no domain; use scope = 'all'"
            ) from None
        if domain not in present:
            lacking.append(f"{role} ({domain})")
    if lacking:
        raise ValueError(
            f"benchmark {bench.name!r} has no questions in the domains of roles {lacking}; "
            "use another benchmark or scope = 'all'"
        )


def _check_shape_early(config: RunConfig) -> None:
    """Layers beyond the model and positions outside its chat template, from the model's
    config and tokenizer alone (no weights), when they are on this machine: found before
    stage 1, not when stage 2 loads the model. A hub model is checked when it loads (no
    network here)."""
    from roleprobe.model.families import PREFIX
    from roleprobe.model.models import EMBEDDED_MODEL, TINY_MODEL
    from roleprobe.model.plan_model import load_plan_model
    from roleprobe.vectors.activations import resolve_positions

    name = config.model
    shape = None
    if (
        Path(name).expanduser().exists()
        or name in (EMBEDDED_MODEL, TINY_MODEL)
        or name.startswith(PREFIX)
    ):
        try:
            shape = load_plan_model(name, None, config.trust_remote_code, config.system)
        except (ValueError, OSError):
            return  # the model's own load says what is wrong with it
        n_layers = shape.arch.n_layers
    else:
        cached = _cached_hub_layers(config)
        if cached is None:
            return  # not in the local cache: checked when the model loads
        n_layers = cached
    beyond = [layer for layer in config.layers if layer >= n_layers]
    if beyond:
        raise ValueError(
            f"layers {beyond} are beyond {name!r}, which has {n_layers} layers (0-{n_layers - 1})"
        )
    if (
        shape is not None
        and config.positions
        and shape.n_post_source == ("the model's chat template")
    ):
        resolve_positions(list(config.positions), shape.n_post)


def _cached_hub_layers(config: RunConfig) -> int | None:
    """A hub model's depth from its config in the local Hugging Face cache (never the
    network), or ``None`` when it is not there."""
    try:
        from transformers import AutoConfig

        from roleprobe.model.plan_model import Architecture

        hf = AutoConfig.from_pretrained(
            config.model,
            revision=config.model_revision or None,
            trust_remote_code=config.trust_remote_code,
            local_files_only=True,
        )
        return Architecture.from_config(dict(hf.to_dict()), config.model).n_layers
    except Exception:  # not cached, or not a config roleprobe reads: the load will say
        return None


def _check_split(config: RunConfig, bench: MultipleChoice, roles: list[str]) -> None:
    """Each role's questions must split into a selection and a report part (stage 5's
    held-out rule; the paper's rules select on every question)."""
    from roleprobe.experiments.evaluation import subject_domain
    from roleprobe.experiments.selection import split_ids

    if all(rule in ("paper", "paper-rounded") for rule in config.rules):
        return

    domains = bench.items["subject"].map(subject_domain)
    groups = {"all"} if config.scope == "all" else {get_role(r).domain for r in roles}
    for group in sorted(groups):
        items = bench.items if group == "all" else bench.items[domains == group]
        try:
            split_ids(items, config.select_fraction, config.seed)
        except ValueError:
            raise ValueError(
                f"{group}: {len(items)} questions cannot be split into a selection part "
                f"(select_fraction = {config.select_fraction}) and a report part; raise "
                f"questions_per_domain (now {config.questions_per_domain}) or use a "
                "benchmark with more questions"
            ) from None


def check_model_fit(config: RunConfig, model: "Model") -> None:
    """What only the loaded model can tell, checked before any stage computes.

    Raises:
        ValueError: a layer beyond the model's depth, or no layer the selection rules can
            pick (every rule uses the authors' criterion, which never picks the last 20 %
            of the layers, and layer 0's directions are zero).
    """
    from roleprobe.experiments.selection import layer_cutoff

    n_layers = int(model.cfg.n_layers)
    beyond = [layer for layer in config.layers if layer >= n_layers]
    if beyond:
        raise ValueError(
            f"layers {beyond} are beyond {config.model!r}, which has {n_layers} layers "
            f"(0-{n_layers - 1})"
        )
    cutoff = layer_cutoff(n_layers)
    layers = config.layers or tuple(range(n_layers))
    usable = [layer for layer in layers if 0 < layer < cutoff]
    if not usable:
        where = f"1-{cutoff - 1}" if cutoff > 1 else "none: the model is too shallow"
        raise ValueError(
            f"rules {list(config.rules)} pick by the authors' criterion, which never picks "
            f"the last 20 % of the layers (layer >= {cutoff} of {n_layers}), and layer 0's "
            f"directions are zero: with layers = {list(layers)} on {config.model!r} there is "
            f"nothing to pick (usable layers: {where})"
        )
    if config.positions:
        from roleprobe.model.chat import ChatTemplate
        from roleprobe.vectors.activations import resolve_positions

        n_post = ChatTemplate.from_tokenizer(model.tokenizer, config.system).n_post
        resolve_positions(list(config.positions), n_post)
