"""How results are ordered and labelled for people: role and domain order, condition labels, stars.

Tables (:mod:`roleprobe.results.tables`) and figures (:mod:`roleprobe.results.plotting`) show
the same cells, so they share one vocabulary, defined here and nowhere else:

* roles in catalogue order (:data:`roleprobe.data.roles.ROLES`, grouped by domain), roles the
  catalogue does not know last, alphabetically (:func:`role_order`);
* domains in :data:`roleprobe.data.roles.DOMAINS` order (:func:`domain_order`);
* a condition and its α as one column label, ``"α=3"`` for an addition, ``"ablation"`` when α
  does not apply (:func:`condition_label`), sorted additions by α first, then ablation, persona
  and any other condition (:func:`condition_rank`);
* significance stars of a p-value (:func:`significance_stars`).

Example:
    >>> role_order(["nurse", "lawyer", "court jester"])
    ['lawyer', 'nurse', 'court jester']
    >>> condition_label("addition", 3.0), condition_label("ablation", float("nan"))
    ('α=3', 'ablation')
"""

import math
from collections.abc import Sequence

from roleprobe.data.roles import DOMAINS, ROLES, get_role

CONDITION_ORDER = ("addition", "ablation", "persona")
STAR_LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
_ROLE_RANK = {role.name: i for i, role in enumerate(ROLES)}


def significance_stars(p: float | int) -> str:
    """``"***"`` for p < 0.001, ``"**"`` for p < 0.01, ``"*"`` for p < 0.05, else ``""``."""
    if math.isnan(p):
        return ""
    return next((stars for level, stars in STAR_LEVELS if p < level), "")


def role_domain(role: str) -> str | None:
    """The domain of a catalogue role, or ``None`` for a role the catalogue does not know."""
    try:
        return get_role(role).domain
    except ValueError:
        return None


def role_order(roles: Sequence[str]) -> list[str]:
    """Distinct roles in catalogue order (by domain, as :data:`roleprobe.data.roles.ROLES`), then
    unknown roles alphabetically."""
    return sorted(dict.fromkeys(roles), key=lambda r: (_ROLE_RANK.get(r, len(_ROLE_RANK)), r))


def domain_order(domains: Sequence[str]) -> list[str]:
    """Distinct domains in :data:`roleprobe.data.roles.DOMAINS` order, then unknown ones."""
    rank = {d: i for i, d in enumerate(DOMAINS)}
    return sorted(dict.fromkeys(domains), key=lambda d: (rank.get(d, len(rank)), d))


def alpha_missing(alpha: float | int | None) -> bool:
    """Whether a condition has no α (``None`` or NaN: ablation, persona)."""
    return alpha is None or math.isnan(alpha)


def condition_label(condition: str, alpha: float | int | None) -> str:
    """A column label: ``"α=3"`` for an addition, the condition's name when α is NaN."""
    if alpha_missing(alpha):
        return condition
    return f"α={alpha:g}" if condition == "addition" else f"{condition} α={alpha:g}"


def condition_rank(condition: str, alpha: float | int | None) -> tuple[int, float, str]:
    """Sort key: additions by α, then ablation, persona, and any other condition."""
    rank = CONDITION_ORDER.index(condition) if condition in CONDITION_ORDER else 3
    return rank, 0.0 if alpha is None or math.isnan(alpha) else float(alpha), condition
