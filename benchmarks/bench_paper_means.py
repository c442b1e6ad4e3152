"""Benchmark: ``collect_means`` vs the role-vectors paper's way of collecting activations.

The paper's code (re-implemented minimally here, nothing imported from it) runs the plain
Hugging Face model with a ``register_forward_pre_hook`` on every decoder layer that copies the
residual stream at the post-instruction positions into a per-batch tensor, in batches of 32
prompts in their given order, with a full forward pass (logits over the whole vocabulary at
every position); the means are taken over the concatenated tensors at the end. Ours streams
length-sorted batches through TransformerLens hooks into float64 sums and stops before the
last block. Both run on the same prompts and the same weights (a separate, unwrapped copy:
the bridge rewires the model it wraps) and tokens/s counts real, unpadded tokens. The paper's
side derives position ids from the attention mask (as ``generate`` does) so that the two
means agree, which is checked. ``run_all.py`` runs it as benchmark 2.
"""

from collections.abc import Sequence
from typing import Any

import torch
from _report import best_of

import roleprobe as rp
from roleprobe.steering.prefix import position_ids
from roleprobe.vectors.activations import collect_means

PAPER_BATCH = 32


def paper_means(
    hf: Any, tokenizer: Any, prompts: Sequence[str], n_post: int, batch_size: int = PAPER_BATCH
) -> tuple[torch.Tensor, int, int]:
    """Mean residual entering each decoder layer at the last ``n_post`` positions, the
    paper's way. Returns ``(means [n_post, layer, d_model], real tokens, padded tokens)``."""
    layers = hf.model.layers
    store: list[list[torch.Tensor]] = [[] for _ in layers]

    def hook_for(index: int) -> Any:
        def pre_hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            store[index].append(hidden[:, -n_post:, :].detach().clone())

        return pre_hook

    handles = [
        layer.register_forward_pre_hook(hook_for(i), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    device = next(hf.parameters()).device
    real = padded = 0
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                texts = [
                    tokenizer.apply_chat_template(
                        [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                    )
                    for p in prompts[start : start + batch_size]
                ]
                inputs = tokenizer(
                    texts, return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                mask = inputs["attention_mask"]
                real += int(mask.sum())
                padded += mask.numel()
                hf(**inputs, position_ids=position_ids(mask)).logits  # noqa: B018
    finally:
        for handle in handles:
            handle.remove()
    means = torch.stack([torch.cat(per_batch).mean(dim=0) for per_batch in store])
    return means.transpose(0, 1), real, padded


def run(
    model: Any,
    hf: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    batch_size: int = 16,
    repeats: int = 3,
) -> dict[str, Any]:
    """Tokens/s of ``collect_means`` (``batch_size``) and of the paper's approach (32)."""
    n_post = rp.ChatTemplate.from_tokenizer(model.tokenizer).n_post

    def ours() -> torch.Tensor:
        return collect_means(model, prompts, batch_size=batch_size, progress=False).mean

    def paper() -> tuple[torch.Tensor, int, int]:
        return paper_means(hf, tokenizer, prompts, n_post)

    timed = best_of({"collect_means": ours, "paper_hf_prehooks": paper}, repeats, model.cfg.device)
    best = timed["best"]
    ours_mean = timed["last"]["collect_means"]
    paper_mean, real, padded = timed["last"]["paper_hf_prehooks"]
    ours_tokens = _real_tokens(model, prompts, batch_size)  # equal unless the two tokenise
    scale = float(ours_mean.abs().max())
    diff = float((ours_mean - paper_mean.double().cpu()).abs().max())
    tps = {
        "collect_means": ours_tokens / best["collect_means"],
        "paper_hf_prehooks": real / best["paper_hf_prehooks"],
    }
    return {
        "prompts": len(prompts),
        "batch_size": {"collect_means": batch_size, "paper_hf_prehooks": PAPER_BATCH},
        "repeats": repeats,
        "real_tokens": ours_tokens,
        "real_tokens_paper": real,
        "same_tokens": ours_tokens == real,
        "padded_tokens_paper": padded,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "tokens_per_s": tps,
        "ratio_ours_over_paper": tps["collect_means"] / tps["paper_hf_prehooks"],
        "means_max_abs_diff": diff,
        "means_max_abs": scale,
    }


def _real_tokens(model: Any, prompts: Sequence[str], batch_size: int) -> int:
    from roleprobe.vectors.activations import batches

    return sum(int(b.attention_mask.sum()) for _, b in batches(model, prompts, batch_size))
