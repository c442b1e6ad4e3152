"""Slow, independent references for the tests: plain PyTorch hooks on a transformers model,
and the authors' selection code re-implemented from their files."""

import math

import numpy as np
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


def authors_float32_mean(count, n):
    """``scores.mean()`` of ``n`` float32 scores with ``count`` ones, as CUDA computes it: the
    float32 sum times the float32 reciprocal of ``n`` (torch float32 ops, not numpy)."""
    total = torch.tensor(float(count), dtype=torch.float32)
    return float(total * (torch.tensor(1.0, dtype=torch.float32) / n))


def authors_pick(add, abl, add_alpha1, base_count, n, n_layers, alpha):
    """The (position, layer) the authors' code picks, re-implemented from their files only.

    ``select_direction.py`` (cfa1e6e) scores every (position, layer) — layer 0 included —
    keeps those that pass ``filter_fn`` and writes them sorted by steering score; the table
    notebook's ``get_best_direction`` then takes the first entry with steering ``>=`` and
    ablation ``<`` the baseline rounded to 2 decimals, else the best (for α = 3 the ablation
    values come from the α = 1 file).

    Args:
        add, abl, add_alpha1: ``{(position, layer): count of correct answers}`` of every
            candidate, zero directions included (their counts are the baseline's).
        base_count: correct answers of the baseline; n: questions; n_layers: depth.
        alpha: 1.0 or another value (then ``add_alpha1`` gives the α = 1 list).
    """
    threshold = authors_float32_mean(base_count, n)  # induce_performance_threshold
    cutoff = int(n_layers * (1.0 - 0.2))

    def filtered(steer, ablate):
        entries = []
        for pos in sorted({p for p, _ in steer}):  # range(-n_pos, 0)
            for layer in range(n_layers):
                if (pos, layer) not in steer:
                    continue
                s = authors_float32_mean(steer[(pos, layer)], n)
                a = authors_float32_mean(ablate[(pos, layer)], n) if ablate else threshold
                if math.isnan(s) or math.isnan(a) or layer >= cutoff or s < threshold:
                    continue
                entries.append({"position": pos, "layer": layer, "steer": s, "abl": a})
        return sorted(entries, key=lambda e: e["steer"], reverse=True)

    baseline = round(np.mean([1.0] * base_count + [0.0] * (n - base_count)), 2)
    if alpha == 1.0:
        entries = filtered(add, abl)
        for e in entries:
            if e["steer"] >= baseline and e["abl"] < baseline:
                return e["position"], e["layer"]
    else:
        entries = filtered(add, None)
        listed = {(e["position"], e["layer"]): e["abl"] for e in filtered(add_alpha1, abl)}
        for e in entries:
            key = (e["position"], e["layer"])
            if key in listed and e["steer"] >= baseline and listed[key] < baseline:
                return key
    best, best_score = None, -float("inf")
    for e in entries:
        if e["steer"] > best_score:
            best, best_score = (e["position"], e["layer"]), e["steer"]
    return best
