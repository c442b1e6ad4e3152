"""Text generation in the chat template, batched with left padding.

Prompts are formatted with :func:`roleprobe.chat.encode_chat` (token ids, explicit attention
mask) and decoded by TransformerLens's ``generate`` with its KV cache. Greedy decoding is the
default, so the same prompt gives the same text alone or in a batch.

Example:
    >>> generate(model, ["What is the capital of France?"], max_new_tokens=20)
    ['The capital of France is Paris.']
"""

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from roleprobe.chat import ChatTemplate, encode_chat


def generate(
    model: Any,
    prompts: str | Sequence[str],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int | None = None,
    system: str | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """Answer each prompt as the assistant, in the model's chat template.

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        prompts: one instruction or a list of them.
        max_new_tokens: at most this many generated tokens per prompt.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (``do_sample`` only).
        top_p: nucleus sampling mass (``do_sample`` only).
        seed: seeds sampling for reproducible text.
        system: optional system prompt (``None``: the template's default).
        batch_size: prompts per forward pass.
        progress: show a progress bar over batches.

    Returns:
        The generated texts (special tokens removed, up to the first end-of-turn token).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    tokenizer = model.tokenizer
    template = ChatTemplate.from_tokenizer(tokenizer, system)
    eos = tokenizer.eos_token_id
    device = model.cfg.device
    texts: list[str] = []
    if seed is not None:
        torch.manual_seed(seed)
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, unit="batch"):
        batch = encode_chat(
            tokenizer,
            prompts[start : start + batch_size],
            system,
            max_length=model.cfg.n_ctx - max_new_tokens,
            template=template,
        ).to(device)
        with torch.inference_mode():
            out = model.generate(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature,
                top_p=top_p,
                stop_at_eos=True,
                eos_token_id=eos,
                return_type="tokens",
                verbose=False,
            )
        for row in out[:, batch.input_ids.shape[1] :].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts
