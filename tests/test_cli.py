import json
import subprocess
import sys

import pytest

from roleprobe.app.cli import build_parser, main

TINY = ["--model", "tiny-random", "--device", "cpu"]


def test_models_lists_the_offline_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "tiny-random" in out


def test_info_reports_layers_hooks_and_template(capsys):
    assert main(["--quiet", "info", *TINY, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 4 and info["d_model"] == 64
    assert "".join(info["post_instruction_tokens"]) == "<|im_end|>\n<|im_start|>assistant\n"
    assert "blocks.{0..3}.hook_resid_pre" in info["hook_points"]
    assert list(info["answer_letter_ids"]) == ["A", "B", "C", "D"]


def test_chat_prints_an_answer(capsys):
    assert main(["--quiet", "chat", "Hello", *TINY, "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--model", "tiny-random", "--device", "tpu9"], "unknown device"),
        (["chat", "   ", *TINY], "empty"),
    ],
)
def test_a_runtime_error_gives_one_line_and_status_1(capsys, argv, message):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("roleprobe: error:") and message in err[0]


def test_a_missing_file_is_a_runtime_error(tmp_path, capsys):
    argv = ["readout", str(tmp_path / "nope"), "--role", "lawyer", "--layer", "0", *TINY]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--model", "tiny-random", "--dtype", "float8"], "invalid choice: 'float8'"),
        (["chat", "Hi", *TINY, "--max-new-tokens", "0"], "must be at least 1, got 0"),
        (["evaluate", *TINY, "--batch-size", "x"], "expected an integer, got 'x'"),
        (["run", "--preset", "demox", "--out", "r"], "invalid choice: 'demox'"),
        (["run", "--preset", "demo", "--out", "r", "--until", "sweeeep"], "invalid choice"),
        (["run", "--preset", "demo", "--out", "r", "--dtype", "half"], "invalid choice: 'half'"),
        (["info", *TINY, "--max-memory", "0:20GiB"], "expected DEVICE=SIZE"),
    ],
)
def test_a_bad_flag_value_is_a_usage_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_usage_errors_the_cli_finds_itself_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--out", "r"]) == 2  # neither --preset nor --config
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["roleprobe: error: give --preset (custom, demo, paper, smoke) or --config FILE"]


def test_debug_shows_the_traceback_before_or_after_the_subcommand():
    for argv in (["--debug", "info", *TINY], ["info", *TINY, "--debug"]):
        with pytest.raises(ValueError, match="unknown device"):
            main([*argv, "--device", "tpu9"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--quiet", "--debug", "run", "--preset", "demo", "--out", "r"],
        ["run", "--quiet", "--preset", "demo", "--out", "r", "--debug"],
        ["--quiet", "run", "--debug", "--preset", "demo", "--out", "r"],
        ["chat", "Hi", "--quiet", "--debug"],
    ],
)
def test_global_flags_go_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.debug is True


def test_global_flags_default_off():
    args = build_parser().parse_args(["run", "--preset", "demo", "--out", "r"])
    assert args.quiet is False and args.debug is False


def test_quiet_after_the_subcommand_turns_the_progress_bars_off(monkeypatch, capsys):
    from roleprobe.core import progress

    calls = []
    monkeypatch.setattr(progress, "set_progress", calls.append)
    assert main(["models"]) == 0
    assert calls == []
    assert main(["models", "--quiet"]) == 0
    assert calls == [False]


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_console_script_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "roleprobe.app.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("roleprobe ")


@pytest.mark.parametrize(
    ("argv", "status", "stream", "start"),
    [
        (["--version"], 0, "stdout", "roleprobe "),
        (["frobnicate"], 2, "stderr", "usage: roleprobe"),
        (["info", *TINY, "--device", "tpu9"], 1, "stderr", "roleprobe: error: unknown device"),
    ],
)
def test_python_dash_m_roleprobe_is_the_command(argv, status, stream, start):
    result = subprocess.run(
        [sys.executable, "-m", "roleprobe", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == status, result.stderr
    assert getattr(result, stream).startswith(start)
    if status == 1:  # one line, no traceback
        assert len(result.stderr.strip().splitlines()) == 1


def test_run_help_describes_the_stages_and_lists_the_choices(capsys):
    from roleprobe.app.run import STAGES
    from roleprobe.app.run_config import PRESETS

    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Run the numbered pipeline" in text
    assert "--preset {" + ",".join(sorted(PRESETS)) + "}" in text
    assert "--dtype {float32,bfloat16,float16,float64,paper}" in text
    assert "one of " + ", ".join(s.key for s in STAGES) in text
    for stage in STAGES:
        assert f"{stage.name} {stage.summary}" in text


def test_dtype_names_are_the_loaders():
    from roleprobe.app.cli import DTYPE_NAMES
    from roleprobe.model.models import DTYPES

    assert sorted(DTYPE_NAMES) == sorted(DTYPES)


def test_run_dtype_and_until_reach_the_pipeline(tmp_path, monkeypatch):
    from roleprobe.app import pipeline

    seen = {}

    def fake_run_pipeline(config, out, shard=None, until=None, resume=True, wait=False):
        seen.update(config=config, until=until)
        raise RuntimeError("stop")

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    argv = ["run", "--preset", "demo", "--out", str(tmp_path / "r"), "--model", "tiny-random"]
    assert main([*argv, "--dtype", "bfloat16", "--until", "03_validation"]) == 1
    assert seen["config"].dtype == "bfloat16" and seen["until"] == "03_validation"
    assert main(argv) == 1
    assert seen["config"].dtype == "float32"  # the preset's, not overridden


def test_model_flags_reach_load_model(monkeypatch, capsys):
    from roleprobe.model import models

    seen = {}

    def fake_load_model(name, **kwargs):
        seen.update(name=name, **kwargs)
        raise ValueError("stop")

    monkeypatch.setattr(models, "load_model", fake_load_model)
    argv = ["info", "--model", "org/m", "--model-revision", "0123abc", "--trust-remote-code"]
    argv += ["--device-map", "auto", "--max-memory", "0=20GiB, cpu=60GiB"]
    assert main(argv) == 1
    assert seen == {
        "name": "org/m",
        "device": "auto",
        "dtype": "float32",
        "revision": "0123abc",
        "trust_remote_code": True,
        "device_map": "auto",
        "max_memory": {0: "20GiB", "cpu": "60GiB"},
    }


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("layers = [1.5]", "layers[0] must be an integer, got 1.5"),
        ("seed = 1.5", "seed must be an integer, got 1.5"),
        ("batch_size = '16'", "batch_size must be an integer, got '16'"),
        ("batch_size = true", "batch_size must be an integer, got True"),
        ("run = 5", "run must be a [run] table of settings, got 5"),
        ("questions_per_domain = -2", "questions_per_domain must be 0 (all)"),
        (b"model = 'caf\xe9'", "is not UTF-8"),
    ],
)
def test_bad_config_fails_before_the_run_folder_exists(tmp_path, capsys, toml, message):
    config = tmp_path / "bad.toml"
    config.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out), "--model", "tiny-random"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(config) in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--preset", "demo", "--out", ""],
        ["sweep", "--preset", "demo", "--out", "  "],
        ["directions", *TINY, "--out", ""],
        ["evaluate", *TINY, "--out", ""],
        ["merge", ""],
        ["figures", ""],
    ],
)
def test_an_empty_out_is_refused_not_the_current_folder(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must name a path" in err[0]
    assert list(tmp_path.iterdir()) == []
