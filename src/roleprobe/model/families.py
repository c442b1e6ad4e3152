"""Tiny random models of the model families users run, each with its family's chat format.

The paper's results come from Gemma-2, Llama-3.2 and Qwen chat models; most users will also
try Mistral, Phi-3 and Gemma-3. Each entry of :data:`FAMILIES` builds a seeded random model
from the family's own ``transformers`` config class (so TransformerLens picks the family's
own adapter: Gemma-2's soft-capping and post-norms, Phi-3's fused projections, Qwen-2's
attention biases, ...) and a byte-level tokenizer carrying the family's special tokens and a
chat template written here to reproduce the family's documented format. The conformance
suite (``tests/test_families.py``, :mod:`roleprobe.experiments.conformance`) runs every roleprobe
operation on each of them against a plain ``transformers`` reference.

Load one with ``roleprobe.load_model("tiny-random-gemma2")``. The weights are random: use
them for tests, never for conclusions.

Footguns the families differ in, and that these models reproduce:

* **BOS.** Llama-3, Gemma and Mistral templates write BOS themselves and roleprobe encodes
  templates without special tokens, so BOS appears once; Qwen-2 has no BOS at all; Phi-3's
  template writes none (the real tokenizer only adds ``<s>`` to plain text). The tokenizers
  set ``add_bos_token=True`` where the family has a BOS only so that TransformerLens keeps
  them instead of re-loading a tokenizer from the hub by name.
* **Default system turns.** Llama-3.1/3.2 always render a system block with a
  "Today Date" line (``date_string`` if passed, else today's date); Qwen-2.5 inserts
  "You are Qwen, created by Alibaba Cloud..." when no system message is given.
* **No system role.** Gemma-2's template raises on a system message; Gemma-3 prepends the
  system text to the first user turn; Mistral prepends it to the last user message.
* **A space before the answer.** Mistral's template writes ``" " + answer`` after
  ``[/INST]``; its tokenizer (like the real SentencePiece one) encodes a bare letter with a
  leading space marker, so ``"A"`` is one token either way.
* **The end of a turn is not always EOS.** Gemma closes a turn with ``<end_of_turn>`` (its
  EOS is ``<eos>``), Phi-3 with ``<|end|>`` (EOS ``<|endoftext|>``); the real checkpoints'
  ``generation_config.eos_token_id`` lists both, and so do these models'
  (:attr:`Family.stop_tokens`).

Example:
    >>> model = rp.load_model("tiny-random-gemma2", device="cpu")
    >>> FAMILIES["gemma2"].suffix
    '<end_of_turn>\\n<start_of_turn>model\\n'
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from roleprobe.model.tiny import TokenizerSpec, byte_level_tokenizer

PREFIX = "tiny-random-"

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if date_string is not defined %}"
    "{%- if strftime_now is defined %}{%- set date_string = strftime_now('%d %b %Y') %}"
    "{%- else %}{%- set date_string = '26 Jul 2024' %}{%- endif %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

GEMMA2_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- ' ' + message['content'] | trim + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """One model family of the conformance suite.

    Attributes:
        name: the short name (``load_model(f"tiny-random-{name}")``).
        config: ``(vocab_size, token ids, seed-free shape) -> transformers config``.
        model_class: the ``transformers`` causal-LM class.
        tokenizer: the tokenizer's special tokens and template.
        suffix: the family's documented post-instruction text (from the end of the user's
            instruction to the end of the generation prompt).
        paper_format: the prompt ``"{instruction}"`` rendered with no system turn
            (``system="none"``): the authors' format for llama, gemma2 and qwen2 (their
            ``model_utils/*_model.py``), the family's documented one otherwise.
        post_norms: whether sub-layer outputs are normalised before the residual add
            (Gemma-2/3), where the paper's and the stream's ablation points differ.
        notes: what this tiny model reproduces, and what it does not.
        stop_tokens: what the real checkpoint's ``generation_config.eos_token_id`` lists
            (gemma-2-it: ``<eos>`` and ``<end_of_turn>``), set on the tiny model's
            generation config so that decoding stops where the real model's does.
    """

    name: str
    config: Callable[[int, dict[str, Any]], PretrainedConfig]
    model_class: type[PreTrainedModel]
    tokenizer: TokenizerSpec
    suffix: str
    paper_format: str
    post_norms: bool
    notes: str
    stop_tokens: tuple[str, ...]

    @property
    def model_name(self) -> str:
        """The name :func:`roleprobe.load_model` knows this family's tiny model by."""
        return PREFIX + self.name


_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "initializer_range": 0.1,
}


def _llama(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    return LlamaConfig(
        vocab_size=vocab,
        **_SHAPE,
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 128,
        },
        **ids,
    )


def _gemma2(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    # Caps far below the real 50/30 so that they bite on a tiny random model's small logits.
    return Gemma2Config(
        vocab_size=vocab,
        **_SHAPE,
        head_dim=16,
        query_pre_attn_scalar=16,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=3.0,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        **ids,
    )


def _gemma3(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    return Gemma3TextConfig(
        vocab_size=vocab,
        **_SHAPE,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        **ids,
    )


def _qwen2(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    return Qwen2Config(vocab_size=vocab, **_SHAPE, tie_word_embeddings=True, **ids)


def _mistral(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    return MistralConfig(vocab_size=vocab, **_SHAPE, tie_word_embeddings=False, **ids)


def _phi3(vocab: int, ids: dict[str, Any]) -> PretrainedConfig:
    return Phi3Config(vocab_size=vocab, **_SHAPE, tie_word_embeddings=False, **ids)


_GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            _llama,
            LlamaForCausalLM,
            TokenizerSpec(
                (
                    "<|begin_of_text|>",
                    "<|end_of_text|>",
                    "<|start_header_id|>",
                    "<|end_header_id|>",
                    "<|eot_id|>",
                    "<|finetune_right_pad_id|>",
                ),
                bos="<|begin_of_text|>",
                eos="<|eot_id|>",
                pad="<|finetune_right_pad_id|>",
                unk="<|end_of_text|>",
                template=LLAMA3_TEMPLATE,
            ),
            suffix="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            paper_format="<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
            "{instruction}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            post_norms=False,
            notes="Llama-3.2 style: tied embeddings, llama3 RoPE scaling, grouped-query "
            "attention; the template's system block carries a 'Today Date' line.",
            stop_tokens=("<|end_of_text|>", "<|eot_id|>"),  # 3.2-Instruct: also <|eom_id|>
        ),
        Family(
            "gemma2",
            _gemma2,
            Gemma2ForCausalLM,
            TokenizerSpec(_GEMMA_SPECIALS, "<bos>", "<eos>", "<pad>", "<unk>", GEMMA2_TEMPLATE),
            suffix="<end_of_turn>\n<start_of_turn>model\n",
            paper_format="<bos><start_of_turn>user\n{instruction}<end_of_turn>\n"
            "<start_of_turn>model\n",
            post_norms=True,
            notes="Gemma-2: attention and final logit soft-capping (caps lowered to 5 and 3 "
            "so that they act on tiny logits), post-attention/post-feed-forward norms, "
            "alternating sliding-window (8 tokens here) and global attention; the template "
            "writes <bos> and refuses a system turn.",
            stop_tokens=("<eos>", "<end_of_turn>"),
        ),
        Family(
            "gemma3",
            _gemma3,
            Gemma3ForCausalLM,
            TokenizerSpec(_GEMMA_SPECIALS, "<bos>", "<eos>", "<pad>", "<unk>", GEMMA3_TEMPLATE),
            suffix="<end_of_turn>\n<start_of_turn>model\n",
            paper_format="<bos><start_of_turn>user\n{instruction}<end_of_turn>\n"
            "<start_of_turn>model\n",
            post_norms=True,
            notes="Gemma-3 text model: query/key norms, post-norms, sliding-window (8 tokens "
            "here) and global layers; the template prepends a system text to the first "
            "user turn.",
            stop_tokens=("<eos>", "<end_of_turn>"),
        ),
        Family(
            "qwen2",
            _qwen2,
            Qwen2ForCausalLM,
            TokenizerSpec(
                ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                bos=None,
                eos="<|im_end|>",
                pad="<|endoftext|>",
                unk="<|endoftext|>",
                template=QWEN2_TEMPLATE,
            ),
            suffix="<|im_end|>\n<|im_start|>assistant\n",
            paper_format="<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
            post_norms=False,
            notes="Qwen-2.5 style: query/key/value biases, tied embeddings, no BOS; ChatML "
            "with the default 'You are Qwen' system turn.",
            stop_tokens=("<|im_end|>", "<|endoftext|>"),
        ),
        Family(
            "mistral",
            _mistral,
            MistralForCausalLM,
            TokenizerSpec(
                ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
                bos="<s>",
                eos="</s>",
                pad=None,
                unk="<unk>",
                template=MISTRAL_TEMPLATE,
                prefix_space=True,
            ),
            suffix="[/INST]",
            paper_format="<s>[INST] {instruction}[/INST]",
            post_norms=False,
            notes="Mistral-7B-Instruct-v0.3 style: [INST]/[/INST] control tokens, system text "
            "prepended to the last user message, no pad token, untied embeddings.",
            stop_tokens=("</s>",),
        ),
        Family(
            "phi3",
            _phi3,
            Phi3ForCausalLM,
            TokenizerSpec(
                (
                    "<unk>",
                    "<s>",
                    "</s>",
                    "<|endoftext|>",
                    "<|system|>",
                    "<|user|>",
                    "<|assistant|>",
                    "<|end|>",
                ),
                bos="<s>",
                eos="<|endoftext|>",
                pad="<|endoftext|>",
                unk="<unk>",
                template=PHI3_TEMPLATE,
            ),
            suffix="<|end|>\n<|assistant|>\n",
            paper_format="<|user|>\n{instruction}<|end|>\n<|assistant|>\n",
            post_norms=False,
            notes="Phi-3 style: fused qkv and gate/up projections, untied embeddings; the "
            "template writes no BOS.",
            stop_tokens=("<|endoftext|>", "<|assistant|>", "<|end|>"),
        ),
    )
}


def get_family(name: str) -> Family:
    """The family called ``name`` (``"gemma2"`` or ``"tiny-random-gemma2"``)."""
    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    if key not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; use one of {sorted(FAMILIES)}")
    return FAMILIES[key]


def family_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with the family's special tokens and chat template."""
    family = get_family(name)
    return byte_level_tokenizer(family.tokenizer, f"roleprobe/{family.model_name}")


def family_hf_model(name: str, seed: int = 0, n_layers: int = 2) -> PreTrainedModel:
    """A seeded random ``transformers`` model of the family, matching its tokenizer.

    Args:
        name: a key of :data:`FAMILIES` (or ``"tiny-random-<family>"``).
        seed: seed of the random initialisation (same seed, same weights).
        n_layers: number of decoder layers (Gemma's alternate sliding and global).
    """
    family = get_family(name)
    if n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers}")
    tokenizer = family_tokenizer(name)
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = family.config(len(tokenizer), ids)
    config.num_hidden_layers = n_layers
    config.architectures = [family.model_class.__name__]  # TransformerLens picks its adapter
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        config.layer_types = [
            "full_attention" if i % 2 else "sliding_attention" for i in range(n_layers)
        ]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.model_class(config)
    vocab = tokenizer.get_vocab()
    stops = [vocab[token] for token in family.stop_tokens]
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if family.post_norms:  # Gemma's soft-capped attention: eager, as the authors load it
        model.set_attn_implementation("eager")
    return model.eval()
