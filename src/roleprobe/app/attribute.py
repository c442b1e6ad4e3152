"""``roleprobe attribute KIND``: where a role direction comes from, from the command line.

Each kind computes one of the library's analyses and writes its tables (CSV) and figures
(HTML sharing one ``plotly.min.js``) into ``--out``:

==================== =================================================================
kind                 what (library call)
==================== =================================================================
components           every head's and MLP's write along each role's direction at
                     ``--layer`` (:func:`roleprobe.component_attribution`), top writers
shared               the shared "any role" direction and each role's share of it
                     (:func:`roleprobe.shared_share`, :func:`roleprobe.shared_fraction`)
confusion            held-out one-vs-rest AUROC and nearest-direction confusion over the
                     roles (:func:`roleprobe.role_confusion`)
persona-shift        the persona-induced shift of the question activations along every
                     role's direction (:func:`roleprobe.persona_shift`)
persona-vs-addition  each role on its own domain: persona vs adding its direction
                     (:func:`roleprobe.experiments.persona_compare.persona_vs_addition`,
                     resumable)
==================== =================================================================

Directions come from ``--directions FOLDER`` (saved by ``roleprobe directions``) or are
computed from ``--prompts`` on a seeded train split (``--heldout-fraction`` of every set is
kept out; ``confusion`` needs that held-out part, so it always computes its own).
"""

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from roleprobe.core.io import write_csv

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

    from roleprobe.core.types import Model
    from roleprobe.data.prompts import RolePrompts

logger = logging.getLogger(__name__)

KINDS = ("components", "shared", "confusion", "persona-shift", "persona-vs-addition")
NEEDS_BENCHMARK = ("persona-shift", "persona-vs-addition")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``roleprobe attribute`` (the model options are added by the CLI)."""
    parser.add_argument("kind", choices=KINDS, help="which analysis (see the table above)")
    parser.add_argument("--out", required=True, help="folder for the tables and figures")
    parser.add_argument("--directions", default=None, help="a saved RoleDirections folder")
    parser.add_argument("--roles", nargs="+", default=None, help="default: the three demo roles")
    parser.add_argument("--prompts", default="builtin", help="builtin, paper or a folder")
    parser.add_argument("--data", default=None, help="the paper's data folder")
    parser.add_argument("--heldout-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layer", type=int, default=None, help="components, addition: the layer (default: middle)"
    )
    parser.add_argument(
        "--layers", type=int, nargs="+", default=None, help="directions' layers (default: all)"
    )
    parser.add_argument("--position", type=int, default=-1, help="post-instruction offset")
    parser.add_argument("--benchmark", default="builtin", help="builtin, paper, mmlu-local, mmlu")
    parser.add_argument("--per-domain", type=int, default=0, help="questions per domain (0: all)")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--batch-size", type=int, default=16)


def _prompts(args: argparse.Namespace, roles: list[str]) -> "tuple[RolePrompts, RolePrompts]":
    from roleprobe.data.prompts import load_prompts

    prompts = load_prompts(args.prompts, roles, data_dir=args.data)
    return prompts.split(args.heldout_fraction, seed=args.seed)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what can be refused before a model loads."""
    if not 0 < args.heldout_fraction < 1:
        raise ValueError(f"--heldout-fraction must be in (0, 1), got {args.heldout_fraction}")
    if args.kind == "confusion" and args.directions:
        raise ValueError(
            "confusion needs directions computed without its held-out prompts: leave out "
            "--directions (it splits --prompts itself)"
        )
    if args.kind in ("shared", "confusion") and args.roles is not None and len(args.roles) < 2:
        raise ValueError(f"{args.kind} compares roles: give 2 roles or more, got {args.roles}")
    if args.per_domain < 0:
        raise ValueError(f"--per-domain must be 0 (all) or positive, got {args.per_domain}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.directions and not (Path(args.directions) / "directions.json").exists():
        raise ValueError(f"--directions {args.directions}: no directions.json there")


def run_attribute(args: argparse.Namespace, model: "Model") -> dict[str, Any]:
    """Run one kind into ``args.out``; returns what was written (``{"files": [...]}``)."""
    from roleprobe.app.report import write_plotlyjs
    from roleprobe.data.benchmarks import load_benchmark
    from roleprobe.results import plotting
    from roleprobe.vectors.directions import RoleDirections, compute_directions

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    roles = list(args.roles or ["lawyer", "nurse", "mathematician"])
    train: RolePrompts | None = None
    held: RolePrompts | None = None
    if args.directions:
        rd = RoleDirections.load(args.directions, model)
    else:
        train, held = _prompts(args, roles)
        rd = compute_directions(
            model,
            source=train,
            layers=args.layers,
            batch_size=args.batch_size,
            system=args.system,
        )
    layer = args.layer if args.layer is not None else rd.layers[len(rd.layers) // 2]
    files: list[Path] = []

    script = write_plotlyjs(out).name  # one shared copy for every page

    def table(df: pd.DataFrame, name: str) -> None:
        path = out / f"{name}.csv"
        write_csv(path, df)
        files.append(path)

    def figure(fig: "go.Figure", name: str) -> None:
        path = out / f"{name}.html"
        fig.write_html(path, include_plotlyjs=script)
        files.append(path)

    if args.kind == "shared":
        from roleprobe.vectors.decomposition import shared_fraction, shared_share

        share, pooled = shared_share(rd), shared_fraction(rd)
        table(share, "shared_share")
        table(pooled, "shared_fraction")
        fig = plotting.shared_share_figure(share, pooled, args.position)
        figure(fig, "shared_share")
    elif args.kind == "components":
        from roleprobe.results.tables import top_writers
        from roleprobe.vectors.components import component_attribution

        prompts = train if train is not None else _prompts(args, list(rd.roles))[0]
        df = component_attribution(
            model,
            prompts,
            layer,
            roles=[r for r in rd.roles if r in roles] if args.roles else None,
            positions=[args.position],
            batch_size=args.batch_size,
            directions=rd,
            system=rd.system,
        )
        table(df, "components")
        table(top_writers(df, k=5), "top_writers")
        figure(plotting.top_writers_figure(df, k=5), "top_writers")
        for role in dict.fromkeys(df["role"]):
            fig = plotting.attribution_heatmap(df, str(role))
            figure(fig, f"attribution_{str(role).replace(' ', '_')}")
    elif args.kind == "confusion":
        from roleprobe.data.roles import get_role
        from roleprobe.vectors.confusion import role_confusion

        assert held is not None  # check_arguments refuses --directions
        confusion = role_confusion(model, rd, held, batch_size=args.batch_size)
        summary = confusion.to_dataframe()
        table(summary, "confusion")
        table(confusion.auroc_frame(), "one_vs_rest_auroc")
        cosine = summary[(summary["rule"] == "cosine") & (summary["position"] == args.position)]
        best = int(cosine.loc[cosine["accuracy"].idxmax(), "layer"])
        matrix = confusion.matrix(best, args.position)
        fig = plotting.confusion_figure(
            matrix, list(rd.roles), [get_role(r).domain for r in rd.roles]
        )
        figure(fig, f"confusion_layer{best}")
        table(confusion.most_confused(best, args.position), "most_confused")
    else:
        bench = load_benchmark(args.benchmark, path=args.data)
        if args.kind == "persona-shift":
            from roleprobe.experiments.persona_compare import sample_per_domain
            from roleprobe.experiments.persona_shift import persona_shift

            bench = sample_per_domain(bench, args.per_domain, args.seed)
            ps = persona_shift(
                model,
                rd,
                bench,
                position=args.position,
                batch_size=args.batch_size,
                system=rd.system,
            )
            shift = ps.to_dataframe()
            table(shift, "persona_shift")
            table(ps.specificity(), "specificity")
            table(ps.item_correlation(), "item_correlation")
            figure(plotting.persona_shift_figure(shift), "persona_shift")
            fig = plotting.persona_specificity_figure(ps.specificity())
            figure(fig, "persona_specificity")
        else:
            from roleprobe.experiments.persona_compare import by_domain, persona_vs_addition

            df = persona_vs_addition(
                model,
                rd,
                bench,
                layer,
                alphas=args.alphas,
                position=args.position,
                per_domain=args.per_domain,
                parts=out / "parts",
                batch_size=args.batch_size,
                seed=args.seed,
                system=rd.system,
            )
            table(df, "persona_vs_addition")
            table(by_domain(df), "persona_by_domain")
            figure(plotting.persona_vs_addition(df), "persona_vs_addition")
    return {"kind": args.kind, "layer": layer, "files": [str(p) for p in files]}
