"""The system-turn policy of a chat template: ``"default"``, ``"none"`` or a text.

Chat templates disagree about system turns, and the disagreement changes activations:

* **Default system turns.** Qwen2.5's template inserts "You are Qwen, created by Alibaba
  Cloud..." and SmolLM2's "You are a helpful AI assistant named SmolLM..." when the
  conversation has none; Llama-3.1/3.2 always render a system block with "Cutting Knowledge
  Date: December 2023" and **"Today Date: <today>"** -- so directions computed from the
  template as is change with the calendar.
* **No system role.** Gemma-2's template raises on a system message; Gemma-3 and Mistral
  fold the system text into a user turn.

The paper (the authors' ``model_utils/*_model.py`` at cfa1e6e) formats every family
**without a system turn**, e.g. Llama-3
``<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n{instruction}<|eot_id|>...``
and Qwen ``<|im_start|>user\\n{instruction}<|im_end|>\\n<|im_start|>assistant\\n``.

A policy says which of these a prompt gets:

* ``"default"`` (or ``None``): the template's own behaviour, including any default system
  turn; date-dependent templates get the fixed date :data:`DATE_STRING` (the date Meta's
  template itself uses when it cannot read the clock), so renderings never depend on the day.
* ``"none"``: no system turn at all, the paper's format for every family. A default system
  turn the template inserts is removed: the template is rendered with two sentinel system
  texts to locate the system turn (everything between the text before the turn, e.g. BOS,
  and the user turn) and that span is cut out. A template where this cannot be done safely is
  refused with a ``ValueError``.
* any other text: that text as the system turn (refused when the template rejects or drops
  system messages, e.g. Gemma-2).

Example:
    >>> turn = SystemTurn.resolve(tokenizer, "none")
    >>> turn.render(tokenizer, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jinja2

logger = logging.getLogger(__name__)

SYSTEM_POLICIES = ("default", "none")
DATE_STRING = "26 Jul 2024"
"""The date every rendering passes as ``date_string`` (Meta's own fallback date)."""

# Sentinels whose first and last characters differ, so two renderings agree exactly on the
# template around the system text; the user probe shares no character pattern with them.
_SENTINELS = ("Qx sentinel system text K", "Zy sentinel system text W")
_USER_PROBE = "Describe a sunny day"

Message = dict[str, str]


def normalize_system(system: object) -> str:
    """The policy as a string: ``None`` means ``"default"``; a text must not be blank.

    Raises:
        TypeError: ``system`` is neither a string nor ``None``.
        ValueError: ``system`` is empty or whitespace only.
    """
    if system is None:
        return "default"
    if not isinstance(system, str):
        raise TypeError(
            f"system must be 'default', 'none' or a system prompt text, got {type(system).__name__}"
        )
    if not system.strip():
        raise ValueError(
            "system is empty or whitespace only; use system='none' for no system turn or "
            "'default' for the template's own"
        )
    found = CONTROL_TOKENS.search(system)
    if found:
        raise ValueError(
            f"system text contains the chat-template control token {found.group(0)!r}: it "
            "would be rendered verbatim and open a turn of its own; remove it"
        )
    if len(system) > MAX_SYSTEM_CHARS:
        raise ValueError(
            f"system text is {len(system):,} characters long (at most {MAX_SYSTEM_CHARS:,}): "
            "a system turn that long leaves no context for the prompts"
        )
    return system


CONTROL_TOKENS = re.compile(
    r"<\|[A-Za-z_]+(?:_[A-Za-z0-9]+)*\|>|<(?:start|end)_of_turn>|<(?:bos|eos)>|\[/?INST\]"
    r"|<</?SYS>>|</?s>"
)
"""Control tokens of the chat templates roleprobe supports (ChatML ``<|im_start|>``, Llama-3
``<|start_header_id|>``, Gemma ``<start_of_turn>``, Llama-2/Mistral ``[INST]``, ``<<SYS>>``,
``<s>``): a system text holding one would inject a turn."""
MAX_SYSTEM_CHARS = 8192
"""The longest system text accepted (longer ones crowd the prompts out of the context)."""


def apply_template(
    tokenizer: Any,
    messages: Sequence[Message],
    add_generation_prompt: bool,
    date_string: str = DATE_STRING,
) -> str:
    """Render ``messages`` with the tokenizer's chat template as text, with a fixed date."""
    if getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ValueError(
            f"tokenizer {name!r} has no chat template; roleprobe formats prompts as chat turns, "
            "so use an instruction-tuned model (or set tokenizer.chat_template)"
        )
    out = tokenizer.apply_chat_template(
        list(messages),
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
        date_string=date_string,
    )
    return str(out)


@dataclass(frozen=True)
class SystemTurn:
    """A resolved system-turn policy for one tokenizer's chat template.

    Attributes:
        policy: ``"default"``, ``"none"`` or the system text.
        mode: ``"plain"`` (render the messages as given), ``"text"`` (prepend the system
            text) or ``"cut"`` (render with a sentinel system turn and cut that turn out).
        head: (``"cut"``) the text kept before the system turn, e.g. ``<|begin_of_text|>``.
        cut: (``"cut"``) the system turn removed, as rendered with the sentinel.
        removed: (``"cut"``) the template's default system turn that ``"none"`` removes.
        date_string: the date passed to date-dependent templates.
    """

    policy: str = "default"
    mode: Literal["plain", "text", "cut"] = "plain"
    head: str = ""
    cut: str = ""
    removed: str = ""
    date_string: str = DATE_STRING

    @classmethod
    def resolve(cls, tokenizer: Any, system: str | None = "default") -> "SystemTurn":
        """Resolve ``system`` against the tokenizer's chat template.

        Raises:
            ValueError: a system text for a template that rejects or drops system messages,
                or ``"none"`` for a template whose default system turn cannot be located.
        """
        policy = normalize_system(system)
        if policy == "default":
            return cls(policy, "plain")
        if policy == "none":
            return _resolve_none(cls, tokenizer)
        sample = [{"role": "system", "content": policy}, {"role": "user", "content": _USER_PROBE}]
        try:
            text = apply_template(tokenizer, sample, True)
        except jinja2.TemplateError as err:
            raise ValueError(
                f"this chat template does not accept a system turn ({err}); use system='none' "
                "or 'default', or put the text in the user turn"
            ) from err
        if policy.strip() not in text:
            raise ValueError(
                "this chat template drops system messages, so the system text "
                f"{policy[:40]!r} would be lost; put it in the user turn instead"
            )
        return cls(policy, "text")

    def render(
        self, tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool
    ) -> str:
        """Render a conversation (without a system message) under this policy, as text."""
        if self.mode == "plain":
            return apply_template(tokenizer, messages, add_generation_prompt, self.date_string)
        if self.mode == "text":
            system = [{"role": "system", "content": self.policy}]
            return apply_template(
                tokenizer, system + list(messages), add_generation_prompt, self.date_string
            )
        system = [{"role": "system", "content": _SENTINELS[0]}]
        text = apply_template(
            tokenizer, system + list(messages), add_generation_prompt, self.date_string
        )
        start = self.head + self.cut
        if not text.startswith(start):
            raise ValueError(
                "system='none': the chat template rendered this conversation's system turn "
                f"differently from the probe's ({text[: len(start)]!r} vs {start!r}); "
                "use system='default'"
            )
        return self.head + text[len(start) :]


def _resolve_none(cls: type[SystemTurn], tokenizer: Any) -> SystemTurn:
    user = _user()
    default = apply_template(tokenizer, user, True)
    try:
        a, b = (
            apply_template(tokenizer, [{"role": "system", "content": s}, *user], True)
            for s in _SENTINELS
        )
    except jinja2.TemplateError:  # the template has no system role (e.g. Gemma-2)
        return cls("none", "plain")
    if a == b:  # the template ignores system messages
        return cls("none", "plain")
    n_pre = _common_prefix(a, b)
    n_suf = _common_prefix(a[n_pre:][::-1], b[n_pre:][::-1])
    before, after = a[:n_pre], a[len(a) - n_suf :]
    if a != before + _SENTINELS[0] + after:
        raise ValueError(
            "system='none': the chat template changes the system text, so its system turn "
            "cannot be located; use system='default' or a system text"
        )
    has_default = (
        default.startswith(before)
        and default.endswith(after)
        and len(default) >= len(before) + len(after)
    )
    if not has_default:  # the template adds no system turn of its own
        return cls("none", "plain")
    head, footer, rest = _split_turn(tokenizer, before, after, default)
    removed = default[len(head) : len(default) - len(rest)]
    logger.info("system='none': removing the template's default system turn %r", removed)
    return cls(
        "none", "cut", head=head, cut=before[len(head) :] + _SENTINELS[0] + footer, removed=removed
    )


def _split_turn(tokenizer: Any, before: str, after: str, default: str) -> tuple[str, str, str]:
    """``(head, footer, rest)``: the text before the system turn (BOS), the system turn's
    closing text and the rest (user turn and generation prompt) of the sentinel rendering."""

    def refuse(reason: str) -> ValueError:
        turn = default[: len(default) - len(after)]
        return ValueError(
            f"system='none': cannot remove this chat template's default system turn "
            f"({turn!r}): {reason}; use system='default' or a system text"
        )

    # The system turn closes like the user turn: the text after the user's text when the
    # conversation ends there.
    closed = apply_template(
        tokenizer, [{"role": "system", "content": _SENTINELS[0]}, *_user()], False
    )
    at = closed.rfind(_USER_PROBE)
    footer = closed[at + len(_USER_PROBE) :] if at >= 0 else ""
    if not footer or not after.startswith(footer):
        raise refuse("its system turn does not close like its user turn")
    rest = after[len(footer) :]
    header = rest[: max(rest.find(_USER_PROBE), 0)]
    if not header:
        raise refuse("its user turn has no header")
    # The system turn opens like the user turn: with the header's first token.
    first = tokenizer(header, add_special_tokens=False)["input_ids"][0]
    opener = tokenizer.decode([first])
    start = before.find(opener) if opener else -1
    if start < 0:
        raise refuse(f"its system turn does not open with the user turn's {opener!r}")
    return before[:start], footer, rest


def _user() -> list[Message]:
    return [{"role": "user", "content": _USER_PROBE}]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
