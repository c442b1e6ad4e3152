"""The conformance suite: every family's tiny model through every roleprobe operation.

One parametrised test per (family, check) from
:data:`roleprobe.experiments.conformance.CHECKS`, plus
the chat formats written out as the families document them, and guards showing that the
checks can fail (a wrong reference, Gemma-2's soft-cap, the two ablation placements).
"""

import time

import pandas as pd
import pytest
import torch

import roleprobe as rp
from roleprobe.experiments import conformance
from roleprobe.experiments.conformance import CHECKS, ConformanceError, Subject
from roleprobe.model.chat import answer_letter_ids, encode_chat
from roleprobe.model.families import FAMILIES, family_hf_model, family_tokenizer
from roleprobe.steering.prefix import final_last

HI = [{"role": "user", "content": "Hi"}]
SYSTEM = [{"role": "system", "content": "Be brief."}, *HI]
DATE = "26 Jul 2024"
LLAMA_SYSTEM = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n{system}<|eot_id|>"
)
LLAMA_TURN = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
LLAMA_GEN = "<|start_header_id|>assistant<|end_header_id|>\n\n"
QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
GEMMA = "<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"

# What each family's documentation says a one-turn prompt (and one with a system text) is.
DOCUMENTED = {
    "llama": (
        LLAMA_SYSTEM.format(date=DATE, system="") + LLAMA_TURN + LLAMA_GEN,
        LLAMA_SYSTEM.format(date=DATE, system="Be brief.") + LLAMA_TURN + LLAMA_GEN,
    ),
    "gemma2": (GEMMA.format(text="Hi"), "System role not supported"),
    "gemma3": (GEMMA.format(text="Hi"), GEMMA.format(text="Be brief.\n\nHi")),
    "qwen2": tuple(
        f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
        for s in (QWEN_DEFAULT, "Be brief.")
    ),
    "mistral": ("<s>[INST] Hi[/INST]", "<s>[INST] Be brief.\n\nHi[/INST]"),
    "phi3": (
        "<|user|>\nHi<|end|>\n<|assistant|>\n",
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
    ),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def subject(request):
    return Subject.load(request.param)


@pytest.mark.parametrize("check", list(CHECKS))
def test_conformance(subject, check):
    CHECKS[check](subject)


def test_every_family_is_documented_and_loads_by_name():
    assert set(DOCUMENTED) == set(FAMILIES)
    names = {m.name for m in rp.available_models()}
    assert {"tiny-random", *(f"tiny-random-{f}" for f in FAMILIES)} <= names


@pytest.mark.parametrize("family", list(FAMILIES))
def test_chat_format_is_the_documented_one(family):
    tokenizer = family_tokenizer(family)
    plain, with_system = DOCUMENTED[family]

    def render(messages):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False, date_string=DATE
        )

    assert render(HI) == plain
    if family == "gemma2":
        with pytest.raises(Exception, match=with_system):
            render(SYSTEM)
    else:
        assert render(SYSTEM) == with_system


def test_llama_date_is_today_unless_given():
    tokenizer = family_tokenizer("llama")
    text = tokenizer.apply_chat_template(HI, add_generation_prompt=True, tokenize=False)
    assert f"Today Date: {time.strftime('%d %b %Y')}\n" in text


def test_mistral_letters_are_the_tokens_after_inst():
    """The template writes " A" after [/INST]; the tokenizer encodes both as one token."""
    tokenizer = family_tokenizer("mistral")
    letters = answer_letter_ids(tokenizer)
    assert [tokenizer.convert_ids_to_tokens(i) for i in letters] == ["ĠA", "ĠB", "ĠC", "ĠD"]


def test_the_tiny_random_name_is_still_the_chatml_llama():
    model = rp.load_model("tiny-random", device="cpu")
    assert type(model.original_model).__name__ == "LlamaForCausalLM"
    assert "<|im_start|>" in model.tokenizer.chat_template


def test_unknown_family_and_multi_device_are_refused():
    with pytest.raises(ValueError, match=r"unknown tiny family model 'tiny-random-gpt9'.*gemma2"):
        rp.load_model("tiny-random-gpt9", device="cpu")
    with pytest.raises(ValueError, match="n_devices=2 is for hub models"):
        rp.load_model("tiny-random-qwen2", device="cpu", n_devices=2)
    with pytest.raises(ValueError, match="unknown model family"):
        family_hf_model("gpt9")


def test_same_seed_same_weights():
    a, b, c = (family_hf_model("phi3", seed=s) for s in (0, 0, 1))
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert any(not torch.equal(x, z) for x, z in zip(a.parameters(), c.parameters(), strict=True))


@pytest.fixture(scope="module")
def wrong_reference():
    subject = Subject.load("qwen2")
    subject.reference = family_hf_model("qwen2", seed=1)
    return subject


@pytest.mark.parametrize("check", ["bridge_logits", "activation_means", "addition"])
def test_checks_fail_against_another_model(wrong_reference, check):
    with pytest.raises(ConformanceError):
        CHECKS[check](wrong_reference)


@pytest.mark.parametrize("family", ["gemma2", "phi3", "llama"])
def test_generate_stops_fails_when_generation_stops_at_eos_only(monkeypatch, family):
    """Guards the generate_stops check: decoding that stops only at the tokenizer's EOS (as
    roleprobe did) runs past Gemma's <end_of_turn>, Phi-3's <|end|> and Llama's
    <|end_of_text|>."""
    from roleprobe.steering import generation

    monkeypatch.setattr(
        generation, "stop_token_ids", lambda model, template: (model.tokenizer.eos_token_id,)
    )
    with pytest.raises(ConformanceError, match="generate says 'OKxxx'"):
        CHECKS["generate_stops"](Subject.load(family))


def test_gemma2_soft_cap_matters():
    """Guards the letter-score check: without the final soft-cap the letter logits are off
    by more than 0.05 (the cap of the old letter-only path)."""
    model = rp.load_model("tiny-random-gemma2", device="cpu")
    batch = encode_chat(model.tokenizer, list(conformance.PROMPTS))
    letters = answer_letter_ids(model.tokenizer)
    with torch.no_grad():
        final = final_last(model, batch.input_ids, batch.attention_mask)
        raw = final @ model.unembed.original_component.weight[letters].T
        full = model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1, letters]
    assert (raw - full).abs().max() > 0.05


@pytest.mark.parametrize(("family", "differ"), [("gemma2", True), ("llama", False)])
def test_the_two_ablation_placements(family, differ):
    """Guards the ablation checks: the paper's and the stream's hooks differ on Gemma-2 only."""
    hf_model = family_hf_model(family)
    batch = encode_chat(family_tokenizer(family), list(conformance.PROMPTS))
    d = torch.randn(64, generator=torch.Generator().manual_seed(0))
    logits = []
    for at in ("paper", "stream"):
        pre, post = conformance.paper_ablation_hooks(hf_model, d, at)
        with conformance.hf_hooks(pre, post), torch.no_grad():
            logits.append(hf_model(batch.input_ids, attention_mask=batch.attention_mask).logits)
    gap = (logits[0] - logits[1]).abs().max()
    assert (gap > 1e-3) if differ else (gap < 1e-5)


def test_table_marks_passes_and_failures(monkeypatch):
    def broken(subject):
        raise ConformanceError("on purpose")

    monkeypatch.setitem(CHECKS, "broken", broken)
    results = conformance.run_checks(["mistral"], ["chat_template", "broken"])
    assert results["passed"].tolist() == [True, False]
    assert "on purpose" in results["detail"].iloc[1]
    table = conformance.conformance_table(results)
    assert "- **chat_template**: Post-instruction tokens" in table
    assert "| `tiny-random-mistral` | `MistralForCausalLM` | ✓ | ✗ |" in table
    with pytest.raises(ValueError, match="unknown checks"):
        conformance.run_checks(["mistral"], ["nope"])


def test_readme_table_is_what_the_suite_checks():
    """The README's families table is ``conformance_table`` of an all-passing run (which the
    parametrised tests above assert), with Gemma's orthogonalisation refused."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start, end = "<!-- families-table -->\n", "\n<!-- /families-table -->"
    assert start in readme and end in readme, "README lacks the families-table markers"
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    rows = [
        {
            "family": name,
            "check": check,
            "passed": True,
            "detail": "refused" if check == "orthogonalized" and family.post_norms else "ok",
        }
        for name, family in FAMILIES.items()
        for check in CHECKS
    ]
    expected = conformance.conformance_table(pd.DataFrame(rows))
    assert shown == expected, "README families table is stale: python analyses/_families_table.py"
