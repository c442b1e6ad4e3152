"""Reading a sweep store: the per-candidate scores streamed over the parts, items on demand.

A sweep store (:mod:`roleprobe.experiments.store`) holds one parquet part per work item;
the paper preset writes about 45k candidates x 300 questions = 13 M per-item rows, about
3 GB as one pandas table. :func:`merge` therefore reads only the small baseline parts and
the list of finished parts; :meth:`SweepResult.scores` aggregates per candidate part by
part (pyarrow reads only the columns it needs, so memory stays flat whatever the size of
the store), and the per-item table is read only when asked for:
:meth:`SweepResult.read_table` with ``roles``/``ids``/``columns`` filters pushed down to
the parquet reader, or :attr:`SweepResult.table` for everything (cached; fine for small
sweeps, 13 M rows are gigabytes).

**Exact, not approximately equal.** The scores equal, bit for bit, what
``table.groupby(candidate).mean()`` gives on the concatenated table: pandas sums each
group with compensated (Kahan) summation in row order, and the stream does the same
arithmetic in the same order (parts in key order, rows in part order), carrying each
candidate's running sum and compensation from one part to the next. A selection rule that
compares an accuracy with the baseline therefore picks as it did on the in-memory table.

**Querying a store directly.** Every part has the same columns: the item (``id, subject,
domain, answer``), the scores (``pred, correct, logprob_A..D, logprob_correct, margin,
tied, tie_rule``) and, for ``layer*`` parts, the candidate (``role, source, donor,
position, layer, condition, alpha, group``; ``alpha`` is NaN for the ablation). With
pyarrow::

    import pyarrow.dataset as ds
    import pyarrow.compute as pc
    parts = ds.dataset("runs/x/04_sweep/store/parts", format="parquet")
    lawyer = parts.to_table(
        columns=["position", "layer", "condition", "alpha", "id", "correct"],
        filter=(pc.field("role") == "lawyer") & (pc.field("source") == "role"),
    )
    by_layer = lawyer.group_by(["layer", "condition", "alpha"]).aggregate(
        [("correct", "mean"), ("correct", "count")]
    )

(``baseline-*`` parts lack the candidate columns; filter on ``role`` or read
``parts/layer*.parquet`` to skip them; duckdb reads the same folder with
``read_parquet('parts/layer*.parquet')``.)

Example:
    >>> result = rp.merge("runs/x/04_sweep/store")
    >>> result.scores().sort_values("delta_accuracy").tail()   # streamed, flat memory
    >>> result.read_table(roles=["lawyer"])                   # the items of one role
"""

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from roleprobe.data.benchmarks import LETTERS
from roleprobe.experiments.store import MANIFEST, ResultStore, read_manifest, reading_part
from roleprobe.experiments.sweep_config import CANDIDATE, SweepConfig, role_group

logger = logging.getLogger(__name__)

_MEANS = ["correct", "logprob_correct", "margin"]
"""Per-item columns averaged per candidate (compensated sums, as pandas)."""
_SCORE_COLUMNS = [*CANDIDATE, "id", *_MEANS, "pred", "tied", "tie_rule"]
_LAYER_PART = re.compile(r"^layer\d+-(?P<group>.+)-b\d+$")


class SweepResult:
    """What a sweep produced (possibly partial: see ``missing`` and ``in_flight``).

    Args:
        table: the per-item table, or ``None`` to read it from ``parts`` on demand.
        baseline: one row per (group, question), unsteered.
        config: the sweep's configuration.
        n_layers: the model's depth (the paper's rule drops layers >= 0.8 of it).
        missing: store parts of the plan not finished yet.
        store: the store folder (``None`` for an in-memory sweep).
        in_flight: those of ``missing`` that other workers hold claims on (computing now).
        parts: the finished ``layer*`` part files, in key order (with ``table=None``).
        skipped: the (role, position, layer) candidates of the grid the sweep did not run
            because their direction is zero (e.g. layer 0 at post-instruction positions).

    Attributes:
        baseline, config, n_layers, missing, store, in_flight, skipped: as above.
        pending: the parts the call that made this result was asked for (its shard, or the
            whole plan) that other workers still hold; empty when that call's share is done
            (:func:`roleprobe.sweep` sets it; :func:`merge` leaves it empty).
        table: one row per (candidate, question): ``role, source, donor, position, layer,
            condition, alpha, group`` and the per-item scores of :func:`roleprobe.evaluate`
            (read from the store at first use when the result came from :func:`merge`).
    """

    def __init__(
        self,
        table: pd.DataFrame | None,
        baseline: pd.DataFrame,
        config: SweepConfig,
        n_layers: int,
        missing: Sequence[str] | None = None,
        store: Path | None = None,
        in_flight: Sequence[str] | None = None,
        parts: Sequence[Path] | None = None,
        skipped: Sequence[tuple[str, Any, int]] | None = None,
    ) -> None:
        if table is None and parts is None:
            raise ValueError("SweepResult needs a table or the store parts to read it from")
        self._table = table
        self._parts = None if table is not None else list(parts or [])
        self.baseline = baseline
        self.config = config
        self.n_layers = n_layers
        self.missing = list(missing or [])
        self.store = store
        self.in_flight = list(in_flight or [])
        self.skipped = [(str(r), p, int(layer)) for r, p, layer in skipped or []]
        self.pending: list[str] = []

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{len(self.missing)} parts missing"
        if self.in_flight:
            state += f", {len(self.in_flight)} being computed by other workers"
        return (
            f"SweepResult({len(self.config.roles)} roles, layers {list(self.config.layers)}, "
            f"{self.n_rows} rows, {state}, store={str(self.store) if self.store else None})"
        )

    @property
    def complete(self) -> bool:
        """Whether every work item of the plan is done."""
        return not self.missing

    @property
    def table(self) -> pd.DataFrame:
        """The whole per-item table (read from the store once, then kept)."""
        if self._table is None:
            self._table = self.read_table()
            self._parts = None
        return self._table

    @table.setter
    def table(self, value: pd.DataFrame) -> None:
        self._table, self._parts = value, None

    @property
    def n_rows(self) -> int:
        """Rows of the per-item table (from the parts' metadata; nothing is read)."""
        if self._parts is None:
            return len(self.table)
        rows = 0
        for path in self._parts:
            with reading_part(path, self._parts):
                rows += pq.ParquetFile(path).metadata.num_rows
        return rows

    def role_group(self, role: str) -> str:
        """The question group the role was swept on."""
        return role_group(role, self.config.scope)

    def role_items(self, role: str) -> list[Any]:
        """Ids of the questions the role was swept on."""
        group = self.role_group(role)
        return self.baseline.loc[self.baseline["group"] == group, "id"].tolist()

    def read_table(
        self,
        roles: Sequence[str] | None = None,
        ids: Iterable[Any] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Per-item rows, optionally of some roles, questions or columns only.

        Only the parts of the roles' question groups are opened, and the filters and the
        column list are pushed down to the parquet reader, so one role of a large store
        costs that role's rows only.

        Args:
            roles: keep the rows of these roles (default: all).
            ids: keep the rows of these question ids (default: all).
            columns: the columns to read (default: all).

        Returns:
            The rows in table order (parts in key order), index ``0..n-1``.
        """
        wanted_ids = None if ids is None else set(ids)
        if self._parts is None:
            table = self.table
            keep = np.ones(len(table), dtype=bool)
            if roles is not None:
                keep &= table["role"].isin(list(roles)).to_numpy()
            if wanted_ids is not None:
                keep &= table["id"].isin(wanted_ids).to_numpy()
            out = table[keep] if not keep.all() else table
            out = out[list(columns)] if columns is not None else out
            return out.reset_index(drop=True)
        frames = list(self._read_parts(roles, wanted_ids, columns))
        if not frames:
            return pd.DataFrame(columns=list(columns) if columns is not None else None)
        return pd.concat(frames, ignore_index=True)

    def _read_parts(
        self,
        roles: Sequence[str] | None,
        ids: set[Any] | None,
        columns: Sequence[str] | None,
    ) -> Iterator[pd.DataFrame]:
        """The parts that may hold rows of ``roles`` and ``ids``, each filtered."""
        groups = None if roles is None else {self.role_group(r) for r in roles}
        if ids is not None:
            base = self.baseline[self.baseline["id"].isin(ids)]
            hit = set(base["group"])
            groups = hit if groups is None else groups & hit
        filters: list[tuple[str, str, Any]] = []
        if roles is not None:
            filters.append(("role", "in", list(roles)))
        for path in self._parts or []:
            match = _LAYER_PART.match(path.stem)
            if groups is not None and match is not None and match["group"] not in groups:
                continue
            with reading_part(path, self._parts or []):
                frame = pd.read_parquet(
                    path,
                    columns=list(columns) if columns is not None else None,
                    filters=filters or None,
                )
            if ids is not None:
                frame = frame[frame["id"].isin(ids)]
            yield frame

    def scores(self, ids: Sequence[Any] | None = None) -> pd.DataFrame:
        """Per candidate: ``n``, ``accuracy``, ``base_accuracy``, ``delta_accuracy``,
        ``logprob_correct``, ``delta_logprob``, ``margin``, the predicted-letter shares
        ``pred_A..pred_D``, ``n_tied`` (items with a tie at the top) and ``tie_rule`` (how
        ties were scored) (optionally on a subset of question ids only).

        Streamed part by part from the store (flat memory) unless the table is in memory;
        the numbers are the same either way (see the module docstring)."""
        if self._parts is None:
            return candidate_scores(self.table, self.baseline, self.config.scope, ids)
        wanted = None if ids is None else set(ids)
        chunks = self._read_parts(None, wanted, _score_columns(self._parts))
        return _scores(chunks, self.baseline, self.config.scope, wanted)


def _score_columns(parts: Sequence[Path]) -> list[str] | None:
    """The columns the scores need that the parts have (older parts lack ``tied``)."""
    if not parts:
        return None
    with reading_part(parts[0], parts):
        names = set(pq.read_schema(parts[0]).names)
    return [c for c in _SCORE_COLUMNS if c in names]


def _with_tie_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``tied`` and ``tie_rule``; tables from before they existed scored a
    tie as the earliest letter and did not count ties (``n_tied`` reads NaN for them)."""
    missing = {"tied": 1, "tie_rule": "first"}
    extra = {k: v for k, v in missing.items() if k not in table.columns}
    return table.assign(**extra) if extra else table


def candidate_scores(
    table: pd.DataFrame, baseline: pd.DataFrame, scope: str, ids: Sequence[Any] | None = None
) -> pd.DataFrame:
    """Aggregate a sweep table per candidate, beside the baseline on the same questions.

    ``accuracy`` is the mean credit under the table's tie rule (``tie_rule`` column; tables
    without one, written before ties were counted, read as ``"first"``).
    """
    wanted = None if ids is None else set(ids)
    if wanted is not None:
        table = table[table["id"].isin(wanted)]
    step = 1 << 20
    chunks = (table.iloc[i : i + step] for i in range(0, max(len(table), 1), step))
    return _scores(chunks, baseline, scope, wanted)


def _nan_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A dict key for a candidate: NaN (the ablation's alpha) as ``None``."""
    return tuple(None if isinstance(v, float) and v != v else v for v in key)


class _Accumulator:
    """Per-candidate running sums over chunks of rows, in pandas's arithmetic.

    pandas's grouped mean adds each group's values in row order with Kahan compensation
    (skipping NaN) and divides by the count; this does the same across chunks, rows of
    one candidate in one chunk taken in order by their rank within it.
    """

    def __init__(self) -> None:
        self.index: dict[tuple[Any, ...], int] = {}
        self.keys: list[pd.DataFrame] = []
        size = 1024
        self.sums = np.zeros((size, len(_MEANS)))
        self.comp = np.zeros((size, len(_MEANS)))
        self.nobs = np.zeros((size, len(_MEANS)), dtype=np.int64)
        self.n = np.zeros(size, dtype=np.int64)
        self.tied = np.zeros(size, dtype=np.int64)
        self.letters = np.zeros((size, len(LETTERS)), dtype=np.int64)
        self.rules: set[Any] = set()
        self.counted = False

    def _grow(self, needed: int) -> None:
        size = len(self.n)
        if needed <= size:
            return
        new = max(needed, 2 * size)
        for name in ("sums", "comp", "nobs", "n", "tied", "letters"):
            old = getattr(self, name)
            grown = np.zeros((new, *old.shape[1:]), dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def add(self, chunk: pd.DataFrame) -> None:
        self.counted |= "tied" in chunk.columns
        chunk = _with_tie_columns(chunk)
        self.rules |= set(chunk["tie_rule"].unique())
        if chunk.empty:
            return
        local = chunk.groupby(CANDIDATE, dropna=False, sort=False).ngroup().to_numpy()
        _, first = np.unique(local, return_index=True)  # first row of local group 0, 1, ...
        firsts = chunk[CANDIDATE].iloc[first]
        mapping = np.empty(len(first), dtype=np.int64)
        new_rows = []
        for i, key in enumerate(firsts.itertuples(index=False, name=None)):
            norm = _nan_key(key)
            code = self.index.get(norm)
            if code is None:
                code = self.index[norm] = len(self.index)
                new_rows.append(i)
            mapping[i] = code
        if new_rows:
            self.keys.append(firsts.iloc[new_rows])
        self._grow(len(self.index))
        codes = mapping[local]
        np.add.at(self.n, codes, 1)
        np.add.at(self.tied, codes, (chunk["tied"].to_numpy() > 1).astype(np.int64))
        pred = chunk["pred"].to_numpy()
        for j, letter in enumerate(LETTERS):
            np.add.at(self.letters[:, j], codes, (pred == letter).astype(np.int64))
        values = chunk[_MEANS].to_numpy(dtype=np.float64)
        rank = pd.Series(codes).groupby(codes).cumcount().to_numpy()
        order = np.argsort(rank, kind="stable")
        bounds = np.searchsorted(rank[order], np.arange(rank.max() + 2))
        for lo, hi in pairwise(bounds):
            rows = order[lo:hi]  # each candidate at most once: no clashes below
            g, v = codes[rows], values[rows]
            ok = ~np.isnan(v)
            s, c = self.sums[g], self.comp[g]
            y = v - c
            t = s + y
            new_c = (t - s) - y
            new_c[np.isnan(new_c)] = 0.0  # an infinite value: pandas resets the compensation
            self.sums[g] = np.where(ok, t, s)
            self.comp[g] = np.where(ok, new_c, c)
            self.nobs[g] += ok

    def frame(self) -> pd.DataFrame:
        k = len(self.index)
        out = pd.concat(self.keys, ignore_index=True)
        nobs = self.nobs[:k]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(nobs > 0, self.sums[:k] / np.maximum(nobs, 1), np.nan)
        out["n"] = self.n[:k]
        for j, name in enumerate(_MEANS):
            out["accuracy" if name == "correct" else name] = means[:, j]
        out["n_tied"] = self.tied[:k]
        for j, letter in enumerate(LETTERS):
            out[f"pred_{letter}"] = self.letters[:k, j] / self.n[:k]
        return out


def _scores(
    chunks: Iterable[pd.DataFrame], baseline: pd.DataFrame, scope: str, ids: set[Any] | None
) -> pd.DataFrame:
    """Per-candidate scores of the rows in ``chunks`` (in table order), beside the baseline."""
    acc = _Accumulator()
    for chunk in chunks:
        acc.add(chunk)
    baseline = _with_tie_columns(baseline)
    rules = acc.rules | set(baseline["tie_rule"].unique())
    if len(rules) > 1:
        raise ValueError(f"the sweep mixes tie rules {sorted(rules)}: rescore with one rule")
    if ids is not None:
        baseline = baseline[baseline["id"].isin(ids)]
    if not acc.index:
        return pd.DataFrame(columns=[*CANDIDATE, "n", "accuracy", "base_accuracy", "tie_rule"])
    out = acc.frame()
    base = baseline.groupby("group").agg(
        base_n=("correct", "size"),
        base_accuracy=("correct", "mean"),
        base_logprob=("logprob_correct", "mean"),
    )
    out["group"] = [role_group(r, scope) for r in out["role"]]
    out = out.join(base, on="group")
    if (out["n"] != out["base_n"]).any():
        raise ValueError("candidates and baseline cover different questions (incomplete sweep?)")
    out["delta_accuracy"] = out["accuracy"] - out["base_accuracy"]
    out["delta_logprob"] = out["logprob_correct"] - out["base_logprob"]
    out["tie_rule"] = rules.pop() if rules else "first"
    if not acc.counted:
        out["n_tied"] = np.nan
    return out.drop(columns=["base_n"])


def merge(store: str | os.PathLike[str], allow_partial: bool = False) -> SweepResult:
    """The results of a sweep store (e.g. after all shards or workers finished).

    Reads the baseline and the list of finished parts; the per-item table is read on
    demand (:attr:`SweepResult.table`, :meth:`SweepResult.read_table`) and the scores are
    streamed (:meth:`SweepResult.scores`), so merging a large store takes little memory.

    Args:
        store: the store folder.
        allow_partial: return what is finished instead of raising when parts are missing.

    Returns:
        A :class:`SweepResult`; ``missing`` lists the unfinished parts of the plan and
        ``in_flight`` those of them that workers hold claims on.

    Raises:
        ValueError: parts of the plan are missing (listed; those being computed by other
            workers counted) and ``allow_partial`` is False, or the folder holds no sweep
            manifest.
        BadPartError: a baseline part is not a readable parquet file. A damaged ``layer``
            part is named (with the fix) when the result reads it: ``scores``,
            ``n_rows``, ``read_table`` (see :mod:`roleprobe.experiments.store`).
    """
    root = Path(store)
    try:
        manifest = read_manifest(root)
    except FileNotFoundError as err:
        raise ValueError(f"{root} is not a sweep store (no {MANIFEST})") from err
    try:
        config = manifest["config"]
        cfg = SweepConfig.from_dict(config["sweep"])
        plan = list(config["plan"])
        n_layers = int(config["n_layers"])
        skipped = [(str(r), p, int(la)) for r, p, la in config.get("skipped", [])]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{root / MANIFEST} is not a sweep manifest: {err}") from err
    results = ResultStore(root, manifest)
    done = results.done()
    missing = [key for key in plan if key not in done]
    claimed = results.claimed()
    in_flight = [key for key in missing if key in claimed]
    if missing and not allow_partial:
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        busy = f"; {len(in_flight)} of them claimed by running workers" if in_flight else ""
        raise ValueError(
            f"the sweep in {root} is incomplete: {len(missing)} of {len(plan)} parts "
            f"missing ({shown}){busy}"
        )
    finished = sorted(key for key in plan if key in done)
    baseline = results.read([k for k in finished if k.startswith("baseline-")])
    parts = [results.part_path(k) for k in finished if k.startswith("layer")]
    return SweepResult(None, baseline, cfg, n_layers, missing, root, in_flight, parts, skipped)
