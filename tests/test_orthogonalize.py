import pytest
import torch

from roleprobe.chat import encode_chat
from roleprobe.interventions import Ablation, steer
from roleprobe.orthogonalize import orthogonalized, writers

PROMPTS = ["Hi", "Describe the water cycle briefly.", "What is two plus two?"]


def _compare(model, atol):
    batch = encode_chat(model.tokenizer, PROMPTS)
    real = batch.attention_mask.bool()
    d = torch.randn(model.cfg.d_model)
    embed = writers(model)[0][1].weight
    with torch.no_grad():
        before = model(batch.input_ids, attention_mask=batch.attention_mask)
        with steer(model, Ablation(d)):
            hooked = model(batch.input_ids, attention_mask=batch.attention_mask)
        with orthogonalized(model, d):
            assert model.unembed.original_component.weight is not embed  # untied meanwhile
            baked = model(batch.input_ids, attention_mask=batch.attention_mask)
        after = model(batch.input_ids, attention_mask=batch.attention_mask)
    assert (hooked - baked)[real].abs().max() <= atol
    assert (hooked - before)[real].abs().max() > 1e-2  # the ablation does something
    assert torch.equal(after, before)  # restored bitwise
    assert model.unembed.original_component.weight is embed  # tied again


def test_weight_orthogonalisation_equals_hook_ablation(tiny_model):
    _compare(tiny_model, atol=1e-5)


@pytest.mark.embedded
def test_weight_orthogonalisation_equals_hook_ablation_on_smollm2(embedded_model):
    _compare(embedded_model, atol=1e-4)


def test_refusals(tiny_model, monkeypatch):
    with pytest.raises(ValueError, match="zero norm"), orthogonalized(tiny_model, torch.zeros(64)):
        pass
    with (
        pytest.raises(ValueError, match="32 dimensions"),
        orthogonalized(tiny_model, torch.randn(32)),
    ):
        pass
    monkeypatch.setattr(tiny_model.cfg, "use_normalization_before_and_after", True)
    with (
        pytest.raises(NotImplementedError, match="use hook ablation"),
        orthogonalized(tiny_model, torch.randn(64)),
    ):
        pass
