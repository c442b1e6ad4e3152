"""Where ``rp.generate`` (and so ``rp.patchscope``) stops: at the end of the assistant's turn.

A chat model ends its turn with the template's end-of-turn token (Gemma's ``<end_of_turn>``,
Phi-3's ``<|end|>``), which need not be the tokenizer's EOS; ``transformers`` stops at every
id of the model's ``generation_config.eos_token_id``. The tests force the greedy tokens with
a logit hook (a script per row, then a filler forever) and check that the text ends where
the script stops, instead of running on into an invented next turn.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
import torch

import roleprobe as rp
from roleprobe.model.chat import ChatTemplate
from roleprobe.model.families import FAMILIES, family_hf_model, family_tokenizer
from roleprobe.steering.generation import stop_token_ids
from roleprobe.vectors.readouts import patchscope

# What each family's template closes an assistant turn with.
END_OF_TURN = {
    "llama": "<|eot_id|>",
    "gemma2": "<end_of_turn>",
    "gemma3": "<end_of_turn>",
    "qwen2": "<|im_end|>",
    "mistral": "</s>",
    "phi3": "<|end|>",
}
# What the real checkpoints' generation_config.json lists as eos_token_id (Llama-3.2's
# <|eom_id|> is not in the tiny vocabulary).
GENERATION_EOS = {
    "llama": ["<|end_of_text|>", "<|eot_id|>"],  # Llama-3.2-*-Instruct: [128001, 128008, 128009]
    "gemma2": ["<eos>", "<end_of_turn>"],  # gemma-2-*-it: [1, 107]
    "gemma3": ["<eos>", "<end_of_turn>"],  # gemma-3-*-it: [1, 106]
    "qwen2": ["<|im_end|>", "<|endoftext|>"],  # Qwen2.5-*-Instruct: [151645, 151643]
    "mistral": ["</s>"],  # Mistral-7B-Instruct-v0.3: 2
    "phi3": ["<|endoftext|>", "<|assistant|>", "<|end|>"],  # Phi-3-mini-*-instruct
}
FILLER = "x"  # what the scripted model says after its script: an invented next turn


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request):
    return request.param, rp.load_model(f"tiny-random-{request.param}", device="cpu")


def _ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    ids = [int(i) for i in tokenizer.convert_tokens_to_ids(list(tokens))]
    assert tokenizer.convert_ids_to_tokens(ids) == list(tokens), tokens
    return ids


@contextmanager
def scripted(model, scripts: Sequence[Sequence[int]], filler: int) -> Iterator[None]:
    """Make greedy decoding emit ``scripts[row]`` token by token, then ``filler`` forever.

    A forward pass over more than one position (the prompt) starts a new generation.
    """
    step = 0

    def force(logits: torch.Tensor, hook) -> torch.Tensor:
        nonlocal step
        if logits.shape[1] > 1:
            step = 0
        wanted = [s[step] if step < len(s) else filler for s in scripts]
        out = logits.clone()
        out[:, -1] = -30.0
        out[torch.arange(len(wanted)), -1, torch.tensor(wanted)] = 30.0
        step += 1
        return out

    with model.hooks(fwd_hooks=[("unembed.hook_out", force)]):
        yield


def test_the_template_end_of_turn_is_found(family_model):
    family, model = family_model
    tok = model.tokenizer
    for system in ("default", "none"):
        template = ChatTemplate.from_tokenizer(tok, system)
        assert template.end_of_turn_id(tok) == tok.convert_tokens_to_ids(END_OF_TURN[family])


def test_tiny_families_list_their_checkpoints_eos_ids():
    for family in FAMILIES:
        listed = family_hf_model(family).generation_config.eos_token_id
        tok = family_tokenizer(family)
        listed = [listed] if isinstance(listed, int) else listed
        assert [tok.convert_ids_to_tokens(i) for i in listed] == GENERATION_EOS[family], family


def test_generation_stops_at_the_end_of_turn(family_model):
    """Gemma and Phi-3 end a turn with a token that is not the tokenizer's EOS."""
    family, model = family_model
    tok = model.tokenizer
    script = _ids(tok, ["O", "K", END_OF_TURN[family]])
    with scripted(model, [script], _ids(tok, [FILLER])[0]):
        assert rp.generate(model, "Hi", max_new_tokens=8) == ["OK"]


def test_generation_stops_at_every_generation_config_eos(family_model):
    family, model = family_model
    tok = model.tokenizer
    stops = sorted({*GENERATION_EOS[family], END_OF_TURN[family]})
    scripts = [_ids(tok, ["O", "K", stop]) for stop in stops]
    with scripted(model, scripts, _ids(tok, [FILLER])[0]):
        texts = rp.generate(model, ["Hi"] * len(stops), max_new_tokens=8)
    assert texts == ["OK"] * len(stops), dict(zip(stops, texts, strict=True))


def test_stop_ids_are_the_union_of_config_tokenizer_and_template(family_model):
    family, model = family_model
    tok = model.tokenizer
    template = ChatTemplate.from_tokenizer(tok)
    want = {*GENERATION_EOS[family], END_OF_TURN[family], tok.eos_token}
    assert set(stop_token_ids(model, template)) == set(_ids(tok, sorted(want)))


def test_a_generation_config_stop_id_alone_stops_generation():
    """An id only the HF model's generation config lists (here a plain byte) stops too."""
    model = rp.load_model("tiny-random", device="cpu")
    tok = model.tokenizer
    stop = _ids(tok, ["!"])[0]
    model.original_model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    with scripted(model, [_ids(tok, ["O", "K", "!"])], _ids(tok, [FILLER])[0]):
        assert rp.generate(model, "Hi", max_new_tokens=8) == ["OK"]
    model.original_model.generation_config.eos_token_id = tok.eos_token_id
    with scripted(model, [_ids(tok, ["O", "K", "!"])], _ids(tok, [FILLER])[0]):
        assert rp.generate(model, "Hi", max_new_tokens=6) == ["OK!xxx"]


def test_each_row_stops_at_its_own_end_of_turn():
    model = rp.load_model("tiny-random-gemma2", device="cpu")
    tok = model.tokenizer
    scripts = [
        _ids(tok, ["A", "<end_of_turn>"]),
        _ids(tok, ["B", "C", "D", "<end_of_turn>"]),
        _ids(tok, ["<end_of_turn>"]),
        _ids(tok, ["E", "F"]),  # never stops: max_new_tokens cuts it
    ]
    with scripted(model, scripts, _ids(tok, [FILLER])[0]):
        texts = rp.generate(model, ["Hi", "Hello", "Hey", "Yo"], max_new_tokens=5)
    assert texts == ["A", "BCD", "", "EFxxx"]


def test_patchscope_answers_stop_at_the_end_of_turn():
    model = rp.load_model("tiny-random-gemma3", device="cpu")
    tok = model.tokenizer
    d = torch.ones(int(model.cfg.d_model))
    with scripted(model, [_ids(tok, ["O", "K", "<end_of_turn>"])], _ids(tok, [FILLER])[0]):
        result = patchscope(model, d, layer=1, max_new_tokens=8)
    assert (result.unsteered, result.steered) == ("OK", "OK")
