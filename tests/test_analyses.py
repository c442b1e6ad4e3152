"""Smoke tests of the analysis scripts in ``analyses/``: each runs as a subprocess on the tiny
random model (``--quick``) and writes its figures and tables.

The script runs take minutes together and carry the ``slow`` marker; one fast test checks
the shared ``write_figure`` helper.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import roleprobe as rp

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
TINY = ["--model", "tiny-random", "--quick", "--device", "cpu", "--no-png"]


def _common():
    sys.path.insert(0, str(ANALYSES))
    try:
        import _common
    finally:
        sys.path.remove(str(ANALYSES))
    return _common


def run(script: str, out: Path, *extra: str) -> str:
    """Run one analysis on the tiny model into ``out``; fail with its output if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, str(ANALYSES / script), *TINY, "--out", str(out), *extra]
    proc = subprocess.run(
        cmd, cwd=ANALYSES.parent, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def assert_written(out: Path, *patterns: str) -> None:
    for pattern in patterns:
        found = sorted(out.glob(pattern))
        assert found, f"nothing matches {pattern} in {out}: {sorted(p.name for p in out.iterdir())}"
        for path in found:
            assert path.stat().st_size > 0, f"{path} is empty"


def test_write_figure_writes_html_with_one_shared_plotly_js(tmp_path):
    common = _common()
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    written = common.write_figure(fig, tmp_path / "figs", "bar", png=False)
    common.write_figure(fig, tmp_path / "figs", "bar2", png=False)
    assert written == [tmp_path / "figs" / "bar.html"]
    html = written[0].read_text()
    assert 'src="plotly.min.js"' in html and len(html) < 100_000  # the library is not inlined
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "bar.html",
        "bar2.html",
        "plotly.min.js",
    ]


def test_write_figure_can_load_plotly_js_from_the_cdn(tmp_path):
    common = _common()
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    (page,) = common.write_figure(fig, tmp_path, "bar", png=False, plotlyjs="cdn")
    assert "cdn.plot.ly/plotly-" in page.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["bar.html"]


@pytest.mark.slow
def test_write_figure_png_when_an_exporter_works(tmp_path):
    pytest.importorskip("kaleido")
    common = _common()
    written = common.write_figure(go.Figure(go.Bar(y=[1, 2])), tmp_path, "bar")
    if len(written) == 1:
        pytest.skip("kaleido is installed but no Chrome/Chromium works here")
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def geometry(tmp_path_factory):
    out = tmp_path_factory.mktemp("geometry")
    run("01_role_geometry.py", out)
    return out


@pytest.fixture(scope="module")
def sweep_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    run("02_steering_sweep.py", out)
    return out


@pytest.mark.slow
def test_01_role_geometry(geometry):
    assert_written(
        geometry,
        "01_direction_heatmaps.html",
        "01_stability.html",
        "01_separation_auroc.html",
        "01_cosine_layer*_centred.html",
        "01_cosine_slider.html",
        "01_cosine_slider_centred.html",
        "01_directions.csv",
        "01_validation.csv",
        "01_cosine_layer*.csv",
        "plotly.min.js",
    )
    validation = pd.read_csv(geometry / "01_validation.csv")
    auroc = validation["auroc"].dropna()  # NaN at layer 0, where directions are zero
    assert len(auroc) > 0 and auroc.between(0, 1).all()
    rd = rp.RoleDirections.load(geometry / "directions")
    assert len(rd.roles) == 4


@pytest.mark.slow
def test_02_steering_sweep(sweep_out):
    assert_written(
        sweep_out,
        "02_sweep_delta_accuracy.html",
        "02_sweep_delta_logprob.html",
        "02_layers_lawyer_delta_logprob.html",
        "02_layers_nurse_delta_accuracy.html",
        "02_letter_attribution.html",
        "02_scores.csv",
        "02_selection_paper.csv",
        "02_selection_heldout.csv",
        "02_letter_attribution.csv",
        "sweep_status.json",
        "sweep/manifest.json",
    )
    held = pd.read_csv(sweep_out / "02_selection_heldout.csv")
    assert set(held["source"]) == {"role", "random", "shuffled"}
    assert set(held["rule"]) == {"held-out"}


@pytest.mark.slow
def test_03_paper_table_from_the_sweep_store_with_a_comparison(sweep_out, geometry, tmp_path):
    other = pd.DataFrame(
        [
            {"role": r, "condition": c, "alpha": a, "domain": d, "relative_change_pct": i % 7}
            for i, (r, (c, a), d) in enumerate(
                itertools.product(
                    ["lawyer", "nurse"],
                    [("addition", 1.0), ("addition", 3.0), ("ablation", float("nan"))],
                    rp.DOMAINS,
                )
            )
        ]
    )
    other.to_csv(tmp_path / "other.csv", index=False)
    out = tmp_path / "out"
    store, directions = str(sweep_out / "sweep"), str(geometry / "directions")
    compare = f"other={tmp_path / 'other.csv'}"
    run(
        "03_paper_table.py", out, "--store", store, "--directions", directions, "--compare", compare
    )
    assert_written(
        out,
        "03_paper_table.html",
        "03_paper_table_logprob.html",
        "03_model_correlation.html",
        "03_selection_paper.csv",
        "03_effects.csv",
        "03_pivot_relative_change.csv",
        "03_pivot_delta_logprob.csv",
        "03_pivot_stars.csv",
        "03_model_correlation.csv",
    )
    effects = pd.read_csv(out / "03_effects.csv")
    assert set(effects["role"]) == {"lawyer", "nurse"}
    assert set(effects["condition"]) == {"addition", "ablation"}
    corr = pd.read_csv(out / "03_model_correlation.csv")
    assert list(corr["model_b"]) == ["other"] and corr["n"].iloc[0] > 0


@pytest.mark.slow
def test_04_readouts_with_saved_directions(geometry, tmp_path):
    run("04_readouts.py", tmp_path, "--directions", str(geometry / "directions"))
    assert_written(
        tmp_path,
        "04_logit_lens_lawyer.html",
        "04_logit_lens_nurse.html",
        "04_logit_lens.csv",
        "04_patchscope.csv",
        "04_patchscope.md",
    )
    patch = pd.read_csv(tmp_path / "04_patchscope.csv", keep_default_na=False)
    assert len(patch) == 4 and (patch["steered"] != "").all()


@pytest.mark.slow
def test_05_controls_from_the_sweep_store(sweep_out, tmp_path):
    run("05_controls.py", tmp_path, "--store", str(sweep_out / "sweep"))
    assert_written(
        tmp_path,
        "05_controls_delta_accuracy.html",
        "05_controls_delta_logprob.html",
        "05_pass_rates.csv",
        "05_pass_rates_by_alpha.csv",
        "05_selection_paper.csv",
        "05_selection_heldout.csv",
    )
    rates = pd.read_csv(tmp_path / "05_pass_rates.csv")
    assert set(zip(rates["rule"], rates["source"], strict=True)) == {
        (rule, source)
        for rule in ("paper", "held-out")
        for source in ("role", "random", "shuffled")
    }


def test_only_a_store_mismatch_becomes_one_clear_exit(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import roleprobe as rp
    from roleprobe.experiments.store import StoreMismatchError

    common = _common()
    p = common.parser("test")
    common.add_sweep_args(p)
    args = common.parse(p, ["--out", str(tmp_path), "--quick"])
    monkeypatch.setattr(common, "load_benchmark", lambda args: None)
    monkeypatch.setattr(common, "directions", lambda *a: None)
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=4))
    errors = iter(
        [StoreMismatchError(tmp_path, ["sweep"]), ValueError("a different configuration")]
    )

    def sweep(*args, **kwargs):
        raise next(errors)

    monkeypatch.setattr(rp, "sweep", sweep)
    with pytest.raises(SystemExit, match=r"(?s)differs in \['sweep'\].*another grid"):
        common.sweep_result(args, lambda: model)
    with pytest.raises(ValueError, match="a different configuration"):  # not by its text
        common.sweep_result(args, lambda: model)


ROLE_ANALYSES = {
    "06_components.py": ["06_components.csv", "06_top_writers.csv", "06_top_writers.html"],
    "07_role_confusion.py": [
        "07_accuracy.csv",
        "07_confusion_centred.html",
        "07_most_confused.csv",
        "07_one_vs_rest_auroc.html",
    ],
    "08_shared_specific.py": [
        "08_bands.csv",
        "08_shared_fraction.csv",
        "08_shared_share.html",
        "08_cosine_decomposition.html",
    ],
    "09_persona_vector.py": [
        "09_persona_shift.html",
        "09_persona_shift_centred.html",
        "09_specificity.csv",
        "09_item_correlation.csv",
    ],
    "10_persona_29.py": [
        "10_persona_vs_addition.csv",
        "10_persona_vs_addition.html",
        "10_persona_by_domain.csv",
    ],
}


@pytest.mark.parametrize("script", sorted(ROLE_ANALYSES))
def test_role_analyses_run_on_the_tiny_model(script, tmp_path):
    extra = ["--benchmark", "builtin"] if script.startswith("10_") else []
    run(script, tmp_path, *extra)
    assert_written(tmp_path, *ROLE_ANALYSES[script])


def test_10_resumes_from_its_parts(tmp_path):
    run("10_persona_29.py", tmp_path, "--benchmark", "builtin")
    parts = tmp_path / "10_persona_parts"
    first = pd.read_csv(tmp_path / "10_persona_vs_addition.csv")
    assert set(first["condition"]) == {"persona", "addition α=1", "addition α=3"}
    assert len(first) == 3 * 8  # one role per domain under --quick
    role_part = next(parts.glob("role_*.csv"))
    stamp = role_part.stat().st_mtime_ns
    run("10_persona_29.py", tmp_path, "--benchmark", "builtin")
    assert role_part.stat().st_mtime_ns == stamp  # reused, not recomputed
    again = pd.read_csv(tmp_path / "10_persona_vs_addition.csv")
    pd.testing.assert_frame_equal(first, again)


def test_a_store_is_analysed_with_the_directions_it_ran(tiny_model, tmp_path):
    """03 (and 02, 05) with --store: the run's own directions, or recomputed ones only when
    they hash to what the sweep ran; otherwise a one-line stop asking for --directions."""
    import argparse

    from roleprobe.app.run import RunPaths

    common = _common()
    items = rp.load_benchmark("builtin").items
    law = items[items["subject"].isin(rp.DOMAIN_SUBJECTS["law"])].head(3)
    bench = rp.MultipleChoice(law, "builtin-law-3")
    kw = {"layers": [1], "positions": [-1], "alphas": (1.0,), "progress": False}
    args = argparse.Namespace(directions=None, progress=False, model="tiny-random")
    builtin = rp.compute_directions(tiny_model, roles=["lawyer", "nurse"], progress=False)
    plain = rp.sweep(tiny_model, builtin, bench, roles=["lawyer"], store=tmp_path / "a", **kw)
    got = common.store_directions(args, tiny_model, rp.merge(plain.store))
    assert got.roles == builtin.roles  # recomputed on the built-in prompts: the same hash
    more = rp.compute_directions(tiny_model, roles=["lawyer", "nurse", "economist"], progress=False)
    more.save(tmp_path / "more")  # --directions with more roles than the sweep had: fine
    given = argparse.Namespace(directions=tmp_path / "more", progress=False, model="tiny-random")
    assert common.store_directions(given, tiny_model, rp.merge(plain.store)).roles == more.roles
    mine = rp.custom_prompts(
        {
            "lawyer": ["Draft a will.", "Appeal a verdict."],
            "nurse": ["Dress a wound.", "Take a pulse."],
        },
        base=["Explain inflation.", "Write a haiku about rain."],
    )
    custom = rp.compute_directions(tiny_model, source=mine, progress=False)
    other = rp.sweep(tiny_model, custom, bench, roles=["lawyer"], store=tmp_path / "b", **kw)
    with pytest.raises(SystemExit, match=r"ran other directions.*--directions"):
        common.store_directions(args, tiny_model, rp.merge(other.store))
    paths = RunPaths(tmp_path / "run")  # a store inside a run folder: the run's directions
    custom.save(paths.directions)
    rp.sweep(tiny_model, custom, bench, roles=["lawyer"], store=paths.sweep_store, **kw)
    got = common.store_directions(args, tiny_model, rp.merge(paths.sweep_store))
    assert torch.equal(got.vectors, custom.vectors)
