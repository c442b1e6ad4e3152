"""The report page from small hand-made inputs: plotly.js, tables, figures; no model, no run."""

import math
import re

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from roleprobe.app.report import (
    PICK_COLUMNS,
    Figure,
    ReportInputs,
    accuracy_summary,
    build_figures,
    plotlyjs_version,
    render_html,
    write_plotlyjs,
)
from roleprobe.results.plotting import AUROC_RANGE, UNDEFINED
from roleprobe.vectors.directions import RoleDirections

ROLES = ("lawyer", "nurse", "mathematician")
LAYERS = (8, 16)


@pytest.fixture
def rd():
    gen = torch.Generator().manual_seed(0)
    return RoleDirections(
        role_means=torch.randn(3, 1, 2, 8, generator=gen, dtype=torch.float64),
        base_mean=torch.randn(1, 2, 8, generator=gen, dtype=torch.float64),
        role_counts=(10, 11, 12),
        base_count=30,
        roles=ROLES,
        layers=LAYERS,
        positions=(-1,),
    )


def _scores():
    rows = []
    for role in ROLES:
        for layer in LAYERS:
            for condition, alpha in (("addition", 1.0), ("ablation", math.nan)):
                for source in ("role", "random"):
                    rows.append(
                        {
                            "role": role,
                            "source": source,
                            "donor": role,
                            "position": -1,
                            "layer": layer,
                            "condition": condition,
                            "alpha": alpha,
                            "n": 5,
                            "delta_accuracy": 0.1,
                            "delta_logprob": -0.2 if source == "role" else 0.05,
                        }
                    )
    return pd.DataFrame(rows)


def _inputs(**kw):
    picks = pd.DataFrame(
        {
            "role": ["lawyer"],
            "source": ["role"],
            "donor": ["lawyer"],
            "alpha": [1.0],
            "rule": ["held-out"],
            "position": [-1],
            "layer": [16],
            "passed": [True],
            "reason": ["addition >= base"],
            "select_accuracy": [0.5],
            "report_n": [6],
            "delta_accuracy": [0.0],
            "delta_logprob": [-0.04],
            "logprob_p_adj": [1.0],
            "mcnemar_p_adj": [1.0],
            "grid_significant": [0],
        }
    )
    effects = pd.DataFrame(
        {
            "role": ["lawyer", "lawyer"],
            "condition": ["addition", "addition"],
            "alpha": [1.0, 1.0],
            "domain": ["law", "math"],
            "part": ["heldout", "other"],
            "n": [6, 13],
            "base_accuracy": [0.0, 0.3],
            "accuracy": [0.2, 0.3],
            "relative_change_pct": [math.nan, 0.0],  # undefined vs a true 0 %
            "mcnemar_p_adj": [1.0, 1.0],
            "delta_logprob": [0.1, 0.0],
            "logprob_p": [0.5, 1.0],
            "in_domain": [True, False],
            "stars": ["", ""],
        }
    )
    validation = pd.DataFrame(
        [
            {"role": r, "position": -1, "layer": la, "auroc": 0.93 + 0.01 * i + 0.03 * j}
            for i, r in enumerate(ROLES)
            for j, la in enumerate(LAYERS)
        ]
    )
    baseline = pd.DataFrame(
        {
            "answer": ["A", "B", "B", "C", "D", "B"],
            "pred": ["A", "A", "A", "A", "C", "B"],
            "correct": [1.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        }
    )
    base = {
        "model": "tiny",
        "roles": ROLES,
        "rule": "held-out",
        "validation": validation,
        "scores": _scores(),
        "baseline": baseline,
        "picks": picks,
        "effects": effects,
        "patchscope": pd.DataFrame(),
        "logit_lens": pd.DataFrame(),
        "manifest": {"config": {"model": "tiny"}},
        "summaries": {"03_validation": {"seconds": 1.5, "rows": 6}},
        "picks_csv": "../05_selection/picks_held-out.csv",
        "effects_csv": "../06_evaluation/effects.csv",
    }
    return ReportInputs(**{**base, **kw})


def _page(inputs=None, figures=()):
    inputs = inputs or _inputs()
    return render_html(inputs, list(figures), accuracy_summary(inputs.baseline))


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 4)
    return page[start : end if end > 0 else len(page)]


def test_plotly_js_is_one_plain_script_and_no_figure_sits_in_the_head():
    fig = Figure("bar", "A bar", go.Figure(go.Bar(y=[1, 2])))
    page = _page(figures=[fig])
    head, body = page.split("<body>", 1)
    assert "plotly-graph-div" not in head  # the old carrier figure drew a stray toolbar
    assert head.count("<script") == 1 and f"plotly.js v{get_plotlyjs_version()}" in head
    assert page.count(get_plotlyjs()[:300]) == 1  # embedded once
    assert body.count('class="plotly-graph-div"') == 1 and "<script src" not in page


def test_accuracy_is_a_small_table_not_a_json_dump():
    section = _section(_page(), "Accuracy beside the majority-letter baseline")
    assert "<pre>" not in section and "{" not in section
    assert section.count("<table>") == 2
    # 2 of 6 correct; B is the most common correct letter (3 of 6); uniform 1 / 4
    assert re.search(r"unsteered \(6 questions\)</th><td class=\"num\">0.333</td>", section)
    assert re.search(r"letter \(B\)</th><td class=\"num\">0.500</td>", section)
    assert '<td class="num">0.250</td>' in section
    letters = re.findall(r"<th>([A-D])</th>", section)
    assert letters == ["A", "B", "C", "D"]
    predicted = re.search(r"the model's answer</th>(.*?)</tr>", section).group(1)
    assert re.findall(r">(\d+)<", predicted) == ["4", "1", "1", "0"]
    summary = accuracy_summary(_inputs().baseline)
    assert summary["majority_letter"] == "B" and summary["answer_letters"]["D"] == 1


def test_picks_table_shows_the_essential_columns_and_links_the_csv():
    section = _section(_page(), "Picks")
    headers = re.findall(r"<th>(.*?)</th>", section)
    assert headers == [c for c in PICK_COLUMNS if c in _inputs().picks]
    assert "select_accuracy" not in section and "reason" not in section
    assert '<a href="../05_selection/picks_held-out.csv">' in section
    no_link = _section(_page(_inputs(picks_csv="")), "Picks")
    assert "<a href" not in no_link


def test_undefined_cells_read_differently_from_zero():
    section = _section(_page(), "Effects on every domain")
    assert '<a href="../06_evaluation/effects.csv">' in section
    cells = re.findall(r"<td[^>]*>[^<]*</td>", section)
    header = re.findall(r"<th>(.*?)</th>", section)
    rel = header.index("relative_change_pct")
    first, second = cells[: len(header)], cells[len(header) : 2 * len(header)]
    assert first[rel].startswith('<td class="na" title="undefined: the baseline accuracy is 0')
    assert first[rel].endswith(f">{UNDEFINED}</td>")
    assert second[rel] == '<td class="num">0</td>'


def test_report_figures_use_fixed_auroc_scale_categorical_layers_and_relative_norms(rd):
    figures = {f.name: f.figure for f in build_figures(_inputs(), rd)}
    (auroc,) = figures["auroc"].data
    assert (auroc.zmin, auroc.zmax) == AUROC_RANGE  # not fitted to 0.93-1.0
    for name in ("auroc", "directions", "sweep_delta_logprob"):
        axis = figures[name].layout.xaxis
        assert axis.type == "category" and list(axis.tickvals) == list(LAYERS), name
    assert "baseline mean" in figures["directions"].layout.annotations[0].text
    _, grey = figures["effects"].data  # the undefined law cell is drawn "—" on grey
    assert list(grey.text[0]) == [UNDEFINED, ""] and grey.showscale is False


def test_write_plotlyjs_keeps_the_installed_version(tmp_path):
    path = write_plotlyjs(tmp_path)
    assert plotlyjs_version(path) == get_plotlyjs_version()
    path.write_text("/**\n* plotly.js v1.0.0\n*/")  # a folder written by an old plotly
    assert plotlyjs_version(path) == "1.0.0"
    write_plotlyjs(tmp_path)
    assert plotlyjs_version(path) == get_plotlyjs_version()
    stamp = path.stat().st_mtime_ns
    write_plotlyjs(tmp_path)
    assert path.stat().st_mtime_ns == stamp  # the same version is left alone
