"""Chat formatting: the model's own chat template, as token ids, left padded.

Role vectors are read at the *post-instruction* positions: the template tokens that follow
the user's instruction and precede the model's answer (for ChatML models such as SmolLM2,
``<|im_end|> \\n <|im_start|> assistant \\n``). Every prompt ends with the same tokens there,
so under **left padding** they occupy the same last columns of a batch and can be compared
across prompts.

Footguns this module handles so callers do not have to:

* **Token ids, not strings.** TransformerLens prepends BOS to string input; SmolLM2's BOS is
  ``<|im_start|>``, which the chat template already starts with, so a formatted string would
  begin with it twice. We apply the template with the tokenizer and hand ids to the model.
* **An explicit attention mask.** SmolLM2's pad token is ``<|im_end|>``, which also occurs
  inside every prompt, so a mask inferred from pad ids would hide real tokens.
* **An explicit system-turn policy** (``system=``, see :mod:`roleprobe.model.system_turn`):
  ``"default"`` keeps what the template does without a system message (SmolLM2 and Qwen2.5
  insert a default system prompt, Llama-3.x a dated system block, rendered with the fixed
  date ``"26 Jul 2024"`` so nothing depends on the day); ``"none"`` renders no system turn at
  all (the paper's format), removing a default one; any other text is the system prompt.

Example:
    >>> batch = encode_chat(model.tokenizer, ["Explain inflation.", "Hi"])
    >>> logits = model(batch.input_ids, attention_mask=batch.attention_mask)
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import torch
from jaxtyping import Int
from torch import Tensor

from roleprobe.model.system_turn import DATE_STRING, SystemTurn, normalize_system

PLACEHOLDER = "{instruction}"
"""The instruction text :meth:`ChatTemplate.render` shows a template with in manifests."""

# Two instructions whose first and last characters differ: their chat encodings agree
# exactly on the template before and after the instruction, and nowhere else.
_PROBES = ("Describe a sunny day", "Quantify our zoo")


def _validate_instruction(instruction: object, where: str) -> str:
    if not isinstance(instruction, str):
        raise TypeError(f"{where} must be a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise ValueError(f"{where} is empty or whitespace only")
    return instruction


def chat_ids(tokenizer: Any, instruction: str, system: str | None = "default") -> list[int]:
    """Token ids of one instruction as the user turn of the tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face tokenizer with a ``chat_template``.
        instruction: the user turn.
        system: ``"default"`` (or ``None``: the template's own behaviour), ``"none"`` (no
            system turn, the paper's format) or a system prompt text.

    Returns:
        The ids, ending with the generation prompt (``add_generation_prompt=True``).
    """
    _validate_instruction(instruction, "instruction")
    turn = SystemTurn.resolve(tokenizer, system)
    return _render_ids(tokenizer, turn, instruction)


def _tokenize(tokenizer: Any, text: str) -> list[int]:
    """Ids of rendered chat text, as ``apply_chat_template`` tokenizes it (no added BOS)."""
    out = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(t) for t in out]


def _render_ids(tokenizer: Any, turn: SystemTurn, instruction: str) -> list[int]:
    text = turn.render(tokenizer, [{"role": "user", "content": instruction}], True)
    return _tokenize(tokenizer, text)


@dataclass(frozen=True)
class ChatTemplate:
    """The fixed token ids around the instruction in a tokenizer's chat template.

    Attributes:
        prefix_ids: ids before the instruction (BOS, any system turn, the user header).
        suffix_ids: the post-instruction ids, from the end of the instruction to the end of
            the generation prompt.
        system: the system-turn policy: ``"default"``, ``"none"`` or the system text.
        turn: the policy resolved against the template (resolved on use when ``None``).
    """

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    system: str = "default"
    turn: SystemTurn | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "system", normalize_system(self.system))
        if self.turn is not None and self.turn.policy != self.system:
            raise ValueError(
                f"ChatTemplate: system {self.system!r} does not match the resolved turn's "
                f"policy {self.turn.policy!r}"
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, system: str | None = "default") -> "ChatTemplate":
        """Find the template's fixed prefix and suffix by encoding two unrelated probes.

        Args:
            tokenizer: a Hugging Face tokenizer with a chat template.
            system: ``"default"`` (or ``None``), ``"none"`` or a system prompt text.

        Raises:
            ValueError: the template has no post-instruction tokens, or the system policy
                cannot be applied to it (see :class:`roleprobe.model.system_turn.SystemTurn`).
        """
        turn = SystemTurn.resolve(tokenizer, system)
        a, b = (_render_ids(tokenizer, turn, p) for p in _PROBES)
        n_prefix = common_prefix_length(a, b)
        n_suffix = common_prefix_length(a[n_prefix:][::-1], b[n_prefix:][::-1])
        if n_suffix == 0:
            raise ValueError(
                "the chat template adds no tokens after the instruction, so there are no "
                "post-instruction positions; is add_generation_prompt supported by this template?"
            )
        return cls(tuple(a[:n_prefix]), tuple(a[len(a) - n_suffix :]), turn.policy, turn)

    @property
    def n_post(self) -> int:
        """Number of post-instruction positions."""
        return len(self.suffix_ids)

    @property
    def date_string(self) -> str:
        """The date passed to date-dependent templates (e.g. Llama-3.x's "Today Date")."""
        return self.turn.date_string if self.turn is not None else DATE_STRING

    def resolved(self, tokenizer: Any) -> SystemTurn:
        """The system-turn policy resolved against ``tokenizer``'s template."""
        return self.turn if self.turn is not None else SystemTurn.resolve(tokenizer, self.system)

    def render(self, tokenizer: Any, instruction: str = PLACEHOLDER) -> str:
        """The exact text of one prompt under this template and system policy.

        Example:
            >>> ChatTemplate.from_tokenizer(tok, system="none").render(tok)
            '<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n'
        """
        _validate_instruction(instruction, "instruction")
        turn = self.resolved(tokenizer)
        return turn.render(tokenizer, [{"role": "user", "content": instruction}], True)

    def ids(self, tokenizer: Any, instruction: str) -> list[int]:
        """Token ids of one prompt under this template and system policy."""
        _validate_instruction(instruction, "instruction")
        return _render_ids(tokenizer, self.resolved(tokenizer), instruction)

    def post_instruction_tokens(self, tokenizer: Any) -> list[str]:
        """The post-instruction tokens decoded one by one (for display and checks)."""
        return [tokenizer.decode([t]) for t in self.suffix_ids]

    def end_of_turn_id(self, tokenizer: Any) -> int | None:
        """The token the template closes an assistant turn with, where it is a special one.

        Found by rendering a conversation with an assistant reply and reading the first token
        after the reply: ``<|im_end|>`` (ChatML), ``<end_of_turn>`` (Gemma), ``<|eot_id|>``
        (Llama-3), ``<|end|>`` (Phi-3), ``</s>`` (Mistral). It need not be the tokenizer's
        EOS (Gemma's is ``<eos>``), and it is where a generated answer ends.

        Returns:
            The id, or ``None`` where the template closes the turn with plain text (or
            cannot render an assistant reply).
        """
        turn = self.resolved(tokenizer)
        reply = _PROBES[1]
        messages = [
            {"role": "user", "content": _PROBES[0]},
            {"role": "assistant", "content": reply},
        ]
        try:
            text = turn.render(tokenizer, messages, False)
        except (jinja2.TemplateError, ValueError):
            return None
        at = text.rfind(reply)
        after = _tokenize(tokenizer, text[at + len(reply) :]) if at >= 0 else []
        if not after:
            return None
        special = {*tokenizer.all_special_ids, *tokenizer.get_added_vocab().values()}
        return after[0] if after[0] in special else None


@dataclass(frozen=True)
class ChatBatch:
    """Left-padded chat prompts, ready for ``model(input_ids, attention_mask=...)``.

    Attributes:
        input_ids: token ids, padded on the left.
        attention_mask: 1 for real tokens, 0 for padding.
        instruction_mask: 1 at the tokens of the instruction itself (user text only).
        n_post: number of post-instruction positions, the last ``n_post`` columns.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    instruction_mask: Int[Tensor, "batch pos"]
    n_post: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def post_instruction_positions(self) -> Int[Tensor, " n_post"]:
        """Column indices of the post-instruction positions (the same for every row)."""
        seq = self.input_ids.shape[1]
        return torch.arange(seq - self.n_post, seq, device=self.input_ids.device)

    def to(self, device: torch.device | str | None) -> "ChatBatch":
        """The same batch on another device (``None``: where it is)."""
        if device is None:
            return self
        return ChatBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.instruction_mask.to(device),
            self.n_post,
        )


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Stack token sequences into a left-padded batch.

    Args:
        sequences: one list of ids per row, none empty.
        pad_id: the id to pad with (masked out, so any valid id will do).

    Returns:
        ``(input_ids, attention_mask)``, both ``[batch, max_len]`` int64.
    """
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty list of sequences")
    width = max(len(s) for s in sequences)
    if width == 0:
        raise ValueError("cannot pad sequences that are all empty")
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq) == 0:
            raise ValueError(f"sequence {row} is empty")
        ids[row, width - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, falling back to EOS, then 0 (padding is always masked)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return value
    return 0


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt in the chat template, before padding.

    Attributes:
        ids: the token ids.
        instruction_start: index of the instruction's first token.
        instruction_end: index one past its last token (where the post-instruction starts).
    """

    ids: tuple[int, ...]
    instruction_start: int
    instruction_end: int


def encode_prompt(
    tokenizer: Any,
    text: str,
    template: ChatTemplate,
    max_length: int | None = None,
    where: str = "instruction",
) -> EncodedPrompt:
    """Encode one instruction with a known template, checking length and template alignment.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        text: the instruction.
        template: the tokenizer's :class:`ChatTemplate` (it carries the system policy).
        max_length: reject prompts longer than this many tokens.
        where: how errors name the prompt (e.g. ``"instruction 3"``).
    """
    _validate_instruction(text, where)
    ids = template.ids(tokenizer, text)
    if max_length is not None and len(ids) > max_length:
        raise ValueError(
            f"{where} ({_preview(text)}) is {len(ids)} tokens long in the chat "
            f"template, more than the limit of {max_length}"
        )
    n_pre, n_post = len(template.prefix_ids), template.n_post
    if tuple(ids[len(ids) - n_post :]) != template.suffix_ids or len(ids) < n_pre + n_post:
        raise ValueError(
            f"{where} ({_preview(text)}) does not end with the template's "
            "post-instruction tokens: its last characters merge with the template; "
            "strip trailing whitespace or special tokens from it"
        )
    start = common_prefix_length(ids, template.prefix_ids)
    return EncodedPrompt(tuple(ids), start, len(ids) - n_post)


def collate(prompts: Sequence[EncodedPrompt], n_post: int, pad_id: int) -> ChatBatch:
    """Left-pad encoded prompts into a :class:`ChatBatch`."""
    input_ids, attention_mask = left_pad([p.ids for p in prompts], pad_id)
    instruction_mask = torch.zeros_like(attention_mask)
    width = input_ids.shape[1]
    for row, prompt in enumerate(prompts):
        offset = width - len(prompt.ids)
        instruction_mask[
            row, offset + prompt.instruction_start : offset + prompt.instruction_end
        ] = 1
    return ChatBatch(input_ids, attention_mask, instruction_mask, n_post)


def encode_chat(
    tokenizer: Any,
    instructions: Sequence[str],
    system: str | None = "default",
    max_length: int | None = None,
    template: ChatTemplate | None = None,
) -> ChatBatch:
    """Format instructions with the chat template and left-pad them into one batch.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        instructions: user turns, at least one, none empty.
        system: ``"default"`` (or ``None``: the template's own), ``"none"`` (no system turn)
            or a system prompt text; ignored when ``template`` is given.
        max_length: reject prompts longer than this many tokens (e.g. the model's context).
        template: a precomputed :class:`ChatTemplate` (computed when ``None``).

    Returns:
        A :class:`ChatBatch` whose last ``n_post`` columns are the post-instruction tokens.

    Raises:
        ValueError: empty input, an over-long prompt, or a prompt whose tokens do not end
            with the template's post-instruction tokens (named by index and text).
    """
    if isinstance(instructions, str):
        raise TypeError("instructions must be a list of strings, not one string")
    if len(instructions) == 0:
        raise ValueError("no instructions given (the prompt list is empty)")
    template = template or ChatTemplate.from_tokenizer(tokenizer, system)
    encoded = [
        encode_prompt(tokenizer, text, template, max_length, f"instruction {i}")
        for i, text in enumerate(instructions)
    ]
    return collate(encoded, template.n_post, pad_token_id(tokenizer))


def answer_letter_ids(
    tokenizer: Any,
    letters: Sequence[str] = ("A", "B", "C", "D"),
    system: str | None = "default",
) -> list[int]:
    """Token ids of answer letters as the model emits them first in the assistant turn.

    Each letter must be one token when it opens the assistant turn (checked against the
    chat template with the letter as the assistant's reply).

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        letters: the answer letters (no leading space).
        system: the system-turn policy used for the questions (``"default"``, ``"none"`` or
            a text).

    Returns:
        One id per letter, in order.
    """
    turn = SystemTurn.resolve(tokenizer, system)
    user = {"role": "user", "content": _PROBES[0]}
    base = _tokenize(tokenizer, turn.render(tokenizer, [user], True))
    ids = []
    for letter in letters:
        single = tokenizer.encode(letter, add_special_tokens=False)
        if len(single) != 1:
            raise ValueError(f"answer letter {letter!r} is not a single token: {single}")
        reply = {"role": "assistant", "content": letter}
        full = _tokenize(tokenizer, turn.render(tokenizer, [user, reply], False))
        if full[: len(base)] != base or len(full) <= len(base) or full[len(base)] != single[0]:
            raise ValueError(
                f"answer letter {letter!r} does not open the assistant turn as token "
                f"{single[0]}; the chat template changes its tokenization"
            )
        ids.append(int(single[0]))
    return ids


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "…")
