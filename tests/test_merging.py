import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from roleprobe.data.benchmarks import LETTERS
from roleprobe.experiments.merging import SweepResult, candidate_scores, merge
from roleprobe.experiments.sweep_config import CANDIDATE, role_group

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from merge_memory import build_store

ROLES = ["lawyer", "bailiff", "nurse"]  # two domains: law, medicine


def _pandas_scores(table, baseline, scope, ids=None):
    """The per-candidate scores as merge computed them before (whole table in pandas)."""
    counted = "tied" in table.columns
    extra = {"tied": 1, "tie_rule": "first"}
    table = table.assign(**{k: v for k, v in extra.items() if k not in table.columns})
    baseline = baseline.assign(**{k: v for k, v in extra.items() if k not in baseline.columns})
    rules = set(table["tie_rule"].unique()) | set(baseline["tie_rule"].unique())
    if ids is not None:
        table = table[table["id"].isin(set(ids))]
        baseline = baseline[baseline["id"].isin(set(ids))]
    table = table.assign(_tie=table["tied"] > 1)
    grouped = table.groupby(CANDIDATE, dropna=False, sort=False)
    out = grouped.agg(
        n=("correct", "size"),
        accuracy=("correct", "mean"),
        logprob_correct=("logprob_correct", "mean"),
        margin=("margin", "mean"),
        n_tied=("_tie", "sum"),
    )
    shares = table.assign(**{f"pred_{x}": table["pred"] == x for x in LETTERS})
    out = out.join(
        shares.groupby(CANDIDATE, dropna=False, sort=False)[[f"pred_{x}" for x in LETTERS]].mean()
    ).reset_index()
    base = baseline.groupby("group").agg(
        base_n=("correct", "size"),
        base_accuracy=("correct", "mean"),
        base_logprob=("logprob_correct", "mean"),
    )
    out["group"] = [role_group(r, scope) for r in out["role"]]
    out = out.join(base, on="group")
    out["delta_accuracy"] = out["accuracy"] - out["base_accuracy"]
    out["delta_logprob"] = out["logprob_correct"] - out["base_logprob"]
    out["tie_rule"] = rules.pop()
    if not counted:
        out["n_tied"] = np.nan
    return out.drop(columns=["base_n"])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    build_store(root, ROLES, layers=2, positions=2, items=21, batch_size=8)
    return root


def test_streamed_scores_equal_the_pandas_computation_bit_for_bit(store):
    result = merge(store)
    scores = result.scores()
    assert result._table is None  # the scores did not load the per-item table
    assert len(scores) == 3 * 3 * 2 * 2 * 3  # roles x sources x positions x layers x conds
    expected = _pandas_scores(result.table, result.baseline, "domain")
    pd.testing.assert_frame_equal(scores, expected, check_exact=True)
    ids = result.baseline["id"].iloc[::3].tolist()
    pd.testing.assert_frame_equal(
        result.scores(ids),
        _pandas_scores(result.table, result.baseline, "domain", ids),
        check_exact=True,
    )


def test_in_memory_scores_are_exact_on_values_where_summation_order_matters():
    rng = np.random.default_rng(1)
    n_items, cells = 50, [("lawyer", p, layer) for p in (-2, -1) for layer in (1, 2, 3)]
    rows = []
    for role, pos, layer in cells:
        logp = rng.standard_normal(n_items) * 10.0 ** rng.integers(-6, 7, n_items)
        rows.append(
            pd.DataFrame(
                {
                    "role": role,
                    "source": "role",
                    "donor": role,
                    "position": pos,
                    "layer": layer,
                    "condition": "ablation" if layer == 3 else "addition",
                    "alpha": np.nan if layer == 3 else 1.0,
                    "id": [f"q{i}" for i in range(n_items)],
                    "pred": rng.choice(LETTERS, n_items),
                    "correct": rng.choice([0.0, 1 / 3, 0.5, 1.0], n_items),
                    "tied": rng.integers(1, 4, n_items),
                    "tie_rule": "fractional",
                    "logprob_correct": logp,
                    "margin": logp * 0.1 + 1e-9,
                }
            )
        )
    # rows of one candidate interleaved with the others', as in a real concatenated table
    table = pd.concat(rows).sort_values("id", kind="mergesort").reset_index(drop=True)
    base = table[(table["layer"] == 1) & (table["position"] == -1)][
        ["id", "pred", "correct", "tied", "tie_rule", "logprob_correct"]
    ].assign(group="law")
    got = candidate_scores(table, base, "domain")
    pd.testing.assert_frame_equal(got, _pandas_scores(table, base, "domain"), check_exact=True)
    naive = table.groupby(CANDIDATE, dropna=False, sort=False)["logprob_correct"].apply(
        lambda s: float(np.sum(s.to_numpy())) / len(s)
    )
    # the data are such that a plain sum would not do: exactness is tested, not luck
    assert not np.array_equal(naive.to_numpy(), got["logprob_correct"].to_numpy())


def test_the_item_table_is_read_on_demand_and_filtered(store):
    result = merge(store)
    assert result._table is None and result.n_rows == 3 * 3 * 2 * 2 * 3 * 21
    lawyer = result.read_table(roles=["lawyer"], columns=["role", "layer", "id", "correct"])
    assert list(lawyer.columns) == ["role", "layer", "id", "correct"]
    assert result._table is None
    full = result.table  # loads and keeps it
    want = full[full["role"] == "lawyer"][["role", "layer", "id", "correct"]]
    pd.testing.assert_frame_equal(lawyer, want.reset_index(drop=True))
    ids = ["medicine-0003", "law-0004"]
    pd.testing.assert_frame_equal(
        result.read_table(ids=ids), full[full["id"].isin(ids)].reset_index(drop=True)
    )
    assert result.read_table(roles=["nurse"], ids=["law-0004"]).empty
    assert "rows" in repr(result) and "complete" in repr(result)


def test_an_in_memory_result_and_a_store_result_agree(store):
    lazy = merge(store)
    eager = SweepResult(lazy.table, lazy.baseline, lazy.config, lazy.n_layers)
    pd.testing.assert_frame_equal(eager.scores(), merge(store).scores(), check_exact=True)
    pd.testing.assert_frame_equal(
        eager.read_table(roles=["bailiff"]), merge(store).read_table(roles=["bailiff"])
    )
    with pytest.raises(ValueError, match="needs a table"):
        SweepResult(None, lazy.baseline, lazy.config, lazy.n_layers)
