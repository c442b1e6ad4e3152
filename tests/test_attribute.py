"""``roleprobe attribute KIND``: every kind writes its tables and figures; bad input is a usage
error before any model loads."""

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.app import cli
from roleprobe.app.attribute import KINDS
from roleprobe.app.cli import main

TINY = ["--model", "tiny-random", "--device", "cpu", "--layers", "1", "2", "3", "--layer", "2"]
WRITES = {
    "shared": ["shared_share.csv", "shared_fraction.csv", "shared_share.html"],
    "components": ["components.csv", "top_writers.csv", "attribution_lawyer.html"],
    "confusion": ["confusion.csv", "one_vs_rest_auroc.csv", "most_confused.csv"],
    "persona-shift": ["persona_shift.csv", "specificity.csv", "persona_shift.html"],
    "persona-vs-addition": ["persona_vs_addition.csv", "persona_vs_addition.html"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_its_tables_and_figures(kind, tmp_path, capsys):
    argv = ["--quiet", "attribute", kind, *TINY, "--out", str(tmp_path), "--per-domain", "3"]
    assert main(argv) == 0
    written = capsys.readouterr().out
    for name in WRITES[kind]:
        assert (tmp_path / name).stat().st_size > 0, name
        assert f"wrote {tmp_path / name}" in written
    assert (tmp_path / "plotly.min.js").exists()


def test_components_sum_to_each_directions_projection(tmp_path):
    assert main(["--quiet", "attribute", "components", *TINY, "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "components.csv")
    assert set(df["role"]) == {"lawyer", "nurse", "mathematician"}
    assert set(df["position"]) == {-1}
    model = rp.load_model("tiny-random", device="cpu")
    train, _ = rp.load_prompts("builtin", ["lawyer", "nurse", "mathematician"]).split(0.25, seed=0)
    rd = rp.compute_directions(model, source=train, layers=[1, 2, 3], progress=False)
    for role, part in df.groupby("role"):
        norm = float(rd.vector(str(role), 2, -1).double().norm())
        assert abs(part["value"].sum() - norm) < 1e-4 * norm


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["confusion", "--directions", "somewhere"], "leave out --directions"),
        (["shared", "--roles", "lawyer"], "give 2 roles or more"),
        (["shared", "--heldout-fraction", "1.5"], "--heldout-fraction"),
        (["persona-vs-addition", "--per-domain", "-1"], "--per-domain"),
        (["components", "--directions", "nowhere"], "no directions.json"),
    ],
)
def test_bad_arguments_are_usage_errors_before_a_model_loads(
    extra, message, tmp_path, capsys, monkeypatch
):
    def no_model(args):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cli, "_load", no_model)
    kind, *rest = extra
    argv = ["attribute", kind, "--out", str(tmp_path / "out"), *rest]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_system_flag_reaches_the_directions(tmp_path, monkeypatch):
    import roleprobe.vectors.directions as directions

    seen = []
    real = directions.compute_directions

    def spy(*args, **kwargs):
        seen.append(kwargs.get("system"))
        return real(*args, **kwargs)

    monkeypatch.setattr(directions, "compute_directions", spy)
    argv = ["--quiet", "attribute", "shared", *TINY, "--out", str(tmp_path), "--system", "none"]
    assert main(argv) == 0
    assert seen == ["none"]
