"""No run loses data to a file or a fault: damaged store parts and stage files are named with
their fix, a finished stage's missing file stops the report, killed writers' temporaries are
cleaned, and the Markdown summary shows names literally. No model is run."""

import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from roleprobe.app.report import load_inputs, render_markdown, write_report
from roleprobe.app.run import (
    EVALUATION,
    PROMPTS,
    READOUTS,
    SELECTION,
    STAGES,
    SWEEP,
    VALIDATION,
    Run,
)
from roleprobe.app.run_config import RunConfig
from roleprobe.core.io import atomic_write_text
from roleprobe.experiments.merging import merge
from roleprobe.experiments.store import ResultStore
from roleprobe.vectors.directions import RoleDirections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from merge_memory import build_store

FIX = "delete it and rerun the sweep: it will be computed again"
ROLES = ("lawyer", "nurse", "mathematician")
LAYERS = (1, 2)


# ------------------------------------------------------------------ 1. store parts ----------
def test_a_zero_byte_part_is_named_with_the_fix_when_read(tmp_path):
    from roleprobe.experiments.store import BadPartError

    store = ResultStore(tmp_path, {"config": {}})
    for key in ("a", "b", "c"):
        store.write(key, pd.DataFrame({"x": [1, 2]}))
    (tmp_path / "parts" / "b.parquet").write_bytes(b"")  # a fault outside roleprobe
    # the done set is names only (documented: no per-part read on every listing)
    assert ResultStore(tmp_path, {"config": {}}).done() == {"a", "b", "c"}
    with pytest.raises(BadPartError) as err:
        store.read()
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert str(tmp_path / "parts" / "b.parquet") in message and "0 bytes" in message
    assert message.endswith(FIX)
    assert err.value.paths == [tmp_path / "parts" / "b.parquet"]
    assert store.read(["a", "c"])["x"].tolist() == [1, 2, 1, 2]  # the others still read
    store.write("b", pd.DataFrame({"x": [3]}))  # the rerun replaces it
    assert store.read()["x"].tolist() == [1, 2, 3, 1, 2]


@pytest.fixture
def sweep_store(tmp_path):
    build_store(tmp_path, ["lawyer", "nurse"], layers=2, positions=1, items=5, batch_size=4)
    return tmp_path


def _layer_parts(store):
    return sorted((store / "parts").glob("layer*.parquet"))


def test_a_truncated_part_is_named_by_every_read_of_the_merged_sweep(sweep_store):
    from roleprobe.experiments.store import BadPartError

    part = _layer_parts(sweep_store)[1]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])  # cut short: "magic bytes not found" before
    result = merge(sweep_store)  # the listing alone does not read the layer parts
    for read in (lambda: result.n_rows, result.scores, result.read_table):
        with pytest.raises(BadPartError, match=re.escape(f"{part} is not a readable")) as err:
            read()
        assert "cut short or not parquet" in str(err.value) and str(err.value).endswith(FIX)
    base = sorted((sweep_store / "parts").glob("baseline-*.parquet"))[0]
    base.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{base} is not a readable")):
        merge(sweep_store)  # the baseline parts are read by merge itself


def test_every_damaged_part_is_named_at_once_and_a_caller_mistake_passes_unchanged(
    sweep_store,
):
    import pyarrow as pa

    from roleprobe.experiments.store import BadPartError

    first, second, third = _layer_parts(sweep_store)[:3]
    first.write_bytes(b"")
    second.write_bytes(b"PAR1" + b"\0" * 20)
    inside = bytearray(third.read_bytes())
    inside[200:260] = b"\xff" * 60  # damaged data with a whole footer
    third.write_bytes(bytes(inside))
    result = merge(sweep_store)
    with pytest.raises(BadPartError) as err:
        result.scores()
    assert err.value.paths[:2] == [first, second] and "2 store parts" in str(err.value)
    assert str(err.value).endswith("delete them and rerun the sweep: they will be computed again")
    first.unlink()
    second.unlink()
    with pytest.raises(BadPartError, match=re.escape(str(third))):
        merge(sweep_store, allow_partial=True).read_table()
    third.unlink()
    fine = merge(sweep_store, allow_partial=True)
    with pytest.raises(pa.ArrowInvalid):  # not damage: no "delete it" advice
        fine.read_table(columns=["no_such_column"])


# ------------------------------------------------------------------ a finished run ----------
def _table(path, rows):
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def _finished_run(root: Path, evaluate_rules=("held-out",)):
    """A run folder whose stages 1-7 are finished, written by hand (small, no model)."""
    config = RunConfig(
        model="tiny-random", device="cpu", roles=ROLES, evaluate_rules=evaluate_rules
    )
    run = Run(config, root)
    paths = run.paths
    _table(
        paths.validation,
        [{"role": r, "position": -1, "layer": la, "auroc": 0.9} for r in ROLES for la in LAYERS],
    )
    _table(
        paths.confusion_matrix,
        [
            {"layer": 2, "position": -1, "true": r, **{s: float(r == s) for s in ROLES}}
            for r in ROLES
        ],
    )
    _table(
        paths.sweep_scores,
        [
            {
                "role": r,
                "source": source,
                "donor": r,
                "position": -1,
                "layer": la,
                "condition": condition,
                "alpha": alpha,
                "n": 4,
                "delta_accuracy": 0.0,
                "delta_logprob": -0.1,
            }
            for r in ROLES
            for la in LAYERS
            for condition, alpha in (("addition", 1.0), ("ablation", math.nan))
            for source in ("role", "random")
        ],
    )
    _table(
        paths.sweep_baseline,
        {"answer": list("ABCD"), "pred": list("AACD"), "correct": [1.0, 0.0, 1.0, 1.0]},
    )
    atomic_write_text(paths.sweep_store / "manifest.json", json.dumps({"config": {}}))
    picks = {
        "role": list(ROLES),
        "source": ["role"] * 3,
        "donor": list(ROLES),
        "alpha": [1.0] * 3,
        "position": [-1] * 3,
        "layer": [2] * 3,
        "passed": [True] * 3,
        "delta_logprob": [-0.1] * 3,
    }
    for rule in ("paper", "held-out"):
        _table(paths.picks(rule), picks)
    effects = {
        "role": ["lawyer"],
        "condition": ["addition"],
        "alpha": [1.0],
        "domain": ["law"],
        "part": ["heldout"],
        "n": [4],
        "base_accuracy": [0.5],
        "accuracy": [0.75],
        "relative_change_pct": [50.0],
        "mcnemar_p_adj": [1.0],
        "delta_logprob": [0.1],
        "logprob_p": [0.5],
        "in_domain": [True],
        "stars": [""],
    }
    for rule in evaluate_rules:
        _table(paths.effects(rule), effects)
    _table(paths.patchscope, {"role": ["lawyer"], "steered": ["a judge"], "unsteered": ["x"]})
    _table(
        paths.logit_lens,
        {
            "role": ["lawyer"] * 2,
            "layer": [2, 2],
            "position": [-1, -1],
            "sign": ["+", "-"],
            "rank": [0, 0],
            "token": ["court", "bake"],
        },
    )
    summaries = {
        VALIDATION: {
            "rows": 6,
            "median_auroc_by_layer": {"1": 0.9},
            "confusion_accuracy": 1.0,
            "confusion_layer": 2,
            "confusion_chance": 0.333,
        },
        SWEEP: {"complete": True, "missing": 0, "rows": 48},
        SELECTION: {"paper_passed": {"role": 1.0}},
        EVALUATION: {"rules": list(evaluate_rules), "headline": evaluate_rules[0]},
        READOUTS: {"picks": 1, "patchscope": 1, "logit_lens_rows": 2, "component_rows": 0},
    }
    for stage in STAGES[: STAGES.index(READOUTS) + 1]:
        run.finish(stage, summaries.get(stage, {}), 1.0)
    gen = torch.Generator().manual_seed(0)
    rd = RoleDirections(
        role_means=torch.randn(3, 1, 2, 8, generator=gen, dtype=torch.float64),
        base_mean=torch.randn(1, 2, 8, generator=gen, dtype=torch.float64),
        role_counts=(10, 11, 12),
        base_count=30,
        roles=ROLES,
        layers=LAYERS,
        positions=(-1,),
    )
    return run, rd


@pytest.fixture
def finished(tmp_path):
    return _finished_run(tmp_path / "run")


def test_the_hand_made_run_reports(finished):
    run, rd = finished
    summary = write_report(run, rd)
    assert summary["figures"] >= 5 and run.paths.report_html.exists()
    assert "| 07_readouts |" in run.paths.summary_md.read_text()


# ------------------------------------------------------------------ 2. done.json ------------
@pytest.mark.parametrize("text", ['{"seconds": 1.0, ', "", "[1, 2]", "\xff\xfe"])
def test_a_damaged_done_json_is_named_with_the_fix(finished, text):
    run, rd = finished
    done = run.paths.done(VALIDATION)
    done.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as err:
        write_report(run, rd)
    message = str(err.value)
    assert message.startswith(f"{done}, the completion mark of 03_validation, is damaged")
    assert "delete it and rerun the same `roleprobe run` command" in message
    assert "\n" not in message


# ------------------------------------------------------------------ 3. missing files --------
@pytest.mark.parametrize(
    ("stage", "name"),
    [
        (READOUTS, "patchscope.csv"),
        (READOUTS, "logit_lens.csv"),
        (VALIDATION, "confusion_matrix.csv"),
        (VALIDATION, "validation.csv"),
        (SWEEP, "scores.csv"),
        (SWEEP, "store/manifest.json"),
        (SELECTION, "picks_held-out.csv"),
        (EVALUATION, "effects_paper.csv"),
    ],
)
def test_a_finished_stage_missing_a_file_stops_the_report(tmp_path, stage, name):
    run, rd = _finished_run(tmp_path, evaluate_rules=("held-out", "paper"))
    lost = run.paths.folder(stage) / name
    lost.unlink()
    with pytest.raises(ValueError) as err:
        write_report(run, rd)
    message = str(err.value)
    assert message.startswith(f"{lost} is missing, but {stage.name} finished")
    assert f"make {stage.name} again: delete {run.paths.done(stage)}" in message
    assert f"`roleprobe figures {run.out}`" in message and "\n" not in message
    assert not run.paths.report_html.exists()


def test_files_a_stage_did_not_write_are_not_required(tmp_path):
    run, rd = _finished_run(tmp_path)
    paths = run.paths
    # patchscope off (0 rows), no held-out confusion, no components: nothing was written
    for path in (paths.patchscope, paths.confusion_matrix, paths.components):
        path.unlink(missing_ok=True)
    for stage, key in ((READOUTS, "patchscope"), (VALIDATION, "confusion_accuracy")):
        summary = run.summary(stage)
        summary[key] = 0 if key == "patchscope" else None
        run.finish(stage, {k: v for k, v in summary.items() if k != "seconds"}, 1.0)
    # a run made before evaluate_rules: one effects.csv, no "rules" in its done.json
    paths.effects("held-out").rename(paths.legacy_effects)
    run.finish(EVALUATION, {}, 1.0)
    write_report(run, rd)
    assert paths.report_html.exists() and "Patchscope" not in paths.report_html.read_text()


def test_an_unreadable_stage_file_is_named_with_the_stage_to_make_again(finished):
    run, rd = finished
    run.paths.sweep_scores.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        write_report(run, rd)
    message = str(err.value)
    assert message.startswith(f"{run.paths.sweep_scores} is not a readable CSV (0 bytes)")
    assert f"make 04_sweep again: delete {run.paths.done(SWEEP)}" in message


def test_the_report_needs_every_stage_before_it(finished):
    run, rd = finished
    run.paths.done(SELECTION).unlink()
    with pytest.raises(ValueError, match="05_selection is not finished"):
        write_report(run, rd)
    assert run.is_done(PROMPTS)


# ------------------------------------------------------------------ 4. temporaries ----------
def _killed_writer_temporary(target: Path) -> Path:
    """The temporary a writer killed mid-write leaves beside ``target`` (its process gone)."""
    code = (
        "import os, sys; from pathlib import Path; from roleprobe.core.io import _temporary;"
        "fd, tmp = _temporary(Path(sys.argv[1])); os.write(fd, b'x' * 1000);"
        "print(tmp, flush=True); os._exit(9)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 9, out.stderr
    return Path(out.stdout.strip())


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_only_stale_temporaries_of_ours_are_removed(tmp_path):
    from roleprobe.core.io import _temporary, remove_stale_temporaries, stale_temporaries

    killed = _killed_writer_temporary(tmp_path / "plotly.min.js")
    fd, live = _temporary(tmp_path / "report.html")  # this process: alive, writing
    os.close(fd)
    live = Path(live)
    elsewhere = tmp_path / ".x.csv.rp1-0badc0de.abcd1234.tmp"  # another host: fresh
    elsewhere_old = tmp_path / ".y.csv.rp1-0badc0de.abcd1234.tmp"  # another host: silent 2 h
    legacy = tmp_path / ".z.csv.k3j_9a0b.tmp"  # written before the pid was in the name
    legacy_old = tmp_path / ".w.csv.k3j_9a0c.tmp"
    theirs = [tmp_path / n for n in (".notes.tmp", "x.tmp", ".a.b.tmp", ".a.csv.toolong12.tmp")]
    for path in (elsewhere, elsewhere_old, legacy, legacy_old, *theirs):
        path.write_text("x")
    folder = tmp_path / ".q.csv.abcdefgh.tmp"  # a folder named like a temporary
    folder.mkdir()
    link = tmp_path / ".l.csv.abcdefgh.tmp"
    link.symlink_to(tmp_path / "nowhere")
    for path in (elsewhere_old, legacy_old, *theirs, folder, link):
        _age(path, 2 * 3600)
    assert stale_temporaries(tmp_path) == sorted([killed, elsewhere_old, legacy_old])
    assert remove_stale_temporaries(tmp_path) == sorted([killed, elsewhere_old, legacy_old])
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {p.name for p in (live, elsewhere, legacy, *theirs, folder, link)}
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_stage_8_removes_the_temporaries_a_killed_report_left(finished):
    run, rd = finished
    figures = run.paths.figures
    figures.mkdir(parents=True)  # a stage 8 killed while writing plotly.js
    killed = _killed_writer_temporary(figures / "plotly.min.js")
    page = _killed_writer_temporary(run.paths.report_html)
    write_report(run, rd)
    assert not killed.exists() and not page.exists()
    assert not [p for p in run.paths.folder(READOUTS).parent.rglob("*.tmp")]
    assert (figures / "plotly.min.js").exists()


def test_opening_a_store_removes_killed_writers_part_temporaries_in_its_one_listing(
    tmp_path, request
):
    ResultStore(tmp_path, {"config": {}}).write("a", pd.DataFrame({"x": [1]}))
    killed = _killed_writer_temporary(tmp_path / "parts" / "b.parquet")
    listings = request.getfixturevalue("parts_listings")  # from here on
    store = ResultStore(tmp_path, {"config": {}})
    assert store.done() == {"a"} and store.done() == {"a"}
    assert len(listings) == 1 and not killed.exists()


# ------------------------------------------------------------------ 5. Markdown -------------
def test_the_markdown_summary_shows_names_and_texts_literally(finished):
    from roleprobe.app.report import md_escape

    run, _ = finished
    inputs = load_inputs(run)
    odd = "*c++_dev* [x](y) <b>|"
    picks = inputs.picks.assign(role=[odd, "lawyer", "nurse"])
    patch = pd.DataFrame({"role": [odd], "steered": ["a `judge`\nwith | pipes & $x$"]})
    md = render_markdown(
        replace(inputs, model="org/my_model #1", picks=picks, patchscope=patch),
        {
            "baseline_accuracy": 0.5,
            "majority_letter": "A",
            "majority_letter_baseline": 0.25,
            "predicted_letters": {"A": 2, "<x>": 1},
        },
    )
    assert md.startswith("# roleprobe run: org/my\\_model \\#1\n")
    assert odd not in md and "<b>" not in md and "<x>" not in md
    escaped = md_escape(odd)
    assert escaped == "\\*c++\\_dev\\* \\[x\\](y) \\<b\\>\\|"
    assert md.count(f"| {escaped} |") == 2  # the picks and the patchscope tables
    assert "| a \\`judge\\` with \\| pipes \\& \\$x\\$ |" in md
    for table in re.findall(r"((?:^\|.*\|$\n)+)", md, flags=re.M):
        rows = [re.split(r"(?<!\\)\|", line) for line in table.splitlines()]
        assert len({len(r) for r in rows}) == 1, table  # no cell spills into another
    assert "| 07_readouts |" in md  # our own names stay as they are
