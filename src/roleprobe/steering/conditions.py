"""A condition of an experiment: prompt transforms and interventions, composed.

:func:`roleprobe.evaluate` and :func:`roleprobe.generate` take one condition, which is any
of

* ``None`` or :class:`Baseline`: the model as it is;
* a :class:`~roleprobe.steering.persona.PromptTransform` (e.g. :class:`~roleprobe.Persona`): the
  prompt's text changes;
* an :class:`~roleprobe.steering.interventions.Intervention` (the built-ins or your own class): the
  activations change;
* a list of these, applied together (prompt edits in order, then every intervention in
  one :func:`~roleprobe.steer`).

:func:`split_condition` checks a condition before any forward pass runs (a ``TypeError``
names what is not a condition) and :func:`condition_columns` gives the per-item table's
columns, from each part's own ``columns()`` (:func:`~roleprobe.steering.interventions.describe`).

Example:
    >>> rp.evaluate(model, bench, [rp.Persona("lawyer"), rp.Addition(d, 12, 3.0)])
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from roleprobe.core.types import Model
from roleprobe.steering.interventions import (
    HookFn,
    Intervention,
    SteerState,
    check_intervention,
    describe,
)
from roleprobe.steering.persona import PromptTransform, is_prompt_transform


@dataclass(frozen=True)
class Baseline:
    """No intervention (an :class:`roleprobe.Intervention` with no hooks)."""

    def hooks(self, model: Model, state: SteerState) -> list[tuple[str, HookFn]]:
        """No hooks."""
        return []

    def columns(self) -> dict[str, Any]:
        """``condition="baseline"``."""
        return {"condition": "baseline"}


ConditionPart = Intervention | PromptTransform
"""One part of a condition: an intervention or a prompt transform."""
Condition = ConditionPart | Sequence[ConditionPart] | None
"""What :func:`roleprobe.evaluate` takes: a part, a list of parts, or ``None`` (baseline)."""


def condition_parts(condition: object) -> list[object]:
    """The parts of ``condition`` as a list (``None``: ``[Baseline()]``), each checked.

    Raises:
        TypeError: a part is neither an :class:`roleprobe.Intervention` nor a
            :class:`roleprobe.PromptTransform` (named by its type), or the condition
            is a string.
    """
    if condition is None:
        return [Baseline()]
    if isinstance(condition, str | bytes):
        raise TypeError(
            f"a condition must be an Intervention or a PromptTransform, got the string "
            f"{condition!r:.60} (for a role stated in the prompt use rp.Persona({condition!r:.40}))"
        )
    parts = list(condition) if isinstance(condition, Sequence) else [condition]
    for part in parts:
        if not is_prompt_transform(part):
            check_intervention(part, "each part of a condition")
    return [p for p in parts if not isinstance(p, Baseline)] or [Baseline()]


def split_condition(condition: object) -> tuple[list[PromptTransform], list[Intervention]]:
    """The prompt transforms and the interventions of ``condition``, in order.

    An object that is both (has ``edit_prompt`` and ``hooks``) is in both lists.

    Raises:
        TypeError: see :func:`condition_parts`.
    """
    parts = condition_parts(condition)
    transforms = [cast(PromptTransform, p) for p in parts if is_prompt_transform(p)]
    interventions = [p for p in parts if isinstance(p, Intervention)]
    return transforms, interventions


def condition_columns(condition: object) -> dict[str, Any]:
    """The condition's parameters, as columns of the per-item table.

    One part: its :func:`~roleprobe.steering.interventions.describe` columns (``None`` gives
    ``{"condition": "baseline"}``). Several: the
    ``condition`` names joined with ``"+"`` (``"persona+addition"``); a column two parts
    both set to different values holds both, joined with ``"+"`` as text.
    """
    out: dict[str, Any] = {}
    for part in condition_parts(condition):
        for key, value in describe(part).items():
            if key not in out:
                out[key] = value
            elif out[key] != value:
                out[key] = f"{out[key]}+{value}"
    return out
