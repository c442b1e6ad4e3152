"""Persona ↔ vector shifts (roleprobe.experiments.persona_shift) on the tiny random model."""

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

import roleprobe as rp
from roleprobe.data.benchmarks import LETTERS
from roleprobe.experiments.evaluation import encode_questions
from roleprobe.experiments.persona_shift import PersonaShift, persona_shift
from roleprobe.model.chat import ChatTemplate, answer_letter_ids
from roleprobe.steering.persona import PromptEdit, apply_prompt_transforms

ROLES = ["lawyer", "nurse"]


@dataclasses.dataclass(frozen=True)
class _Identity:
    """A prompt transform that changes nothing."""

    role: str = "lawyer"

    def edit_prompt(self, has_system: bool) -> PromptEdit:
        return PromptEdit()


@pytest.fixture(scope="module")
def setup(tiny_model):
    prompts = rp.load_prompts("builtin", ROLES)
    small = rp.RolePrompts(
        {r: p.sample(6, 0) for r, p in prompts.roles.items()}, prompts.base.sample(6, 0)
    )
    rd = rp.compute_directions(tiny_model, source=small, positions=[-2, -1], progress=False)
    bench = rp.load_benchmark("builtin")
    bench = rp.MultipleChoice(bench.items.head(5), "builtin|5", bench.split)
    return tiny_model, rd, bench


def _direct(model, bench, transform, layer, position):
    """Per-question residual (block input) at ``position`` and correct-letter log-prob,
    one question at a time with ``run_with_cache`` (no batching, no padding)."""
    system, prefix = apply_prompt_transforms(
        [transform] if transform else [], model.tokenizer, "default"
    )
    template = ChatTemplate.from_tokenizer(model.tokenizer, system)
    letters = answer_letter_ids(model.tokenizer, LETTERS, system)
    acts, lps = [], []
    for enc, answer in zip(
        encode_questions(model, bench.items, template, "paper", prefix),
        bench.items["answer"],
        strict=True,
    ):
        ids = torch.tensor([enc.ids])
        with torch.inference_mode():
            logits, cache = model.run_with_cache(ids)
        acts.append(cache[f"blocks.{layer}.hook_resid_pre"][0, position].double())
        lp = torch.log_softmax(logits[0, -1, letters].double(), dim=-1)
        lps.append(lp[LETTERS.index(answer)])
    return torch.stack(acts), torch.stack(lps)


def test_shift_equals_a_direct_two_pass_computation(setup):
    model, rd, bench = setup
    layer = model.cfg.n_layers - 1
    ps = persona_shift(model, rd, bench, layers=[layer], batch_size=4, progress=False)
    base_act, base_lp = _direct(model, bench, None, layer, -1)
    persona_act, persona_lp = _direct(model, bench, rp.Persona("nurse"), layer, -1)
    p, k = rd.position_index(-1), rd.layer_index(layer)
    units = rd.role_means[:, p, k] - rd.base_mean[p, k]
    units = units / units.norm(dim=-1, keepdim=True)
    shifts = (persona_act - base_act) @ units.T  # [item, role], one question at a time
    torch.testing.assert_close(ps.shift[1, :, 0], shifts.mean(dim=0), atol=1e-4, rtol=0)
    own = shifts[:, 1]  # the nurse persona along the nurse direction
    torch.testing.assert_close(ps.own_shift[1, :, 0], own, atol=1e-4, rtol=0)
    torch.testing.assert_close(ps.base_logprob, base_lp, atol=1e-4, rtol=0)
    torch.testing.assert_close(ps.persona_logprob[1], persona_lp, atol=1e-4, rtol=0)
    assert ps.personas == ("lawyer", "nurse")


def test_an_identity_persona_shifts_nothing(setup):
    model, rd, bench = setup
    ps = persona_shift(model, rd, bench, personas=[_Identity()], batch_size=4, progress=False)
    assert ps.shift.abs().max() == 0
    assert ps.own_shift.abs().max() == 0
    torch.testing.assert_close(ps.persona_logprob[0], ps.base_logprob, atol=0, rtol=0)


def test_a_planted_direction_gets_the_whole_shift(setup):
    model, rd, bench = setup
    layer = model.cfg.n_layers - 1
    base_act, _ = _direct(model, bench, None, layer, -1)
    persona_act, _ = _direct(model, bench, rp.Persona("lawyer"), layer, -1)
    planted = (persona_act - base_act).mean(dim=0)
    orthogonal = torch.randn_like(planted)
    orthogonal -= (orthogonal @ planted) / (planted @ planted) * planted
    role_means = rd.role_means.clone()
    k, p = rd.layer_index(layer), rd.position_index(-1)
    role_means[0, p, k] = rd.base_mean[p, k] + planted  # lawyer: along the planted shift
    role_means[1, p, k] = rd.base_mean[p, k] + orthogonal  # nurse: orthogonal to it
    synthetic = dataclasses.replace(rd, role_means=role_means)
    ps = persona_shift(model, synthetic, bench, personas=["lawyer"], layers=[layer], progress=False)
    assert ps.shift[0, 0, 0] == pytest.approx(float(planted.norm()), rel=1e-4)
    assert abs(float(ps.shift[0, 1, 0])) < 1e-4 * float(planted.norm())
    assert float(planted.norm()) > 1e-3  # the persona does move this layer


def _synthetic(shift: torch.Tensor, personas, roles) -> PersonaShift:
    n_p, n_r, n_l = shift.shape
    items = rp.load_benchmark("builtin").items.head(4)
    return PersonaShift(
        shift=shift.double(),
        base_mean=torch.zeros(n_r, n_l, dtype=torch.float64),
        own_shift=torch.arange(n_p * 4 * n_l, dtype=torch.float64).reshape(n_p, 4, n_l),
        base_logprob=torch.zeros(4, dtype=torch.float64),
        persona_logprob=torch.tensor([[0.0, 1.0, 0.5, 3.0]] * n_p, dtype=torch.float64),
        personas=tuple(personas),
        roles=tuple(roles),
        layers=tuple(range(n_l)),
        position=-1,
        items=items.assign(domain="law")[["id", "subject", "domain"]],
    )


def test_specificity_reads_the_diagonal_against_the_rest():
    shift = torch.tensor([[[3.0], [1.0], [1.0]], [[1.0], [2.0], [0.0]], [[0.0], [0.0], [4.0]]])
    spec = _synthetic(shift, ["a", "b", "c"], ["a", "b", "c"]).specificity()
    row = spec.iloc[0]
    assert row["diagonal"] == pytest.approx(3.0)
    assert row["off_diagonal"] == pytest.approx(3.0 / 6)
    assert row["top1"] == 1.0
    assert row["chance"] == pytest.approx(1 / 3)
    # a persona that is no direction is left out; the order of roles does not matter
    reordered = _synthetic(shift[[2, 0, 1]][:, [2, 0, 1]], ["c", "a", "b"], ["c", "a", "b"])
    assert reordered.specificity().iloc[0]["diagonal"] == pytest.approx(3.0)
    flipped = _synthetic(shift.flip(0), ["a", "b", "c"], ["a", "b", "c"])
    assert flipped.specificity().iloc[0]["top1"] < 1.0
    still = _synthetic(torch.zeros(3, 3, 1), ["a", "b", "c"], ["a", "b", "c"])
    assert np.isnan(still.specificity().iloc[0]["top1"])  # nothing moves: no answer


def test_item_correlation_is_pearson_of_own_shift_and_delta_logprob():
    ps = _synthetic(torch.zeros(1, 1, 2), ["a"], ["a"])
    corr = ps.item_correlation()
    x = ps.own_shift[0, :, 1].numpy()
    expected = np.corrcoef(x, [0.0, 1.0, 0.5, 3.0])[0, 1]
    assert corr.loc[corr["layer"] == 1, "r"].item() == pytest.approx(expected)
    table = ps.item_table()
    assert len(table) == 4 * 2 and set(table["delta_logprob"]) == {0.0, 1.0, 0.5, 3.0}
    long = ps.to_dataframe()
    assert long["own"].all() and len(long) == 2


def test_bad_arguments_are_named(setup):
    model, rd, bench = setup
    with pytest.raises(ValueError, match="position"):
        persona_shift(model, rd, bench, position=0, progress=False)
    with pytest.raises(ValueError, match="layer 99"):
        persona_shift(model, rd, bench, layers=[99], progress=False)
    with pytest.raises(ValueError, match="position -3"):
        persona_shift(model, rd, bench, position=-3, progress=False)


def test_the_figures_show_the_matrix_and_the_comparison():
    from roleprobe.results import plotting

    shift = torch.arange(18, dtype=torch.float64).reshape(3, 3, 2)
    ps = _synthetic(shift, ["nurse", "lawyer", "economist"], ["nurse", "lawyer", "economist"])
    long = ps.to_dataframe()
    fig = plotting.persona_shift_figure(long)
    assert len(fig.frames) == 2 and fig.layout.sliders
    one = plotting.persona_shift_figure(long, layer=1)
    heat = one.data[0]
    rows, cols = list(heat.y), list(heat.x)
    assert rows == cols == ["economist", "lawyer", "nurse"]  # grouped by domain: econ, law, med
    z = np.asarray(heat.z)
    assert z[rows.index("lawyer"), cols.index("nurse")] == shift[1, 0, 1]
    centred = np.asarray(plotting.persona_shift_figure(long, 1, centred=True).data[0].z)
    assert np.allclose(centred.sum(axis=0), 0) and np.allclose(centred.sum(axis=1), 0)
    with pytest.raises(ValueError, match="layer 7"):
        plotting.persona_shift_figure(long, layer=7)
    spec = plotting.persona_specificity_figure(ps.specificity())
    assert len(spec.data) == 3
    table = pd.DataFrame(
        {
            "role": ["lawyer", "lawyer", "nurse", "nurse"],
            "condition": ["persona", "addition α=3", "persona", "addition α=3"],
            "delta_logprob": [0.1, -0.2, 0.3, 0.0],
            "delta_logprob_ci_low": [0.0, -0.3, 0.1, -0.1],
            "delta_logprob_ci_high": [0.2, -0.1, 0.5, 0.1],
        }
    )
    bars = plotting.persona_vs_addition(table)
    persona = next(t for t in bars.data if t.name == "persona")
    assert list(persona.x) == ["lawyer", "nurse"] and list(persona.y) == [0.1, 0.3]
    assert np.allclose(persona.error_y.array, [0.1, 0.2])
    with pytest.raises(ValueError, match="delta_ci_low"):
        plotting.persona_vs_addition(table, "delta_accuracy")


def _clustered(own: np.ndarray, delta: np.ndarray, shift: np.ndarray | None = None) -> PersonaShift:
    """A PersonaShift with per-question own shifts ``own`` (``[persona, item, layer]``) and
    Δ log-probs ``delta`` (``[persona, item]``, against a zero baseline)."""
    n_p, n_i, n_l = own.shape
    names = tuple(f"role{i}" for i in range(n_p))
    return PersonaShift(
        shift=torch.tensor(np.zeros((n_p, n_p, n_l)) if shift is None else shift),
        base_mean=torch.zeros(n_p, n_l, dtype=torch.float64),
        own_shift=torch.tensor(own, dtype=torch.float64),
        base_logprob=torch.zeros(n_i, dtype=torch.float64),
        persona_logprob=torch.tensor(delta, dtype=torch.float64),
        personas=names,
        roles=names,
        layers=tuple(range(n_l)),
        position=-1,
        items=pd.DataFrame({"id": range(n_i), "subject": "law", "domain": "law"}),
    )


def test_pooled_pairs_that_share_their_question_are_one_unit():
    # 29 personas × 16 questions; each question has one effect on the shift (a new draw per
    # layer) and another, independent one on Δ log-prob that every persona shares: no real
    # link, but the pooled pairs look like 464 independent ones to the t-test
    rng = np.random.default_rng(3)
    n_p, n_q, n_l = 29, 16, 40
    own = rng.normal(size=(1, n_q, n_l)) + 0.3 * rng.normal(size=(n_p, n_q, n_l))
    delta = rng.normal(size=(1, n_q)) + 0.3 * rng.normal(size=(n_p, n_q))
    corr = _clustered(own, delta).item_correlation(pooled=True, n_perm=999, n_boot=500)
    assert (corr["n"] == n_p * n_q).all() and (corr["n_clusters"] == n_q).all()
    assert (corr["p_naive"] < 0.05).mean() > 0.5  # the naive test "finds" most of them
    assert (corr["p_cluster"] < 0.05).mean() <= 0.15  # the question permutation does not
    assert (corr["p_cluster_adj"] >= corr["p_cluster"]).all()
    assert corr["p_cluster_adj"].min() > 0.05  # nothing survives Holm over the 40 layers
    worst = corr.loc[corr["p_naive"].idxmin()]
    assert worst["p_naive"] < 1e-6 and worst["p_cluster"] > 1e3 * worst["p_naive"]
    covers = (corr["r_ci_low"] < 0) & (corr["r_ci_high"] > 0)
    assert covers.mean() >= 0.8  # the cluster bootstrap covers r = 0 about as often as it should
    assert ((corr["r_ci_low"] <= corr["r"]) & (corr["r"] <= corr["r_ci_high"])).all()
    # a link the questions really carry is still found, Holm and all
    linked = _clustered(own[:, :, :5], own[:, :, 0] + 0.3 * rng.normal(size=(n_p, n_q)))
    found = linked.item_correlation(pooled=True, n_perm=999, n_boot=200)
    assert found["p_cluster"][0] == pytest.approx(2 / 1000)  # no relabelling comes close
    assert found["p_cluster_adj"][0] == pytest.approx(5 * 2 / 1000)  # Holm over 5 layers


def test_cluster_p_equals_a_brute_force_permutation_of_whole_questions():
    rng = np.random.default_rng(0)
    own = rng.normal(size=(3, 5, 2))
    delta = own[:, :, 0] + rng.normal(size=(3, 5))
    corr = _clustered(own, delta).item_correlation(pooled=True, n_perm=200, n_boot=50)
    for layer in range(2):
        x = own[:, :, layer]
        observed = np.corrcoef(x.ravel(), delta.ravel())[0, 1]
        null = np.array(
            [
                np.corrcoef(x.ravel(), delta[:, list(order)].ravel())[0, 1]
                for order in itertools.permutations(range(5))  # one order for every persona
            ]
        )
        eps = 1e-12
        expected = min(
            1.0, 2 * min((null <= observed + eps).mean(), (null >= observed - eps).mean())
        )
        row = corr.iloc[layer]
        assert row["r"] == pytest.approx(observed)
        assert row["p_cluster"] == pytest.approx(expected)
    adjusted = rp.adjust_pvalues(corr["p_cluster"].to_numpy(), "holm")
    np.testing.assert_allclose(corr["p_cluster_adj"], adjusted)


def test_a_layer_where_nothing_moves_stays_out_of_the_holm_family():
    rng = np.random.default_rng(1)
    own = rng.normal(size=(4, 6, 3))
    own[:, :, 0] = 0.0  # layer 0: no shift, r undefined
    corr = _clustered(own, rng.normal(size=(4, 6))).item_correlation(pooled=True, n_perm=99)
    assert corr[["r", "p_naive", "p_cluster", "p_cluster_adj", "r_ci_low"]].iloc[0].isna().all()
    defined = corr["p_cluster"].to_numpy()[1:]
    adjusted = np.minimum(1.0, np.maximum.accumulate(np.sort(defined) * [2, 1]))
    np.testing.assert_allclose(np.sort(corr["p_cluster_adj"].to_numpy()[1:]), adjusted)
    with pytest.raises(ValueError, match="n_perm"):
        _clustered(own, own[:, :, 1]).item_correlation(pooled=True, n_perm=0)


def _own_winners_p(shift: np.ndarray) -> float:
    """Exact one-sided p of top-1 over every persona relabelling, recomputed from scratch."""
    n = shift.shape[0]
    observed = (shift.argmax(axis=0) == np.arange(n)).sum()
    counts = [
        (shift[list(order)].argmax(axis=0) == np.arange(n)).sum()
        for order in itertools.permutations(range(n))
    ]
    return float(np.mean(np.array(counts) >= observed))


def _sampled_own_winners_p(shift: np.ndarray, n_perm: int) -> float:
    """The same p from random relabellings (scipy's permutation test; observed one counted)."""
    n = shift.shape[0]

    def top1(order, axis=-1):
        return (shift[order].argmax(axis=-2) == np.arange(n)).sum(axis=-1)

    return scipy_stats.permutation_test(
        (np.arange(n),),
        top1,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_perm,
        alternative="greater",
        rng=np.random.default_rng(1),
    ).pvalue


def test_top1_p_counts_every_relabelling_of_the_personas():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(6, 6, 4))
    small[:, :, 1] += 1.5 * np.eye(6)
    small[:, :, 2] = 0.0
    small[2, :, 2] = 1.0  # persona 2 moves every direction most
    small[:, :, 3] += 3.0 * np.eye(6)
    spec = _clustered(np.zeros((6, 2, 4)), np.zeros((6, 2)), small).specificity()
    for layer in range(4):  # 6! = 720 relabellings
        assert spec["top1_p"][layer] == pytest.approx(_own_winners_p(small[:, :, layer]))
    assert spec["top1"][2] == pytest.approx(1 / 6) and spec["top1_p"][2] == 1.0
    assert spec["top1_p"][3] == pytest.approx(1 / math.factorial(6))  # all six own: one σ
    np.testing.assert_allclose(
        spec["top1_p_adj"], rp.adjust_pvalues(spec["top1_p"].to_numpy(), "holm")
    )


def test_top1_p_is_small_for_a_planted_diagonal_and_not_for_noise():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(29, 29, 30))
    noise[:, :, 0] += 3.0 * np.eye(29)  # layer 0: a planted diagonal
    spec = _clustered(np.zeros((29, 2, 30)), np.zeros((29, 2)), noise).specificity()
    assert spec["top1"][0] > 0.5 and spec["top1_p"][0] < 1e-12
    assert spec["top1_p_adj"][0] < 1e-10
    null = spec["top1_p"][1:]
    assert (null < 0.05).mean() <= 0.15 and spec["top1_p_adj"][1:].min() > 0.05
    for layer in (0, 1, 2):  # agrees with random relabellings where those can tell
        sampled = _sampled_own_winners_p(noise[:, :, layer], 4999)
        assert spec["top1_p"][layer] == pytest.approx(sampled, abs=0.02 + 1 / 5000)
