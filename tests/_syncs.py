"""Count the calls that read a value back to the host while roleprobe's hooks run.

On a GPU each of these waits for the device (a synchronisation); on this CPU machine
they cost nothing, so they are counted instead of timed: :func:`counting_syncs` wraps
every hook function a model is given (``model.hooks(fwd_hooks=...)``) and, with a
``TorchFunctionMode``, counts the calls below made *while a hook runs*.
"""

import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _host_syncs as host_syncs

SYNCING = host_syncs.SYNCING  # one list, shared with the benchmarks


@dataclass
class SyncCount:
    hook_calls: int = 0
    syncs: Counter[str] = field(default_factory=Counter)
    depth: int = 0


class _Mode(TorchFunctionMode):
    def __init__(self, count: SyncCount) -> None:
        super().__init__()
        self.count = count

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if self.count.depth and name in SYNCING:
            self.count.syncs[name] += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def counting_syncs(model: Any) -> Iterator[SyncCount]:
    """Inside the block, count host read-backs made inside ``model``'s hook functions."""
    count = SyncCount()
    original = model.hooks

    def wrap(fn: Any) -> Any:
        @wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            count.hook_calls += 1
            count.depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                count.depth -= 1

        return counted

    def hooks(fwd_hooks: Any = (), *args: Any, **kwargs: Any) -> Any:
        return original([(name, wrap(fn)) for name, fn in fwd_hooks], *args, **kwargs)

    model.hooks = hooks
    try:
        with _Mode(count):
            yield count
    finally:
        del model.hooks  # the class's method again
