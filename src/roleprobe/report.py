"""Stage 7 of a run: figures, one self-contained HTML report and a Markdown summary.

The report leads with what a small model can show — how well the directions separate
held-out role prompts from generic ones, per layer; how the roles relate (cosine maps);
what the picked directions do to the correct-letter log-prob, with paired tests, beside
random and shuffled-role controls; what the model says a direction is (patchscope) — and
states the accuracy beside the majority-letter baseline, so a reader can tell when it is
at chance.

Figures are written as HTML sharing one ``plotly.min.js`` in ``07_report/figures/``;
``report.html`` embeds plotly.js once and every figure, table and the run manifest, so it
can be mailed or opened offline.
"""

import html
import json
import logging
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.pipeline import Run

logger = logging.getLogger(__name__)

CHANCE_NOTE = (
    "Accuracy on four-letter questions is read beside the majority-letter baseline: a small "
    "model that picks by letter position can look 'steered' when its letter bias moves. "
    "SmolLM2-135M is at chance on MMLU-style questions; its accuracy changes are not "
    "evidence. The correct-letter log-prob and the paired tests carry what signal there is."
)


def _table_html(df: pd.DataFrame, digits: int = 3) -> str:
    return df.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", border=0)


def write_report(run: "Run") -> dict[str, Any]:
    """Build every figure of a finished run and write the report; returns a summary."""
    import plotly.io as pio

    from roleprobe import plotting
    from roleprobe.sweeps import merge

    folder = run.stage("07_report")
    figdir = folder / "figures"
    figdir.mkdir(exist_ok=True)
    rd = run.directions()
    directions = pd.read_csv(run.out / "03_directions" / "directions.csv")
    result = merge(run.out / "04_sweep" / "store")
    scores = result.scores()
    rule = run.config.rules[-1]
    picks = {
        r: pd.read_csv(run.out / "05_selection" / f"picks_{r}.csv", keep_default_na=False)
        for r in run.config.rules
    }
    effects = pd.read_csv(run.out / "06_evaluation" / "effects.csv")
    position = rd.positions[-1]
    figures: list[tuple[str, str, Any]] = []
    if "auroc" in directions:
        sub = directions[directions["position"] == position]
        grid = sub.pivot(index="role", columns="layer", values="auroc")
        figures.append(
            (
                "auroc",
                "Held-out separation (AUROC) of role vs generic prompts along each direction",
                plotting.layer_heatmap(
                    grid, f"Held-out AUROC per layer (position {position})", "AUROC"
                ),
            )
        )
    figures.append(
        (
            "directions",
            "Direction norms and cosine to the baseline mean",
            plotting.direction_heatmaps(rd, position),
        )
    )
    if len(rd.roles) >= 3:
        mid = rd.layers[len(rd.layers) // 2]
        figures.append(
            (
                "cosine",
                f"Cosine between role directions, layer {mid}",
                plotting.cosine_map(rd, mid, position, centered=True),
            )
        )
    sel = picks[rule]
    selected = sel[sel["source"] == "role"].astype({"alpha": float})
    for value in ("delta_logprob", "delta_accuracy"):
        figures.append(
            (
                f"sweep_{value}",
                f"Sweep: {value} per role and layer",
                plotting.sweep_heatmaps(scores, value, selected),
            )
        )
    figures.append(
        (
            "controls",
            "Role directions vs random and shuffled-role controls",
            plotting.control_distribution(scores, "delta_logprob"),
        )
    )
    if not effects.empty:
        figures.append(
            (
                "effects",
                "Picked directions on every domain (% change; own-domain cells: see part)",
                plotting.paper_table_figure(effects),
            )
        )
    for name, _, fig in figures:
        fig.write_html(figdir / f"{name}.html", include_plotlyjs="directory")
    patch = _patchscope(run, rd, selected) if run.config.patchscope else pd.DataFrame()
    if not patch.empty:
        patch.to_csv(folder / "patchscope.csv", index=False)
    base = result.baseline
    accuracy = {
        "baseline_accuracy": round(float(base["correct"].mean()), 3),
        "majority_letter_baseline": round(
            float(base["answer"].value_counts(normalize=True).max()), 3
        ),
        "predicted_letters": {k: int(v) for k, v in base["pred"].value_counts().items()},
    }
    manifest = json.loads((result.store / "manifest.json").read_text()) if result.store else {}
    summaries = {name: run.summary(name) for name in _finished(run)}
    parts = [
        "<h1>roleprobe run</h1>",
        f"<p>model <b>{html.escape(run.config.model)}</b>, roles "
        f"{html.escape(', '.join(run.roles()))}</p>",
        f"<p class=note>{html.escape(CHANCE_NOTE)}</p>",
        "<h2>Accuracy beside the majority-letter baseline</h2>",
        f"<pre>{html.escape(json.dumps(accuracy, indent=1))}</pre>",
    ]
    for _name, title, fig in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        parts.append(pio.to_html(fig, include_plotlyjs=False, full_html=False))
    parts.append(f"<h2>Picks ({html.escape(rule)} rule)</h2>" + _table_html(sel))
    if not effects.empty:
        parts.append(
            "<h2>Effects on every domain (column part: own-domain cells read on the "
            "held-out questions, or on the selection questions for the paper rule)</h2>"
            + _table_html(effects)
        )
    if not patch.empty:
        parts.append("<h2>Patchscope: what the model says each picked direction is</h2>")
        parts.append(_table_html(patch))
    parts.append("<h2>Stages</h2><pre>" + html.escape(json.dumps(summaries, indent=1)) + "</pre>")
    parts.append(
        "<h2>Run manifest</h2><pre>" + html.escape(json.dumps(manifest, indent=1)) + "</pre>"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>roleprobe report</title>"
        + pio.to_html(go_empty(), include_plotlyjs=True, full_html=False)
        + "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{font-size:12px;border-collapse:collapse}td,th{padding:2px 6px}"
        ".note{background:#fff4d6;padding:8px}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )
    (folder / "report.html").write_text(page)
    (folder / "summary.md").write_text(_markdown(run, accuracy, sel, effects, patch, summaries))
    return {
        "figures": len(figures),
        **{k: v for k, v in accuracy.items() if k != "predicted_letters"},
    }


def go_empty() -> Any:
    """An empty figure (carries plotly.js into the page once)."""
    import plotly.graph_objects as go

    return go.Figure(layout={"height": 10, "width": 10})


def _finished(run: "Run") -> list[str]:
    from roleprobe.pipeline import STAGES

    return [s for s in STAGES if run.is_done(s)]


def _patchscope(run: "Run", rd: Any, selected: pd.DataFrame) -> pd.DataFrame:
    from roleprobe.readouts import patchscope

    mode = run.config.patchscope_mode
    tokens = 32 if mode == "placeholder" else None  # None: the mode's (the paper's 512)
    rows = []
    for _, pick in selected[selected["alpha"] == selected["alpha"].max()].iterrows():
        role, layer, pos = pick["role"], int(pick["layer"]), int(pick["position"])
        vector = rd.vector(role, layer, pos)
        res = patchscope(
            run.model, vector, layer, max_new_tokens=tokens, mode=mode, system=rd.system
        )
        rows.append(
            {
                "role": role,
                "layer": layer,
                "position": pos,
                "mode": res.mode,
                "steered": res.steered,
                "unsteered": res.unsteered,
            }
        )
    return pd.DataFrame(rows)


def _markdown(
    run: "Run",
    accuracy: dict[str, Any],
    picks: pd.DataFrame,
    effects: pd.DataFrame,
    patch: pd.DataFrame,
    summaries: dict[str, Any],
) -> str:
    lines = [
        f"# roleprobe run: {run.config.model}",
        "",
        f"> {CHANCE_NOTE}",
        "",
        f"Baseline accuracy {accuracy['baseline_accuracy']:.3f}; always answering the most "
        f"common letter scores {accuracy['majority_letter_baseline']:.3f}; predicted letters "
        f"{accuracy['predicted_letters']}.",
        "",
    ]
    d3 = summaries.get("03_directions", {}).get("median_auroc_by_layer")
    if d3:
        lines += [
            "## Held-out AUROC of the directions (median over roles)",
            "",
            "| layer | AUROC |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in d3.items()]
        lines.append("")
    cols = [
        "role",
        "source",
        "alpha",
        "position",
        "layer",
        "passed",
        "report_n",
        "delta_accuracy",
        "mcnemar_p_adj",
        "delta_logprob",
        "logprob_p_adj",
    ]
    lines += [
        "## Picks and held-out statistics",
        "",
        _md_table(picks[[c for c in cols if c in picks]]),
        "",
    ]
    if not effects.empty:
        ecols = [
            "role",
            "condition",
            "alpha",
            "domain",
            "part",
            "n",
            "base_accuracy",
            "accuracy",
            "relative_change_pct",
            "mcnemar_p_adj",
            "delta_logprob",
            "logprob_p",
        ]
        lines += [
            "## Effects on every domain",
            "",
            "Own-domain cells (`part`) read the questions selection did not see (`heldout`), "
            "or, for the paper's rule, the questions the pick was chosen on (`selected`); "
            "other domains are read in full (`other`).",
            "",
            _md_table(effects[[c for c in ecols if c in effects]]),
            "",
        ]
    if not patch.empty:
        lines += ["## Patchscope", "", _md_table(patch), ""]
    lines += ["## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v.get('seconds', '')} |" for k, v in summaries.items()]
    return "\n".join(lines) + "\n"


def _md_table(df: pd.DataFrame) -> str:
    def cell(x: Any) -> str:
        text = f"{x:.3g}" if isinstance(x, float) else str(x)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
