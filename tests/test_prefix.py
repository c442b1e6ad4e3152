import pytest
import torch

import roleprobe as rp
from roleprobe.experiments.evaluation import letter_logits
from roleprobe.model.chat import (
    ChatTemplate,
    answer_letter_ids,
    collate,
    encode_prompt,
    pad_token_id,
)
from roleprobe.model.tiny import TinyConfig
from roleprobe.steering.prefix import (
    final_last,
    last_letter_logits,
    letter_only_supported,
    letters_from,
    output_transform,
    position_ids,
    project_letters,
    resid_at,
    skipping_blocks,
)


@pytest.fixture(scope="module")
def deep_model():
    return rp.wrap_hf_model(
        rp.tiny_hf_model(TinyConfig(n_layers=4)), rp.tiny_tokenizer(), "tiny-4", device="cpu"
    )


@pytest.fixture(scope="module")
def padded(deep_model):
    tok = deep_model.tokenizer
    template = ChatTemplate.from_tokenizer(tok)
    texts = ["Hi", "A much longer question about contract law?", "Name a prime.", "x" * 40]
    encoded = [encode_prompt(tok, t, template, deep_model.cfg.n_ctx, "t") for t in texts]
    batch = collate(encoded, template.n_post, pad_token_id(tok))
    assert (batch.attention_mask == 0).any()  # the batch really is left-padded
    return batch, answer_letter_ids(tok, rp.LETTERS)


def test_position_ids_count_real_tokens():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_start_at_layer_gives_the_full_pass_logits(deep_model, padded, layer):
    batch, letters = padded
    with torch.inference_mode():
        full = letter_logits(deep_model, batch.input_ids, batch.attention_mask, letters)
        resid = resid_at(deep_model, batch.input_ids, batch.attention_mask, layer)
        upper = letters_from(deep_model, resid, layer, batch.attention_mask, letters)
    torch.testing.assert_close(upper, full, atol=1e-5, rtol=1e-5)


def test_addition_through_the_upper_blocks_equals_a_hooked_full_pass(deep_model, padded):
    batch, letters = padded
    d = torch.randn(deep_model.cfg.d_model) * 3
    mask = batch.attention_mask.bool()[..., None]
    with torch.inference_mode():
        with rp.steer(deep_model, rp.Addition(d, 2, 3.0), attention_mask=batch.attention_mask):
            hooked = letter_logits(deep_model, batch.input_ids, batch.attention_mask, letters)
        resid = resid_at(deep_model, batch.input_ids, batch.attention_mask, 2)
        upper = letters_from(
            deep_model, torch.where(mask, resid + 3.0 * d, resid), 2, batch.attention_mask, letters
        )
    torch.testing.assert_close(upper, hooked, atol=1e-5, rtol=1e-5)
    assert (
        hooked - letter_logits(deep_model, batch.input_ids, batch.attention_mask, letters)
    ).abs().max() > 1e-3


def test_lower_blocks_do_not_run(deep_model, padded):
    batch, letters = padded
    calls = []
    handles = [
        block.original_component.register_forward_pre_hook(lambda *a, i=i: calls.append(i))
        for i, block in enumerate(deep_model.blocks)
    ]
    try:
        with torch.inference_mode():
            resid = resid_at(deep_model, batch.input_ids, batch.attention_mask, 3)
            calls.clear()
            letters_from(deep_model, resid, 3, batch.attention_mask, letters)
    finally:
        for h in handles:
            h.remove()
    assert calls == [3]


def test_skipping_restores_the_blocks_even_on_error(deep_model, padded):
    batch, letters = padded
    before = [block.original_component for block in deep_model.blocks]
    with pytest.raises(RuntimeError, match="boom"), skipping_blocks(deep_model, 3):
        assert all(
            type(b.original_component).__name__ == "_PassThrough"
            for b in list(deep_model.blocks)[:3]
        )
        raise RuntimeError("boom")
    assert [block.original_component for block in deep_model.blocks] == before
    with torch.inference_mode():
        again = letter_logits(deep_model, batch.input_ids, batch.attention_mask, letters)
        ref = deep_model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1, letters]
    torch.testing.assert_close(again, ref, atol=1e-5, rtol=1e-5)


def test_layer_out_of_range_is_named(deep_model, padded):
    batch, _ = padded
    with pytest.raises(ValueError, match="7"):
        resid_at(deep_model, batch.input_ids, batch.attention_mask, 7)


# --- Gemma-2: the final logit soft-cap and other post-unembedding transforms -------------


@pytest.fixture(scope="module")
def gemma():
    from _gemma import tiny_gemma2

    model = tiny_gemma2()
    tok = model.tokenizer
    template = ChatTemplate.from_tokenizer(tok)
    texts = ["Hi", "Which answer is right, A or B?", "Name a prime.", "y" * 30]
    encoded = [encode_prompt(tok, t, template, model.cfg.n_ctx, "t") for t in texts]
    batch = collate(encoded, template.n_post, pad_token_id(tok))
    return model, batch, answer_letter_ids(tok, rp.LETTERS)


@pytest.fixture()
def fresh_checks(monkeypatch):
    """Forget which models' heads were checked, so each test probes again."""
    import weakref

    from roleprobe.steering import prefix

    monkeypatch.setattr(prefix, "_HEAD_CHECKS", weakref.WeakKeyDictionary())


def _full(model, inputs, mask, letters):
    return model(inputs, attention_mask=mask)[:, -1, letters]


def test_letter_only_scores_equal_full_logits_on_softcapped_gemma2(gemma, fresh_checks):
    model, batch, letters = gemma
    assert model.cfg.output_logits_soft_cap == 1.0
    with torch.inference_mode():
        full = _full(model, batch.input_ids, batch.attention_mask, letters)
        ours = letter_logits(model, batch.input_ids, batch.attention_mask, letters)
        final = final_last(model, batch.input_ids, batch.attention_mask)
        uncapped = final @ model.unembed.original_component.weight[letters].T
    # the cap matters here: the pre-fix formula (no cap) is off by ~0.5 nats
    assert (uncapped.log_softmax(-1) - full.log_softmax(-1)).abs().max() > 0.1
    torch.testing.assert_close(ours.log_softmax(-1), full.log_softmax(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 1])
def test_prefix_reuse_applies_the_softcap_too(gemma, layer):
    model, batch, letters = gemma
    with torch.inference_mode():
        full = _full(model, batch.input_ids, batch.attention_mask, letters)
        resid = resid_at(model, batch.input_ids, batch.attention_mask, layer)
        upper = letters_from(model, resid, layer, batch.attention_mask, letters)
    torch.testing.assert_close(upper, full, atol=1e-5, rtol=1e-5)


def test_an_unreproducible_head_falls_back_to_full_logits(gemma, fresh_checks, monkeypatch, caplog):
    model, batch, letters = gemma
    # pretend TransformerLens declared no transform: the letter-only maths then miss the cap
    monkeypatch.setattr(model.adapter, "apply_output_logits_transform", lambda logits: logits)
    with torch.inference_mode(), caplog.at_level("WARNING", logger="roleprobe.steering.prefix"):
        assert not letter_only_supported(model)
        scored = last_letter_logits(model, batch.input_ids, batch.attention_mask, letters)
        resid = resid_at(model, batch.input_ids, batch.attention_mask, 1)
        upper = letters_from(model, resid, 1, batch.attention_mask, letters)
        full = _full(model, batch.input_ids, batch.attention_mask, letters)
    assert "full logits instead" in caplog.text
    torch.testing.assert_close(scored, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(upper, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(NotImplementedError, match="full_logits=True"):
        project_letters(model, torch.zeros(1, 64), letters)


def test_head_check_runs_inside_a_steer_on_another_batch(gemma, fresh_checks):
    model, batch, letters = gemma
    d = torch.randn(64)
    mask = batch.attention_mask
    with (
        torch.inference_mode(),
        rp.steer(model, rp.Ablation(d), rp.Addition(d, 1, 2.0), attention_mask=mask),
    ):
        ours = letter_logits(model, batch.input_ids, mask, letters)  # probes first
        full = _full(model, batch.input_ids, mask, letters)
    torch.testing.assert_close(ours, full, atol=1e-5, rtol=1e-5)


def test_output_transform_is_the_softcap_and_identity_without_one(gemma, deep_model):
    model, _, _ = gemma
    x = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(output_transform(model, x), torch.tanh(x))
    assert torch.equal(output_transform(deep_model, x), x)
    assert letter_only_supported(deep_model)
