"""persona_vs_addition: the conditions it compares are the ones it says, and it resumes."""

import numpy as np
import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.experiments import persona_compare
from roleprobe.experiments.persona_compare import (
    by_domain,
    letter_entropy,
    persona_vs_addition,
    round_robin,
    sample_per_domain,
)

ROLES = ["nurse", "lawyer"]


@pytest.fixture(scope="module")
def directions(tiny_model):
    return rp.compute_directions(
        tiny_model, roles=ROLES, positions=[-1], layers=[2], progress=False
    )


@pytest.fixture(scope="module")
def bench():
    return rp.load_benchmark("builtin")


def test_each_condition_is_compared_with_its_domains_baseline(tiny_model, directions, bench):
    table = persona_vs_addition(
        tiny_model, directions, bench, 2, alphas=(3.0,), per_domain=4, progress=False
    )
    assert list(table["role"]) == ["lawyer", "lawyer", "nurse", "nurse"]  # law before medicine
    assert list(table["condition"]) == ["addition α=3", "persona"] * 2
    assert (table["n"] == 4).all() and (table["layer"] == 2).all()
    law = sample_per_domain(bench, 4).subset(domain="law")
    base = rp.evaluate(tiny_model, law, None, progress=False)
    added = rp.evaluate(
        tiny_model, law, rp.Addition(directions.vector("lawyer", 2, -1), 2, 3.0), progress=False
    )
    persona = rp.evaluate(tiny_model, law, rp.Persona("lawyer"), progress=False)
    row = table.iloc[0]
    expected = (added["logprob_correct"] - base["logprob_correct"]).mean()
    np.testing.assert_allclose(row["delta_logprob"], expected, atol=1e-6)
    expected = (persona["logprob_correct"] - base["logprob_correct"]).mean()
    np.testing.assert_allclose(table.iloc[1]["delta_logprob"], expected, atol=1e-6)
    h_base, h_added = letter_entropy(base), letter_entropy(added)
    np.testing.assert_allclose(row["delta_entropy"], (h_added - h_base).mean(), atol=1e-9)
    means = by_domain(table)
    assert set(means["domain"]) == {"law", "medicine"} and len(means) == 4


def test_a_rerun_reads_its_parts_instead_of_computing(
    tiny_model, directions, bench, tmp_path, monkeypatch
):
    kw = {"alphas": (1.0,), "per_domain": 3, "parts": tmp_path, "progress": False}
    first = persona_vs_addition(tiny_model, directions, bench, 2, **kw)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "baseline_law.csv",
        "baseline_medicine.csv",
        "role_lawyer.csv",
        "role_nurse.csv",
    ]

    def fail(*args, **kwargs):
        raise AssertionError("a finished part was computed again")

    monkeypatch.setattr(persona_compare, "evaluate", fail)
    again = persona_vs_addition(tiny_model, directions, bench, 2, **kw)
    pd.testing.assert_frame_equal(first, again)
    (tmp_path / "role_nurse.csv").unlink()  # a crash before the nurse's part was written
    with pytest.raises(AssertionError, match="computed again"):
        persona_vs_addition(tiny_model, directions, bench, 2, **kw)


def test_bad_inputs_are_named(tiny_model, directions, bench):
    with pytest.raises(ValueError, match="pirate"):
        persona_vs_addition(tiny_model, directions, bench, 2, roles=["pirate"], progress=False)
    with pytest.raises(ValueError, match="layer 3"):
        persona_vs_addition(tiny_model, directions, bench, 3, progress=False)
    with pytest.raises(ValueError, match="finite"):
        persona_vs_addition(tiny_model, directions, bench, 2, alphas=[float("nan")])
    econ = bench.subset(domain="econ")
    with pytest.raises(ValueError, match="has no questions for subjects"):
        persona_vs_addition(tiny_model, directions, econ, 2, progress=False)


def test_round_robin_covers_every_domain_first():
    order = round_robin(["lawyer", "bailiff", "nurse", "doctor", "economist"])
    assert order[:3] == ["economist", "lawyer", "nurse"]
    assert sorted(order) == sorted(["lawyer", "bailiff", "nurse", "doctor", "economist"])


def test_letter_entropy_is_at_most_ln4():
    uniform = pd.DataFrame({f"logprob_{x}": [np.log(0.25)] for x in "ABCD"})
    sure = pd.DataFrame({f"logprob_{x}": [0.0 if x == "A" else -50.0] for x in "ABCD"})
    assert letter_entropy(uniform).iloc[0] == pytest.approx(np.log(4))
    assert letter_entropy(sure).iloc[0] == pytest.approx(0.0, abs=1e-15)
