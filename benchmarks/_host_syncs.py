"""Count host synchronisations during a block of work.

On CUDA, :func:`counting_syncs` turns on ``torch.cuda.set_sync_debug_mode("warn")`` and
records the warnings it raises (one per synchronising call: ``.item()``, ``.cpu()``, a
blocking copy, ``nonzero``, ...), with the Python line that made each. Elsewhere there is no
such thing as a sync, so a stand-in counts the calls that *would* read a value back to the
host (the same list as ``tests/_syncs.py``) through a ``TorchFunctionMode``, leaving out
those on tensors already copied to the host; the method is recorded next to the count. The
stand-in is an estimate: on a GPU a blocking host-to-device copy also syncs, and a tensor
made on the host from the start is not a read-back.
"""

import sys
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

SYNCING = {
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "item",
    "tolist",
    "cpu",
    "numpy",
    "nonzero",
    "unique",
    "masked_select",
}
"""Tensor methods and functions that read back to the host (the CPU stand-in counts these)."""
CUDA_METHOD = "cuda-sync-debug-warn"
CPU_METHOD = "cpu-stand-in: TorchFunctionMode over host read-backs of model-side tensors"


@dataclass
class SyncCount:
    method: str
    count: int = 0
    where: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "count": self.count, "where": dict(self.where)}


_MOVES = {"to", "cuda"}
"""Calls that (on a GPU) move a host tensor to the device."""


def _caller() -> str:
    """``file:line`` of the nearest frame outside torch and this module."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if "/torch/" not in path and path != __file__:
            return f"{Path(path).name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


def _tensors(values: Any) -> list[torch.Tensor]:
    out = []
    for value in values:
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif isinstance(value, list | tuple):
            out += [v for v in value if isinstance(v, torch.Tensor)]
    return out


class _Counting(TorchFunctionMode):
    """Counts :data:`SYNCING` calls, except on host tensors: the results of ``.cpu()``,
    of factories given no device, and what is computed from those alone (a score table
    built from letter logits copied to the host reads nothing more from a GPU); ``.to()``
    counts as a move to the device."""

    def __init__(self, count: SyncCount) -> None:
        super().__init__()
        self.count = count
        self.host: dict[int, weakref.ref[torch.Tensor]] = {}  # by id (a WeakSet compares)

    def _on_host(self, t: torch.Tensor) -> bool:
        ref = self.host.get(id(t))
        return ref is not None and ref() is t

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        kwargs = kwargs or {}
        inputs = _tensors([*args, *kwargs.values()])
        if inputs:
            on_host = all(self._on_host(t) for t in inputs) and name not in _MOVES
        else:  # a factory: on the host unless given a device
            on_host = "device" not in kwargs
        if name in SYNCING and not on_host:
            self.count.count += 1
            self.count.where[f"{name} @ {_caller()}"] += 1
        result = func(*args, **kwargs)
        for t in _tensors([result]):
            if on_host or name == "cpu":
                self.host[id(t)] = weakref.ref(t)
            elif name in _MOVES:  # on the CPU ``.to("cpu")`` returns the tensor itself
                self.host.pop(id(t), None)
        return result


@contextmanager
def counting_syncs(device: Any) -> Iterator[SyncCount]:
    """Inside the block, count host synchronisations on ``device`` (see the module docstring)."""
    if torch.device(device).type != "cuda":
        count = SyncCount(CPU_METHOD)
        with _Counting(count):
            yield count
        return
    count = SyncCount(CUDA_METHOD)
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield count
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for w in caught:
        if "synchroniz" in str(w.message):
            count.count += 1
            count.where[f"{Path(w.filename).name}:{w.lineno}"] += 1
