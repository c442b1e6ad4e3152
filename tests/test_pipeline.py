import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.app.cli import main
from roleprobe.app.pipeline import PRESETS, STAGES, RunConfig, load_config, run_pipeline
from roleprobe.experiments.selection import split_ids
from roleprobe.model.tiny import TinyConfig


def _config(model, **kw):
    base = {
        "model": model,
        "device": "cpu",
        "roles": ["lawyer", "nurse", "mathematician"],
        "layers": [1, 2],
        "positions": [-1],
        "questions_per_domain": 4,
        "batch_size": 8,
    }
    return RunConfig.from_dict({**base, **kw})


@pytest.fixture(scope="module")
def finished(tiny4, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return run_pipeline(_config(tiny4), out)


def test_every_stage_writes_its_folder(finished):
    out, paths = finished.out, finished.paths
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert [*(s.name for s in STAGES), "claims"] == folders
    assert not list((out / "claims").iterdir())  # every stage claim released
    for stage in STAGES:
        assert (out / stage.name / "done.json").exists(), stage
    assert (out / "02_directions" / "directions" / "directions.safetensors").exists()
    assert paths.directions == out / "02_directions" / "directions"
    directions = pd.read_csv(out / "03_validation" / "validation.csv")
    assert {"norm", "base_cosine", "auroc"} <= set(directions.columns)
    for rule in ("paper", "held-out"):
        picks = pd.read_csv(paths.picks(rule))
        assert len(picks) == 3 * 3 * 2  # roles x sources x alphas
    scores = pd.read_csv(out / "04_sweep" / "scores.csv")
    assert {"role", "source", "layer", "delta_logprob"} <= set(scores.columns)
    assert len(pd.read_csv(paths.sweep_baseline)) == len(rp.merge(paths.sweep_store).baseline)
    assert not paths.legacy_effects.exists()  # one table per evaluated rule
    effects = pd.read_csv(out / "06_evaluation" / "effects_held-out.csv")
    assert set(effects["condition"]) == {"addition", "ablation"}
    cells = effects.groupby(["role", "condition", "alpha"], dropna=False)["domain"].agg(set)
    assert len(cells) == 3 * 3  # 3 roles x (2 alphas + ablation)
    assert all(d == {"law", "medicine", "math"} for d in cells)  # every role x every domain
    assert set(effects.loc[effects["in_domain"], "part"]) == {"heldout"}
    assert set(effects.loc[~effects["in_domain"], "part"]) == {"other"}
    runs = pd.read_parquet(paths.evaluation_runs("held-out"))
    result = rp.merge(paths.sweep_store)
    for role in ("lawyer", "nurse", "mathematician"):
        items = result.baseline[result.baseline["id"].isin(result.role_items(role))]
        selection, report = split_ids(items, 0.5, 0)
        own = runs[(runs["role"] == role) & runs["own_domain"]]
        assert set(own["id"]) == set(report) and not set(own["id"]) & set(selection)
    assert json.loads((out / "config.json").read_text())["prompt_revision"] == "final"
    patch = pd.read_csv(out / "07_readouts" / "patchscope.csv")
    assert set(patch["mode"]) == {"placeholder"} and len(patch) == 3  # one pick per role
    lens = pd.read_csv(out / "07_readouts" / "logit_lens.csv", keep_default_na=False)
    assert set(lens["role"]) == {"lawyer", "nurse", "mathematician"}
    assert set(lens["sign"]) == {"+", "-"} and len(lens) == 3 * 2 * 8  # picks x signs x k
    report = (out / "08_report" / "report.html").read_text()
    assert report.count("<script") >= 2 and "Run manifest" in report and "chance" in report
    assert "Patchscope" in report and "Logit lens" in report
    summary = (out / "08_report" / "summary.md").read_text()
    assert "majority" in summary and "Held-out AUROC" in summary and "## Logit lens" in summary
    assert "| 07_readouts | what the model says each picked direction is" in summary
    figures = {p.name for p in (out / "08_report" / "figures").iterdir()}
    assert {"auroc.html", "sweep_delta_logprob.html", "plotly.min.js"} <= figures


def test_patchscope_csv_is_what_one_patchscope_per_pick_writes(finished):
    """Stage 7 batches the picks in one patchscopes call; the file is byte for byte the one
    the per-pick loop wrote (one patchscope per pick, in the picks' order)."""
    from roleprobe.app.pipeline import PATCHSCOPE_COLUMNS, Context, readout_picks
    from roleprobe.vectors.readouts import patchscope

    ctx = Context(finished)
    cfg, rd = finished.config, ctx.directions()
    rows = []
    for pick in readout_picks(ctx.picks(cfg.evaluate_rules[0])).itertuples(index=False):
        role, layer, pos = str(pick.role), int(pick.layer), int(pick.position)
        res = patchscope(
            ctx.model, rd.vector(role, layer, pos), layer, max_new_tokens=32, system=rd.system
        )
        rows.append([role, layer, pos, res.mode, res.steered, res.unsteered])
    expected = pd.DataFrame(rows, columns=list(PATCHSCOPE_COLUMNS)).to_csv(index=False)
    assert len(rows) == 3 and finished.paths.patchscope.read_text() == expected


def test_the_run_says_where_its_directions_come_from(finished):
    paths = finished.paths
    rd = rp.RoleDirections.load(paths.directions)
    share = pd.read_csv(paths.shared_share)
    expected = rp.shared_share(rd)
    pd.testing.assert_series_equal(share["share"], expected["share"], check_names=False)
    confusion = pd.read_csv(paths.confusion)
    assert set(confusion["rule"]) == {"cosine", "centred"} and set(confusion["layer"]) == {1, 2}
    matrix = pd.read_csv(paths.confusion_matrix)
    roles = ["lawyer", "nurse", "mathematician"]
    assert list(matrix["true"]) == roles
    values = matrix[roles].to_numpy()
    assert values.shape == (3, 3) and abs(values.sum(axis=1) - 1).max() < 1e-9  # row shares
    best = confusion[confusion["rule"] == "cosine"]["accuracy"].max()
    assert abs(values.diagonal().mean() - best) < 1e-9  # the matrix is the best layer's
    components = pd.read_csv(paths.components)
    picks = pd.read_csv(paths.picks("held-out"))
    chosen = picks[(picks["source"] == "role") & (picks["alpha"] == picks["alpha"].max())]
    assert set(components["role"]) == set(chosen["role"])
    for pick in chosen.itertuples():
        mine = components[components["role"] == pick.role]
        assert set(mine["position"]) == {pick.position}
        # the components sum to the pick direction's own projection d_hat . d = |d|
        d = rd.vector(pick.role, int(pick.layer), int(pick.position)).double()
        assert abs(mine["value"].sum() - float(d.norm())) < 1e-4 * float(d.norm())
    summary = finished.summary("validation")
    assert summary["confusion_layer"] in (1, 2) and summary["confusion_chance"] == 0.333
    report = (paths.report_html).read_text()
    for title in ("shared by all the roles", "Held-out role vs role", "Which heads and MLPs"):
        assert title in report
    md = paths.summary_md.read_text()
    assert "## Where the directions come from" in md and "Top writers" in md
    figures = {p.name for p in paths.figures.iterdir()}
    assert {"shared_share.html", "confusion.html", "top_writers.html"} <= figures


def test_the_specific_parts_run_as_their_own_sweep_source(tiny4, tmp_path):
    config = _config(tiny4, roles=["lawyer", "nurse"], specific=True, alphas=[3.0])
    run = run_pipeline(config, tmp_path, until="selection")
    scores = pd.read_csv(run.paths.sweep_scores)
    assert {"specific", "specific-random", "specific-shuffled"} <= set(scores["source"])
    picks = pd.read_csv(run.paths.picks("held-out"))
    assert "specific" in set(picks["source"])
    with pytest.raises(ValueError, match="specific = true needs 2 roles"):
        _config(tiny4, roles=["lawyer"], specific=True)


def test_a_rerun_skips_finished_stages(finished):
    again = run_pipeline(finished.config, finished.out)
    assert again.timings == {}


def test_a_run_folder_refuses_a_change_to_what_finished_stages_computed(finished, tiny4):
    before = (finished.out / "config.json").read_text()
    with pytest.raises(ValueError, match=r"02_directions.*layers \(\[1, 2\] -> \[1\], used from"):
        run_pipeline(_config(tiny4, layers=[1]), finished.out)
    with pytest.raises(ValueError, match=r"\['04_sweep'\].*alphas .*used from 04_sweep on"):
        run_pipeline(_config(tiny4, alphas=[1.0]), finished.out)
    assert (finished.out / "config.json").read_text() == before  # nothing was rewritten


def test_every_setting_names_the_first_stage_it_changes():
    from dataclasses import fields

    from roleprobe.app.run import FIRST_STAGE

    assert set(FIRST_STAGE) == {f.name for f in fields(RunConfig)}


def test_a_change_after_the_sweep_remakes_only_the_stages_it_affects(tiny4, tmp_path):
    cfg = _config(tiny4, roles=["lawyer"], patchscope=False)
    run_pipeline(cfg, tmp_path)
    store = sorted((tmp_path / "04_sweep" / "store" / "parts").iterdir())
    stamps = [p.stat().st_mtime_ns for p in store]
    directions = (tmp_path / "02_directions" / "done.json").stat().st_mtime_ns
    again = run_pipeline(
        _config(tiny4, roles=["lawyer"], patchscope=False, correction="bh"), tmp_path
    )
    assert sorted(again.timings) == [
        "05_selection",
        "06_evaluation",
        "07_readouts",
        "08_report",
    ]
    assert [p.stat().st_mtime_ns for p in store] == stamps
    assert (tmp_path / "02_directions" / "done.json").stat().st_mtime_ns == directions
    assert json.loads((tmp_path / "config.json").read_text())["correction"] == "bh"
    # a later stage only: readouts and the report
    third = run_pipeline(
        _config(tiny4, roles=["lawyer"], patchscope=True, correction="bh"), tmp_path
    )
    assert sorted(third.timings) == ["07_readouts", "08_report"]
    # where the run computes is not what it computes
    fourth = run_pipeline(
        _config(
            tiny4, roles=["lawyer"], patchscope=True, correction="bh", n_devices=1, device="auto"
        ),
        tmp_path,
    )
    assert fourth.timings == {}


def test_a_setting_known_only_to_the_model_leaves_the_folder_fixable(tiny4, tmp_path):
    with pytest.raises(ValueError, match=r"layers \[7\] are beyond .* 4 layers \(0-3\)"):
        run_pipeline(_config(tiny4, layers=[1, 7]), tmp_path)
    assert not (tmp_path / "02_directions" / "done.json").exists()
    fixed = run_pipeline(_config(tiny4, layers=[1, 2]), tmp_path, until="directions")
    assert fixed.is_done("02_directions")


def test_bad_inputs_known_up_front_write_nothing(tmp_path, monkeypatch):
    import roleprobe.model.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", no_model)
    out = tmp_path / "run"
    cfg = RunConfig(model="tiny-random", device="cpu", benchmark="paper", data=str(tmp_path / "no"))
    with pytest.raises(
        ValueError, match=r"data = '.*no' \(needed by benchmark = 'paper'\) is not a folder"
    ):
        run_pipeline(cfg, out)
    assert not out.exists()
    with pytest.raises(ValueError, match="out must name a run folder"):
        run_pipeline(RunConfig(model="tiny-random"), "")


def test_shards_stop_after_the_sweep_and_the_last_call_finishes(tiny4, tmp_path):
    cfg = _config(tiny4, roles=["lawyer"], rules=["held-out"], patchscope=False)
    first = run_pipeline(cfg, tmp_path, shard="0/2")
    assert first.is_done("03_validation") and not first.is_done("04_sweep")
    assert not first.paths.sweep_scores.exists()  # tables only once the sweep is complete
    with pytest.raises(ValueError, match="incomplete"):
        rp.merge(first.paths.sweep_store)
    second = run_pipeline(cfg, tmp_path, shard="1/2")
    assert second.is_done("04_sweep") and second.paths.sweep_scores.exists()
    done = run_pipeline(cfg, tmp_path)
    assert done.is_done("08_report") and done.is_done("07_readouts")
    assert pd.read_csv(done.paths.patchscope).empty  # patchscope = false: no generation


def test_load_config_layers_preset_file_and_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nroles = ["nurse"]\nalphas = [2.0]\n')
    cfg = load_config("demo", path, {"model": "tiny-random", "roles": None})
    assert cfg.roles == ("nurse",) and cfg.alphas == (2.0,) and cfg.layers == (8, 16)
    assert cfg.model == "tiny-random"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) == {"demo", "paper", "smoke", "custom"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles = [", "not valid TOML"),
        ("colour = 'red'", r"unknown settings \['colour'\]"),
        ("ablation = 'yes'", "ablation must be true or false"),
        ("rules = ['best']", "unknown rules"),
        ("benchmark = 'gsm8k'", "unknown benchmark"),
        ("prompt_revision = 'latest'", "unknown prompt_revision 'latest'"),
        ("patchscope_mode = 'everywhere'", "unknown patchscope_mode"),
    ],
)
def test_bad_config_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(None, path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layers = [1.5]", r"layers\[0\] must be an integer, got 1.5"),
        ("layers = [1, true]", r"layers\[1\] must be an integer, got True"),
        ("layers = 'x'", r"layers\[0\] must be an integer, got 'x'"),
        ("alphas = ['big']", r"alphas\[0\] must be a number, got 'big'"),
        ("alphas = [nan]", r"alphas\[0\] must be a finite number, got nan"),
        ("roles = [1]", r"roles\[0\] must be a string, got 1"),
        ("seed = 1.5", "seed must be an integer, got 1.5"),
        ("batch_size = '16'", "batch_size must be an integer, got '16'"),
        ("batch_size = true", "batch_size must be an integer, got True"),
        ("heldout_fraction = '0.2'", "heldout_fraction must be a number, got '0.2'"),
        ("heldout_fraction = true", "heldout_fraction must be a number, got True"),
        ("model = 5", "model must be a string, got 5"),
        ("patchscope = 1", "patchscope must be true or false, got 1"),
        ("layers = {a = 1}", "layers must be a list of integers"),
        ("questions_per_domain = -1", "questions_per_domain must be 0 .all. or a positive"),
        ("n_devices = 0", "n_devices must be at least 1"),
        ("select_fraction = 2.0", "select_fraction must be strictly between 0 and 1"),
        ("run = 5", r"run must be a \[run\] table of settings, got 5"),
        ("seed = 1\n[run]\nbatch_size = 8", r"settings \['seed'\] are outside the \[run\]"),
    ],
)
def test_config_types_are_checked_naming_the_key_and_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config(None, path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_config_types_are_checked_from_python_and_widened():
    cfg = RunConfig.from_dict({"alphas": [1, 3], "heldout_fraction": 0, "layers": [2, 1]})
    assert cfg.alphas == (1.0, 3.0) and isinstance(cfg.alphas[0], float)
    assert cfg.heldout_fraction == 0.0 and isinstance(cfg.heldout_fraction, float)
    assert cfg.layers == (2, 1) and hash(cfg)  # a list becomes a tuple
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"^config: layers\[0\] must be an integer, got 1.5$"):
        RunConfig.from_dict({"layers": [1.5]})
    with pytest.raises(ValueError, match=r"^config: seed must be an integer, got 1\.5$"):
        RunConfig.from_dict({"seed": 1.5})


def test_a_non_utf8_config_is_named(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("model = 'caf\u00e9'\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8") as err:
        load_config(None, path)
    assert str(path) in str(err.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        load_config("fast")
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(None, tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["run", "--out", "{tmp}/r"], 2, "give --preset"),  # a usage error the CLI finds
        (["run", "--config", "{tmp}/missing.toml", "--out", "{tmp}/r"], 1, "cannot read config"),
        (["merge", "{tmp}"], 1, "not a sweep store"),
        (["figures", "{tmp}"], 1, "not a run folder"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, status, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["--quiet", *argv]) == status
    err = capsys.readouterr().err
    assert err.startswith("roleprobe: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--preset", "fast", "--out", "{tmp}/r"], "invalid choice: 'fast'"),
        (["run", "--preset", "demo", "--out", "{tmp}/r", "--until", "x"], "invalid choice: 'x'"),
    ],
)
def test_cli_bad_choices_are_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["--quiet", *(a.format(tmp=tmp_path) for a in argv)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_cli_bad_shard_is_one_line(tmp_path, capsys, tiny4):
    path = tmp_path / "run.toml"
    path.write_text(json.dumps({}).replace("{}", f'model = "{tiny4}"\nlayers = [1]\n'))
    assert (
        main(
            [
                "--quiet",
                "run",
                "--config",
                str(path),
                "--out",
                str(tmp_path / "r"),
                "--shard",
                "2/2",
                "--until",
                "sweep",
            ]
        )
        == 1
    )
    assert "bad shard '2/2'" in capsys.readouterr().err


def test_no_resume_refuses_a_started_folder(finished, capsys):
    with pytest.raises(ValueError, match="already holds finished stages"):
        run_pipeline(finished.config, finished.out, resume=False)


def test_paper_rule_without_ablation_reads_every_domain(tiny4, tmp_path, monkeypatch):
    from roleprobe.vectors import readouts

    seen = []
    real = readouts.patchscopes

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **{**kwargs, "max_new_tokens": 3})

    monkeypatch.setattr(readouts, "patchscopes", spy)
    cfg = _config(
        tiny4,
        roles=["lawyer"],
        rules=["paper"],
        layers=[1],
        alphas=[3.0],
        ablation=False,
        controls=False,
        evaluate_all_domains=True,
        questions_per_domain=1,
        patchscope_mode="paper",
    )
    run = run_pipeline(cfg, tmp_path)
    effects = pd.read_csv(run.paths.effects("paper"))
    assert set(effects["condition"]) == {"addition"}  # ablation = false is honoured
    assert effects.groupby(["role", "alpha"])["domain"].nunique().eq(8).all()  # all 8 domains
    assert len(effects) == 8 and effects["n"].eq(1).all()
    assert set(effects.loc[effects["in_domain"], "part"]) == {"selected"}  # the paper's way
    assert run.summary("06_evaluation")["paper"]["domains"] == 8
    assert seen and all(k["mode"] == "paper" and k["max_new_tokens"] is None for k in seen)


def test_new_settings_are_validated_and_recorded(tmp_path):
    from roleprobe.app.pipeline import CHOICES
    from roleprobe.data.prompts import PAPER_REVISIONS
    from roleprobe.vectors.readouts import PATCHSCOPE_MODES

    assert set(CHOICES["prompt_revision"]) == set(PAPER_REVISIONS)
    assert set(CHOICES["patchscope_mode"]) == set(PATCHSCOPE_MODES)
    paper = load_config("paper")
    assert paper.prompt_revision == "v1" and paper.patchscope_mode == "paper"
    default = RunConfig()
    assert default.prompt_revision == "final" and default.patchscope_mode == "placeholder"
    assert RunConfig.from_dict(paper.to_dict()) == paper
    with pytest.raises(ValueError, match=r"unknown prompt_revision 'v2'.*\['final', 'v1'\]"):
        RunConfig(prompts="paper", prompt_revision="v2")
    with pytest.raises(ValueError, match=r"unknown patchscope_mode 'all'.*'placeholder'"):
        RunConfig(patchscope_mode="all")
    with pytest.raises(ValueError, match="needs the paper's prompts"):
        RunConfig(prompt_revision="v1")


def test_a_run_started_before_new_settings_still_resumes(tmp_path):
    from roleprobe.app.pipeline import Run

    cfg = RunConfig(model="tiny-random", device="cpu")
    old = {
        k: v for k, v in cfg.to_dict().items() if k not in ("prompt_revision", "patchscope_mode")
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    run = Run(cfg, tmp_path)  # the missing settings read as their defaults
    run.finish("01_prompts", {}, 0.0)
    with pytest.raises(ValueError, match="prompt_revision"):
        Run(
            RunConfig(model="tiny-random", device="cpu", prompts="paper", prompt_revision="v1"),
            tmp_path,
        )


def test_the_prompt_revision_reaches_the_run(paper_dir, tmp_path):
    runs = {}
    for revision in ("final", "v1"):
        cfg = RunConfig(
            model="tiny-random",
            device="cpu",
            roles=("lawyer",),
            prompts="paper",
            data=str(paper_dir),
            prompt_revision=revision,
            heldout_fraction=0.0,
        )
        run = run_pipeline(cfg, tmp_path / revision, until="prompts")
        assert run.summary("01_prompts")["source"] == f"paper:{revision}"
        runs[revision] = json.loads((tmp_path / revision / "01_prompts" / "train.json").read_text())
        assert runs[revision]["source"] == f"paper:{revision}"
    final, v1 = runs["final"], runs["v1"]
    assert final["prompts"]["base"] == v1["prompts"]["base"]
    assert final["prompts"]["lawyer"] != v1["prompts"]["lawyer"]


def test_stages_are_named_once_and_until_takes_new_and_old_names():
    from roleprobe.app import pipeline, run

    assert list(pipeline.STEPS) == list(STAGES)  # every stage computes something, in order
    assert [s.number for s in STAGES] == list(range(1, len(STAGES) + 1))
    assert run.stage_named("directions") is run.DIRECTIONS
    assert run.stage_named("02_directions") is run.DIRECTIONS
    assert run.stage_named("means") is run.DIRECTIONS  # earlier names still work
    assert run.stage_named("02_means") is run.DIRECTIONS
    assert run.stage_named("03_directions") is run.VALIDATION
    assert run.stage_named("07_report") is run.REPORT
    assert run.stage_named("readouts").name == "07_readouts"
    names = [n for s in STAGES for n in (s.name, s.key, *s.aliases)]
    assert len(names) == len(set(names))  # no name means two stages
    with pytest.raises(ValueError, match=r"unknown stage 'x'.*'validation'"):
        run.stage_named("x")
    for stage in STAGES:  # the layout is documented where a reader looks for it
        assert f"<out>/{stage.name}/" in pipeline.__doc__
        assert f"`{stage.name}/`" in (Path(__file__).parents[1] / "README.md").read_text()


def test_every_path_lies_in_its_stage_folder(tmp_path):
    from roleprobe.app.run import RunPaths

    paths = RunPaths(tmp_path)
    expected = {
        paths.prompts("train"): "01_prompts",
        paths.directions: "02_directions",
        paths.validation: "03_validation",
        paths.sweep_store: "04_sweep",
        paths.sweep_scores: "04_sweep",
        paths.sweep_baseline: "04_sweep",
        paths.picks("held-out"): "05_selection",
        paths.evaluation_runs("paper"): "06_evaluation",
        paths.evaluation_baseline: "06_evaluation",
        paths.effects("held-out"): "06_evaluation",
        paths.legacy_effects: "06_evaluation",
        paths.patchscope: "07_readouts",
        paths.logit_lens: "07_readouts",
        paths.figure("auroc"): "08_report",
        paths.report_html: "08_report",
        paths.summary_md: "08_report",
    }
    for path, folder in expected.items():
        assert path.relative_to(tmp_path).parts[0] == folder, path
    assert not list(tmp_path.iterdir())  # naming paths creates nothing
    with pytest.raises(ValueError, match="unknown prompt part"):
        paths.prompts("test")


def test_until_stops_after_the_named_stage(tmp_path):
    cfg = RunConfig(model="tiny-random", device="cpu", roles=("lawyer",), layers=(1,))
    run = run_pipeline(cfg, tmp_path, until="means")  # the old name of 02_directions
    assert [s.name for s in run.finished()] == ["01_prompts", "02_directions"]
    assert run.paths.directions.exists() and not (tmp_path / "03_validation").exists()


def test_the_report_renders_without_running_a_model(finished, monkeypatch, capsys):
    from roleprobe.model import models

    def no_model(*args, **kwargs):
        raise AssertionError("the report stage loaded a model")

    monkeypatch.setattr(models, "load_model", no_model)
    page = finished.paths.report_html
    page.unlink()
    before = finished.summary("08_report")
    assert main(["--quiet", "figures", str(finished.out)]) == 0  # `roleprobe figures`
    assert page.exists() and f"report: {page}" in capsys.readouterr().out
    assert finished.summary("08_report")["figures"] == before["figures"]


def test_rerun_stage_needs_the_stages_before_it(tmp_path):
    from roleprobe.app.pipeline import rerun_stage

    cfg = RunConfig(model="tiny-random", device="cpu", roles=("lawyer",), layers=(1,))
    run_pipeline(cfg, tmp_path, until="prompts")
    with pytest.raises(ValueError, match=r"stages \['02_directions'.*not finished"):
        rerun_stage(tmp_path, "report")
    with pytest.raises(ValueError, match="resumes inside its store"):
        rerun_stage(tmp_path, "sweep")
    with pytest.raises(ValueError, match="not a run folder"):
        rerun_stage(tmp_path / "nothing", "report")


def test_a_folder_with_the_earlier_layout_is_refused(tmp_path):
    from roleprobe.app.run import Run

    (tmp_path / "02_means").mkdir()
    with pytest.raises(ValueError, match=r"earlier stage layout \(\['02_means'\]\)"):
        Run(RunConfig(model="tiny-random", device="cpu"), tmp_path)


def test_the_smoke_preset_finishes_every_stage_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["--quiet", "run", "--preset", "smoke", "--out", str(out)]) == 0
    for stage in STAGES:
        assert (out / stage.name / "done.json").exists(), stage
    assert "report:" in capsys.readouterr().out
    effects = pd.read_csv(out / "06_evaluation" / "effects_held-out.csv")
    assert set(effects["role"]) == {"lawyer", "mathematician"}


def test_a_grid_with_nothing_to_pick_says_why_before_computing(tmp_path):
    cfg = load_config("smoke", None, {"layers": [0, 3]})
    with pytest.raises(ValueError, match=r"never picks the last 20 % .*layer >= 3 of 4.*: 1-2"):
        run_pipeline(cfg, tmp_path)
    assert not (tmp_path / "02_directions" / "done.json").exists()
    done = run_pipeline(load_config("smoke"), tmp_path)  # the directions were not made yet
    assert done.is_done("08_report")


@pytest.fixture(scope="module")
def llama3_tiny(tmp_path_factory):
    """The 4-layer tiny model in a folder whose name the authors' model factory reads as a
    Llama-3 model (``'llama-3' in path``: loaded in bfloat16)."""
    folder = tmp_path_factory.mktemp("Llama-3-tiny")
    rp.tiny_hf_model(TinyConfig(n_layers=4)).save_pretrained(folder)
    rp.tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_the_paper_preset_makes_the_paper_table_and_the_held_out_one_beside_it(
    llama3_tiny, tmp_path
):
    # the paper preset as it is, on built-in data (the paper's files may be absent here)
    small = {
        "model": llama3_tiny,
        "device": "cpu",
        "roles": ["lawyer", "mathematician"],
        "prompts": "builtin",
        "prompt_revision": "final",
        "benchmark": "builtin",
        "layers": [0, 1],
        "positions": [-1],
        "controls": False,
        "questions_per_domain": 4,
        "batch_size": 16,
        "patchscope": False,
    }
    cfg = load_config("paper", None, small)
    assert (cfg.dtype, cfg.evaluate_rules, cfg.round_accuracies) == (
        "bfloat16",
        ("paper", "held-out"),
        True,
    )
    run = run_pipeline(cfg, tmp_path)
    stored = json.loads(run.paths.config.read_text())
    assert stored["dtype"] == "bfloat16" and stored["evaluate_rules"] == ["paper", "held-out"]
    summary = run.summary("06_evaluation")
    assert summary["headline"] == "paper" and summary["rules"] == ["paper", "held-out"]
    assert (summary["dtype"], summary["tie_rule"], summary["round_accuracies"]) == (
        "bfloat16",
        "paper",
        2,
    )
    base = pd.read_parquet(run.paths.evaluation_baseline)
    assert set(base["dtype"]) == {"bfloat16"} and set(base["system_policy"]) == {"none"}
    paper = pd.read_csv(run.paths.effects("paper"))
    held = pd.read_csv(run.paths.effects("held-out"))
    # the paper's table: own domain on the questions the pick was chosen on, rounded
    assert set(paper.loc[paper["in_domain"], "part"]) == {"selected"}
    assert set(held.loc[held["in_domain"], "part"]) == {"heldout"}
    assert (paper["round_accuracies"] == 2).all() and (held["round_accuracies"] == 2).all()
    for row in paper.itertuples():
        b, a = np.round(row.base_accuracy, 2), np.round(row.accuracy, 2)
        expected = 100 * (a - b) / b if b else math.nan
        assert row.relative_change_pct == pytest.approx(expected, nan_ok=True)
    # the paper rule's picks were evaluated, with layer 0's zero directions among them
    picks = pd.read_csv(run.paths.picks("paper"))
    runs = pd.read_parquet(run.paths.evaluation_runs("paper"))
    mine = picks[picks["source"] == "role"]
    applied = runs.drop_duplicates(["role", "alpha", "condition"])
    applied = applied[applied["condition"] == "addition"]
    assert sorted(zip(mine["role"], mine["alpha"], mine["layer"], strict=True)) == sorted(
        zip(applied["role"], applied["alpha"], applied["layer"], strict=True)
    )
    zero = paper.merge(
        mine[mine["zero_direction"]][["role", "alpha"]], on=["role", "alpha"], how="inner"
    )
    assert (zero["delta_accuracy"] == 0).all()
    assert summary["paper"]["zero_direction_picks"] == int(applied["zero_direction"].sum())
    report = run.paths.report_html.read_text()
    assert "(paper rule;" in report and "effects_held-out.csv" in report


def test_evaluate_rules_must_be_among_the_rules_and_default_to_the_last():
    assert RunConfig().evaluate_rules == ("held-out",)
    assert RunConfig(rules=("held-out", "paper")).evaluate_rules == ("paper",)
    with pytest.raises(ValueError, match=r"evaluate_rules \['paper'\] must be .*\['held-out'\]"):
        RunConfig(rules=("held-out",), evaluate_rules=("paper",))
    with pytest.raises(ValueError, match="evaluate_rules"):
        RunConfig(evaluate_rules=("paper", "paper"))
    assert RunConfig(model="google/gemma-2-9b-it", dtype="paper").dtype == "bfloat16"
    assert RunConfig(model="Qwen/Qwen2.5-7B-Instruct", dtype="paper").dtype == "float16"
    assert RunConfig(model="smollm2-135m-instruct", dtype="paper").dtype == "float32"


DEMO_REFERENCE = Path(__file__).parent / "data" / "demo_reference"


def _sweep_items(store: Path) -> pd.DataFrame:
    parts = sorted((store / "parts").glob("*.parquet"))
    return pd.concat([pd.read_parquet(p).assign(part=p.stem) for p in parts], ignore_index=True)


@pytest.mark.slow
def test_the_demo_numbers_are_those_before_the_paper_scale_work(tmp_path):
    """The demo preset gives the sweep store, picks and effects it gave before issue 22's
    changes (stacked ablations, variants on the device, hooks without read-backs): equal to
    float tolerance, picks identical. ``tests/data/demo_reference`` was written by the code
    before those changes (commit 99abbcf)."""
    from conftest import _embedded_or_skip

    _embedded_or_skip()
    run = run_pipeline(load_config("demo"), tmp_path / "demo")
    got = _sweep_items(run.paths.sweep_store)
    ref = pd.read_csv(DEMO_REFERENCE / "sweep_items.csv.gz")
    key = ["part", "role", "source", "position", "layer", "condition", "alpha", "id"]
    a = ref.sort_values(key).reset_index(drop=True)
    b = got.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) == 494  # 468 candidate rows and 26 baseline rows
    for column in ["part", "role", "source", "condition", "id"]:
        assert (a[column].fillna("").astype(str) == b[column].fillna("").astype(str)).all()
    for column in ["position", "layer", "alpha"]:
        np.testing.assert_array_equal(
            pd.to_numeric(a[column]).to_numpy(float), pd.to_numeric(b[column]).to_numpy(float)
        )
    assert (a["pred"].to_numpy() == b["pred"].to_numpy()).all()
    for column in ["logprob_A", "logprob_B", "logprob_C", "logprob_D", "correct"]:
        np.testing.assert_allclose(a[column], b[column], atol=1e-4, err_msg=column)
    scores = pd.read_csv(run.paths.sweep_scores)
    ref_scores = pd.read_csv(DEMO_REFERENCE / "scores.csv")
    np.testing.assert_allclose(scores["accuracy"], ref_scores["accuracy"])
    np.testing.assert_allclose(scores["delta_logprob"], ref_scores["delta_logprob"], atol=1e-4)
    pick_columns = ["role", "source", "donor", "alpha", "position", "layer", "passed", "reason"]
    for rule in ("paper", "held-out"):
        mine = pd.read_csv(run.paths.picks(rule))[pick_columns]
        before = pd.read_csv(DEMO_REFERENCE / f"picks_{rule}.csv")[pick_columns]
        pd.testing.assert_frame_equal(mine, before)
    effects = pd.read_csv(run.paths.effects("held-out"))
    ref_effects = pd.read_csv(DEMO_REFERENCE / "effects_held-out.csv")
    np.testing.assert_allclose(effects["delta_accuracy"], ref_effects["delta_accuracy"])
    np.testing.assert_allclose(effects["delta_logprob"], ref_effects["delta_logprob"], atol=1e-4)


# -- several workers on one run folder ---------------------------------------------------------


def test_two_workers_on_one_folder_make_stages_1_to_3_once(tiny4, tmp_path, monkeypatch):
    """Two workers start together: each of stages 1-3 is made by one of them (the other
    waits for it), and both go on from the finished stages."""
    import threading
    import time
    from collections import Counter

    from roleprobe.app import pipeline

    made: Counter[str] = Counter()
    for stage in STAGES[:3]:
        real = pipeline.STEPS[stage]

        def counted(ctx, real=real, key=stage.key):
            made[key] += 1
            time.sleep(0.3)  # long enough for the other worker to find it claimed
            return real(ctx)

        monkeypatch.setitem(pipeline.STEPS, stage, counted)
    out = tmp_path / "run"
    config = _config(tiny4, layers=[1], lease_s=5.0)
    errors: list[BaseException] = []

    def worker():
        try:
            run_pipeline(config, out, until="validation")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert made == {"prompts": 1, "directions": 1, "validation": 1}
    assert all((out / s.name / "done.json").exists() for s in STAGES[:3])
    assert not list((out / "claims").glob("*.claim"))


def test_a_worker_leaving_items_to_a_live_worker_exits_3_and_says_who(tiny4, tmp_path, capsys):
    import socket
    import time

    out = tmp_path / "run"
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'model = "{tiny4}"\ndevice = "cpu"\nroles = ["lawyer", "nurse"]\nlayers = [1]\n'
        "positions = [-1]\nquestions_per_domain = 4\nbatch_size = 8\n"
    )
    argv = ["--quiet", "run", "--config", str(toml), "--out", str(out)]
    assert main([*argv, "--until", "validation"]) == 0
    claims = out / "04_sweep" / "store" / "claims"
    claims.mkdir(parents=True)
    holder = {"host": "node-7", "pid": 4242, "time": time.time(), "lease": 3600, "token": "t"}
    holder["slurm"] = {"job": "77", "array_job": "70", "array_task": "7"}
    (claims / "layer001-law-b0000.claim").write_text(json.dumps(holder))
    capsys.readouterr()
    assert main(argv) == 3
    said = [x for x in capsys.readouterr().err.splitlines() if x.startswith("roleprobe:")]
    assert len(said) == 1  # one line (transformers' own bars aside)
    err = said[0]
    assert err.startswith("roleprobe: incomplete: sweep incomplete: 1 of ")
    assert "1 held by other workers (layer001-law-b0000: pid 4242 on node-7 (Slurm job 70_7)" in err
    assert "--shard" not in err and "--wait" in err
    assert not (out / "04_sweep" / "done.json").exists()
    # the holder finishes its item (here: dies on this host): the rerun completes the run
    holder |= {"host": socket.gethostname(), "pid": _dead_pid()}
    (claims / "layer001-law-b0000.claim").write_text(json.dumps(holder))
    assert main(argv) == 0
    assert (out / "08_report" / "done.json").exists()


def test_a_shard_whose_part_is_done_exits_0(tiny4, tmp_path, caplog):
    import logging

    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        run = run_pipeline(_config(tiny4, layers=[1]), out, shard="0/2")
    assert run.pending is None and not (out / "04_sweep" / "done.json").exists()
    assert "shard 0/2 done" in caplog.text and "belong to other shards" in caplog.text
    run = run_pipeline(_config(tiny4, layers=[1]), out, shard="1/2")
    assert run.pending is None
    assert run_pipeline(_config(tiny4, layers=[1]), out, until="sweep").pending is None
    assert (out / "04_sweep" / "done.json").exists()


def _dead_pid():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
