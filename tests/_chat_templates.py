"""Chat templates of the paper's families on the byte-level tiny tokenizer, to test the
system-turn policy (the Llama, Qwen and Gemma ones are :mod:`roleprobe.model.families`'):

* ``LLAMA32_TEMPLATE``: Meta's Llama-3.2 format, with its always-rendered system block and
  "Today Date" from ``date_string`` or, when absent, ``strftime_now`` (the clock).
* ``QWEN25_TEMPLATE``: ChatML with Qwen2.5's default system turn; it uses only the tiny
  tokenizer's own special tokens, so it also runs on the tiny model.
* ``GEMMA2_TEMPLATE``: Gemma-2's format, which raises on a system message.
* ``DATED_CHATML_TEMPLATE``: ChatML with a dated default system turn (like Llama-3.2's),
  in the tiny model's vocabulary, for date-invariance tests on the model.

The authors' formats (``model_utils/*_model.py`` at cfa1e6e) are in ``PAPER_FORMATS``, with
BOS as their tokenizers add it.
"""

import datetime

from transformers.utils import chat_template_utils

import roleprobe as rp
from roleprobe.model.families import GEMMA2_TEMPLATE, LLAMA3_TEMPLATE, QWEN2_TEMPLATE

# The families' own templates (src/roleprobe/model/families.py) serve here too.
LLAMA32_TEMPLATE = LLAMA3_TEMPLATE
QWEN25_TEMPLATE = QWEN2_TEMPLATE


DATED_CHATML_TEMPLATE = (
    "{%- if not date_string is defined %}"
    '{%- set date_string = strftime_now("%d %b %Y") %}{%- endif %}'
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|im_start|>system\\nToday Date: ' + date_string + '\\n' + system_message "
    "+ '<|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

PAPER_FORMATS = {
    "llama": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{instruction}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "qwen": "<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
    "gemma": "<bos><start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model\n",
}


def family_tokenizer(template: str, specials: tuple[str, ...] = (), bos: str | None = None):
    """The byte-level tiny tokenizer with ``template``, extra special tokens and a BOS."""
    tokenizer = rp.tiny_tokenizer()
    if specials:
        tokenizer.add_tokens(list(specials), special_tokens=True)
    if bos is not None:
        tokenizer.bos_token = bos
    tokenizer.chat_template = template
    return tokenizer


def llama32_tokenizer():
    specials = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    return family_tokenizer(LLAMA32_TEMPLATE, specials, bos="<|begin_of_text|>")


def qwen25_tokenizer():
    return family_tokenizer(QWEN25_TEMPLATE)


def gemma2_tokenizer():
    return family_tokenizer(GEMMA2_TEMPLATE, ("<bos>", "<start_of_turn>", "<end_of_turn>"), "<bos>")


def set_clock(monkeypatch, day: datetime.datetime) -> None:
    """Make ``strftime_now`` in every chat template read ``day`` as today.

    transformers 5.23 compiles templates with a ``strftime_now(format)`` global that calls
    ``datetime.now()`` of ``transformers.utils.chat_template_utils`` at render time.
    """

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return day

    monkeypatch.setattr(chat_template_utils, "datetime", Frozen)
