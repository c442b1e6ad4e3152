"""Text generation in the chat template, batched with left padding, optionally steered.

Prompts are formatted with :func:`roleprobe.model.chat.encode_chat` (token ids, explicit attention
mask). Decoding is our own short loop over the bridge's forward pass with the Hugging Face
KV cache, so that interventions see, at every step, the attention mask and where the prompt
ends: ``positions="prompt"`` acts only while reading the prompt, ``"generated"`` only on
new tokens, and padding is never touched. Greedy decoding is the default, so the same
prompt gives the same text alone or in a batch.

Example:
    >>> generate(model, ["What is the capital of France?"], max_new_tokens=20)
    ['The capital of France is Paris.']
    >>> generate(model, prompts, interventions=[rp.Addition(d, layer=15, alpha=3.0)])
    >>> generate(model, prompts, [rp.Persona("lawyer"), rp.Addition(d, 15, 3.0)])
"""

from collections.abc import Sequence
from typing import cast

import torch

from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.model.chat import ChatTemplate, encode_chat
from roleprobe.model.system_turn import normalize_system
from roleprobe.steering.conditions import Condition, split_condition
from roleprobe.steering.interventions import Intervention, steer
from roleprobe.steering.persona import apply_prompt_transforms


def _next_tokens(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    sample = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0]
    return sample.to(logits.device)


def generate(
    model: Model,
    prompts: str | Sequence[str],
    interventions: Condition = (),
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int | None = None,
    system: str | None = "default",
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """Answer each prompt as the assistant, in the model's chat template.

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        prompts: one instruction or a list of them.
        interventions: any :class:`~roleprobe.Intervention` (built-in or your own) or a list
            of them, applied while reading the prompt and while generating, each at the
            positions it names; prompt transforms (:class:`~roleprobe.Persona`) in the list
            edit the prompts (see :mod:`roleprobe.steering.conditions`).
        max_new_tokens: at most this many generated tokens per prompt.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature (``do_sample`` only).
        top_p: nucleus sampling mass (``do_sample`` only).
        seed: seeds sampling, for reproducible text.
        system: the system-turn policy: ``"default"`` (the template's own, date pinned),
            ``"none"`` (no system turn, the paper's format) or a system prompt text.
        batch_size: prompts per forward pass.
        progress: show a progress bar over batches.

    Returns:
        The generated texts (special tokens removed, up to the first end-of-turn token).

    Raises:
        TypeError: a part of ``interventions`` is neither an intervention nor a prompt
            transform (checked before any forward pass).
    """
    transforms, steering = split_condition(interventions)
    if isinstance(prompts, str):
        prompts = [prompts]
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be positive when sampling, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    tokenizer = model.tokenizer
    system, prefix = apply_prompt_transforms(transforms, tokenizer, normalize_system(system))
    prompts = [prefix + p for p in prompts]
    template = ChatTemplate.from_tokenizer(tokenizer, system)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    texts: list[str] = []
    starts = range(0, len(prompts), batch_size)
    with bar(starts, progress, desc="generate", unit="batch") as batches:
        for start in batches:
            batch = encode_chat(
                tokenizer,
                prompts[start : start + batch_size],
                system,
                max_length=model.cfg.n_ctx - max_new_tokens,
                template=template,
            ).to(cast(str, model.cfg.device))
            rows = _decode(
                model,
                batch.input_ids,
                batch.attention_mask,
                steering,
                max_new_tokens,
                do_sample,
                temperature,
                top_p,
                generator,
            )
            texts += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]
    return texts


def _decode(
    model: Model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    interventions: Sequence[Intervention],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float | None,
    generator: torch.Generator | None,
) -> list[list[int]]:
    """Greedy or sampled decoding with the KV cache; returns each row's new tokens up to EOS."""
    eos = model.tokenizer.eos_token_id
    n_rows = input_ids.shape[0]
    new_tokens: list[list[int]] = [[] for _ in range(n_rows)]
    done = torch.zeros(n_rows, dtype=torch.bool, device=input_ids.device)
    mask = attention_mask
    with torch.inference_mode(), steer(model, *interventions, attention_mask=mask) as state:
        state.prompt_length = input_ids.shape[1]
        logits, cache = model(
            input_ids, attention_mask=mask, use_cache=True, return_type="logits_and_cache"
        )
        for _ in range(max_new_tokens):
            token = _next_tokens(logits[:, -1].float(), do_sample, temperature, top_p, generator)
            for row in (~done).nonzero()[:, 0].tolist():
                if int(token[row]) == eos:
                    done[row] = True
                else:
                    new_tokens[row].append(int(token[row]))
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            state.attention_mask = mask
            logits, cache = model(
                token[:, None],
                attention_mask=mask,
                past_key_values=cache,
                use_cache=True,
                return_type="logits_and_cache",
            )
    return new_tokens
