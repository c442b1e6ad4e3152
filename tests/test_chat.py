import pytest
import torch

import roleprobe as rp
from roleprobe.chat import ChatTemplate, chat_ids, encode_chat, left_pad


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
