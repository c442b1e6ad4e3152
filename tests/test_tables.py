"""Effect tables and correlations against hand-computed answers."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from roleprobe.results.labels import condition_label
from roleprobe.results.tables import effect_table, model_correlation, pearson_test, pivot_effects


def _base(correct, domains, logprob=-1.0):
    n = len(correct)
    return pd.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "domain": domains,
            "correct": correct,
            "logprob_correct": [logprob] * n,
        }
    )


def _run(base, correct, role, condition, alpha, logprob):
    run = base.assign(correct=correct, logprob_correct=logprob, role=role, condition=condition)
    return run.assign(alpha=alpha).drop(columns="domain")


@pytest.fixture
def law_math():
    # q0-q9 law, q10-q13 math
    base_correct = [True] * 6 + [False] * 4 + [True, True, False, False]
    return _base(base_correct, ["law"] * 10 + ["math"] * 4)


def test_effect_table_known_answers(law_math):
    # law: b = 3 (q0-q2 right -> wrong), c = 1 (q6 wrong -> right): 6/10 -> 4/10
    steered = [False] * 3 + [True] * 3 + [True] + [False] * 3 + [True, True, False, False]
    run = _run(law_math, steered, "lawyer", "addition", 1.0, -0.5)
    table = effect_table(law_math, run.iloc[::-1], n_boot=20)  # pairing is by id, not order
    law = table.set_index("domain").loc["law"]
    assert law["n"] == 10 and law["in_domain"]
    assert law["base_accuracy"] == pytest.approx(0.6) and law["accuracy"] == pytest.approx(0.4)
    assert law["delta_accuracy"] == pytest.approx(-0.2)
    assert law["relative_change_pct"] == pytest.approx(100 * (0.4 - 0.6) / 0.6)
    assert (law["mcnemar_b"], law["mcnemar_c"]) == (3, 1)
    assert law["mcnemar_p"] == pytest.approx(2 * (1 + 4) / 16)  # 2 P(X <= 1), X ~ Bin(4, 1/2)
    assert law["delta_logprob"] == pytest.approx(0.5)
    assert law["logprob_p"] == pytest.approx(2 / 2**10)  # only the two all-same-sign flips
    math_row = table.set_index("domain").loc["math"]
    assert not math_row["in_domain"] and math_row["mcnemar_p"] == 1.0
    assert math_row["relative_change_pct"] == 0.0 and math_row["stars"] == ""


def test_effect_table_holm_stars_and_nan_alpha(law_math):
    eight = _base([False] * 8, ["law"] * 8)
    up = _run(eight, [True] * 8, "lawyer", "ablation", math.nan, -1.0)  # b=0, c=8
    same = _run(eight, [False] * 8, "nurse", "persona", math.nan, -1.0)
    table = effect_table(eight, pd.concat([same, up]), n_boot=20)
    assert list(table["role"]) == ["lawyer", "nurse"]  # catalogue order, not input order
    assert table["alpha"].isna().all()
    raw = 2 / 2**8
    assert table.loc[0, "mcnemar_p"] == pytest.approx(raw)
    assert table.loc[0, "mcnemar_p_adj"] == pytest.approx(2 * raw)  # Holm over two tests
    assert table.loc[0, "stars"] == "*"  # unadjusted it would be "**"
    assert math.isnan(table.loc[0, "relative_change_pct"])  # base accuracy 0
    assert list(table["in_domain"]) == [True, False]


def test_effect_table_rejects_bad_input(law_math):
    run = _run(law_math, law_math["correct"], "lawyer", "addition", 3.0, -1.0)
    with pytest.raises(ValueError, match="'logprob_correct'"):
        effect_table(law_math.drop(columns="logprob_correct"), run)
    with pytest.raises(ValueError, match="'alpha'"):
        effect_table(law_math, run.drop(columns="alpha"))
    stray = run.assign(id=run["id"].replace("q3", "q99"))
    with pytest.raises(ValueError, match=r"role 'lawyer', condition 'addition'.*missing in base"):
        effect_table(law_math, stray)
    with pytest.raises(ValueError, match="more than once"):
        effect_table(law_math, pd.concat([run, run]))


def test_unknown_role_is_never_in_domain(law_math):
    run = _run(law_math, law_math["correct"], "court jester", "addition", 1.0, -1.0)
    table = effect_table(law_math, run, n_boot=5)
    assert not table["in_domain"].any()


def test_pivot_orders_roles_and_conditions():
    rows = []
    for role in ("nurse", "lawyer", "economist"):
        for condition, alpha in (("persona", math.nan), ("addition", 3.0), ("ablation", math.nan)):
            for condition_alpha in ((condition, alpha), ("addition", 1.0)):
                for domain in ("medicine", "law"):
                    rows.append((role, *condition_alpha, domain))
    effects = pd.DataFrame(rows, columns=["role", "condition", "alpha", "domain"])
    effects = effects.drop_duplicates().reset_index(drop=True)
    effects["relative_change_pct"] = np.arange(len(effects), dtype=float)
    grid = pivot_effects(effects)
    assert list(grid.index) == ["economist", "lawyer", "nurse"]
    labels = list(dict.fromkeys(grid.columns.get_level_values("condition")))
    assert labels == ["α=1", "α=3", "ablation", "persona"]
    assert list(grid.columns[:2]) == [("α=1", "law"), ("α=1", "medicine")]
    row = effects.query("role == 'lawyer' and condition == 'ablation' and domain == 'law'")
    assert grid.loc["lawyer", ("ablation", "law")] == row["relative_change_pct"].item()
    with pytest.raises(ValueError, match="several rows"):
        pivot_effects(pd.concat([effects, effects.iloc[:1]]))
    assert condition_label("clamp", 2.0) == "clamp α=2"


def _pairs_with_r(r, n):
    """``n`` pairs whose sample correlation is exactly ``r`` (up to rounding)."""
    design = np.column_stack([np.ones(n), np.arange(n), np.arange(n) ** 2.0])
    basis = np.linalg.qr(design)[0]  # orthonormal: constant, linear, quadratic
    u, v = basis[:, 1], basis[:, 2]
    return u, r * u + math.sqrt(1 - r * r) * v


def test_pearson_p_values_match_closed_forms():
    # the t-test with n - 2 degrees of freedom, t = r sqrt(df / (1 - r^2))
    assert pearson_test(*_pairs_with_r(0.5, 10))[1] == pytest.approx(0.1411, abs=1e-4)
    for t in (0.3, 1.0, 4.0):
        r = t / math.sqrt(1 + t * t)  # n = 3: one degree of freedom, the Cauchy law
        got_r, p = pearson_test(*_pairs_with_r(r, 3))
        assert got_r == pytest.approx(r) and p == pytest.approx(1 - 2 / math.pi * math.atan(t))
        r2 = t / math.sqrt(2 + t * t)  # n = 4: two degrees of freedom
        assert pearson_test(*_pairs_with_r(r2, 4))[1] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    x, y = _pairs_with_r(0.5, 10)
    assert pearson_test(x, -y)[1] == pytest.approx(pearson_test(x, y)[1])  # two-sided
    assert pearson_test(x, 2 * x + 1)[1] < 1e-20  # |r| = 1


def test_pearson_test_gives_nan_where_scipy_would_not():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and without scipy's warnings
        # two pairs: scipy says r = -1, p = 1; a line through two points says nothing
        assert all(math.isnan(v) for v in pearson_test([1.0, 2.0], [3.0, 1.0]))
        assert all(math.isnan(v) for v in pearson_test([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    with pytest.raises(ValueError, match="same length"):
        pearson_test([1.0, 2.0, 3.0], [1.0, 2.0])


def test_pearson_and_model_correlation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    r, _ = pearson_test(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert all(math.isnan(v) for v in pearson_test([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    cells = pd.DataFrame(
        {
            "role": ["lawyer"] * 3 + ["nurse"] * 3,
            "condition": ["addition", "addition", "ablation"] * 2,
            "alpha": [1.0, 3.0, math.nan] * 2,
            "domain": ["law"] * 6,
            "relative_change_pct": [1.0, -2.0, 5.0, 0.5, 3.0, -4.0],
        }
    )
    doubled = cells.assign(relative_change_pct=2 * cells["relative_change_pct"] + 1)
    partial = cells.iloc[1:].assign(relative_change_pct=-cells["relative_change_pct"].iloc[1:])
    partial.loc[5, "relative_change_pct"] = math.nan
    corr = model_correlation({"a": cells, "b": doubled, "c": partial})
    assert list(zip(corr["model_a"], corr["model_b"], strict=True)) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
    ]
    # r of an exact linear relation may round to 1 - 1e-16, so p is ~1e-32, not exactly 0
    assert corr.loc[0, "r"] == pytest.approx(1.0) and corr.loc[0, "p"] < 1e-20
    assert corr.loc[0, "n"] == 6
    assert corr.loc[1, "r"] == pytest.approx(-1.0) and corr.loc[1, "n"] == 4  # shared, finite
    with pytest.raises(ValueError, match="two models"):
        model_correlation({"a": cells})
    with pytest.raises(ValueError, match="'relative_change_pct'"):
        model_correlation({"a": cells, "b": cells.drop(columns="relative_change_pct")})


def test_relative_change_from_rounded_accuracies_as_the_paper(law_math):
    # law: base 6/10; steered 0.64 -> 0.6 vs 0.64 unrounded is +6.67%; rounded to 1 decimal
    # (0.6 -> 0.6, 0.64 -> 0.6) it is 0
    correct = [True] * 6 + [False] * 4 + [True, True, False, False]
    run = _run(law_math, correct, "lawyer", "addition", 1.0, -1.0)
    unrounded = effect_table(law_math, run, n_boot=10, n_perm=10)
    assert unrounded["round_accuracies"].isna().all()
    base = law_math.assign(correct=[0.6449] * 10 + [0.5] * 4)  # fractional credits
    steered = run.assign(correct=[0.6351] * 10 + [0.5] * 4)
    exact = effect_table(base, steered, n_boot=10, n_perm=10).set_index("domain")
    paper = effect_table(base, steered, n_boot=10, n_perm=10, round_accuracies=2)
    paper = paper.set_index("domain")
    assert exact.loc["law", "relative_change_pct"] == pytest.approx(
        100 * (0.6351 - 0.6449) / 0.6449
    )
    assert paper.loc["law", "relative_change_pct"] == pytest.approx(100 * (0.64 - 0.64) / 0.64)
    assert paper.loc["law", "round_accuracies"] == 2
    assert paper.loc["law", "accuracy"] == pytest.approx(0.6351)  # only the % change is rounded
    assert paper.loc["law", "accuracy_test"] == "sign-flip"
    # numpy's rounding, as the paper's notebook: 0.445 -> 0.44 (Python's round gives 0.45)
    base = law_math.assign(correct=[0.445] * 10 + [0.5] * 4)
    steered = run.assign(correct=[0.5] * 14)
    paper = effect_table(base, steered, n_boot=10, n_perm=10, round_accuracies=2)
    law = paper.set_index("domain").loc["law"]
    assert law["relative_change_pct"] == pytest.approx(100 * (0.5 - 0.44) / 0.44)
    with pytest.raises(ValueError, match="round_accuracies"):
        effect_table(base, steered, round_accuracies=-1)


def test_effect_table_carries_the_tie_rule(law_math):
    base = law_math.assign(tie_rule="paper")
    run = _run(base, base["correct"], "lawyer", "addition", 1.0, -1.0)
    table = effect_table(base, run, n_boot=10, n_perm=10)
    assert (table["tie_rule"] == "paper").all() and (table["accuracy_test"] == "mcnemar").all()
    with pytest.raises(ValueError, match="tie_rule"):
        effect_table(base, run.assign(tie_rule="fractional"), n_boot=10, n_perm=10)


def test_effect_table_refuses_a_baseline_asked_otherwise(law_math):
    run = _run(law_math, law_math["correct"], "lawyer", "addition", 1.0, -1.0)
    for column, ours, theirs in (
        ("system_policy", "default", "none"),
        ("prompt_format", "paper", "clean"),
        ("model", "smollm2-135m-instruct", "tiny-random"),
        ("dtype", "float32", "bfloat16"),
    ):
        with pytest.raises(ValueError, match=f"different {column}.*{ours}.*{theirs}"):
            effect_table(law_math.assign(**{column: ours}), run.assign(**{column: theirs}))
        effect_table(law_math.assign(**{column: ours}), run.assign(**{column: ours}))
    # tables from before those columns: the rendered system turn, persona rows left out
    old_base = law_math.assign(system="You are a helpful AI assistant named SmolLM.")
    with pytest.raises(ValueError, match="different system"):
        effect_table(old_base, run.assign(system="none"))
    persona = run.assign(
        system="You are a lawyer.", condition="persona", persona_mode="system", alpha=math.nan
    )
    steered = run.assign(system=old_base["system"].iloc[0], persona_mode=math.nan)
    effect_table(old_base, pd.concat([persona, steered]))


def test_evaluate_records_how_the_questions_were_asked(tiny_model):
    import roleprobe as rp

    bench = rp.load_benchmark("builtin", domain="law")
    default = rp.evaluate(tiny_model, bench, progress=False)
    none = rp.evaluate(tiny_model, bench, progress=False, system="none")
    persona = rp.evaluate(tiny_model, bench, rp.Persona("lawyer"), progress=False)
    assert set(default["system_policy"]) == {"default"} and set(none["system_policy"]) == {"none"}
    assert set(persona["system_policy"]) == {"default"}  # a persona keeps the policy
    assert set(default["model"]) == {"tiny-random"} and set(default["dtype"]) == {"float32"}
    assert set(default["prompt_format"]) == {"paper"}
    runs = none.assign(role="lawyer", condition="addition", alpha=1.0)
    with pytest.raises(ValueError, match="different system_policy"):
        effect_table(default, runs)
    with pytest.raises(ValueError, match="different system_policy"):
        rp.compare(default, none)
    rp.compare(default, persona)  # a persona against its own baseline is what it is for
    effect_table(default, persona.assign(alpha=math.nan))
