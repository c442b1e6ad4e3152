"""Prompt transforms: conditions that change the prompt's text, not the model's activations.

A :class:`PromptTransform` contributes a system turn and/or text before the user's question
(a :class:`PromptEdit`); it is the prompting counterpart of an
:class:`~roleprobe.steering.interventions.Intervention`, and the two compose:
``rp.evaluate(model, bench, [rp.Persona("lawyer"), rp.Addition(d, 12, 3.0)])`` states the
role in the prompt *and* adds its direction. :class:`Persona` is the built-in one (the
paper's "role in the prompt" condition).

**Footgun.** Where the chat template has no system turn (Gemma-2 raises on one; some
templates drop it silently), ``Persona(mode="auto")`` falls back to a prefix of the user
turn, and ``mode="system"`` is refused with a ``ValueError``; :func:`template_has_system`
tells which case a tokenizer is.

Example:
    >>> rp.evaluate(model, bench, rp.Persona("lawyer", mode="prefix"))
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

PERSONA_MODES = ("auto", "system", "prefix")


@dataclass(frozen=True)
class PromptEdit:
    """What a prompt transform contributes to one prompt.

    Attributes:
        system: the system turn's text (replacing the system policy), or ``None`` to leave
            it alone.
        prefix: text placed before the question in the user turn (``""``: none).
    """

    system: str | None = None
    prefix: str = ""


@runtime_checkable
class PromptTransform(Protocol):
    """Anything that edits the prompt: ``edit_prompt(has_system) -> PromptEdit``.

    ``has_system`` says whether the model's chat template renders a system turn. A
    transform may also define ``columns() -> dict`` for per-item tables (see
    :func:`roleprobe.steering.interventions.describe`).
    """

    def edit_prompt(self, has_system: bool) -> PromptEdit: ...


def is_prompt_transform(value: object) -> bool:
    """Whether ``value`` is a :class:`PromptTransform` (has a callable ``edit_prompt``)."""
    return isinstance(value, PromptTransform) and callable(getattr(value, "edit_prompt", None))


@dataclass(frozen=True)
class Persona:
    """The role stated in the prompt.

    Attributes:
        role: the role (any text; e.g. ``"lawyer"``).
        mode: ``"system"`` (a system prompt), ``"prefix"`` (before the question in the user
            turn) or ``"auto"`` (system where the chat template renders one).
        template: how the role is stated.
    """

    role: str
    mode: str = "auto"
    template: str = "You are a {role}."

    def __post_init__(self) -> None:
        if self.mode not in PERSONA_MODES:
            raise ValueError(f"unknown persona mode {self.mode!r}; use one of {PERSONA_MODES}")
        if not self.role.strip():
            raise ValueError("the persona's role is empty")

    @property
    def text(self) -> str:
        """The persona sentence."""
        return self.template.format(role=self.role)

    def edit_prompt(self, has_system: bool) -> PromptEdit:
        """The persona as the system turn (``"system"``, or ``"auto"`` where the template has
        one) or as a line before the question.

        Raises:
            ValueError: ``mode="system"`` on a template without a system turn.
        """
        if self.mode == "system" and not has_system:
            raise ValueError("this model's chat template has no system turn; use mode='prefix'")
        if self.mode == "system" or (self.mode == "auto" and has_system):
            return PromptEdit(system=self.text)
        return PromptEdit(prefix=self.text + "\n")

    def columns(self) -> dict[str, Any]:
        """``condition="persona"``, the role and the mode, for per-item tables."""
        return {"condition": "persona", "role": self.role, "persona_mode": self.mode}


def template_has_system(tokenizer: Any) -> bool:
    """Whether the chat template renders a system message (some templates drop or reject it)."""
    sentinel = "Sentinel system text"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": sentinel}, {"role": "user", "content": "Hi"}],
            tokenize=False,
        )
    except Exception:  # templates that raise on a system turn (e.g. Gemma's)
        return False
    return sentinel in str(text)


def apply_prompt_transforms(
    transforms: Sequence[PromptTransform], tokenizer: Any, system: str
) -> tuple[str, str]:
    """The system policy and the user-turn prefix after ``transforms``, in order.

    Args:
        transforms: the prompt transforms (none: ``system`` unchanged, no prefix).
        tokenizer: the chat tokenizer (asked once whether it renders a system turn).
        system: the system policy before the transforms (``"default"``, ``"none"`` or text).

    Returns:
        ``(system, prefix)``: prefixes are concatenated in order.

    Raises:
        ValueError: two transforms both set the system turn, or a transform refuses the
            template.
    """
    if not transforms:
        return system, ""
    has_system = template_has_system(tokenizer)
    edits = [t.edit_prompt(has_system) for t in transforms]
    systems = [e.system for e in edits if e.system is not None]
    if len(systems) > 1:
        names = [type(t).__name__ for t, e in zip(transforms, edits, strict=True) if e.system]
        raise ValueError(f"several prompt transforms set the system turn ({names}); keep one")
    return (systems[0] if systems else system), "".join(e.prefix for e in edits)
