"""Letter attribution against a plain-transformers reference computation."""

import numpy as np
import pytest
import torch

import roleprobe as rp
import roleprobe.vectors.attribution
from roleprobe.vectors.attribution import final_residual_rms, letter_attribution
from roleprobe.vectors.directions import RoleDirections


@pytest.fixture(scope="module")
def fake_directions(tiny_model):
    gen = torch.Generator().manual_seed(1)
    n_layers, d_model = tiny_model.cfg.n_layers, tiny_model.cfg.d_model
    return RoleDirections(
        role_means=torch.randn(2, 1, n_layers, d_model, generator=gen, dtype=torch.float64),
        base_mean=torch.randn(1, n_layers, d_model, generator=gen, dtype=torch.float64),
        role_counts=(4, 4),
        base_count=8,
        roles=("lawyer", "nurse"),
        layers=tuple(range(n_layers)),
        positions=(-1,),
    )


def test_letter_attribution_matches_the_reference_model(
    tiny_model, tiny_reference, fake_directions
):
    hf_model, _ = tiny_reference
    table = letter_attribution(tiny_model, fake_directions, "nurse", scale=2.5)
    assert list(table.columns) == ["role", "position", "layer", "letter", "attribution"]
    assert len(table) == tiny_model.cfg.n_layers * 4 and table.attrs["scale"] == 2.5
    ids = rp.answer_letter_ids(tiny_model.tokenizer, rp.LETTERS)
    with torch.no_grad():
        w_norm = hf_model.model.norm.weight.double()
        w_letters = hf_model.lm_head.weight[ids].double()
    for layer in fake_directions.layers:
        d = fake_directions.role_means[1, 0, layer] - fake_directions.base_mean[0, layer]
        logits = w_letters @ (w_norm * d) / 2.5
        expected = (logits - logits.mean()).numpy()
        got = table.query("layer == @layer").set_index("letter").loc[list(rp.LETTERS)]
        np.testing.assert_allclose(got["attribution"].to_numpy(), expected, rtol=1e-4, atol=1e-6)
    assert table.groupby("layer")["attribution"].sum().abs().max() < 1e-9
    with pytest.raises(ValueError, match="not in these directions"):
        letter_attribution(tiny_model, fake_directions, "lawyer", position=-2, scale=1.0)


def test_letter_attribution_measures_the_scale_by_default(tiny_model, fake_directions, monkeypatch):
    unit = letter_attribution(tiny_model, fake_directions, "lawyer", layers=[1], scale=1)
    monkeypatch.setattr(roleprobe.vectors.attribution, "final_residual_rms", lambda model: 4.0)
    measured = letter_attribution(tiny_model, fake_directions, "lawyer", layers=[1])
    assert measured.attrs["scale"] == 4.0 and list(measured["layer"]) == [1] * 4
    np.testing.assert_allclose(measured["attribution"], unit["attribution"] / 4.0)
    with pytest.raises(ValueError, match="positive"):
        letter_attribution(tiny_model, fake_directions, "lawyer", scale=0.0)


def test_final_residual_rms_matches_the_reference_model(tiny_model, tiny_reference):
    hf_model, _ = tiny_reference
    prompts = ["Explain the law of contracts.", "What is a fever?", "Hello there"]
    captured = []
    handle = hf_model.model.norm.register_forward_pre_hook(
        lambda module, args: captured.append(args[0][0, -1].double())
    )
    try:
        with torch.no_grad():
            for text in prompts:
                hf_model(torch.tensor([rp.chat_ids(tiny_model.tokenizer, text)]))
    finally:
        handle.remove()
    expected = float(torch.stack([x.pow(2).mean().sqrt() for x in captured]).mean())
    got = final_residual_rms(tiny_model, prompts, batch_size=1)
    assert got == pytest.approx(expected, rel=1e-4)
