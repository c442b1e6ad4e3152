"""Stage 8 of a run: figures, one self-contained HTML report and a Markdown summary.

The report leads with what a small model can show — how well the directions separate
held-out role prompts from generic ones, per layer; how the roles relate (cosine maps);
what the picked directions do to the correct-letter log-prob, with paired tests, beside
random and shuffled-role controls; what the model says a direction is (patchscope, logit
lens) — and states the accuracy beside the majority-letter baseline, so a reader can tell
when it is at chance.

It only renders: every number comes from a file an earlier stage wrote
(:class:`~roleprobe.app.run.RunPaths`), and no model is run here (the readouts are stage 7).
:func:`write_report` reads top to bottom: :func:`load_inputs`, :func:`build_figures`,
:func:`accuracy_summary`, :func:`render_html`, :func:`render_markdown`.

Figures are written as HTML sharing one ``plotly.min.js`` in ``08_report/figures/``;
``report.html`` embeds plotly.js once and every figure, table and the run manifest, so it
can be mailed or opened offline.
"""

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from roleprobe.app.run import READOUTS, VALIDATION, Run, RunPaths, stage_named
from roleprobe.core.io import atomic_write_text
from roleprobe.experiments.store import read_manifest
from roleprobe.results import plotting

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.vectors.directions import RoleDirections

__all__ = [
    "CHANCE_NOTE",
    "Figure",
    "ReportInputs",
    "accuracy_summary",
    "build_figures",
    "lens_summary",
    "load_inputs",
    "render_html",
    "render_markdown",
    "write_report",
]

logger = logging.getLogger(__name__)

CHANCE_NOTE = (
    "Accuracy on four-letter questions is read beside the majority-letter baseline: a small "
    "model that picks by letter position can look 'steered' when its letter bias moves. "
    "SmolLM2-135M is at chance on MMLU-style questions; its accuracy changes are not "
    "evidence. The correct-letter log-prob and the paired tests carry what signal there is."
)


class Figure(NamedTuple):
    """One figure of the report: file name, section title and the plotly figure."""

    name: str
    title: str
    figure: go.Figure


@dataclass
class ReportInputs:
    """Everything the report shows, as the earlier stages wrote it.

    Attributes:
        model: the run's model name.
        roles: the run's roles.
        rule: the selection rule whose picks were evaluated (the config's last).
        validation: stage 3's per-direction table (``auroc`` when prompts were held out).
        scores: stage 4's per-candidate scores.
        baseline: stage 4's unsteered answers.
        picks: stage 5's picks of ``rule``.
        effects: stage 6's effect table.
        patchscope: stage 7's patchscope answers (empty when off).
        logit_lens: stage 7's top tokens per pick.
        manifest: the sweep store's manifest.
        summaries: every finished stage's ``done.json``, by folder name.
    """

    model: str
    roles: tuple[str, ...]
    rule: str
    validation: pd.DataFrame
    scores: pd.DataFrame
    baseline: pd.DataFrame
    picks: pd.DataFrame
    effects: pd.DataFrame
    patchscope: pd.DataFrame
    logit_lens: pd.DataFrame
    manifest: dict[str, Any]
    summaries: dict[str, dict[str, Any]]

    @property
    def selected(self) -> pd.DataFrame:
        """The picks of the roles' own directions (the sweep figures mark them)."""
        picks = self.picks[self.picks["source"] == "role"]
        return picks.astype({"alpha": float})


def _read_text_csv(path: Path) -> pd.DataFrame:
    """A CSV of text cells kept as written ("" and "nan" stay strings); empty if absent."""
    return pd.read_csv(path, keep_default_na=False) if path.exists() else pd.DataFrame()


def load_inputs(run: Run) -> ReportInputs:
    """Read what stages 3 to 7 wrote into ``run``'s folder."""
    paths: RunPaths = run.paths
    rule = run.config.rules[-1]
    return ReportInputs(
        model=run.config.model,
        roles=run.roles(),
        rule=rule,
        validation=pd.read_csv(paths.validation),
        scores=pd.read_csv(paths.sweep_scores),
        baseline=pd.read_csv(paths.sweep_baseline),
        picks=pd.read_csv(paths.picks(rule), keep_default_na=False),
        effects=pd.read_csv(paths.effects),
        patchscope=_read_text_csv(paths.patchscope),
        logit_lens=_read_text_csv(paths.logit_lens),
        manifest=read_manifest(paths.sweep_store),
        summaries={s.name: run.summary(s) for s in run.finished()},
    )


def build_figures(inputs: ReportInputs, directions: "RoleDirections") -> list[Figure]:
    """The report's figures, in the order it shows them."""
    rd = directions
    position = rd.positions[-1]
    figures: list[Figure] = []
    table = inputs.validation
    if "auroc" in table:
        grid = table[table["position"] == position].pivot(
            index="role", columns="layer", values="auroc"
        )
        figures.append(
            Figure(
                "auroc",
                "Held-out separation (AUROC) of role vs generic prompts along each direction",
                plotting.layer_heatmap(
                    grid, f"Held-out AUROC per layer (position {position})", "AUROC"
                ),
            )
        )
    figures.append(
        Figure(
            "directions",
            "Direction norms and cosine to the baseline mean",
            plotting.direction_heatmaps(rd, position),
        )
    )
    if len(rd.roles) >= 3:
        mid = rd.layers[len(rd.layers) // 2]
        figures.append(
            Figure(
                "cosine",
                f"Cosine between role directions, layer {mid}",
                plotting.cosine_map(rd, mid, position, centered=True),
            )
        )
    for value in ("delta_logprob", "delta_accuracy"):
        figures.append(
            Figure(
                f"sweep_{value}",
                f"Sweep: {value} per role and layer",
                plotting.sweep_heatmaps(inputs.scores, value, inputs.selected),
            )
        )
    figures.append(
        Figure(
            "controls",
            "Role directions vs random and shuffled-role controls",
            plotting.control_distribution(inputs.scores, "delta_logprob"),
        )
    )
    if not inputs.effects.empty:
        figures.append(
            Figure(
                "effects",
                "Picked directions on every domain (% change; own-domain cells: see part)",
                plotting.paper_table_figure(inputs.effects),
            )
        )
    return figures


def accuracy_summary(baseline: pd.DataFrame) -> dict[str, Any]:
    """Baseline accuracy, the majority-letter baseline and the predicted-letter counts."""
    return {
        "baseline_accuracy": round(float(baseline["correct"].mean()), 3),
        "majority_letter_baseline": round(
            float(baseline["answer"].value_counts(normalize=True).max()), 3
        ),
        "predicted_letters": {str(k): int(v) for k, v in baseline["pred"].value_counts().items()},
    }


def lens_summary(lens: pd.DataFrame) -> pd.DataFrame:
    """One row per (role, layer, position, sign): the direction's top tokens, in rank order."""
    keys = ["role", "layer", "position", "sign"]
    if lens.empty:
        return pd.DataFrame(columns=[*keys, "tokens"])
    ordered = lens.sort_values([*keys, "rank"], kind="stable")
    tokens = ordered.groupby(keys, sort=False)["token"].agg(lambda t: " ".join(map(repr, t)))
    return tokens.rename("tokens").reset_index()


def _table_html(df: pd.DataFrame, digits: int = 3) -> str:
    return df.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", border=0)


def _pre(data: Any) -> str:
    return "<pre>" + html.escape(json.dumps(data, indent=1)) + "</pre>"


def render_html(inputs: ReportInputs, figures: list[Figure], accuracy: dict[str, Any]) -> str:
    """The self-contained page: plotly.js once, every figure, table and the manifest."""
    parts = [
        "<h1>roleprobe run</h1>",
        f"<p>model <b>{html.escape(inputs.model)}</b>, roles "
        f"{html.escape(', '.join(inputs.roles))}</p>",
        f"<p class=note>{html.escape(CHANCE_NOTE)}</p>",
        "<h2>Accuracy beside the majority-letter baseline</h2>",
        _pre(accuracy),
    ]
    for fig in figures:
        parts.append(f"<h2>{html.escape(fig.title)}</h2>")
        parts.append(pio.to_html(fig.figure, include_plotlyjs=False, full_html=False))
    parts.append(f"<h2>Picks ({html.escape(inputs.rule)} rule)</h2>" + _table_html(inputs.picks))
    if not inputs.effects.empty:
        parts.append(
            "<h2>Effects on every domain (column part: own-domain cells read on the "
            "held-out questions, or on the selection questions for the paper rule)</h2>"
            + _table_html(inputs.effects)
        )
    if not inputs.patchscope.empty:
        parts.append("<h2>Patchscope: what the model says each picked direction is</h2>")
        parts.append(_table_html(inputs.patchscope))
    if not inputs.logit_lens.empty:
        parts.append("<h2>Logit lens: each picked direction's top tokens</h2>")
        parts.append(_table_html(lens_summary(inputs.logit_lens)))
    parts.append("<h2>Stages</h2>" + _pre(inputs.summaries))
    parts.append("<h2>Run manifest</h2>" + _pre(inputs.manifest))
    carrier = go.Figure(layout={"height": 10, "width": 10})  # carries plotly.js, once
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>roleprobe report</title>"
        + pio.to_html(carrier, include_plotlyjs=True, full_html=False)
        + "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{font-size:12px;border-collapse:collapse}td,th{padding:2px 6px}"
        ".note{background:#fff4d6;padding:8px}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>"
    )


PICK_COLUMNS = (
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
)
EFFECT_COLUMNS = (
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
)


def _columns(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    return df[[c for c in columns if c in df]]


def render_markdown(inputs: ReportInputs, accuracy: dict[str, Any]) -> str:
    """``summary.md``: the accuracy note, AUROC by layer, picks, effects and readouts."""
    lines = [
        f"# roleprobe run: {inputs.model}",
        "",
        f"> {CHANCE_NOTE}",
        "",
        f"Baseline accuracy {accuracy['baseline_accuracy']:.3f}; always answering the most "
        f"common letter scores {accuracy['majority_letter_baseline']:.3f}; predicted letters "
        f"{accuracy['predicted_letters']}.",
        "",
    ]
    auroc = inputs.summaries.get(VALIDATION.name, {}).get("median_auroc_by_layer")
    if auroc:
        lines += [
            "## Held-out AUROC of the directions (median over roles)",
            "",
            "| layer | AUROC |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in auroc.items()]
        lines.append("")
    lines += [
        "## Picks and held-out statistics",
        "",
        _md_table(_columns(inputs.picks, PICK_COLUMNS)),
        "",
    ]
    if not inputs.effects.empty:
        lines += [
            "## Effects on every domain",
            "",
            "Own-domain cells (`part`) read the questions selection did not see (`heldout`), "
            "or, for the paper's rule, the questions the pick was chosen on (`selected`); "
            "other domains are read in full (`other`).",
            "",
            _md_table(_columns(inputs.effects, EFFECT_COLUMNS)),
            "",
        ]
    if not inputs.patchscope.empty:
        lines += ["## Patchscope", "", _md_table(inputs.patchscope), ""]
    if not inputs.logit_lens.empty:
        lines += ["## Logit lens", "", _md_table(lens_summary(inputs.logit_lens)), ""]
    lines += ["## Stages", "", "| stage | what | seconds |", "|---|---|---|"]
    lines += [
        f"| {k} | {stage_named(k).summary} | {v.get('seconds', '')} |"
        for k, v in inputs.summaries.items()
    ]
    return "\n".join(lines) + "\n"


def _md_table(df: pd.DataFrame) -> str:
    def cell(x: Any) -> str:
        text = f"{x:.3g}" if isinstance(x, float) else str(x)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(df.columns) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_report(run: Run, directions: "RoleDirections") -> dict[str, Any]:
    """Render a run whose stages 1 to 7 are finished: figures, report.html, summary.md.

    Args:
        run: the run folder.
        directions: stage 2's directions (loaded without a model; the figures of the
            directions' norms and cosines are drawn from them).

    Returns:
        The stage summary: the number of figures and the baseline accuracies.
    """
    if not run.is_done(READOUTS):
        raise ValueError(f"{run.out}: {READOUTS.name} is not finished; nothing to report yet")
    inputs = load_inputs(run)
    figures = build_figures(inputs, directions)
    accuracy = accuracy_summary(inputs.baseline)
    run.paths.figures.mkdir(parents=True, exist_ok=True)
    for fig in figures:
        fig.figure.write_html(run.paths.figure(fig.name), include_plotlyjs="directory")
    atomic_write_text(run.paths.report_html, render_html(inputs, figures, accuracy))
    atomic_write_text(run.paths.summary_md, render_markdown(inputs, accuracy))
    return {
        "figures": len(figures),
        **{k: v for k, v in accuracy.items() if k != "predicted_letters"},
    }
