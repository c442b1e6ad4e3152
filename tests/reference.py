"""Slow, independent references for the tests: plain PyTorch hooks on a transformers model."""

import torch

from roleprobe.model.chat import ChatTemplate, chat_ids, encode_chat


def assert_bridge_matches_hf(model, hf_model, prompts, logits_atol, resid_atol):
    """Bridge logits and every ``hook_resid_pre`` equal the plain transformers model's
    logits and hidden states on a left-padded batch (real positions only)."""
    batch = encode_chat(model.tokenizer, prompts)
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
        ref = hf_model(
            batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True
        )
    real = batch.attention_mask.bool()
    assert (logits - ref.logits)[real].abs().max() <= logits_atol
    for layer in range(model.cfg.n_layers):
        diff = cache[f"blocks.{layer}.hook_resid_pre"] - ref.hidden_states[layer]
        assert diff[real].abs().max() <= resid_atol, layer


def reference_means(hf_model, tokenizer, prompts, layers, n_post=None):
    """Mean residual entering each decoder layer at the last ``n_post`` positions.

    One prompt at a time (no padding), forward pre-hooks on ``model.model.layers[l]``,
    float64 sums: shares no code with roleprobe's batched, bridge-based collection.
    """
    n_post = n_post or ChatTemplate.from_tokenizer(tokenizer).n_post
    sums = torch.zeros(n_post, len(layers), hf_model.config.hidden_size, dtype=torch.float64)
    captured = {}

    def grab(index):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            captured[index] = hidden[0, -n_post:].double()

        return hook

    handles = [
        hf_model.model.layers[layer].register_forward_pre_hook(grab(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    try:
        with torch.no_grad():
            for text in prompts:
                hf_model(torch.tensor([chat_ids(tokenizer, text)]))
                for i in range(len(layers)):
                    sums[:, i] += captured[i]
    finally:
        for handle in handles:
            handle.remove()
    return sums / len(prompts)
