"""Claims: which worker is computing a unit of work now, judged from facts, not a timeout.

Several processes (the tasks of a Slurm array, a second node joining late, two notebooks)
may work on one folder at once. Before computing a unit (a sweep item, a pipeline stage) a
worker *claims* it: it creates ``<folder>/<key>.claim`` exclusively (complete or absent,
never half written; of two workers exactly one gets it). The claim records who holds it —
host, pid, start time, a random token and, under Slurm, the job and array task — and a
*heartbeat*: a thread of the holder rewrites the claim's ``time`` every
:func:`heartbeat_interval` seconds while it holds it. Another worker takes a claim over
when it is *stale*, for one of these reasons, checked in this order:

1. its process is gone: same host, and no process with its pid (at once);
2. it was left by this very process (an interrupted call; at once, quietly);
3. its Slurm job is no longer running, or now runs on another node (requeued): asked of
   ``squeue`` when the claim names a job and ``squeue`` is on the ``PATH`` (at once);
4. its heartbeat is older than the lease (:data:`LEASE`, 5 minutes by default; a
   setting, ``lease_s`` / ``--lease``): the catch-all for a node that died, a frozen
   process, a site without ``squeue``.

A live worker keeps its claims: its heartbeat is refreshed ten times per lease. Taking
over uses only atomic create and rename — no ``flock``, which Lustre and some NFS mounts
lack: the taker renames the stale claim aside (of several takers one succeeds), checks
that what it moved is what it judged stale (a heartbeat in between puts it back), and
creates its own claim exclusively. The rare race that survives (a holder frozen for longer
than the lease wakes up) computes one unit twice, and both write the same bytes.

Example:
    >>> claims = Claims("runs/x/04_sweep/store/claims", lease=300)
    >>> if claims.claim("layer003-law-b0001"):
    ...     compute()
    ...     claims.release("layer003-law-b0001")
"""

import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roleprobe.core.io import atomic_write_text, create_text

logger = logging.getLogger(__name__)

__all__ = [
    "LEASE",
    "Claims",
    "Holder",
    "SlurmJobs",
    "check_lease",
    "heartbeat_interval",
    "this_worker",
]

LEASE = 300.0
"""Seconds without a heartbeat after which a claim is stale, whoever holds it."""
SUFFIX = ".claim"
_KEY = re.compile(r"^[A-Za-z0-9_.=+-]+$")
_SLURM_ENV = {
    "job": "SLURM_JOB_ID",
    "array_job": "SLURM_ARRAY_JOB_ID",
    "array_task": "SLURM_ARRAY_TASK_ID",
    "restart": "SLURM_RESTART_COUNT",
}
_LIVE_TOKENS: set[str] = set()
"""Tokens of the claims held by live :class:`Claims` objects of this process."""
_LIVE_LOCK = threading.Lock()


def check_lease(lease: Any) -> float:
    """``lease`` as a positive finite number of seconds (``ValueError`` naming it)."""
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise ValueError(f"lease must be a number of seconds, got {lease!r}")
    if not math.isfinite(lease) or lease <= 0:
        raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
    return float(lease)


def heartbeat_interval(lease: float) -> float:
    """Seconds between a holder's heartbeats: a tenth of the lease, at most 30 s."""
    return min(30.0, lease / 10.0)


def this_worker() -> dict[str, Any]:
    """Who this process is: host, pid and, under Slurm, its job, array job and task ids and
    restart count (only those set)."""
    slurm = {name: os.environ[var] for name, var in _SLURM_ENV.items() if os.environ.get(var)}
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm": slurm}


@dataclass(frozen=True)
class Holder:
    """What a claim file says about its holder.

    Attributes:
        host, pid: where the holder runs.
        heartbeat: when it last said it is alive (seconds since the epoch).
        token: the claim's random token (a holder recognises its own claims by it).
        lease: the holder's lease in seconds (``None`` in claims of earlier versions).
        started: when the claim was made (local time, ISO 8601).
        slurm: ``job``, ``array_job``, ``array_task``, ``restart`` when under Slurm.
    """

    host: str
    pid: int
    heartbeat: float
    token: str
    lease: float | None = None
    started: str = ""
    slurm: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> "Holder | None":
        """The holder a claim's text names, or ``None`` if it is not a readable claim."""
        try:
            info = json.loads(text)
            lease = info.get("lease")
            slurm = info.get("slurm") or {}
            return cls(
                host=str(info["host"]),
                pid=int(info["pid"]),
                heartbeat=float(info["time"]),
                token=str(info.get("token", "")),
                lease=None if lease is None else float(lease),
                started=str(info.get("started", "")),
                slurm={str(k): str(v) for k, v in dict(slurm).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def job(self) -> str:
        """The Slurm job as ``squeue`` shows it (``123_4`` for an array task), or ``""``."""
        if "array_job" in self.slurm and "array_task" in self.slurm:
            return f"{self.slurm['array_job']}_{self.slurm['array_task']}"
        return self.slurm.get("job", "")

    def describe(self, now: float | None = None) -> str:
        """One phrase naming the holder, e.g. ``pid 4242 on node-7 (Slurm job 123_4),
        heartbeat 12 s ago``."""
        age = (time.time() if now is None else now) - self.heartbeat
        job = f" (Slurm job {self.job})" if self.job else ""
        return f"pid {self.pid} on {self.host}{job}, heartbeat {age:.0f} s ago"


_RUNNING = frozenset({"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "STOPPED"})
"""Slurm job states in which the job's processes still exist."""


class SlurmJobs:
    """The state of Slurm jobs, asked of ``squeue`` (answers kept ``ttl`` seconds).

    Args:
        command: the ``squeue`` executable (default: the one on the ``PATH``, if any).
        ttl: seconds an answer is reused.
    """

    def __init__(self, command: str | None = None, ttl: float = 30.0) -> None:
        self.command = command if command is not None else shutil.which("squeue")
        self.ttl = ttl
        self._cache: dict[str, tuple[float, tuple[str, str] | None]] = {}

    def state(self, job_id: str) -> tuple[str, str] | None:
        """``(state, batch host)`` of the job with Slurm id ``job_id`` (``SLURM_JOB_ID``);
        ``("GONE", "")`` when Slurm no longer knows it; ``None`` when it cannot be told
        (no ``squeue``, or it failed)."""
        if not self.command or not job_id:
            return None
        now = time.monotonic()
        cached = self._cache.get(job_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        answer = self._ask(job_id)
        self._cache[job_id] = (now, answer)
        return answer

    def _ask(self, job_id: str) -> tuple[str, str] | None:
        try:
            out = subprocess.run(
                [str(self.command), "-h", "-j", job_id, "-o", "%A|%T|%B"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        if out.returncode != 0:
            return ("GONE", "") if "invalid job id" in out.stderr.lower() else None
        for line in out.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3 and parts[0] == job_id:
                return parts[1].upper(), parts[2]
        return ("GONE", "")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


class Claims:
    """The claims in one folder: take, hold (with a heartbeat), release, list.

    Args:
        folder: where the claim files live (created on the first claim).
        lease: seconds without a heartbeat after which another worker's claim is stale
            (:func:`check_lease`); also this object's promise: it refreshes its own
            claims every :func:`heartbeat_interval` seconds.
        slurm: how Slurm jobs are looked up (default: ``squeue`` on the ``PATH``).
        clock: the time source (seconds since the epoch).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        lease: float | int = LEASE,
        slurm: SlurmJobs | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = Path(folder)
        self.lease = check_lease(lease)
        self.slurm = slurm if slurm is not None else SlurmJobs()
        self.clock = clock
        self._tokens: dict[str, str] = {}  # key -> token of the claims this object holds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path(self, key: str) -> Path:
        """The claim file of ``key``."""
        if not _KEY.match(key):
            raise ValueError(f"bad claim key {key!r}: use letters, digits and _ . = + -")
        return self.folder / f"{key}{SUFFIX}"

    def _text(self, token: str, started: str | None = None) -> str:
        me = this_worker()
        return json.dumps(
            {
                "host": me["host"],
                "pid": me["pid"],
                "time": self.clock(),
                "started": started or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "token": token,
                "lease": self.lease,
                "slurm": me["slurm"],
            }
        )

    # -- taking and giving back -------------------------------------------------------------

    def claim(self, key: str) -> bool:
        """Claim ``key`` for this worker unless a live worker holds it (a stale claim is
        taken over, with a warning naming why); ``True`` when this object now holds it."""
        path = self.path(key)
        with self._lock:
            if key in self._tokens:
                return False  # held by this object already
        self.folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        text = self._text(token)
        if not create_text(path, text) and not self._take_over(key, path, text):
            return False
        with self._lock:
            self._tokens[key] = token
            with _LIVE_LOCK:
                _LIVE_TOKENS.add(token)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._beat, name=f"roleprobe-heartbeat-{self.folder.name}", daemon=True
                )
                self._thread.start()
        return True

    def _take_over(self, key: str, path: Path, text: str) -> bool:
        """Replace a stale claim on ``key`` by ours, with atomic renames only."""
        try:
            held = path.read_text(encoding="utf-8")
        except FileNotFoundError:  # released meanwhile
            return create_text(path, text)
        except OSError:
            return False
        why = self.why_stale(Holder.parse(held), path)
        if why is None:
            return False
        aside = path.with_name(f".{path.name}.{uuid.uuid4().hex}.stale")
        try:
            os.rename(path, aside)
        except FileNotFoundError:  # another worker moved it first, or it was released
            return create_text(path, text)
        try:
            moved = aside.read_text(encoding="utf-8")
            if moved != held:  # a heartbeat or another taker came in between: put it back
                create_text(path, moved)
                return False
        finally:
            aside.unlink(missing_ok=True)
        if why != "left by this process":
            logger.warning("claims %s: taking over the claim on %s (%s)", self.folder, key, why)
        return create_text(path, text)

    def release(self, key: str) -> None:
        """Remove this object's claim on ``key`` (if it still holds it)."""
        with self._lock:
            token = self._tokens.pop(key, None)
        if token is None:
            return
        with _LIVE_LOCK:
            _LIVE_TOKENS.discard(token)
        path = self.path(key)
        try:
            holder = Holder.parse(path.read_text(encoding="utf-8"))
        except OSError:
            return
        if holder is not None and holder.token == token:
            path.unlink(missing_ok=True)

    def release_all(self) -> None:
        """Remove every claim this object holds (e.g. after an interrupted computation)."""
        with self._lock:
            keys = list(self._tokens)
        for key in keys:
            self.release(key)

    def held(self) -> set[str]:
        """The keys this object holds."""
        with self._lock:
            return set(self._tokens)

    # -- reading ----------------------------------------------------------------------------

    def holders(self) -> dict[str, Holder | None]:
        """Every claim in the folder, by key (``None``: an unreadable claim file)."""
        out: dict[str, Holder | None] = {}
        if not self.folder.exists():
            return out
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError:
                continue
            out[path.name[: -len(SUFFIX)]] = Holder.parse(text)
        return out

    def why_stale(self, holder: Holder | None, path: Path | None = None) -> str | None:
        """Why a claim is stale (see the module docstring), or ``None`` while it holds.

        Args:
            holder: the claim's holder (``None``: unreadable; stale once the file is older
                than the lease).
            path: the claim file (for an unreadable claim's age).
        """
        now = self.clock()
        if holder is None:
            try:
                age = now - path.stat().st_mtime if path is not None else math.inf
            except OSError:
                return "unreadable claim, gone"
            return f"unreadable claim, {age:.0f} s old" if age > self.lease else None
        me = this_worker()
        if holder.host == me["host"]:
            if holder.pid == me["pid"]:
                with _LIVE_LOCK:
                    live = holder.token in _LIVE_TOKENS
                return None if live else "left by this process"
            if not _pid_alive(holder.pid):
                return f"its process {holder.pid} on this host has ended"
        if holder.slurm.get("job"):
            state = self.slurm.state(holder.slurm["job"])
            if state is not None:
                name, host = state
                if name == "GONE" or name not in _RUNNING:
                    return f"its Slurm job {holder.job} is {name.lower()}"
                if host and host != holder.host and name == "RUNNING":
                    return f"its Slurm job {holder.job} was requeued and runs on {host} now"
        lease = holder.lease if holder.lease is not None else self.lease
        age = now - holder.heartbeat
        if age > lease:
            return (
                f"pid {holder.pid} on {holder.host}: no heartbeat for {age:.0f} s > lease "
                f"{lease:.0f} s"
            )
        return None

    def describe(self, keys: Sequence[str], limit: int = 3) -> str:
        """Who holds ``keys``, in one phrase (the first ``limit``, then a count)."""
        holders = self.holders()
        now = self.clock()
        named = []
        for key in keys[:limit]:
            holder = holders.get(key)
            named.append(f"{key}: {holder.describe(now) if holder else 'unreadable claim'}")
        more = f"; and {len(keys) - limit} more" if len(keys) > limit else ""
        return "; ".join(named) + more

    # -- the heartbeat ------------------------------------------------------------------------

    def _beat(self) -> None:
        """Refresh this object's claims until it holds none (runs in a daemon thread)."""
        interval = heartbeat_interval(self.lease)
        while not self._stop.wait(interval):
            with self._lock:
                held = dict(self._tokens)
                if not held:
                    self._thread = None
                    return
            for key, token in held.items():
                self._refresh(key, token)
        with self._lock:
            self._thread = None

    def _refresh(self, key: str, token: str) -> None:
        path = self.path(key)
        try:
            holder = Holder.parse(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            holder = None
            if create_text(path, self._text(token)):  # moved aside by a taker: ours again
                return
            try:
                holder = Holder.parse(path.read_text(encoding="utf-8"))
            except OSError:
                return
        except OSError:
            return
        with self._lock:
            if self._tokens.get(key) != token:
                return  # released meanwhile
            if holder is not None and holder.token != token:
                logger.warning(
                    "claims %s: the claim on %s was taken over by %s; finishing it anyway "
                    "(the part is written atomically, the same bytes either way)",
                    self.folder,
                    key,
                    holder.describe(self.clock()),
                )
                self._tokens.pop(key, None)
                with _LIVE_LOCK:
                    _LIVE_TOKENS.discard(token)
                return
        started = holder.started if holder is not None else None
        atomic_write_text(path, self._text(token, started))

    def close(self) -> None:
        """Release every claim and stop the heartbeat."""
        self.release_all()
        self._stop.set()
