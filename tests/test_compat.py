"""TransformerLens work-arounds: a float64 model gives finite, float32-equal results on
left-padded batches."""

import torch

import roleprobe as rp
from roleprobe.model.compat import keep_float64_softmax

PROMPTS = ["Hi", "Describe the water cycle briefly, in three short sentences please."]


def _resid(model):
    batch = rp.encode_chat(model.tokenizer, PROMPTS)
    _, cache = model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    real = batch.attention_mask.bool()
    return [cache[f"blocks.{layer}.hook_resid_pre"][real] for layer in range(model.cfg.n_layers)]


def test_a_float64_model_matches_float32_on_a_left_padded_batch():
    f64 = rp.load_model("tiny-random", device="cpu", dtype="float64")
    f32 = rp.load_model("tiny-random", device="cpu", dtype="float32")
    for layer, (a, b) in enumerate(zip(_resid(f64), _resid(f32), strict=True)):
        assert torch.isfinite(a).all(), f"non-finite float64 activations at layer {layer}"
        torch.testing.assert_close(a.float(), b, atol=1e-5, rtol=1e-4)
    rd = rp.compute_directions(f64, roles=["lawyer"], positions=[-1], progress=False)
    assert torch.isfinite(rd.vectors).all()


def test_without_the_work_around_float64_gives_nan(monkeypatch):
    """The test above can fail: the bridge's own softmax turns the padding into NaN."""
    import roleprobe.model.models as models

    monkeypatch.setattr(models, "keep_float64_softmax", lambda bridge: 0)
    raw = rp.load_model("tiny-random", device="cpu", dtype="float64")
    assert not all(torch.isfinite(x).all() for x in _resid(raw))
    assert keep_float64_softmax(raw) == raw.cfg.n_layers  # one attention module a block
    assert keep_float64_softmax(raw) == 0  # idempotent
    assert all(torch.isfinite(x).all() for x in _resid(raw))
