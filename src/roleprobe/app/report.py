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

Figures are written as HTML sharing one ``plotly.min.js`` in ``08_report/figures/``
(:func:`write_plotlyjs` keeps it at the installed plotly's version); ``report.html`` embeds
plotly.js once, as a plain ``<script>``, and every figure, table and the run manifest, so
it can be mailed or opened offline. Its tables show the essential columns and link the
full CSV files of the run; an undefined value reads ``—`` (its tooltip says why), never
like a 0. ``summary.md`` escapes the Markdown characters of every text cell, the model name
and the predicted letters (:func:`md_escape`), so a role called ``*c++_dev*`` reads as such.

**Nothing is left out silently.** Before rendering, :func:`check_inputs` requires every
file the finished stages 3 to 7 wrote and the report reads: a stage's own ``done.json``
says which (the held-out confusion matrix only when stage 3 computed one, the patchscope,
logit-lens and component tables only when stage 7 counted rows in them, ``effects.csv`` for
runs made before ``evaluate_rules``). A missing or unreadable file, or a damaged
``done.json``, stops the report with one line naming the file and the stage to make again.
Stage 8 also removes the temporaries a killed writer left in its folders
(:func:`~roleprobe.core.io.remove_stale_temporaries`).
"""

import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from roleprobe.app.run import (
    EVALUATION,
    READOUTS,
    REPORT,
    SELECTION,
    SWEEP,
    VALIDATION,
    Run,
    RunPaths,
    Stage,
    stage_named,
)
from roleprobe.core.io import atomic_write_text, remove_stale_temporaries
from roleprobe.data.benchmarks import LETTERS
from roleprobe.experiments.store import MANIFEST, read_manifest
from roleprobe.results import plotting
from roleprobe.results.labels import role_domain
from roleprobe.results.tables import top_writers

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.vectors.directions import RoleDirections

__all__ = [
    "CHANCE_NOTE",
    "Figure",
    "ReportInputs",
    "accuracy_html",
    "accuracy_summary",
    "build_figures",
    "check_inputs",
    "html_table",
    "lens_summary",
    "load_inputs",
    "md_escape",
    "plotlyjs_version",
    "render_html",
    "render_markdown",
    "write_plotlyjs",
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
        rule: the headline rule: the first of the config's ``evaluate_rules`` (stage 6
            made a table for each; the report shows this one and links the others).
        validation: stage 3's per-direction table (``auroc`` when prompts were held out).
        scores: stage 4's per-candidate scores.
        baseline: stage 4's unsteered answers.
        picks: stage 5's picks of ``rule``.
        effects: stage 6's effect table.
        patchscope: stage 7's patchscope answers (empty when off).
        logit_lens: stage 7's top tokens per pick.
        manifest: the sweep store's manifest.
        summaries: every finished stage's ``done.json``, by folder name.
        picks_csv: where the full picks table lies, relative to the report ("" if nowhere).
        effects_csv: the same for the effect table.
        other_effects_csv: stage 6's tables of the other ``evaluate_rules``, by rule
            (relative paths).
        confusion_matrix: stage 3's held-out role-vs-role confusion matrix at the best layer
            (empty without held-out prompts, or for runs made before it existed).
        components: stage 7's component attribution of the picks (empty likewise).
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
    picks_csv: str = ""
    effects_csv: str = ""
    confusion_matrix: pd.DataFrame = field(default_factory=pd.DataFrame)
    components: pd.DataFrame = field(default_factory=pd.DataFrame)
    other_effects_csv: dict[str, str] = field(default_factory=dict)

    @property
    def selected(self) -> pd.DataFrame:
        """The picks of the roles' own directions (the sweep figures mark them); a zero
        direction (the paper rule's layer-0 fallback) was never swept, so it has no cell."""
        picks = self.picks[self.picks["source"] == "role"]
        if "zero_direction" in picks.columns:
            picks = picks[~picks["zero_direction"].astype(bool)]
        return picks.astype({"alpha": float})


def _remake(run: Run, stage: Stage) -> str:
    """How to make a finished ``stage`` of ``run`` again, then the report."""
    return (
        f"make {stage.name} again: delete {run.paths.done(stage)} and rerun the same "
        f"`roleprobe run` command, then `roleprobe figures {run.out}`"
    )


def _counted(summary: dict[str, Any], key: str) -> bool:
    """Whether a stage summary counts rows (a positive number) under ``key``."""
    value = summary.get(key)
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _stage_files(run: Run, summaries: dict[str, dict[str, Any]]) -> list[tuple[Stage, Path, str]]:
    """The files of stages 3 to 7 the report reads and their ``done.json`` says exist:
    ``(stage, path, why it must exist)``."""
    paths = run.paths
    rule = run.config.evaluate_rules[0]
    files = [
        (VALIDATION, paths.validation, ""),
        (SWEEP, paths.sweep_scores, ""),
        (SWEEP, paths.sweep_baseline, ""),
        (SWEEP, paths.sweep_store / MANIFEST, ""),
        (SELECTION, paths.picks(rule), ""),
    ]
    if summaries[VALIDATION.name].get("confusion_accuracy") is not None:
        files.append((VALIDATION, paths.confusion_matrix, " (it found a held-out confusion)"))
    rules = summaries[EVALUATION.name].get("rules")
    if isinstance(rules, list):
        for name in dict.fromkeys([*map(str, rules), rule]):
            files.append((EVALUATION, paths.effects(name), ""))
    elif not paths.effects(rule).exists():  # a run made before evaluate_rules
        files.append((EVALUATION, paths.legacy_effects, " (a run made before evaluate_rules)"))
    readouts = summaries[READOUTS.name]
    for key, path in (
        ("patchscope", paths.patchscope),
        ("logit_lens_rows", paths.logit_lens),
        ("component_rows", paths.components),
    ):
        if _counted(readouts, key):
            files.append((READOUTS, path, f" ({readouts[key]} rows, says its done.json)"))
    return files


def check_inputs(run: Run, summaries: dict[str, dict[str, Any]] | None = None) -> None:
    """Require what the report reads: stages 3 to 7 finished, and every file their
    ``done.json`` says they wrote (:meth:`Run.summary` reads those when not given).

    Raises:
        ValueError: a stage is not finished, or a file of a finished one is missing (one
            line naming the file and the stage to make again).
    """
    if summaries is None:
        summaries = {s.name: run.summary(s) for s in run.finished()}
    for stage in (VALIDATION, SWEEP, SELECTION, EVALUATION, READOUTS):
        if stage.name not in summaries:
            raise ValueError(
                f"{run.out}: {stage.name} is not finished; finish the run (roleprobe run) "
                "before the report"
            )
    for stage, path, why in _stage_files(run, summaries):
        if not path.exists():
            raise ValueError(
                f"{path} is missing, but {stage.name} finished and wrote it{why}; "
                + _remake(run, stage)
            )


def _read(run: Run, stage: Stage, path: Path, text: bool = False) -> pd.DataFrame:
    """A stage's CSV (text cells kept as written with ``text``: "" and "nan" stay
    strings); empty where the run has none (:func:`check_inputs` said it may lack it).

    Raises:
        ValueError: the file is not a readable CSV (names it and the stage to make again).
    """
    if not path.exists():
        return pd.DataFrame()
    try:
        return pd.read_csv(path, keep_default_na=False) if text else pd.read_csv(path)
    except pd.errors.EmptyDataError as err:
        if path.stat().st_size > 0:  # a table without columns, as write_csv writes one
            return pd.DataFrame()
        failure: Exception = err
        why = "0 bytes"
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        failure, why = err, " ".join(str(err).split())
    raise ValueError(f"{path} is not a readable CSV ({why}); {_remake(run, stage)}") from failure


def load_inputs(run: Run) -> ReportInputs:
    """Read what stages 3 to 7 wrote into ``run``'s folder.

    Raises:
        ValueError: a stage is not finished, or a file or ``done.json`` of a finished one
            is missing or damaged (:func:`check_inputs`; one line naming it and the fix).
    """
    paths: RunPaths = run.paths
    summaries = {s.name: run.summary(s) for s in run.finished()}
    check_inputs(run, summaries)
    rule = run.config.evaluate_rules[0]
    effects = paths.effects(rule)
    if not effects.exists() and paths.legacy_effects.exists():  # a run from before 0.x
        effects = paths.legacy_effects
    here = paths.report_html.parent
    others = {
        r: _relative(paths.effects(r), here)
        for r in run.config.evaluate_rules[1:]
        if paths.effects(r).exists()
    }
    return ReportInputs(
        model=run.config.model,
        roles=run.roles(),
        rule=rule,
        validation=_read(run, VALIDATION, paths.validation),
        scores=_read(run, SWEEP, paths.sweep_scores),
        baseline=_read(run, SWEEP, paths.sweep_baseline),
        picks=_read(run, SELECTION, paths.picks(rule), text=True),
        effects=_read(run, EVALUATION, effects),
        patchscope=_read(run, READOUTS, paths.patchscope, text=True),
        logit_lens=_read(run, READOUTS, paths.logit_lens, text=True),
        manifest=read_manifest(paths.sweep_store),
        summaries=summaries,
        picks_csv=_relative(paths.picks(rule), paths.report_html.parent),
        effects_csv=_relative(effects, here),
        confusion_matrix=_read(run, VALIDATION, paths.confusion_matrix),
        components=_read(run, READOUTS, paths.components),
        other_effects_csv=others,
    )


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


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
                plotting.auroc_heatmap(
                    grid, f"Held-out AUROC per layer (position {position}; 0.5 = chance)"
                ),
            )
        )
    figures.append(
        Figure(
            "directions",
            "Direction norms (relative to the baseline mean's norm at each layer) and "
            "cosine to the baseline mean",
            plotting.direction_heatmaps(rd, position, norm_scale="relative"),
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
    return figures + origin_figures(inputs, rd)


def origin_figures(inputs: ReportInputs, rd: "RoleDirections") -> list[Figure]:
    """Where the directions come from: the shared part (2 roles or more), the held-out
    role-vs-role confusion (stage 3) and the components writing each pick (stage 7)."""
    from roleprobe.vectors.decomposition import shared_fraction, shared_share

    figures: list[Figure] = []
    position = rd.positions[-1]
    if len(rd.roles) >= 2:
        figures.append(
            Figure(
                "shared_share",
                "How much of each role direction is shared by all the roles (cos² to their "
                "mean; 1 = the role direction is the shared one)",
                plotting.shared_share_figure(shared_share(rd), shared_fraction(rd), position),
            )
        )
    matrix = inputs.confusion_matrix
    if not matrix.empty:
        layer, pos = int(matrix["layer"].iloc[0]), matrix["position"].iloc[0]
        roles = [str(r) for r in matrix["true"]]
        values = matrix[roles].to_numpy(dtype=float)
        accuracy = float(np.nanmean(np.diag(values)))
        figures.append(
            Figure(
                "confusion",
                f"Held-out role vs role: nearest direction, layer {layer} (the best; "
                f"accuracy {accuracy:.2f}, chance {1 / len(roles):.2f})",
                plotting.confusion_figure(
                    values,
                    roles,
                    [role_domain(r) or "other" for r in roles],
                    f"Held-out confusion at layer {layer}, position {pos}",
                ),
            )
        )
    if not inputs.components.empty:
        figures.append(
            Figure(
                "top_writers",
                "Which heads and MLPs write each picked direction (share of its projection)",
                plotting.top_writers_figure(inputs.components, k=5),
            )
        )
    return figures


def accuracy_summary(baseline: pd.DataFrame) -> dict[str, Any]:
    """Baseline accuracy beside the majority-letter baseline, and the letter counts.

    Returns:
        ``baseline_accuracy``, ``majority_letter`` (the most common correct letter, ties to
        the earlier letter), ``majority_letter_baseline`` (the accuracy of always answering
        it), ``n`` (questions), ``predicted_letters`` and ``answer_letters`` (counts per
        letter of the model's and the correct answers).
    """
    answers = baseline["answer"].astype(str).value_counts()
    counts = {x: int(answers.get(x, 0)) for x in LETTERS}
    majority = max(LETTERS, key=lambda x: (counts[x], -LETTERS.index(x)))
    n = len(baseline)
    return {
        "baseline_accuracy": round(float(baseline["correct"].mean()), 3),
        "majority_letter": majority,
        "majority_letter_baseline": round(counts[majority] / n, 3) if n else math.nan,
        "n": n,
        "predicted_letters": {str(k): int(v) for k, v in baseline["pred"].value_counts().items()},
        "answer_letters": {k: v for k, v in counts.items()},
    }


def lens_summary(lens: pd.DataFrame) -> pd.DataFrame:
    """One row per (role, layer, position, sign): the direction's top tokens, in rank order."""
    keys = ["role", "layer", "position", "sign"]
    if lens.empty:
        return pd.DataFrame(columns=[*keys, "tokens"])
    ordered = lens.sort_values([*keys, "rank"], kind="stable")
    tokens = ordered.groupby(keys, sort=False)["token"].agg(lambda t: " ".join(map(repr, t)))
    return tokens.rename("tokens").reset_index()


# ------------------------------------------------------------------ HTML ---------------------
UNDEFINED = plotting.UNDEFINED
UNDEFINED_WHY = {
    "relative_change_pct": "undefined: the baseline accuracy is 0, so there is no relative change",
    "alpha": "no strength: a directional ablation",
}
UNDEFINED_DEFAULT = "undefined or not computed for this row"
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# the picks and effects in the report: the essential columns (the CSV files have all)
PICK_COLUMNS = (
    "role",
    "source",
    "alpha",
    "position",
    "layer",
    "passed",
    "report_n",
    "delta_logprob",
    "logprob_p_adj",
    "delta_accuracy",
    "mcnemar_p_adj",
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


def _cell(value: Any, column: str, digits: int) -> str:
    """One ``<td>``: numbers to ``digits`` significant digits, an undefined value as "—"."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        why = html.escape(UNDEFINED_WHY.get(column, UNDEFINED_DEFAULT), quote=True)
        return f'<td class="na" title="{why}">{UNDEFINED}</td>'
    if isinstance(value, float) and not value.is_integer():
        return f'<td class="num">{value:.{digits}g}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{value:g}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def html_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A compact HTML table; undefined cells (NaN, empty) read "—" with a tooltip saying why.

    Args:
        df: the rows to show (every column is shown: select the essential ones first).
        digits: significant digits of non-integer numbers.
    """
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = [
        "<tr>"
        + "".join(_cell(v, str(c), digits) for c, v in zip(df.columns, row, strict=True))
        + "</tr>"
        for row in df.itertuples(index=False)
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def accuracy_html(accuracy: dict[str, Any]) -> str:
    """The accuracy beside the majority-letter and uniform baselines, and the letter counts."""
    majority = accuracy["majority_letter"]
    rows = [
        (f"the model, unsteered ({accuracy['n']} questions)", accuracy["baseline_accuracy"]),
        (
            f"always answering the most common correct letter ({majority})",
            accuracy["majority_letter_baseline"],
        ),
        (f"a uniform guess among {len(LETTERS)} letters", round(1 / len(LETTERS), 3)),
    ]
    summary = "".join(
        f'<tr><th scope="row">{html.escape(label)}</th><td class="num">{value:.3f}</td></tr>'
        for label, value in rows
    )
    letters = [*LETTERS, *sorted(set(accuracy["predicted_letters"]) - set(LETTERS))]
    counts = [
        ("correct answer", accuracy["answer_letters"]),
        ("the model's answer", accuracy["predicted_letters"]),
    ]
    letter_rows = "".join(
        f'<tr><th scope="row">{label}</th>'
        + "".join(f'<td class="num">{int(by.get(x, 0))}</td>' for x in letters)
        + "</tr>"
        for label, by in counts
    )
    letter_head = "".join(f"<th>{html.escape(x)}</th>" for x in letters)
    return (
        '<div class="acc"><table><thead><tr><th></th><th>accuracy</th></tr></thead>'
        f"<tbody>{summary}</tbody></table>"
        f"<table><thead><tr><th>questions by letter</th>{letter_head}</tr></thead>"
        f"<tbody>{letter_rows}</tbody></table></div>"
    )


def _stages_html(summaries: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, summary in summaries.items():
        rest = {k: v for k, v in summary.items() if k != "seconds"}
        details = ", ".join(f"{k}: {json.dumps(v)}" for k, v in rest.items())
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(stage_named(name).summary)}</td>"
            f'<td class="num">{summary.get("seconds", "")}</td>'
            f'<td class="small">{html.escape(details)}</td></tr>'
        )
    head = "<tr><th>stage</th><th>what</th><th>seconds</th><th>summary</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _full_table_link(path: str, what: str) -> str:
    if not path:
        return ""
    href = html.escape(path, quote=True)
    link = f'<a href="{href}">{href}</a>'
    return f'<p class="small">Essential columns; every column of {what}: {link}</p>'


def _pre(data: Any) -> str:
    return "<pre>" + html.escape(json.dumps(data, indent=1)) + "</pre>"


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:0 12px}"
    "table{font-size:12px;border-collapse:collapse;margin:6px 0}"
    "td,th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.na{text-align:center;color:#888;background:#f0f0f0}"
    ".acc{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}"
    ".acc table{font-size:14px}"
    ".note{background:#fff4d6;padding:8px}.small{font-size:12px;color:#555}"
)


def render_html(inputs: ReportInputs, figures: list[Figure], accuracy: dict[str, Any]) -> str:
    """The self-contained page: plotly.js once (a plain script), every figure and table."""
    parts = [
        "<h1>roleprobe run</h1>",
        f"<p>model <b>{html.escape(inputs.model)}</b>, roles "
        f"{html.escape(', '.join(inputs.roles))}</p>",
        f"<p class=note>{html.escape(CHANCE_NOTE)}</p>",
        "<h2>Accuracy beside the majority-letter baseline</h2>",
        accuracy_html(accuracy),
    ]
    for fig in figures:
        parts.append(f"<h2>{html.escape(fig.title)}</h2>")
        parts.append(pio.to_html(fig.figure, include_plotlyjs=False, full_html=False))
    parts.append(f"<h2>Picks ({html.escape(inputs.rule)} rule)</h2>")
    parts.append(_full_table_link(inputs.picks_csv, "the picks"))
    parts.append(html_table(_columns(inputs.picks, PICK_COLUMNS)))
    if not inputs.effects.empty:
        parts.append(
            f"<h2>Effects on every domain ({html.escape(inputs.rule)} rule; column part: "
            "own-domain cells read on the held-out questions, or on the selection questions "
            "for the paper rule)</h2>"
        )
        parts.append(_full_table_link(inputs.effects_csv, "the effects"))
        for other, link in inputs.other_effects_csv.items():
            href = html.escape(link, quote=True)
            parts.append(
                f'<p class="small">The {html.escape(other)} rule\'s table: '
                f'<a href="{href}">{href}</a></p>'
            )
        parts.append(html_table(_columns(inputs.effects, EFFECT_COLUMNS)))
    if not inputs.patchscope.empty:
        parts.append("<h2>Patchscope: what the model says each picked direction is</h2>")
        parts.append(html_table(inputs.patchscope))
    if not inputs.logit_lens.empty:
        parts.append("<h2>Logit lens: each picked direction's top tokens</h2>")
        parts.append(html_table(lens_summary(inputs.logit_lens)))
    parts.append("<h2>Stages</h2>" + _stages_html(inputs.summaries))
    parts.append(
        "<h2>Run manifest</h2><details><summary>the sweep store's manifest (JSON)</summary>"
        + _pre(inputs.manifest)
        + "</details>"
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>roleprobe report</title>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )


def _columns(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    return df[[c for c in columns if c in df]]


def render_markdown(inputs: ReportInputs, accuracy: dict[str, Any]) -> str:
    """``summary.md``: the accuracy note, AUROC by layer, picks, effects and readouts."""
    lines = [
        f"# roleprobe run: {md_escape(inputs.model)}",
        "",
        f"> {CHANCE_NOTE}",
        "",
        f"Baseline accuracy {accuracy['baseline_accuracy']:.3f}; always answering the most "
        f"common correct letter ({md_escape(accuracy['majority_letter'])}) scores "
        f"{accuracy['majority_letter_baseline']:.3f}; predicted letters "
        f"{md_escape(accuracy['predicted_letters'])}.",
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
        lines += [f"| {md_escape(k)} | {md_escape(v)} |" for k, v in auroc.items()]
        lines.append("")
    lines += origin_markdown(inputs)
    lines += [
        "## Picks and held-out statistics",
        "",
        _md_table(_columns(inputs.picks, PICK_COLUMNS)),
        "",
    ]
    if not inputs.effects.empty:
        lines += [
            f"## Effects on every domain ({md_escape(inputs.rule)} rule)",
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


def origin_markdown(inputs: ReportInputs) -> list[str]:
    """Where the directions come from, in numbers: the shared share, the held-out
    role-vs-role accuracy at the best layer and each pick's top writers."""
    validation = inputs.summaries.get(VALIDATION.name, {})
    lines: list[str] = []
    if validation.get("mean_shared_share") is not None:
        lines += [
            "## Where the directions come from",
            "",
            f"Mean share of a role direction along the roles' shared direction (cos², over "
            f"roles, layers and positions): {validation['mean_shared_share']}.",
        ]
    if validation.get("confusion_accuracy") is not None:
        lines += [
            "",
            f"Held-out role vs role (nearest direction): accuracy "
            f"{validation['confusion_accuracy']} at layer {validation['confusion_layer']} "
            f"(chance {validation['confusion_chance']}).",
        ]
    if not inputs.components.empty:
        top = top_writers(inputs.components, k=3)
        lines += [
            "",
            "Top writers of each pick (share of its projection):",
            "",
            _md_table(top[["role", "position", "rank", "component", "share"]]),
        ]
    return [*lines, ""] if lines else []


_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~&$#])")


def md_escape(value: Any) -> str:
    r"""``value`` as literal Markdown text: its special characters backslash-escaped
    (``\ ` * _ [ ] < > | ~ & $ #``: emphasis, code, links, HTML, table cells, entities,
    maths, headings) and its line breaks as spaces.

    Example:
        >>> md_escape("*c++_dev* | <b>")
        '\\*c++\\_dev\\* \\| \\<b\\>'
    """
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value).splitlines()))


def _md_table(df: pd.DataFrame) -> str:
    """A Markdown table of ``df``: our column names as they are, every cell escaped."""

    def cell(x: Any) -> str:
        return md_escape(f"{x:.3g}" if isinstance(x, float) else x)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
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
    for folder in (run.paths.folder(REPORT), run.paths.figures):  # a killed stage 8's
        remove_stale_temporaries(folder)
    script = write_plotlyjs(run.paths.figures)
    for fig in figures:
        page = pio.to_html(fig.figure, include_plotlyjs=script.name, full_html=True)
        atomic_write_text(run.paths.figure(fig.name), page)
    atomic_write_text(run.paths.report_html, render_html(inputs, figures, accuracy))
    atomic_write_text(run.paths.summary_md, render_markdown(inputs, accuracy))
    return {
        "figures": len(figures),
        **{k: v for k, v in accuracy.items() if not k.endswith("_letters")},
    }


PLOTLYJS = "plotly.min.js"
_VERSION_HEADER = re.compile(r"plotly\.js v(\S+)")


def plotlyjs_version(path: str | os.PathLike[str]) -> str | None:
    """The plotly.js version named in a bundle's header comment (``None`` if none)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        match = _VERSION_HEADER.search(f.read(2000))
    return match.group(1) if match else None


def write_plotlyjs(folder: str | os.PathLike[str]) -> Path:
    """Put the installed plotly's ``plotly.min.js`` into ``folder`` for pages beside it.

    Pages written with ``include_plotlyjs="plotly.min.js"`` load it by relative path, so
    they open offline and share one copy. An existing file of another version (a folder
    written by an older plotly) is replaced; one of the same version is left alone.

    Returns:
        The script's path.
    """
    path = Path(folder) / PLOTLYJS
    if path.exists() and plotlyjs_version(path) == get_plotlyjs_version():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, get_plotlyjs())
    logger.info("wrote %s (plotly.js %s)", path, get_plotlyjs_version())
    return path
