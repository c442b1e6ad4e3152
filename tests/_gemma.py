"""A tiny random Gemma-2 for tests: soft-capped logits, post-norms, Gemma's chat format.

Built from ``transformers.Gemma2Config`` with the byte-level tiny tokenizer, so it loads in
well under a second. ``final_logit_softcapping`` is small (1.0) so that the cap bends
every logit, and ``tiny_gemma2_hf()`` with the same seed gives bitwise the same weights:
use one copy for the bridge (which edits it in place) and another as the HF reference.
"""

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

import roleprobe as rp

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
SOFTCAP = 1.0


def tiny_gemma2_tokenizer():
    tokenizer = rp.tiny_tokenizer()
    tokenizer.chat_template = GEMMA_TEMPLATE
    return tokenizer


def tiny_gemma2_hf(seed: int = 0, softcap: float | None = SOFTCAP) -> Gemma2ForCausalLM:
    tokenizer = tiny_gemma2_tokenizer()
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=64,
        final_logit_softcapping=softcap,
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Gemma2ForCausalLM(config)
    # Random post-norm gains (Gemma multiplies by 1 + w), so that the norms really rescale
    # coordinates as trained ones do.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        for layer in model.model.layers:
            for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
                norm.weight.normal_(0.0, 0.5)
    return model.eval()


def tiny_gemma2(seed: int = 0, softcap: float | None = SOFTCAP):
    """The bridge over :func:`tiny_gemma2_hf` (CPU, float32)."""
    return rp.wrap_hf_model(
        tiny_gemma2_hf(seed, softcap), tiny_gemma2_tokenizer(), "tiny-gemma2", device="cpu"
    )
