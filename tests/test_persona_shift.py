"""Persona ↔ vector shifts (roleprobe.experiments.persona_shift) on the tiny random model."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

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
