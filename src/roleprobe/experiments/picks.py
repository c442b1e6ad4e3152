"""Apply picked directions to every domain: the paper's role × domain table.

The paper picks one (position, layer) per role and α on the role's *own* domain, then
applies that pick to the questions of **all eight** domains, so its table has a row per
role and a column per domain (the diagonal is the own domain). :func:`apply_picks` does
the same, with one safeguard: the own-domain questions a pick was *chosen* on are not used
to report it.

* Own-domain cells: when ``heldout_ids`` gives a role's held-out question ids (the part
  that held-out selection never saw), only those are evaluated, marked
  ``part="heldout"``. Without them, the own domain is read in full and marked
  ``part="selected"``: these are the questions the pick was chosen on (the paper's
  procedure, optimistic).
* Other domains: every question, ``part="other"``.
* Ablation: one per role, of the direction picked for the smallest α evaluated (the paper
  takes the ablation values of α = 3 from the α = 1 list); ``ablation=False`` gives none.
* Zero directions: a pick of a zero direction (``zero_direction`` in the picks: the
  authors' layer-0 candidate, which the paper rule falls back on when nothing beats the
  baseline) changes nothing, so its rows are the unsteered model's: copied from
  ``baseline`` when given, else evaluated unsteered once per role, never steered.

Which questions are a role's "own" follows the sweep's scope: ``"domain"`` (its catalogue
domain) or ``"all"`` (every question was swept, so every question of the role is own).

Example:
    >>> picks = rp.select(result, rule="held-out")
    >>> heldout = {r: rp.split_ids(items[r], 0.5, 0)[1] for r in roles}
    >>> runs = apply_picks(model, rd, bench, picks, heldout_ids=heldout)
    >>> rp.effect_table(rp.evaluate(model, bench), runs)
"""

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments.evaluation import evaluate, subject_domain
from roleprobe.experiments.sweeps import SPECIFIC_SOURCES, candidate_vector, role_group
from roleprobe.results.stats import UNRECORDED, tie_rule_of
from roleprobe.steering.interventions import Ablation, Addition, Intervention
from roleprobe.vectors.activations import PositionLabel
from roleprobe.vectors.decomposition import specific_directions
from roleprobe.vectors.directions import RoleDirections

PARTS = ("heldout", "selected", "other")
"""Which questions a cell of :func:`apply_picks` reads (see the module docstring)."""
SCOPES = ("domain", "all")


def position_label(value: Any) -> PositionLabel:
    """A position label as stored in a table: integer offsets back to ``int``
    (``-1.0`` and ``"-1"`` are ``-1``), anything else as a string (``"mean"``)."""
    if isinstance(value, bool):
        raise ValueError(f"not a position label: {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


def _own_mask(items: pd.DataFrame, role: str, scope: str) -> "pd.Series[bool]":
    group = role_group(role, scope)
    if group == "all":
        return pd.Series(True, index=items.index)
    return items["subject"].map(subject_domain) == group


def _questions(
    bench: MultipleChoice, role: str, heldout: Collection[Any] | None, scope: str
) -> tuple[MultipleChoice, dict[Any, str]]:
    """The role's questions (own ones restricted to ``heldout``) and each one's part."""
    items = bench.items
    own = _own_mask(items, role, scope)
    if heldout is None:
        keep = pd.Series(True, index=items.index)
        part = np.where(own, "selected", "other")
    else:
        wanted = set(heldout)
        if not wanted:
            raise ValueError(f"heldout_ids[{role!r}] is empty")
        stray = wanted - set(items.loc[own, "id"])
        if stray:
            raise ValueError(
                f"heldout_ids[{role!r}] holds {len(stray)} ids that are not among the role's "
                f"own questions in {bench.name!r}, e.g. {sorted(stray, key=str)[:3]}"
            )
        keep = ~own | items["id"].isin(wanted)
        part = np.where(own, "heldout", "other")
    subset = MultipleChoice(items[keep], f"{bench.name} for {role}", bench.split)
    return subset, dict(zip(items.loc[keep, "id"], part[keep.to_numpy()], strict=True))


def apply_picks(
    model: Model,
    directions: RoleDirections,
    benchmark: MultipleChoice,
    picks: pd.DataFrame,
    heldout_ids: Mapping[str, Collection[Any]] | None = None,
    alphas: Sequence[float] | None = None,
    ablation: bool = True,
    ablation_at: str | None = None,
    source: str = "role",
    scope: str = "domain",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
    tie_rule: str = "fractional",
    system: str | None = None,
    baseline: pd.DataFrame | None = None,
    check_model: bool = True,
) -> pd.DataFrame:
    """Evaluate every role's pick on every domain of ``benchmark`` (see the module docstring).

    Args:
        model: the bridge.
        directions: the :class:`~roleprobe.RoleDirections` the picks index.
        benchmark: the questions (all domains; the table has a cell per role × domain
            present).
        picks: :func:`roleprobe.select` output (or any table with ``role, source, donor,
            alpha, position, layer``); rows of other sources are ignored.
        heldout_ids: per role, the ids of its own questions that selection did not see;
            its own-domain cells use only these (``part="heldout"``). ``None``: the own
            domain in full (``part="selected"``, the paper's procedure). When given, it
            must name every role.
        alphas: which α to apply (default: every α in ``picks``).
        ablation: also ablate, once per role, the direction picked for the smallest α.
        ablation_at: the :class:`~roleprobe.Ablation` placement (``at=``); ``None``: its
            default.
        source: which rows of ``picks`` (``"role"``; a control's name applies the
            control's pick under the role's label; ``"specific"`` and its controls apply
            the role-specific parts of ``directions``, as :func:`roleprobe.sweep` with
            ``specific=True`` ran them).
        scope: the sweep's scope, which sets a role's own questions: ``"domain"`` or
            ``"all"``.
        seed: the sweep's seed (for the random controls).
        batch_size: questions per forward pass; progress: tqdm bars.
        tie_rule: how ties at the top of the letter logits are scored (see
            :func:`roleprobe.evaluate`); use the sweep's.
        system: the system-turn policy of the questions (default: the directions' own).
        baseline: the unsteered :func:`roleprobe.evaluate` table of ``benchmark`` (same
            tie rule and system turn); picks of a zero direction copy its rows instead of
            running the model. ``None``: they are evaluated unsteered.
        check_model: refuse directions computed on a model with other weights (their
            recorded fingerprint against ``model``'s, before any forward pass). ``False``
            uses them anyway, with a warning (width and layers are still checked).

    Returns:
        Per-item rows of :func:`roleprobe.evaluate` with ``role, source, position, layer,
        condition`` (``addition``/``ablation``), ``alpha`` (NaN for ablation),
        ``own_domain`` (the question is among the role's own) and ``part`` (one of
        :data:`PARTS`) — the input of :func:`roleprobe.effect_table`.

    Raises:
        ValueError: no picks of ``source``, an α without picks, an unknown scope, held-out
            ids missing for a role, empty, or outside its own questions, a ``baseline``
            that lacks questions or was scored otherwise, or directions of another model
            (``check_model``).
    """
    directions.check_model(model, strict=check_model, opt_out="apply_picks(check_model=False)")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; use one of {list(SCOPES)}")
    chosen = picks[picks["source"] == source]
    if chosen.empty:
        raise ValueError(
            f"no picks with source {source!r} (sources: {sorted(set(picks['source']))})"
        )
    chosen = chosen.assign(alpha=chosen["alpha"].astype(float))
    available = sorted(set(chosen["alpha"]))
    wanted = available if alphas is None else [float(a) for a in alphas]
    absent = [a for a in wanted if not any(math.isclose(a, b) for b in available)]
    if absent:
        raise ValueError(f"no picks for alpha {absent}; the picks have alphas {available}")
    chosen = chosen[[any(math.isclose(a, w) for w in wanted) for a in chosen["alpha"]]]
    roles = list(dict.fromkeys(str(r) for r in chosen["role"]))
    if heldout_ids is not None:
        missing = [r for r in roles if r not in heldout_ids]
        if missing:
            raise ValueError(f"heldout_ids lacks roles {missing} (it has {sorted(heldout_ids)})")
    specific = specific_directions(directions) if source in SPECIFIC_SOURCES else None
    asked = directions.system if system is None else system
    if baseline is not None:
        _check_baseline(baseline, benchmark, tie_rule, asked)
    tables = []
    runs = len(chosen) + (len(roles) if ablation else 0)  # additions, one ablation a role
    with bar(total=runs, enabled=progress, desc="picks", unit="run") as outer:
        for role in roles:
            held = None if heldout_ids is None else heldout_ids[role]
            questions, parts = _questions(benchmark, role, held, scope)
            mine = chosen[chosen["role"] == role].sort_values("alpha", kind="mergesort")
            unsteered: pd.DataFrame | None = None
            for i, (_, row) in enumerate(mine.iterrows()):
                layer, position = int(row["layer"]), position_label(row["position"])
                donor = (
                    str(row["donor"]) if "donor" in row and isinstance(row["donor"], str) else ""
                )
                vector = candidate_vector(
                    directions, source, role, donor, layer, position, seed, specific
                )
                labels = {"role": role, "source": source, "position": position, "layer": layer}
                zero = _is_zero_pick(row, vector)
                specs: list[tuple[str, Intervention | None, float]] = [
                    (
                        "addition",
                        None if zero else Addition(vector, layer, float(row["alpha"])),
                        float(row["alpha"]),
                    )
                ]
                if ablation and i == 0:
                    ablate = None
                    if not zero:
                        ablate = (
                            Ablation(vector)
                            if ablation_at is None
                            else Ablation(vector, at=ablation_at)
                        )
                    specs.append(("ablation", ablate, math.nan))
                for condition, spec, alpha in specs:
                    if spec is None:  # a zero direction: the unsteered model
                        if unsteered is None:
                            unsteered = _unsteered(
                                model, questions, baseline, batch_size, progress, tie_rule, asked
                            )
                        table = unsteered.drop(columns=["condition"], errors="ignore")
                    else:
                        table = evaluate(
                            model,
                            questions,
                            spec,
                            batch_size,
                            progress=progress,
                            tie_rule=tie_rule,
                            system=asked,
                        )
                    table = table.assign(**labels, alpha=alpha, condition=condition)
                    table["zero_direction"] = zero
                    table["part"] = table["id"].map(parts)
                    table["own_domain"] = table["part"] != "other"
                    tables.append(table)
                    outer.update()
    return pd.concat(tables, ignore_index=True)


def _is_zero_pick(row: "pd.Series[Any]", vector: torch.Tensor) -> bool:
    """Whether a pick applies a zero direction (marked by selection, or exactly zero)."""
    return bool(row.get("zero_direction", False)) or not bool(vector.any())


def _check_baseline(
    baseline: pd.DataFrame, benchmark: MultipleChoice, tie_rule: str, system: str
) -> None:
    """The baseline covers the benchmark and was scored as the picks will be."""
    missing = set(benchmark.items["id"]) - set(baseline["id"])
    if missing:
        raise ValueError(
            f"baseline lacks {len(missing)} questions of {benchmark.name!r}, "
            f"e.g. {sorted(missing, key=str)[:3]}"
        )
    scored = tie_rule_of(baseline, "baseline")
    if scored not in (tie_rule, UNRECORDED):
        raise ValueError(f"baseline was scored with tie_rule {scored!r}, not {tie_rule!r}")
    if "system_policy" in baseline.columns and set(baseline["system_policy"]) != {system}:
        raise ValueError(
            f"baseline was asked with system {sorted(set(baseline['system_policy']))}, "
            f"the picks with {system!r}"
        )


def _unsteered(
    model: Model,
    questions: MultipleChoice,
    baseline: pd.DataFrame | None,
    batch_size: int,
    progress: bool,
    tie_rule: str,
    system: str,
) -> pd.DataFrame:
    """The unsteered rows of ``questions``: from ``baseline``, else evaluated once."""
    if baseline is None:
        return evaluate(
            model, questions, None, batch_size, progress=progress, tie_rule=tie_rule, system=system
        )
    rows = baseline.drop_duplicates("id").set_index("id").loc[questions.items["id"]]
    return rows.reset_index()
