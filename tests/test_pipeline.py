import json

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.cli import main
from roleprobe.pipeline import PRESETS, STAGES, RunConfig, load_config, run_pipeline
from roleprobe.tiny import TinyConfig


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    """A 4-layer tiny model saved as a folder (the paper's rule needs layers below 0.8 L)."""
    folder = tmp_path_factory.mktemp("tiny4")
    rp.tiny_hf_model(TinyConfig(n_layers=4)).save_pretrained(folder)
    rp.tiny_tokenizer().save_pretrained(folder)
    return str(folder)


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
    out = finished.out
    for stage in STAGES:
        assert (out / stage / "done.json").exists(), stage
    assert (out / "02_means" / "directions" / "directions.safetensors").exists()
    directions = pd.read_csv(out / "03_directions" / "directions.csv")
    assert {"norm", "base_cosine", "auroc"} <= set(directions.columns)
    for rule in ("paper", "held-out"):
        picks = pd.read_csv(out / "05_selection" / f"picks_{rule}.csv")
        assert len(picks) == 3 * 3 * 2  # roles x sources x alphas
    effects = pd.read_csv(out / "06_evaluation" / "effects.csv")
    assert set(effects["condition"]) == {"addition", "ablation"}
    report = (out / "07_report" / "report.html").read_text()
    assert report.count("<script") >= 2 and "Run manifest" in report and "chance" in report
    summary = (out / "07_report" / "summary.md").read_text()
    assert "majority" in summary and "Held-out AUROC" in summary
    figures = {p.name for p in (out / "07_report" / "figures").iterdir()}
    assert {"auroc.html", "sweep_delta_logprob.html", "plotly.min.js"} <= figures


def test_a_rerun_skips_finished_stages(finished):
    again = run_pipeline(finished.config, finished.out)
    assert again.timings == {}


def test_a_run_folder_refuses_another_config(finished, tiny4):
    with pytest.raises(ValueError, match=r"different configuration \(differs in \['layers'\]\)"):
        run_pipeline(_config(tiny4, layers=[1]), finished.out)


def test_shards_stop_after_the_sweep_and_the_last_call_finishes(tiny4, tmp_path):
    cfg = _config(tiny4, roles=["lawyer"], rules=["held-out"], patchscope=False)
    first = run_pipeline(cfg, tmp_path, shard="0/2")
    assert first.is_done("03_directions") and not first.is_done("04_sweep")
    with pytest.raises(ValueError, match="incomplete"):
        rp.merge(tmp_path / "04_sweep" / "store")
    second = run_pipeline(cfg, tmp_path, shard="1/2")
    assert second.is_done("04_sweep")  # the last shard completes the sweep stage
    assert run_pipeline(cfg, tmp_path).is_done("07_report")


def test_load_config_layers_preset_file_and_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[run]\nroles = ["nurse"]\nalphas = [2.0]\n')
    cfg = load_config("demo", path, {"model": "tiny-random", "roles": None})
    assert cfg.roles == ("nurse",) and cfg.alphas == (2.0,) and cfg.layers == (8, 16)
    assert cfg.model == "tiny-random"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert set(PRESETS) == {"demo", "paper", "custom"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("roles = [", "not valid TOML"),
        ("colour = 'red'", r"unknown settings \['colour'\]"),
        ("ablation = 'yes'", "ablation must be true or false"),
        ("rules = ['best']", "unknown rules"),
        ("benchmark = 'gsm8k'", "unknown benchmark"),
    ],
)
def test_bad_config_files_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(None, path)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        load_config("fast")
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(None, tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--out", "{tmp}/r"], "give --preset"),
        (["run", "--preset", "fast", "--out", "{tmp}/r"], "unknown preset 'fast'"),
        (["run", "--config", "{tmp}/missing.toml", "--out", "{tmp}/r"], "cannot read config"),
        (["run", "--preset", "demo", "--out", "{tmp}/r", "--until", "x"], "unknown stage 'x'"),
        (["merge", "{tmp}"], "not a sweep store"),
        (["figures", "{tmp}"], "not a run folder"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roleprobe: error: ") and message in err and err.count("\n") == 1


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
        == 2
    )
    assert "bad shard '2/2'" in capsys.readouterr().err


def test_no_resume_refuses_a_started_folder(finished, capsys):
    with pytest.raises(ValueError, match="already holds finished stages"):
        run_pipeline(finished.config, finished.out, resume=False)
