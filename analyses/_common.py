"""Shared plumbing of the analyses: arguments, model and data loading, writing outputs.

Every analysis script is a thin jupytext "percent" script over the public API
(``import roleprobe as rp``). This module only parses arguments, loads the model, the
questions and the sweep the scripts share, and writes figures and tables:

* :func:`write_figure` writes ``NAME.html`` next to one shared ``plotly.min.js`` in the
  output folder (the installed plotly's bundle, loaded by relative path: the pages open
  offline, and a bundle of another plotly version is replaced), and ``NAME.png`` when a
  static exporter works here (``kaleido>=1`` plus a Chrome/Chromium; otherwise one logged
  line says why PNGs are skipped).
* :func:`sweep_result` runs a sweep into ``OUT/sweep`` (resumable: rerunning, or another
  script with the same grid, reuses it) or reads an existing store (``--store``); a store
  that is still being written is cut to its finished (role, layer) cells.

Model names: ``smollm2-135m-instruct`` (the embedded default), a hub name, a folder, or
``tiny-random``, which here is the seeded tiny random Llama with ``--tiny-layers`` blocks
(default 4: the library's own ``tiny-random`` has 2, and the paper's rule keeps only layers
below ``0.8 * n_layers``, which with 2 blocks leaves layer 0, whose post-instruction
directions are exactly zero).
"""

import argparse
import atexit
import dataclasses
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

import roleprobe as rp
from roleprobe.app.report import write_plotlyjs
from roleprobe.core.io import write_json
from roleprobe.core.types import Model
from roleprobe.experiments.selection import layer_cutoff
from roleprobe.experiments.store import StoreMismatchError, read_manifest

logger = logging.getLogger("analyses")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_DATA = Path(os.environ.get("ROLEPROBE_SHARED_DATA", REPO.parent / "shared" / "data"))
BENCHMARKS = ("builtin", "paper", "mmlu-local")
SWEEP_ROLES = ("lawyer", "nurse", "mathematician")
QUICK_ROLES = ("lawyer", "nurse")
SWEEP_DIR = "sweep"

_png_state: dict[str, Any] = {"ok": None}


# ------------------------------------------------------------------ arguments ----------------
def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every analysis shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default=DEFAULT_MODEL, help="model name (default: %(default)s)")
    p.add_argument(
        "--tiny-layers",
        type=int,
        default=4,
        help="blocks of the tiny random model (--model tiny-random), default %(default)s",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "figures",
        help="output folder (default: figures/ in the repository)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    p.add_argument("--roles", default=None, help="comma-separated roles, e.g. 'lawyer,nurse'")
    p.add_argument("--benchmark", choices=BENCHMARKS, default="builtin")
    p.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="shared data folder (paper, MMLU)"
    )
    p.add_argument("--quick", action="store_true", help="a small, fast version (smoke runs)")
    p.add_argument("--no-png", action="store_true", help="write HTML only")
    p.add_argument(
        "--plotlyjs",
        choices=("directory", "cdn"),
        default="directory",
        help="plotly.js beside the pages (default; opens offline) or from its CDN",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Options of the analyses that need a sweep (02, 03, 05)."""
    p.add_argument(
        "--store", type=Path, default=None, help="read this sweep store instead of sweeping"
    )
    p.add_argument("--directions", type=Path, default=None, help="RoleDirections folder (from 01)")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: every 6th)")
    p.add_argument("--layer-step", type=int, default=6, help="default layers: every N-th")
    p.add_argument("--positions", default="-1", help="comma-separated position labels")
    p.add_argument("--alphas", default="1,3", help="comma-separated addition strengths")
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--no-controls", action="store_true")
    p.add_argument("--scope", choices=("domain", "all"), default="domain")


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (in a notebook kernel: the defaults), set up logging and the out folder."""
    if argv is None and "ipykernel" in sys.modules:
        argv = []
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for name in ("analyses", "roleprobe"):
        logging.getLogger(name).setLevel(logging.INFO)
    args.out.mkdir(parents=True, exist_ok=True)
    args.progress = sys.stderr.isatty()
    return args


def split_list(text: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (``None`` stays ``None``)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def roles(args: argparse.Namespace, default: Sequence[str] | None) -> list[str] | None:
    """``--roles`` if given, else ``default`` (``None``: every role)."""
    return split_list(args.roles) or (list(default) if default is not None else None)


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


# ------------------------------------------------------------------ model and data -----------
def load_model(args: argparse.Namespace) -> Model:
    """The model of ``--model`` (see the module docstring for ``tiny-random``)."""
    if args.model == rp.TINY_MODEL and args.tiny_layers != rp.TinyConfig().n_layers:
        config = rp.TinyConfig(n_layers=args.tiny_layers)
        name = f"{rp.TINY_MODEL}-{args.tiny_layers}l"
        model = rp.wrap_hf_model(
            rp.tiny_hf_model(config), rp.tiny_tokenizer(), name, args.device, args.dtype
        )
    else:
        model = rp.load_model(args.model, device=args.device, dtype=args.dtype)
    logger.info(
        "model %s: %d layers, d_model %d", args.model, model.cfg.n_layers, model.cfg.d_model
    )
    return model


def load_benchmark(args: argparse.Namespace) -> Any:
    """The questions of ``--benchmark`` (all eight domains); ``--quick`` keeps few of them.

    Quick mode keeps the two shortest questions of every subject: small, and still
    splittable into selection and report halves per subject.
    """
    if args.benchmark == "builtin":
        bench = rp.load_benchmark("builtin")
    elif args.benchmark == "paper":
        bench = rp.load_benchmark("paper", path=args.data / "role-vectors-paper")
    else:
        subjects = sorted({s for subs in rp.DOMAIN_SUBJECTS.values() for s in subs})
        bench = rp.load_benchmark("mmlu-local", subjects=subjects, path=args.data / "mmlu")
    if args.quick:
        items = bench.items
        length = items[["question", "A", "B", "C", "D"]].astype(str).sum(axis=1).str.len()
        order = items.assign(_len=length).sort_values(["subject", "_len", "id"], kind="stable")
        keep = order.groupby("subject", sort=False).head(2).drop(columns="_len")
        bench = rp.MultipleChoice(keep, f"{bench.name}|quick", bench.split)
    logger.info("benchmark %s: %d questions", bench.name, len(bench))
    return bench


def directions(
    args: argparse.Namespace, model: Model, role_names: Sequence[str]
) -> rp.RoleDirections:
    """``--directions`` if given (checked against the model), else computed on the built-in
    prompts for ``role_names``."""
    if getattr(args, "directions", None) is not None:
        rd = rp.RoleDirections.load(args.directions, model)
        logger.info("loaded directions for %d roles from %s", len(rd.roles), args.directions)
        return rd
    return rp.compute_directions(model, roles=list(role_names), progress=args.progress)


# ------------------------------------------------------------------ sweeps -------------------
def sweep_layers(args: argparse.Namespace, n_layers: int) -> list[int]:
    """``--layers``, or every ``--layer-step``-th layer from the step on (quick: the middle)."""
    if args.layers:
        return [int(x) for x in split_list(args.layers) or []]
    if args.quick:
        return [n_layers // 2]
    return list(range(args.layer_step, n_layers, args.layer_step)) or [n_layers // 2]


def _position(label: str) -> int | str:
    return int(label) if re.fullmatch(r"-?\d+", label) else label


def sweep_result(args: argparse.Namespace, model_loader: Any) -> tuple[Any, Any]:
    """The sweep to analyse and the directions it used: read ``--store`` or run one.

    Args:
        args: parsed arguments (with :func:`add_sweep_args`).
        model_loader: a zero-argument callable returning the model; called only when a
            model is needed (running a sweep), so that reading a store needs none.

    Returns:
        ``(result, rd)`` with ``rd`` ``None`` when a store was read (see
        :func:`store_directions`). An incomplete store is cut to its finished cells
        (:func:`finished_part`).
    """
    if args.store is not None:
        merged = rp.merge(args.store, allow_partial=True)
        result = finished_part(merged)
        write_sweep_status(result, len(merged.missing), args.out)
        return result, None
    model = model_loader()
    bench = load_benchmark(args)
    default_roles = QUICK_ROLES if args.quick else SWEEP_ROLES
    names = roles(args, default_roles) or list(default_roles)
    rd = directions(args, model, names)
    store = args.out / SWEEP_DIR
    logger.info("sweeping into %s (resumable; reuse it with --store %s)", store, store)
    try:
        result = rp.sweep(
            model,
            rd,
            bench,
            roles=names,
            layers=sweep_layers(args, int(model.cfg.n_layers)),
            positions=[_position(p) for p in split_list(args.positions) or ["-1"]],
            alphas=[float(a) for a in split_list(args.alphas) or []],
            ablation=not args.no_ablation,
            controls=not args.no_controls,
            scope=args.scope,
            store=store,
            seed=args.seed,
            progress=args.progress,
        )
    except StoreMismatchError as err:
        raise SystemExit(
            f"{err}\n(another grid, model or benchmark was swept into {store} before: "
            "use another --out, or delete that folder)"
        ) from err
    write_sweep_status(result, len(result.missing), args.out)
    return result, rd


def finished_part(result: Any) -> Any:
    """A complete sweep unchanged; an incomplete one cut to its finished (role, layer) cells.

    A (role, layer) cell is kept when its rows cover exactly the questions of the role's
    baseline; the returned result says ``complete`` so that selection can run on it, and
    the cut is logged (and written by :func:`write_sweep_status`).
    """
    if result.complete:
        return result
    table, baseline = result.table, result.baseline
    base_ids = {g: set(rows["id"]) for g, rows in baseline.groupby("group")}
    keep: set[tuple[str, int]] = set()
    if not table.empty:
        for (role, layer), rows in table.groupby(["role", "layer"]):
            ids = base_ids.get(result.role_group(role))
            if ids and set(rows["id"]) == ids:
                keep.add((str(role), int(layer)))
    cutoff = layer_cutoff(result.n_layers)  # the paper rule's layers
    kept_roles = [r for r in result.config.roles if any(k[0] == r and k[1] < cutoff for k in keep)]
    logger.warning(
        "the sweep in %s is incomplete (%d parts missing): using its %d finished "
        "(role, layer) cells of roles %s",
        result.store,
        len(result.missing),
        len(keep),
        kept_roles,
    )
    if not kept_roles:
        raise SystemExit(f"the sweep in {result.store} has no finished cells to analyse yet")
    pairs = list(zip(table["role"], table["layer"], strict=True))
    mask = [(str(r), int(la)) in keep and r in kept_roles for r, la in pairs]
    groups = {result.role_group(r) for r in kept_roles}
    layers = sorted({la for r, la in keep if r in kept_roles})
    config = dataclasses.replace(result.config, roles=tuple(kept_roles), layers=tuple(layers))
    return rp.SweepResult(
        table[mask].reset_index(drop=True),
        baseline[baseline["group"].isin(groups)].reset_index(drop=True),
        config,
        result.n_layers,
        [],
        result.store,
        skipped=[x for x in result.skipped if x[0] in kept_roles],
    )


def write_sweep_status(result: Any, missing: int, out: Path) -> Path:
    """``sweep_status.json``: the grid analysed and how many store parts were missing."""
    status = {
        "store": str(result.store) if result.store is not None else None,
        "complete": missing == 0,
        "parts_missing": missing,
        "config": result.config.to_dict(),
        "n_layers": result.n_layers,
        "rows": len(result.table),
    }
    path = write_json(out / "sweep_status.json", status)
    logger.info("wrote %s", path)
    return path


def store_directions(
    args: argparse.Namespace, model: Model, result: rp.SweepResult
) -> rp.RoleDirections:
    """The directions a sweep read from a store ran: ``--directions``, else those of the run
    folder the store sits in (``<run>/02_directions``), else recomputed on the built-in
    prompts for the sweep's roles and their shuffled-role donors (what a sweep of these
    analyses used). Whichever it is must hash to the directions the store's manifest
    records; otherwise the analysis stops, saying to pass ``--directions``. Warns when the
    store was made on another model."""
    from roleprobe.app.run import RunPaths
    from roleprobe.experiments.sweeps import directions_hash

    manifest = read_manifest(result.store) if result.store is not None else {}
    made_on = manifest.get("config", {}).get("fingerprint")
    if made_on and made_on != rp.model_fingerprint(model):
        logger.warning(
            "the sweep in %s was made on %s, not on this model (%s): its picks are applied to "
            "other weights",
            result.store,
            manifest["config"].get("model"),
            args.model,
        )
    run_dirs = RunPaths(Path(result.store).parent.parent).directions if result.store else None
    if getattr(args, "directions", None) is None and run_dirs is not None and run_dirs.exists():
        logger.info("using the run's directions %s", run_dirs)
        rd = rp.RoleDirections.load(run_dirs, model)
        where = str(run_dirs)
    else:
        donors = {str(d) for d in result.table.get("donor", []) if isinstance(d, str) and d}
        needed = list(dict.fromkeys([*result.config.roles, *sorted(donors)]))
        rd = directions(args, model, needed)
        where = str(args.directions) if args.directions else "the built-in prompts"
    config = manifest.get("config", {})
    expected = config.get("directions")
    # the sweep's directions had the donors' roles (with controls), else at least its roles
    held = [set(config.get("donors") or {}) or set(result.config.roles), set(rd.roles)]
    hashes = {directions_hash(rd, sorted(r)) for r in held if r <= set(rd.roles)}
    if expected and expected not in hashes:
        source = manifest.get("directions_prompts", {}).get("source", "unknown prompts")
        raise SystemExit(
            f"the sweep in {result.store} ran other directions (from {source}) than those of "
            f"{where}: pass the sweep's own with --directions"
        )
    return rd


def select_kwargs(args: argparse.Namespace) -> dict[str, int]:
    """Resamples for :func:`roleprobe.select` (fewer with ``--quick``)."""
    return {"n_boot": 200, "n_perm": 500} if args.quick else {}


# ------------------------------------------------------------------ outputs ------------------
def _png_exporter() -> bool:
    """Whether PNGs can be written here (checked once per process).

    A one-off export of an empty figure tells (it fails at once without a browser; kaleido's
    shared server would hang instead); then one shared headless browser serves every
    figure (about 0.5 s each instead of a browser start, ~4 s, per figure).
    """
    if _png_state["ok"] is None:
        _png_state["ok"] = False
        try:
            import kaleido  # type: ignore[import-not-found]
            import plotly.io as pio
        except ImportError:
            logger.info("PNG export skipped: kaleido is not installed (HTML only)")
            return False
        try:
            pio.to_image({"data": [], "layout": {}}, format="png", width=16, height=16)
        except Exception as err:  # no Chrome/Chromium, or a kaleido plotly cannot use
            reason = str(err).strip().splitlines() or [type(err).__name__]
            logger.info("PNG export skipped (HTML only): %s", reason[0])
            return False
        _png_state["ok"] = True
        try:
            kaleido.start_sync_server(silence_warnings=True)
            atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        except Exception as err:  # exports still work, one browser each
            logger.info("kaleido server not started (%s): slower PNG export", err)
    return bool(_png_state["ok"])


def write_figure(
    fig: Any, out_dir: str | Path, name: str, png: bool = True, plotlyjs: str = "directory"
) -> list[Path]:
    """Write ``NAME.html`` (plotly.js once per folder) and, if an exporter works, ``NAME.png``.

    Args:
        fig: a plotly figure.
        out_dir: the output folder (created if missing).
        name: the file name without extension.
        png: also try a static PNG.
        plotlyjs: ``"directory"`` (one ``plotly.min.js`` beside the pages, of the installed
            plotly's version; works offline) or ``"cdn"`` (pages load plotly.js from its CDN;
            nothing else to ship, but blank without internet).

    Returns:
        The files written.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{name}.html"
    if plotlyjs == "directory":
        fig.write_html(html, include_plotlyjs=write_plotlyjs(folder).name)
    else:
        fig.write_html(html, include_plotlyjs=plotlyjs)
    written = [html]
    if png and _png_exporter():
        try:
            with warnings.catch_warnings():  # plotly passes options a shared server ignores
                warnings.filterwarnings("ignore", "The kopts argument is ignored")
                fig.write_image(folder / f"{name}.png", scale=2)
            written.append(folder / f"{name}.png")
        except Exception as err:
            logger.info("PNG export failed, skipped from now on: %s", str(err).strip()[:200])
            _png_state["ok"] = False
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, index: bool = False) -> Path:
    """Write ``NAME.csv`` into ``out_dir`` (floats to 6 significant digits)."""
    path = Path(out_dir) / f"{name}.csv"
    df.to_csv(path, index=index, float_format="%.6g")
    logger.info("wrote %s (%d rows)", path, len(df))
    return path


def figure_writer(args: argparse.Namespace) -> Any:
    """``write(fig, name)`` bound to ``--out``, ``--no-png`` and ``--plotlyjs``."""
    plotlyjs = getattr(args, "plotlyjs", "directory")

    def write(fig: Any, name: str) -> list[Path]:
        return write_figure(fig, args.out, name, png=not args.no_png, plotlyjs=plotlyjs)

    return write


def catalogue_order(names: Sequence[str]) -> list[str]:
    """Roles in the catalogue's order (grouped by domain), unknown roles last."""
    rank = {role.name: i for i, role in enumerate(rp.ROLES)}
    return sorted(dict.fromkeys(names), key=lambda r: (rank.get(r, len(rank)), r))
