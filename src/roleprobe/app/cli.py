"""The ``roleprobe`` command line: a thin layer that parses arguments and calls the library.

Subcommands:
    ``roleprobe run --preset demo --out runs/demo``: the numbered pipeline (see
    :mod:`roleprobe.app.pipeline`; the folder's layout is :mod:`roleprobe.app.run`'s);
    ``--config run.toml`` for your own, ``--shard i/n`` for one part of the sweep,
    ``--until STAGE`` to stop early.
    ``roleprobe plan --preset paper --model google/gemma-2-9b-it``: what a run would cost
    (work items, forward passes, tokens, FLOPs, GPU-hours, prefix memory), from the model's
    config alone; the same settings as ``run`` (see :mod:`roleprobe.experiments.cost`).
    ``roleprobe submit --preset paper --model ... --out ... --partition gpu``: the whole run
    as Slurm jobs through submitit (stages 1-3, the sweep as an array, stages 5-8; see
    :mod:`roleprobe.app.submit`); ``--executor local`` runs the same graph here.
    ``roleprobe status --out DIR``: a run folder's stages, sweep parts and claims.
    ``roleprobe sweep``/``merge``/``figures``: single stages of a run folder (``figures``
    makes the report stage again, see :func:`roleprobe.app.pipeline.rerun_stage`).
    ``roleprobe directions``: compute and save role directions.
    ``roleprobe evaluate``: score a benchmark under the baseline or a persona.
    ``roleprobe readout``: patchscope and logit lens of one role's direction.
    ``roleprobe chat "PROMPT"``: answer one prompt with a model (the set-up smoke test).
    ``roleprobe info``: a model's layers, hook names, post-instruction tokens, letter ids.
    ``roleprobe models``: what :func:`roleprobe.load_model` can load here.

Exit status: 0 on success (``run``/``sweep``: every stage asked for is complete; with
``--shard``, that shard's part of the sweep), 3 when the work asked for is incomplete
because other workers hold part of it (sweep items or a later stage; one line on stderr says
what is left and who holds it: rerun once they finish, or pass ``--wait``), 2 for a usage
error (a bad command line: unknown flag, a value outside a flag's choices, an empty
``--out``), 1 for a runtime error (the library refused an input or a file while running: a
bad config, device or data file), 130 when interrupted.
Errors print one line (``roleprobe: error: ...``); ``--debug`` shows the traceback instead.
``--quiet`` and ``--debug`` go before or after the subcommand (``roleprobe run --quiet ...``).
``python -m roleprobe`` is the same command.
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from roleprobe import __version__

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.app.run import Run
    from roleprobe.app.run_config import RunConfig
    from roleprobe.core.types import Model

logger = logging.getLogger("roleprobe")

DTYPE_NAMES = ("float32", "bfloat16", "float16", "float64")
"""The ``--dtype`` choices (the names :func:`roleprobe.model.models.resolve_dtype` takes)."""

EXIT_RUNTIME_ERROR = 1
EXIT_USAGE_ERROR = 2
EXIT_INCOMPLETE = 3
"""``run``/``sweep``: other workers hold part of the work asked for (see the module docstring)."""


class UsageError(ValueError):
    """A command line the CLI itself refuses (exit status 2, like argparse's own errors)."""


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _positive_int(value: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _max_memory(value: str) -> dict[str | int, str | int]:
    """An argparse type: ``0=20GiB,1=20GiB,cpu=60GiB`` -> ``{0: "20GiB", 1: "20GiB", ...}``."""
    budget: dict[str | int, str | int] = {}
    for part in value.split(","):
        device, sep, size = (x.strip() for x in part.partition("="))
        if not sep or not device or not size:
            raise argparse.ArgumentTypeError(
                f"expected DEVICE=SIZE[,DEVICE=SIZE...] (e.g. 0=20GiB,cpu=60GiB), got {value!r}"
            )
        budget[int(device) if device.isdigit() else device] = size
    return budget


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    """``--debug``/``--quiet``: on the top-level parser (default ``False``) and on every
    subcommand (default suppressed, so a flag given before the subcommand is kept)."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks on errors"
    )
    parser.add_argument(
        "--quiet", action="store_true", default=default, help="only warnings and results"
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model name (see `roleprobe models`)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_NAMES, help="parameter dtype")
    parser.add_argument(
        "--model-revision",
        default=None,
        metavar="REV",
        help="hub models: the branch, tag or commit to load (recorded with the results)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="hub or folder models: run the repository's own modelling code",
    )
    parser.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help="hub or folder models: spread the model over devices (auto, balanced, ...); "
        "leave --device at auto",
    )
    parser.add_argument(
        "--max-memory",
        type=_max_memory,
        default=None,
        metavar="DEV=SIZE,...",
        help="with --device-map: per-device budget, e.g. 0=20GiB,1=20GiB,cpu=60GiB",
    )
    parser.add_argument(
        "--system",
        default="default",
        help="system-turn policy: default (the template's own, date pinned), none (the "
        "paper's format: no system turn) or a system prompt text",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    from roleprobe.app.run import STAGES
    from roleprobe.app.run_config import PRESETS

    parser = argparse.ArgumentParser(
        prog="roleprobe",
        description="Role vectors in a language model's residual stream.",
        epilog="exit status: 0 success, 1 runtime error, 2 usage error, 3 incomplete (other "
        "workers hold part of the work asked for), 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"roleprobe {__version__}")
    _add_global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser("chat", help="answer one prompt in the model's chat template")
    chat.add_argument("prompt", help="the user turn")
    chat.add_argument("--max-new-tokens", type=_positive_int, default=64)
    chat.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    chat.add_argument("--seed", type=int, default=None)
    _add_model_args(chat)

    info = sub.add_parser("info", help="a model's layers, hook names and template tokens")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(info)

    sub.add_parser("models", help="models that can be loaded here")

    keys = [s.key for s in STAGES]
    run = sub.add_parser(
        "run",
        help="the pipeline: prompts -> ... -> report, resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the numbered pipeline into a run folder, one sub-folder per stage:\n\n"
        + "\n".join(f"  {s.name:15} {s.summary}" for s in STAGES)
        + "\n\nA finished stage is not made again, so a rerun resumes; --until stops early.\n"
        "Settings: a --preset, then a --config TOML file, then the flags (later wins).",
    )
    _add_run_args(run, sorted(PRESETS))
    run.add_argument(
        "--until",
        default=None,
        choices=[*keys, *(s.name for s in STAGES), *(a for s in STAGES for a in s.aliases)],
        metavar="STAGE",
        help=f"stop after this stage: one of {', '.join(keys)} (or its folder name, "
        f"e.g. {STAGES[2].name})",
    )
    run.add_argument(
        "--dtype",
        default=None,
        choices=(*DTYPE_NAMES, "paper"),
        help="overrides the preset's dtype (paper: the authors' dtype for the model's family)",
    )
    _add_wait(run)

    plan = sub.add_parser(
        "plan",
        help="what a run would cost (passes, tokens, FLOPs, GPU-hours), before any compute",
        description="Count what `roleprobe run` would compute with the same settings: work "
        "items, forward passes, tokens, FLOPs and GPU-hours per stage and per role, and the "
        "sweep's prefix memory. Reads the model's config (a hub name from the local cache, a "
        "folder or its config.json); never loads weights or runs the model.",
    )
    _add_run_args(plan, sorted(PRESETS), folder=False)
    plan.add_argument(
        "--dtype",
        default=None,
        choices=(*DTYPE_NAMES, "paper"),
        help="overrides the preset's dtype (sets the prefix memory)",
    )
    plan.add_argument(
        "--gpu",
        default="h100",
        help="h100, h200, a100, l40s (bf16 dense peak) or a peak in FLOP/s (e.g. 989e12)",
    )
    plan.add_argument(
        "--utilisation",
        type=float,
        default=0.5,
        help="share of the GPU's peak achieved (default 0.5; 0.4 and 0.6 are shown too)",
    )
    plan.add_argument("--json", default=None, metavar="PATH", help="write the full plan as JSON")

    sweep = sub.add_parser("sweep", help="stages 1-4 of a run (one shard of the sweep)")
    _add_run_args(sweep, sorted(PRESETS))
    _add_wait(sweep)

    submit = sub.add_parser(
        "submit",
        help="the whole run as Slurm jobs (submitit): stages 1-3, a sweep array, stages 5-8",
        description="Submit a run as three jobs: stages 1-3; the sweep as a job array of "
        "--workers tasks (after the first job succeeds); stages 5-8 after every task ended "
        "(it also finishes what a failed task left). Timed-out or preempted jobs are "
        "requeued and resume. Settings: as `run`, plus a [submit] table in the --config TOML "
        "(the flags below override it). --executor local runs the same graph on this machine.",
    )
    _add_run_args(submit, sorted(PRESETS), shard=False)
    _add_submit_args(submit)

    status = sub.add_parser("status", help="a run folder's stages, sweep parts and claims")
    status.add_argument("--out", required=True, help="the run folder")

    merge = sub.add_parser("merge", help="check a run's sweep is complete; list missing parts")
    merge.add_argument("out", help="the run folder (or a sweep store folder)")

    figures = sub.add_parser("figures", help="(re)build a finished run's figures and report")
    figures.add_argument("out", help="the run folder")

    directions = sub.add_parser("directions", help="compute role directions and save them")
    _add_model_args(directions)
    directions.add_argument("--roles", nargs="+", default=None, help="default: all 29")
    directions.add_argument("--prompts", default="builtin", help="builtin, paper or a folder")
    directions.add_argument("--data", default=None, help="the paper's data folder")
    directions.add_argument(
        "--revision",
        default=None,
        choices=("final", "v1"),
        help="--prompts paper: the official release (final, default) or the first pipeline's (v1)",
    )
    directions.add_argument("--batch-size", type=_positive_int, default=16)
    directions.add_argument("--out", required=True, help="folder to save the directions in")

    evaluate = sub.add_parser("evaluate", help="score a benchmark (baseline or persona)")
    _add_model_args(evaluate)
    evaluate.add_argument("--benchmark", default="builtin", help="builtin, paper, mmlu-local, mmlu")
    evaluate.add_argument("--data", default=None, help="data folder of the benchmark")
    evaluate.add_argument("--domain", default=None, help="one of the 8 domains")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--persona", default=None, help="a role to state in the prompt")
    evaluate.add_argument("--batch-size", type=_positive_int, default=16)
    evaluate.add_argument("--out", default=None, help="per-item CSV to write")

    readout = sub.add_parser("readout", help="patchscope and logit lens of a role direction")
    readout.add_argument("directions", help="a folder saved by `roleprobe directions`")
    readout.add_argument("--role", required=True)
    readout.add_argument("--layer", type=int, required=True)
    readout.add_argument("--position", type=int, default=-1)
    readout.add_argument("--alpha", type=float, default=3.0)
    readout.add_argument(
        "--mode",
        default="placeholder",
        choices=("placeholder", "paper"),
        help="patchscope: add at the placeholder only (default) or everywhere (the paper's)",
    )
    _add_model_args(readout)

    from roleprobe.app import attribute as attribute_module

    attribute = sub.add_parser(
        "attribute",
        help="where role directions come from: components, shared part, role confusion, "
        "persona shift, persona vs addition",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=attribute_module.__doc__,
    )
    attribute_module.add_arguments(attribute)
    _add_model_args(attribute)
    for subcommand in sub.choices.values():
        _add_global_flags(subcommand, argparse.SUPPRESS)
    return parser


def _add_run_args(
    parser: argparse.ArgumentParser,
    presets: Sequence[str],
    folder: bool = True,
    shard: bool = True,
) -> None:
    """A run's settings: preset, TOML and overrides (``folder``: also the run folder's
    ``--out``, ``--lease``, ``--resume`` and, with ``shard``, ``--shard``, which ``plan``
    has no use for)."""
    parser.add_argument(
        "--preset",
        default=None,
        choices=presets,
        help="the preset to start from (--config and the flags below override it)",
    )
    parser.add_argument("--config", default=None, help="a TOML file ([run] table or top level)")
    if folder:
        parser.add_argument("--out", required=True, help="the run folder (resumes if it exists)")
        if shard:
            parser.add_argument("--shard", default=None, help="i/n: do only this part of the sweep")
        parser.add_argument(
            "--lease",
            type=float,
            default=None,
            metavar="SECONDS",
            help="a worker's claim without a heartbeat for this long is taken over (default 300)",
        )
        parser.add_argument(
            "--resume",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="continue a run folder that has finished stages (default); --no-resume refuses",
        )
    parser.add_argument("--model", default=None, help="overrides the preset's model")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, ...")
    parser.add_argument(
        "--model-revision",
        default=None,
        metavar="REV",
        help="hub models: branch, tag or commit (recorded in every manifest)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hub or folder models: run the repository's own modelling code",
    )
    parser.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help="hub models: auto, balanced, ... (leave --device unset)",
    )
    parser.add_argument("--roles", nargs="+", default=None, help="overrides the preset's roles")
    parser.add_argument(
        "--specific",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also sweep each role's specific part (direction minus the roles' mean), "
        "with its controls",
    )


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when other workers hold the last sweep items or a later stage, wait for them "
        "(taking over from any that dies) instead of exiting with status 3",
    )


def _add_submit_args(parser: argparse.ArgumentParser) -> None:
    """``roleprobe submit``'s job settings (each overrides the TOML's [submit] table)."""
    from roleprobe.app.submit import EXECUTORS

    parser.add_argument("--executor", default=None, choices=EXECUTORS, help="default slurm")
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="tasks of the sweep's array (default: sized from `roleprobe plan`'s estimate "
        "and --time)",
    )
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--qos", default=None)
    parser.add_argument("--constraint", default=None, help="Slurm node features")
    parser.add_argument("--gpus-per-task", type=int, default=None, help="default 1")
    parser.add_argument("--cpus-per-task", type=_positive_int, default=None, help="default 8")
    parser.add_argument("--mem-gb", type=int, default=None, help="default: the partition's")
    parser.add_argument(
        "--time", type=_minutes, default=None, help="each job's limit: minutes or H:MM:SS"
    )
    parser.add_argument(
        "--max-requeues", type=int, default=None, help="requeues after a timeout (default 3)"
    )
    parser.add_argument(
        "--gpu", default=None, help="what the plan prices the sweep at when sizing (h100)"
    )
    parser.add_argument(
        "--slurm-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="a further sbatch option, e.g. mail_type=END (repeatable)",
    )


def _minutes(value: str) -> int:
    """An argparse type: a time limit as Slurm writes it (``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``), in whole minutes (rounded up)."""
    text = value.strip()
    days, dash, clock = text.partition("-")
    if not dash:
        days, clock = "0", text
    parts = clock.split(":")
    if not days.isdigit() or not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected minutes or [D-]HH:MM:SS, got {value!r}")
    nums = [int(p) for p in parts]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        hours, mins, secs = [*nums, 0, 0][:3]
    elif len(nums) == 3:  # HH:MM:SS
        hours, mins, secs = nums
    else:  # MM or MM:SS
        hours, mins, secs = 0, nums[0], nums[1] if len(nums) == 2 else 0
    seconds = ((int(days) * 24 + hours) * 60 + mins) * 60 + secs
    if seconds < 60:
        raise argparse.ArgumentTypeError(f"a time limit must be at least 1 minute, got {value!r}")
    return -(-seconds // 60)


def _load(args: argparse.Namespace) -> "Model":
    """The model the model flags name (see :func:`_add_model_args`)."""
    from roleprobe.model.models import load_model

    return load_model(
        args.model,
        device=args.device,
        dtype=args.dtype,
        revision=args.model_revision,
        trust_remote_code=args.trust_remote_code,
        device_map=args.device_map,
        max_memory=args.max_memory,
    )


def _cmd_chat(args: argparse.Namespace) -> None:
    from roleprobe.steering.generation import generate

    start = time.perf_counter()
    model = _load(args)
    logger.info("loaded %s in %.1fs", args.model, time.perf_counter() - start)
    (text,) = generate(
        model,
        [args.prompt],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        seed=args.seed,
        system=args.system,
    )
    _out(text)


def _cmd_info(args: argparse.Namespace) -> None:
    from roleprobe.model.chat import ChatTemplate, answer_letter_ids

    model = _load(args)
    tokenizer = model.tokenizer
    template = ChatTemplate.from_tokenizer(tokenizer, args.system)
    letters = answer_letter_ids(tokenizer, system=args.system)
    n_layers = model.cfg.n_layers
    info = {
        "model": args.model,
        "n_layers": n_layers,
        "d_model": model.cfg.d_model,
        "n_ctx": model.cfg.n_ctx,
        "device": str(model.cfg.device),
        "dtype": str(model.cfg.dtype),
        "hook_points": [
            f"blocks.{{0..{n_layers - 1}}}.{name}"
            for name in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
        ],
        "system": template.system,
        "chat_format": template.render(tokenizer),
        "post_instruction_ids": list(template.suffix_ids),
        "post_instruction_tokens": template.post_instruction_tokens(tokenizer),
        "answer_letter_ids": dict(zip("ABCD", letters, strict=True)),
    }
    if args.json:
        _out(json.dumps(info, indent=1))
        return
    for key, value in info.items():
        _out(f"{key:24} {value!r}" if "tokens" in key else f"{key:24} {value}")


def _cmd_models(args: argparse.Namespace) -> None:
    from roleprobe.model.models import available_models

    for entry in available_models():
        status = "offline" if entry.offline else "needs download"
        _out(f"{entry.name:24} {status:15} {entry.source:30} {entry.note}")


def _path_arg(value: str, flag: str = "--out") -> str:
    """``value`` unless it is empty or blank (which would mean the current folder)."""
    if not value.strip():
        raise UsageError(f"{flag} must name a path, got {value!r}")
    return value


def _writable_parent(path: str, flag: str) -> None:
    """Refuse ``path`` when its folder cannot be written (before any long computation)."""
    import os
    from pathlib import Path

    parent = Path(path).expanduser().resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r}: the folder {str(parent)!r} is not writable here")


def _run_config(args: argparse.Namespace) -> "RunConfig":
    """The run's config from ``--preset``/``--config``/flags, validated before any write."""
    from roleprobe.app.run_config import PRESETS, load_config

    if hasattr(args, "out"):
        _path_arg(args.out)
    if args.preset is None and args.config is None:
        raise UsageError(f"give --preset ({', '.join(sorted(PRESETS))}) or --config FILE")
    overrides = {
        "model": args.model,
        "device": args.device,
        "dtype": getattr(args, "dtype", None),  # `run --dtype`; `sweep` keeps the config's
        "roles": args.roles,
        "model_revision": getattr(args, "model_revision", None),
        "trust_remote_code": getattr(args, "trust_remote_code", None),
        "device_map": getattr(args, "device_map", None),
        "specific": getattr(args, "specific", None),
        "lease_s": getattr(args, "lease", None),
    }
    return load_config(args.preset, args.config, overrides)


def _cmd_plan(args: argparse.Namespace) -> None:
    from roleprobe.app.plan import build_plan, format_plan
    from roleprobe.app.run import STAGES
    from roleprobe.core.io import write_json
    from roleprobe.experiments.gpus import check_utilisation, resolve_gpu

    try:
        gpu = resolve_gpu(args.gpu)
    except ValueError as err:
        raise UsageError(f"--gpu: {err}") from None
    try:
        utilisation = check_utilisation(args.utilisation)
    except ValueError as err:
        raise UsageError(f"--utilisation: {err}") from None
    if args.json is not None:
        _path_arg(args.json, "--json")
    plan = build_plan(_run_config(args), gpu, utilisation)
    _out(format_plan(plan, {s.key: s.name for s in STAGES}))
    if args.json is not None:
        _out(f"plan: {write_json(args.json, plan.to_dict())}")


def _report_paths(out: str) -> None:
    from roleprobe.app.run import RunPaths

    paths = RunPaths(out)
    if paths.report_html.exists():
        _out(f"report: {paths.report_html}")
        _out(f"summary: {paths.summary_md}")


class Incomplete(Exception):
    """The work asked for is incomplete: other workers hold part of it (exit status 3)."""


def _pipeline(args: argparse.Namespace, until: str | None) -> "Run":
    from roleprobe.app.pipeline import run_pipeline

    return run_pipeline(
        _run_config(args),
        args.out,
        shard=args.shard,
        until=until,
        resume=args.resume,
        wait=args.wait,
    )


def _cmd_run(args: argparse.Namespace) -> None:
    run = _pipeline(args, args.until)
    _out(f"run folder: {run.out}")
    _report_paths(args.out)
    if run.pending:
        raise Incomplete(run.pending)


def _cmd_sweep(args: argparse.Namespace) -> None:
    from roleprobe.app.run import SWEEP

    run = _pipeline(args, SWEEP.key)
    _out(f"sweep store: {run.paths.sweep_store}")
    if run.pending:
        raise Incomplete(run.pending)


def _cmd_submit(args: argparse.Namespace) -> None:
    from roleprobe.app.submit import load_submit_settings, submit_run

    config = _run_config(args)
    extra = None
    if args.slurm_arg:
        pairs = [item.split("=", 1) for item in args.slurm_arg]
        bad = [item for item, pair in zip(args.slurm_arg, pairs, strict=True) if len(pair) != 2]
        if bad:
            raise UsageError(f"--slurm-arg expects KEY=VALUE, got {bad[0]!r}")
        extra = {k.strip(): v.strip() for k, v in pairs}
    overrides = {
        "executor": args.executor,
        "workers": args.workers,
        "partition": args.partition,
        "account": args.account,
        "qos": args.qos,
        "constraint": args.constraint,
        "gpus_per_task": args.gpus_per_task,
        "cpus_per_task": args.cpus_per_task,
        "mem_gb": args.mem_gb,
        "time_min": args.time,
        "max_requeues": args.max_requeues,
        "gpu": args.gpu,
        "slurm_args": extra,
    }
    settings = load_submit_settings(args.config, overrides)
    submission = submit_run(config, args.out, settings)
    for line in submission.follow():
        _out(line)
    _out(f"job ids: {submission.out / 'jobs' / 'submission.json'}")


def _cmd_status(args: argparse.Namespace) -> None:
    from roleprobe.app.status import run_status

    for line in run_status(_path_arg(args.out, "--out")):
        _out(line)


def _cmd_merge(args: argparse.Namespace) -> None:
    from pathlib import Path

    from roleprobe.app.run import SWEEP, RunPaths
    from roleprobe.experiments.sweeps import merge

    paths = RunPaths(_path_arg(args.out, "out"))
    store = paths.sweep_store if paths.folder(SWEEP).exists() else Path(args.out)
    result = merge(store)
    _out(f"complete: {result.n_rows} rows, {len(result.baseline)} baseline rows in {store}")


def _cmd_figures(args: argparse.Namespace) -> None:
    from roleprobe.app.pipeline import rerun_stage
    from roleprobe.app.run import REPORT

    rerun_stage(_path_arg(args.out, "out"), REPORT)
    _report_paths(args.out)


def _cmd_directions(args: argparse.Namespace) -> None:
    from roleprobe.vectors.directions import compute_directions

    _path_arg(args.out)
    from roleprobe.data.prompts import load_prompts

    # the roles and prompts are read (and refused, naming them) before the model loads
    load_prompts(args.prompts, args.roles, args.data, args.revision)
    _writable_parent(args.out, "--out")
    model = _load(args)
    rd = compute_directions(
        model,
        roles=args.roles,
        source=args.prompts,
        data_dir=args.data,
        batch_size=args.batch_size,
        system=args.system,
        revision=args.revision,
    )
    _out(f"saved {len(rd.roles)} roles x {len(rd.layers)} layers to {rd.save(args.out)}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from roleprobe.data.benchmarks import load_benchmark
    from roleprobe.experiments.evaluation import Baseline, Persona, evaluate
    from roleprobe.results.stats import accuracy

    if args.out is not None:
        _path_arg(args.out)
        _writable_parent(args.out, "--out")  # before the benchmark is scored, not after
    bench = load_benchmark(args.benchmark, domain=args.domain, split=args.split, path=args.data)
    if args.persona:
        from roleprobe.data.roles import get_role

        get_role(args.persona)
    model = _load(args)
    condition = Persona(args.persona) if args.persona else Baseline()
    df = evaluate(model, bench, condition, batch_size=args.batch_size, system=args.system)
    acc = accuracy(df)
    _out(
        f"{bench.name}: accuracy {acc['accuracy']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]"
        f" n={len(df)}; majority letter {acc['majority_letter']} scores "
        f"{acc['majority_baseline']:.3f}"
    )
    if args.out:
        df.to_csv(args.out, index=False)
        _out(f"per-item table: {args.out}")


def _cmd_readout(args: argparse.Namespace) -> None:
    from roleprobe.vectors.directions import RoleDirections
    from roleprobe.vectors.readouts import logit_lens, patchscope

    # the file, role, layer and position are checked before the model loads
    saved = RoleDirections.load(args.directions)
    saved.vector(args.role, args.layer, args.position)
    model = _load(args)
    rd = RoleDirections.load(args.directions, model)
    d = rd.vector(args.role, args.layer, args.position)
    # the prompt is formatted as the directions were (their recorded system-turn policy)
    res = patchscope(model, d, args.layer, alpha=args.alpha, mode=args.mode, system=rd.system)
    _out(f"patchscope (layer {args.layer}, alpha {args.alpha}):")
    _out(f"  steered:   {res.steered}")
    _out(f"  unsteered: {res.unsteered}")
    lens = logit_lens(model, rd, args.role, args.position, k=8, layers=[args.layer])
    for sign, rows in lens.groupby("sign", sort=False):
        _out(f"logit lens {sign}: {' '.join(repr(t) for t in rows['token'])}")


def _cmd_attribute(args: argparse.Namespace) -> None:
    from roleprobe.app.attribute import check_arguments, run_attribute

    _path_arg(args.out)
    try:
        check_arguments(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = run_attribute(args, _load(args))
    for path in result["files"]:
        _out(f"wrote {path}")


_COMMANDS = {
    "chat": _cmd_chat,
    "info": _cmd_info,
    "models": _cmd_models,
    "run": _cmd_run,
    "plan": _cmd_plan,
    "sweep": _cmd_sweep,
    "submit": _cmd_submit,
    "status": _cmd_status,
    "merge": _cmd_merge,
    "figures": _cmd_figures,
    "directions": _cmd_directions,
    "evaluate": _cmd_evaluate,
    "readout": _cmd_readout,
    "attribute": _cmd_attribute,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.quiet:
        from roleprobe.core.progress import set_progress

        set_progress(False)
    try:
        _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        sys.stderr.write("roleprobe: interrupted\n")
        return 130
    except Incomplete as err:
        sys.stderr.write(f"roleprobe: incomplete: {_one_line(err)}\n")
        return EXIT_INCOMPLETE
    except Exception as err:
        if args.debug:
            raise
        sys.stderr.write(f"roleprobe: error: {_one_line(err)}\n")
        return EXIT_USAGE_ERROR if isinstance(err, UsageError) else EXIT_RUNTIME_ERROR
    return 0


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (its type name when it has no message)."""
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
