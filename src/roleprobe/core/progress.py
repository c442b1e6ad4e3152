"""Progress bars (tqdm) that one switch can silence everywhere, e.g. ``roleprobe --quiet``.

Every long loop in roleprobe goes through :func:`bar`: a tqdm bar with counts and an ETA,
shown unless the caller passed ``progress=False`` or :func:`set_progress` turned them off.
"""

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ENABLED = {"bars": True}


def set_progress(enabled: bool) -> None:
    """Show (``True``, the default) or hide every roleprobe progress bar."""
    _ENABLED["bars"] = enabled


def bar(iterable: Iterable[T] | None = None, enabled: bool = True, **kwargs: Any) -> "tqdm[T]":
    """``tqdm(iterable, **kwargs)``, hidden when ``enabled`` is False or bars are off
    (``iterable=None`` with ``total=``: a bar updated by hand)."""
    return tqdm(iterable, disable=not (enabled and _ENABLED["bars"]), **kwargs)
