import datetime

import pytest
import torch

import _chat_templates as T
import roleprobe as rp
from roleprobe.model.chat import DATE_STRING, ChatTemplate, chat_ids, encode_chat, left_pad
from roleprobe.model.tiny import CHATML_TEMPLATE


@pytest.fixture(scope="module")
def tok():
    return rp.tiny_tokenizer()


def test_left_pad_pads_on_the_left():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("bad", [[], [[]], [[1], []]])
def test_left_pad_rejects_empty(bad):
    with pytest.raises(ValueError, match="empty"):
        left_pad(bad, pad_id=0)


def test_chat_ids_use_template_with_generation_prompt_and_single_bos(tok):
    ids = chat_ids(tok, "Hello")
    assert tok.decode(ids) == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id


def test_template_suffix_is_post_instruction_tokens(tok):
    template = ChatTemplate.from_tokenizer(tok)
    assert "".join(template.post_instruction_tokens(tok)) == "<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(list(template.prefix_ids)) == "<|im_start|>user\n"
    assert template.n_post == 13  # byte-level: 2 specials + "\n" + "assistant" + "\n"


def test_system_prompt_goes_into_the_prefix(tok):
    template = ChatTemplate.from_tokenizer(tok, system="Be brief.")
    assert tok.decode(list(template.prefix_ids)).startswith("<|im_start|>system\nBe brief.")
    batch = encode_chat(tok, ["Hi"], system="Be brief.")
    assert "Be brief." in tok.decode(batch.input_ids[0].tolist())


def test_encode_chat_left_pads_and_aligns_post_instruction_positions(tok):
    prompts = ["Hi", "A much longer instruction than the first"]
    batch = encode_chat(tok, prompts)
    template = ChatTemplate.from_tokenizer(tok)
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[1].all()
    post = batch.input_ids[:, batch.post_instruction_positions]
    assert post.tolist() == [list(template.suffix_ids)] * 2
    for row, text in enumerate(prompts):
        instr = batch.input_ids[row][batch.instruction_mask[row].bool()]
        assert tok.decode(instr.tolist()) == text
        real = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert real == chat_ids(tok, text)
    assert (batch.instruction_mask <= batch.attention_mask).all()


def test_encode_chat_errors_name_the_input(tok):
    with pytest.raises(ValueError, match="empty"):
        encode_chat(tok, [])
    with pytest.raises(ValueError, match="instruction 1 is empty"):
        encode_chat(tok, ["fine", "   "])
    with pytest.raises(TypeError, match="list of strings"):
        encode_chat(tok, "one string")
    # (under the test suite's runtime type checks, beartype names the parameter first)
    with pytest.raises(TypeError, match="instruction"):
        encode_chat(tok, [3])
    with pytest.raises(ValueError, match=r"instruction 1 \('x{40}….*limit of 40"):
        encode_chat(tok, ["ok", "x" * 100], max_length=40)


def test_tokenizer_without_chat_template_is_a_clear_error():
    tok = rp.tiny_tokenizer()
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_ids(tok, "Hi")


def test_answer_letter_ids_decode_to_letters(tok):
    ids = rp.answer_letter_ids(tok)
    assert [tok.decode([i]) for i in ids] == ["A", "B", "C", "D"]


def test_answer_letter_must_be_single_token(tok):
    with pytest.raises(ValueError, match="not a single token"):
        rp.answer_letter_ids(tok, letters=["AB"])


def test_chat_batch_to_device(tok):
    batch = encode_chat(tok, ["Hi"]).to("cpu")
    assert batch.input_ids.device == torch.device("cpu") and len(batch) == 1


# ------------------------------------------------------------- system-turn policy ----------
# The paper formats every family without a system turn; the tokenizers' own templates add a
# default one (Qwen2.5, SmolLM2) or a dated one (Llama-3.1/3.2). See tests/_chat_templates.py.


@pytest.fixture(scope="module")
def families():
    return {
        "llama": T.llama32_tokenizer(),
        "qwen": T.qwen25_tokenizer(),
        "gemma": T.gemma2_tokenizer(),
    }


@pytest.mark.parametrize("family", ["llama", "qwen", "gemma"])
def test_none_renders_exactly_the_papers_format(families, family):
    tok = families[family]
    paper = T.PAPER_FORMATS[family]
    template = ChatTemplate.from_tokenizer(tok, system="none")
    assert template.system == "none"
    assert template.render(tok) == paper
    assert template.render(tok, "What is law?") == paper.replace("{instruction}", "What is law?")
    # token ids: the paper's string encoded as the chat template is (no second BOS)
    expected = tok(paper.replace("{instruction}", "Hi"), add_special_tokens=False)["input_ids"]
    assert chat_ids(tok, "Hi", system="none") == expected
    assert encode_chat(tok, ["Hi"], system="none").input_ids[0].tolist() == expected
    suffix = paper[paper.index("{instruction}") + len("{instruction}") :]
    assert "".join(template.post_instruction_tokens(tok)) == suffix
    assert [tok.decode([i]) for i in rp.answer_letter_ids(tok, system="none")] == list("ABCD")


@pytest.mark.parametrize(
    ("family", "default_text"),
    [
        ("llama", "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"),
        ("qwen", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."),
    ],
)
def test_default_keeps_the_templates_default_system_turn(families, family, default_text):
    tok = families[family]
    template = ChatTemplate.from_tokenizer(tok)  # system="default"
    assert template.system == "default" and default_text in template.render(tok)
    assert ChatTemplate.from_tokenizer(tok, None).render(tok) == template.render(tok)
    # "default" is the template as is, with the date pinned
    messages = [{"role": "user", "content": "Hi"}]
    as_is = tok.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
        date_string=DATE_STRING,
    )
    assert chat_ids(tok, "Hi") == list(as_is) == chat_ids(tok, "Hi", system=None)
    assert template.render(tok) != ChatTemplate.from_tokenizer(tok, "none").render(tok)


def test_default_is_unchanged_for_templates_without_a_default_turn(tok, families):
    for tokenizer in (tok, families["gemma"]):
        default = ChatTemplate.from_tokenizer(tokenizer, "default")
        none = ChatTemplate.from_tokenizer(tokenizer, "none")
        assert default.render(tokenizer) == none.render(tokenizer)
        assert (default.prefix_ids, default.suffix_ids) == (none.prefix_ids, none.suffix_ids)
        assert default.turn.mode == none.turn.mode == "plain"


@pytest.mark.parametrize("family", ["llama", "qwen"])
def test_a_system_text_fills_the_system_turn(families, family):
    tok = families[family]
    template = ChatTemplate.from_tokenizer(tok, system="You are a lawyer.")
    text = template.render(tok)
    assert template.system == "You are a lawyer." and "You are a lawyer.<" in text
    assert "You are Qwen" not in text
    assert text.endswith(T.PAPER_FORMATS[family].split("{instruction}")[1])
    assert "You are a lawyer." in tok.decode(chat_ids(tok, "Hi", system="You are a lawyer."))


def test_a_system_text_is_refused_where_the_template_rejects_system_turns(families):
    with pytest.raises(ValueError, match=r"does not accept a system turn \(System role not"):
        ChatTemplate.from_tokenizer(families["gemma"], system="You are a lawyer.")
    with pytest.raises(ValueError, match="does not accept a system turn"):
        encode_chat(families["gemma"], ["Hi"], system="You are a lawyer.")


def test_a_system_text_is_refused_where_the_template_drops_it(tok):
    dropping = rp.tiny_tokenizer()
    dropping.chat_template = tok.chat_template.replace(
        "{% for m in messages %}", "{% for m in messages if m['role'] != 'system' %}"
    )
    with pytest.raises(ValueError, match="drops system messages"):
        chat_ids(dropping, "Hi", system="You are a lawyer.")
    assert chat_ids(dropping, "Hi", system="none") == chat_ids(tok, "Hi")


def test_none_refuses_a_default_turn_it_cannot_locate():
    # a default system turn that closes differently from the user turn
    odd = rp.tiny_tokenizer()
    odd.chat_template = (
        "{% if messages[0]['role'] == 'system' %}[SYS]{{ messages[0]['content'] }}[/SYS]\n"
        "{% set messages = messages[1:] %}{% else %}[SYS]Be helpful.[/SYS]\n{% endif %}"
        + CHATML_TEMPLATE
    )
    assert "[SYS]Be helpful." in ChatTemplate.from_tokenizer(odd).render(odd)
    with pytest.raises(ValueError, match=r"cannot remove this chat template's default system"):
        ChatTemplate.from_tokenizer(odd, system="none")
    # a template that rewrites the system text
    upper = T.family_tokenizer(
        T.QWEN25_TEMPLATE.replace("messages[0]['content']", "messages[0]['content'] | upper")
    )
    with pytest.raises(ValueError, match="changes the system text"):
        chat_ids(upper, "Hi", system="none")


@pytest.mark.parametrize("bad", ["", "   "])
def test_blank_system_text_is_refused(tok, bad):
    with pytest.raises(ValueError, match="system is empty"):
        chat_ids(tok, "Hi", system=bad)


def test_chat_template_records_and_checks_the_policy(tok, families):
    assert ChatTemplate((1,), (2,)).system == "default"
    template = ChatTemplate.from_tokenizer(families["qwen"], "none")
    assert template.turn.policy == "none" and "You are Qwen" in template.turn.removed
    assert template.date_string == DATE_STRING
    with pytest.raises(ValueError, match="does not match"):
        ChatTemplate((1,), (2,), "default", template.turn)
    # a template built by hand resolves its policy on use
    by_hand = ChatTemplate(template.prefix_ids, template.suffix_ids, "none")
    assert by_hand.render(families["qwen"]) == T.PAPER_FORMATS["qwen"]


@pytest.mark.parametrize("system", ["default", "none", "Be brief."])
def test_renderings_do_not_depend_on_the_date(families, monkeypatch, system):
    tok = families["llama"]
    messages = [{"role": "user", "content": "Hi"}]
    seen, texts = [], []
    for day in (datetime.datetime(2024, 12, 31, 23, 59), datetime.datetime(2026, 3, 1, 0, 1)):
        T.set_clock(monkeypatch, day)
        # the template reads the clock when no date is passed (the footgun) ...
        texts.append(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        # ... but roleprobe's renderings are bit-identical
        template = ChatTemplate.from_tokenizer(tok, system)
        seen.append((chat_ids(tok, "Hi", system), template.render(tok), template.suffix_ids))
    assert "Today Date: 31 Dec 2024" in texts[0] and "Today Date: 01 Mar 2026" in texts[1]
    assert seen[0] == seen[1]
    assert ("26 Jul 2024" in seen[0][1]) == (system != "none")
