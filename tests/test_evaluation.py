from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch
from beartype.roar import BeartypeCallHintViolation

import roleprobe as rp
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.experiments.evaluation import (
    TIE_RULES,
    Baseline,
    Persona,
    condition_columns,
    evaluate,
    format_question,
    score_table,
    template_has_system,
)
from roleprobe.steering.conditions import split_condition


@pytest.fixture(scope="module")
def bench():
    items = rp.load_benchmark("builtin").items
    return MultipleChoice(items.groupby("subject").head(1).head(12), "builtin-12")


def test_paper_format_is_exact():
    row = {"question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d"}
    assert format_question(row) == (
        "Q?\n\t\t\tA. a\n\t\t\tB. b\n\t\t\tC. c\n\t\t\tD. d\n\t\t\t"
        "Answer with the letter of the correct answer.\n\t\t\tAnswer:"
    )
    assert format_question(row, "clean").startswith("Q?\nA. a\nB. b")
    with pytest.raises(ValueError, match="unknown prompt format"):
        format_question(row, "fancy")


def test_table_columns_and_order(tiny_model, bench):
    df = evaluate(tiny_model, bench, batch_size=5, progress=False)
    assert df["id"].tolist() == bench.items["id"].tolist()
    expected = ["id", "subject", "domain", "answer", "pred", "correct"]
    expected += [f"logprob_{x}" for x in LETTERS]
    assert df.columns.tolist()[: len(expected)] == expected
    probs = df[[f"logprob_{x}" for x in LETTERS]].to_numpy()
    assert abs(torch.tensor(probs).exp().sum(1) - 1).max() < 1e-9
    assert (df["pred"] == df[[f"logprob_{x}" for x in LETTERS]].idxmax(axis=1).str[-1]).all()
    assert (df["correct"] == (df["pred"] == df["answer"])).all()
    assert ((df["margin"] > 0) == df["correct"]).all()
    assert df["condition"].unique().tolist() == ["baseline"]
    by_domain = rp.accuracy_by(df, "domain")
    assert set(by_domain.index) == set(df["domain"]) and (by_domain["n"] > 0).all()
    assert by_domain.loc["econ", "accuracy"] == df.query("domain == 'econ'")["correct"].mean()


def test_batch_size_and_order_do_not_matter(tiny_model, bench):
    one = evaluate(tiny_model, bench, batch_size=1, progress=False)
    many = evaluate(tiny_model, bench, batch_size=12, progress=False)
    pd.testing.assert_frame_equal(
        one.drop(columns=["margin"]), many.drop(columns=["margin"]), atol=1e-5, check_exact=False
    )
    reversed_bench = MultipleChoice(bench.items.iloc[::-1], "reversed")
    back = evaluate(tiny_model, reversed_bench, progress=False).set_index("id").loc[one["id"]]
    assert (back["pred"].to_numpy() == one["pred"].to_numpy()).all()


def test_letter_only_path_equals_full_logits(tiny_model, bench):
    letters = evaluate(tiny_model, bench, progress=False)
    full = evaluate(tiny_model, bench, full_logits=True, progress=False)
    assert (letters["pred"] == full["pred"]).all()
    cols = [f"logprob_{x}" for x in LETTERS]
    assert (letters[cols] - full[cols]).abs().to_numpy().max() < 1e-5


def test_persona_modes(tiny_model, bench):
    assert template_has_system(tiny_model.tokenizer)
    base = evaluate(tiny_model, bench, Baseline(), progress=False)
    system = evaluate(tiny_model, bench, Persona("lawyer"), progress=False)
    prefix = evaluate(tiny_model, bench, Persona("lawyer", mode="prefix"), progress=False)
    assert system["persona_mode"].iloc[0] == "auto" and system["role"].iloc[0] == "lawyer"
    for df in (system, prefix):
        assert not (df["logprob_A"] == base["logprob_A"]).all()
    assert not (system["logprob_A"] == prefix["logprob_A"]).all()
    with pytest.raises(ValueError, match="unknown persona mode"):
        Persona("lawyer", mode="inline")


def test_template_without_system_turn(tiny_model, bench, monkeypatch):
    tok = tiny_model.tokenizer
    original = tok.chat_template
    monkeypatch.setattr(tok, "chat_template", original.replace("{{ m['role'] }}", "user"))
    monkeypatch.setattr(
        tok,
        "chat_template",
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('no system') }}{% endif %}<|im_start|>{{ m['role'] }}\n"
        "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}"
        "<|im_start|>assistant\n{% endif %}",
    )
    assert not template_has_system(tok)
    with pytest.raises(ValueError, match="no system turn"):
        evaluate(tiny_model, bench, Persona("lawyer", mode="system"), progress=False)
    auto = evaluate(tiny_model, bench, Persona("lawyer"), progress=False)  # falls back to prefix
    assert len(auto) == len(bench)


def test_interventions_as_conditions(tiny_model, bench):
    base = evaluate(tiny_model, bench, progress=False)
    d = torch.randn(64) * 4
    zero = evaluate(tiny_model, bench, rp.Addition(d, layer=1, alpha=0.0), progress=False)
    cols = [f"logprob_{x}" for x in LETTERS]
    assert (zero[cols].to_numpy() == base[cols].to_numpy()).all()
    assert zero["condition"].iloc[0] == "addition" and zero["layer"].iloc[0] == 1
    ablated = evaluate(
        tiny_model, bench, rp.Ablation(d), labels={"role": "x", "pos": -1}, progress=False
    )
    assert ablated["condition"].iloc[0] == "ablation" and ablated["pos"].iloc[0] == -1
    assert not (ablated[cols].to_numpy() == base[cols].to_numpy()).all()


def _short(n, split, start=0):
    rows = [
        (f"s/{split}/{i}", "toy", f"Is {i} odd?", "yes", "no", "maybe", "never", "AB"[i % 2])
        for i in range(start, start + n)
    ]
    return MultipleChoice(
        pd.DataFrame(rows, columns=list(rp.data.benchmarks.COLUMNS)), split, split
    )


def test_k_shot(tiny_model, bench):
    test, dev = _short(4, "test"), _short(3, "dev", start=10)
    with pytest.raises(ValueError, match="needs dev="):
        evaluate(tiny_model, test, k_shot=1, progress=False)
    zero = evaluate(tiny_model, test, progress=False)
    two = evaluate(tiny_model, test, k_shot=2, dev=dev, progress=False)
    assert len(two) == 4 and not (two["logprob_A"] == zero["logprob_A"]).all()
    with pytest.raises(ValueError, match="k_shot=9"):
        evaluate(tiny_model, test, k_shot=9, dev=dev, progress=False)
    # a prompt longer than the context is refused with its question named
    with pytest.raises(ValueError, match=r"question econ-01 .* tokens long"):
        evaluate(tiny_model, bench, k_shot=1, dev=rp.load_benchmark("builtin"), progress=False)


@pytest.mark.embedded
def test_letter_path_equals_full_logits_on_smollm2(embedded_model):
    bench = rp.load_benchmark("builtin", domain="math")
    letters = evaluate(embedded_model, bench, progress=False)
    full = evaluate(embedded_model, bench, full_logits=True, progress=False)
    assert (letters["pred"] == full["pred"]).all()
    assert (letters["logprob_correct"] - full["logprob_correct"]).abs().max() < 1e-4


@pytest.mark.slow
@pytest.mark.embedded
def test_papers_law_split_on_smollm2(embedded_model, paper_dir):
    law = rp.load_benchmark("paper", domain="law", path=paper_dir)
    df = evaluate(embedded_model, law, batch_size=8, progress=False)
    assert len(df) == 200 and df["correct"].mean() < 0.45  # a 135M model is near chance
    assert df["pred"].nunique() >= 2


def _tie_items():
    return pd.DataFrame(
        {
            "id": ["q0", "q1", "q2", "q3"],
            "subject": ["professional_law"] * 4,
            "answer": ["B", "A", "C", "D"],
        }
    )


def _tie_scores():
    # bf16 logits: q0 ties A=B (answer B), q1 ties A=B=C (answer A), q2 ties A=B (answer C,
    # not tied), q3 has no tie (answer D wins)
    bf16 = torch.tensor(
        [[2.0, 2.0, 1.0, 0.5], [1.5, 1.5, 1.5, 0.0], [3.0, 3.0, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]],
        dtype=torch.bfloat16,
    )
    return bf16.double()  # upcasting is exact: a bf16 tie stays a tie


def test_score_table_counts_ties_and_scores_them_by_the_rule():
    items, scores = _tie_items(), _tie_scores()
    tables = {rule: score_table(items, scores, tie_rule=rule) for rule in TIE_RULES}
    for rule, df in tables.items():
        assert df["tied"].tolist() == [2, 3, 2, 1]
        assert (df["tie_rule"] == rule).all()
    assert tables["first"]["correct"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert tables["first"]["pred"].tolist() == ["A", "A", "A", "D"]
    assert tables["paper"]["correct"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert tables["paper"]["pred"].tolist() == ["B", "A", "A", "D"]
    assert tables["fractional"]["correct"].tolist() == pytest.approx([0.5, 1 / 3, 0.0, 1.0])
    assert tables["fractional"]["pred"].tolist() == ["A", "A", "A", "D"]
    # the default is the neutral rule; the old behaviour (the earlier letter wins) is "first"
    default = score_table(items, scores)
    assert default["correct"].tolist() == pytest.approx([0.5, 1 / 3, 0.0, 1.0])
    acc = {rule: rp.accuracy(df, n_boot=10) for rule, df in tables.items()}
    assert acc["first"]["accuracy"] == 0.5 and acc["paper"]["accuracy"] == 0.75
    assert acc["fractional"]["accuracy"] == pytest.approx((0.5 + 1 / 3 + 1) / 4)
    assert all(a["n_tied"] == 3 and a["tie_rule"] == rule for rule, a in acc.items())


def test_score_table_validates_the_rule_and_nan():
    with pytest.raises(ValueError, match="unknown tie_rule 'coin'"):
        score_table(_tie_items(), _tie_scores(), tie_rule="coin")
    scores = _tie_scores()
    scores[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        score_table(_tie_items(), scores)


def test_evaluate_records_the_tie_rule(tiny_model, bench):
    df = evaluate(tiny_model, bench, progress=False, tie_rule="paper")
    assert (df["tie_rule"] == "paper").all() and (df["tied"] >= 1).all()
    with pytest.raises(ValueError, match="unknown tie_rule"):
        evaluate(tiny_model, bench, progress=False, tie_rule="random")


class AddAtLast:
    """A user's own intervention: no base class, plain torch, hooks at one layer's input."""

    def __init__(self, vector, layer):
        self.vector, self.layer = vector, layer

    def hooks(self, model, state):
        def add_last(act, hook):
            act = act.clone()
            act[:, -1] += self.vector
            return act

        return [(f"blocks.{self.layer}.hook_resid_pre", add_last)]


@contextmanager
def _count_forwards(model):
    calls = []

    def count(act, hook):
        calls.append(1)
        return act

    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count)]):
        yield calls


def test_a_user_defined_intervention_runs_like_the_builtin(tiny_model, bench):
    d = torch.randn(64) * 4
    mine = evaluate(tiny_model, bench, AddAtLast(d, 1), progress=False)
    builtin = evaluate(tiny_model, bench, rp.Addition(d, 1, positions=[-1]), progress=False)
    base = evaluate(tiny_model, bench, progress=False)
    cols = [f"logprob_{x}" for x in LETTERS]
    np.testing.assert_allclose(mine[cols], builtin[cols], atol=1e-6)
    assert not np.allclose(mine[cols], base[cols])  # it did steer
    # a class without columns() is named by its type; one with columns() names itself
    assert mine["condition"].unique().tolist() == ["AddAtLast"]
    assert builtin["condition"].iloc[0] == "addition" and builtin["positions"].iloc[0] == "(-1,)"


def test_a_non_intervention_is_refused_before_any_forward_pass(tiny_model, bench):
    class NotAnIntervention:
        hooks = "not a method"

    with _count_forwards(tiny_model) as calls:
        with pytest.raises(TypeError, match="NotAnIntervention"):
            evaluate(tiny_model, bench, NotAnIntervention(), progress=False)
        with pytest.raises(TypeError, match="NotAnIntervention"):
            evaluate(tiny_model, bench, [Persona("lawyer"), NotAnIntervention()], progress=False)
        # (under the test suite's beartype checks a plain string fails the annotation first)
        with pytest.raises((TypeError, BeartypeCallHintViolation), match="str"):
            evaluate(tiny_model, bench, "lawyer", progress=False)
    assert calls == []
    with pytest.raises(TypeError, match=r"rp\.Persona"):
        split_condition("lawyer")


def test_persona_and_interventions_compose(tiny_model, bench):
    d = torch.randn(64) * 4
    persona = evaluate(tiny_model, bench, Persona("lawyer"), progress=False)
    zero = evaluate(tiny_model, bench, [Persona("lawyer"), rp.Addition(d, 1, 0.0)], progress=False)
    both = evaluate(tiny_model, bench, [Persona("lawyer"), rp.Addition(d, 1, 3.0)], progress=False)
    added = evaluate(tiny_model, bench, rp.Addition(d, 1, 3.0), progress=False)
    cols = [f"logprob_{x}" for x in LETTERS]
    assert (zero[cols].to_numpy() == persona[cols].to_numpy()).all()
    assert not np.allclose(both[cols], persona[cols]) and not np.allclose(both[cols], added[cols])
    row = both.iloc[0]
    assert row["condition"] == "persona+addition" and row["role"] == "lawyer"
    assert row["alpha"] == 3.0 and row["system"] == "You are a lawyer."
    assert condition_columns(None) == {"condition": "baseline"}
    assert condition_columns([Baseline(), Persona("nurse", mode="prefix")])["condition"] == (
        "persona"
    )


def test_scoring_under_interventions_reads_nothing_back_inside_hooks(tiny_model, bench):
    """Letter scoring (the pass cut after the final norm) under an addition, an ablation
    and a clamp: no hook call reads a value back to the host."""
    from _syncs import counting_syncs

    d = torch.randn(tiny_model.cfg.d_model)
    specs = [rp.Addition(d, 1, 3.0), rp.Ablation(d), rp.Clamp(d, 2, 0.5)]
    with counting_syncs(tiny_model) as count:
        rp.evaluate(tiny_model, bench, specs, batch_size=3, progress=False)
    assert count.hook_calls > 0
    assert count.syncs == {}, dict(count.syncs)
