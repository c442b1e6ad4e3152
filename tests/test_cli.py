import json
import subprocess
import sys

import pytest

from roleprobe.app.cli import main

TINY = ["--model", "tiny-random", "--device", "cpu"]


def test_models_lists_the_offline_models(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "tiny-random" in out


def test_info_reports_layers_hooks_and_template(capsys):
    assert main(["--quiet", "info", *TINY, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 2 and info["d_model"] == 64
    assert "".join(info["post_instruction_tokens"]) == "<|im_end|>\n<|im_start|>assistant\n"
    assert "blocks.{0..1}.hook_resid_pre" in info["hook_points"]
    assert list(info["answer_letter_ids"]) == ["A", "B", "C", "D"]


def test_chat_prints_an_answer(capsys):
    assert main(["--quiet", "chat", "Hello", *TINY, "--max-new-tokens", "4"]) == 0
    assert capsys.readouterr().out.endswith("\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "--model", "tiny-random", "--dtype", "float8"], "unknown dtype 'float8'"),
        (["info", "--model", "tiny-random", "--device", "tpu9"], "unknown device"),
        (["chat", "   ", *TINY], "empty"),
        (["chat", "Hi", *TINY, "--max-new-tokens", "0"], "max_new_tokens"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("roleprobe: error:") and message in err[0]


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
    assert main(["run", "--config", str(config), "--out", str(out), "--model", "tiny-random"]) == 2
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
