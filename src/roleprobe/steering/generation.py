"""Text generation in the chat template, batched with left padding, optionally steered.

Prompts are formatted with :func:`roleprobe.model.chat.encode_chat` (token ids, explicit attention
mask). Decoding is our own short loop over the bridge's forward pass with the Hugging Face
KV cache, so that interventions see, at every step, the attention mask and where the prompt
ends: ``positions="prompt"`` acts only while reading the prompt, ``"generated"`` only on
new tokens, and padding is never touched. Greedy decoding is the default, so the same
prompt gives the same text alone or in a batch.

Footgun: **where an answer ends.** A chat model closes its turn with the template's
end-of-turn token, which need not be the tokenizer's EOS (Gemma ends a turn with
``<end_of_turn>``, its EOS is ``<eos>``; Phi-3 with ``<|end|>``). Decoding stops at every id
of :func:`stop_token_ids`, as ``transformers``' own ``generate`` stops at every id of the
model's ``generation_config.eos_token_id``; stopping at EOS alone would let the model run
on into an invented next turn.

Example:
    >>> generate(model, ["What is the capital of France?"], max_new_tokens=20)
    ['The capital of France is Paris.']
    >>> generate(model, prompts, interventions=[rp.Addition(d, layer=15, alpha=3.0)])
    >>> generate(model, prompts, [rp.Persona("lawyer"), rp.Addition(d, 15, 3.0)])
"""

from collections.abc import Iterable, Sequence
from typing import Any, cast

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


def _ids(value: Any) -> set[int]:
    """Token ids from an ``eos_token_id`` setting: ``None``, an int or a list of ints."""
    if value is None:
        return set()
    values: Iterable[Any] = [value] if isinstance(value, int) else value
    return {int(v) for v in values if v is not None and int(v) >= 0}


def stop_token_ids(model: Model, template: ChatTemplate) -> tuple[int, ...]:
    """The ids that end a generated answer, sorted.

    Every id of the wrapped ``transformers`` model's ``generation_config.eos_token_id``
    (an int or a list: gemma-2-it lists ``[1, 107]``, ``<eos>`` and ``<end_of_turn>``), the
    tokenizer's EOS and the chat template's end-of-turn token
    (:meth:`~roleprobe.model.chat.ChatTemplate.end_of_turn_id`).

    Args:
        model: a ``TransformerBridge`` with a tokenizer.
        template: the chat template the prompts are written in.

    Returns:
        The stop ids (at least one where the tokenizer has an EOS).

    Example:
        >>> stop_token_ids(model, ChatTemplate.from_tokenizer(model.tokenizer))
        (257, 261)
    """
    tokenizer = model.tokenizer
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    ids = _ids(getattr(config, "eos_token_id", None)) | _ids(tokenizer.eos_token_id)
    ids |= _ids(template.end_of_turn_id(tokenizer))
    return tuple(sorted(ids))


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
        The generated texts (special tokens removed), each up to its first stop token
        (:func:`stop_token_ids`: the end of the assistant's turn) or ``max_new_tokens``.

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
    stops = stop_token_ids(model, template)
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
                stops,
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
    stops: Sequence[int],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float | None,
    generator: torch.Generator | None,
) -> list[list[int]]:
    """Greedy or sampled decoding with the KV cache; each row's new tokens before its first
    stop token. One host sync per step (whether every row has stopped)."""
    stop = torch.tensor(list(stops), dtype=torch.long, device=input_ids.device)
    done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    mask = attention_mask
    with torch.inference_mode(), steer(model, *interventions, attention_mask=mask) as state:
        state.prompt_length = input_ids.shape[1]
        logits, cache = model(
            input_ids, attention_mask=mask, use_cache=True, return_type="logits_and_cache"
        )
        for _ in range(max_new_tokens):
            token = _next_tokens(logits[:, -1].float(), do_sample, temperature, top_p, generator)
            done = done | torch.isin(token, stop)
            tokens.append(token)
            kept.append(~done)
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
    rows = torch.stack(tokens, dim=1).tolist()
    keep = torch.stack(kept, dim=1).tolist()
    return [
        [t for t, k in zip(row, flags, strict=True) if k]
        for row, flags in zip(rows, keep, strict=True)
    ]
