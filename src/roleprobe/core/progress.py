"""Progress bars (tqdm) that one switch can silence everywhere, e.g. ``roleprobe --quiet``.

Every long loop in roleprobe goes through :func:`bar`: a tqdm bar with counts and an ETA,
shown unless the caller passed ``progress=False`` or :func:`set_progress` turned them off.

**One bar per call.** A public call leaves exactly one bar behind, however many loops run
inside it: a bar created while another roleprobe bar is still open (in the same thread) is
*nested* and gets ``leave=False``, so it shows while its loop runs and then disappears
(a notebook closes its widget). ``split_half_stability`` therefore leaves one "split-half"
bar, not one bar per prompt set; ``evaluate`` called inside a sweep leaves none of its own.
Functions that run several loops open an outer bar with ``with bar(...) as outer:`` (closed
even when the loop raises); closing a bar also forgets every bar opened inside it.

Example:
    >>> with bar(total=2, desc="directions", unit="set") as outer:  # stays
    ...     for half in range(2):
    ...         for batch in bar(range(10), desc="batches"):  # leave=False: transient
    ...             pass
    ...         outer.update()
"""

import threading
import weakref
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ENABLED = {"bars": True}
_LOCAL = threading.local()


def set_progress(enabled: bool) -> None:
    """Show (``True``, the default) or hide every roleprobe progress bar."""
    _ENABLED["bars"] = enabled


def _open_bars() -> "list[weakref.ref[Any]]":
    """This thread's open, shown roleprobe bars, outermost first (dead ones pruned)."""
    stack: list[weakref.ref[Any]] | None = getattr(_LOCAL, "stack", None)
    if stack is None:
        stack = _LOCAL.stack = []
    stack[:] = [ref for ref in stack if ref() is not None]
    return stack


def nested() -> bool:
    """Whether a roleprobe bar is open in this thread (a new bar would be an inner one)."""
    return bool(_open_bars())


class _Bar(tqdm):  # type: ignore[misc]  # tqdm ships no type information
    """A tqdm bar that leaves the open-bar stack when it closes."""

    def close(self) -> None:
        stack = getattr(_LOCAL, "stack", None)
        if stack is not None:
            for i, ref in enumerate(stack):
                if ref() is self:
                    del stack[i:]  # bars opened inside this one are finished too
                    break
        super().close()


def bar(iterable: Iterable[T] | None = None, enabled: bool = True, **kwargs: Any) -> "tqdm[T]":
    """``tqdm(iterable, **kwargs)``, hidden when ``enabled`` is False or bars are off.

    ``iterable=None`` with ``total=`` gives a bar updated by hand. A bar opened while another
    roleprobe bar is open gets ``leave=False`` unless ``leave`` is given (see the module
    docstring), so each public call leaves one bar.

    Args:
        iterable: what to iterate over (``None``: update by hand).
        enabled: the caller's ``progress`` flag.
        **kwargs: passed to tqdm (``desc``, ``total``, ``unit``, ``leave``, ...).

    Returns:
        The tqdm bar; use it as a context manager (``with bar(...) as b:``) when other bars
        open inside it.
    """
    show = enabled and _ENABLED["bars"]
    if show and nested():
        kwargs.setdefault("leave", False)
    made = _Bar(iterable, disable=not show, **kwargs)
    if show:
        _open_bars().append(weakref.ref(made))
    return made
