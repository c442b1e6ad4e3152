"""Persona vs activation addition: each role on its own domain's questions.

The paper compares stating the role in the prompt (:class:`~roleprobe.Persona`, "You are a
lawyer.") with adding the role's direction to the residual stream
(:class:`~roleprobe.Addition`). :func:`persona_vs_addition` runs, for each role, on the
questions of the role's own domain:

* **baseline**: the model as it is (one evaluation per domain, shared by its roles);
* **persona**: ``Persona(role)``;
* **addition**: the role's direction at one ``layer`` and ``position`` with each ``α``, at
  every position (the paper's operator),

and compares each condition with the domain's baseline on the same items
(:func:`roleprobe.compare`: paired bootstrap intervals, McNemar / permutation tests).

It is resumable: with ``parts=FOLDER`` each domain's baseline and each role's conditions
are written as a CSV part as soon as they finish (atomically), and a rerun reads them
instead of computing them again (a crash loses at most one role). Roles run round-robin
over the domains, so a run cut short still covers every domain.

Footguns: on a model at chance on the questions (the embedded 135M model), read
``delta_logprob`` first; accuracy changes are then mostly letter-bias noise. A persona
replaces the template's default system prompt (``mode="auto"``), so it measures "persona
sentence vs default sentence".

Example:
    >>> rd = rp.compute_directions(model, positions=[-1], layers=[15])
    >>> bench = rp.load_benchmark("paper", path="../shared/data/role-vectors-paper")
    >>> table = persona_vs_addition(model, rd, bench, layer=15, per_domain=32, parts="p10")
"""

import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from roleprobe.core.io import write_csv
from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.data.roles import DOMAINS, get_role
from roleprobe.experiments.evaluation import evaluate
from roleprobe.results.stats import compare
from roleprobe.steering.interventions import Addition
from roleprobe.steering.persona import Persona
from roleprobe.vectors.activations import PositionLabel
from roleprobe.vectors.directions import RoleDirections

logger = logging.getLogger(__name__)

CONDITIONS = ("persona", "addition")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def round_robin(roles: Sequence[str]) -> list[str]:
    """``roles`` reordered round-robin over their domains (catalogue domain order)."""
    by_domain: dict[str, list[str]] = {d: [] for d in DOMAINS}
    for role in roles:
        by_domain[get_role(role).domain].append(role)
    order: list[str] = []
    for i in range(max((len(v) for v in by_domain.values()), default=0)):
        order += [names[i] for names in by_domain.values() if i < len(names)]
    return order


def domain_questions(
    bench: MultipleChoice, domain: str, per_domain: int, seed: int
) -> MultipleChoice:
    """The domain's questions: all, or a seeded sample of ``per_domain`` of them (the
    same items for every role of the domain)."""
    sub = bench.subset(domain=domain)
    if per_domain and len(sub) > per_domain:
        items = sub.items.sample(per_domain, random_state=seed).sort_index()
        sub = MultipleChoice(items.reset_index(drop=True), f"{sub.name}|n{per_domain}", sub.split)
    return sub


def letter_entropy(df: pd.DataFrame) -> "pd.Series[float]":
    """Per question, the entropy (nats) of the model's distribution over the letters A-D
    (from ``logprob_A`` ... ``logprob_D`` of :func:`roleprobe.evaluate`; at most ln 4)."""
    lp = df[[f"logprob_{x}" for x in LETTERS]].to_numpy(dtype=float)
    return pd.Series(-(np.exp(lp) * lp).sum(axis=1), index=df.index)


def _part(path: Path | None, make: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The part at ``path`` (read if it exists, else computed and written atomically)."""
    if path is not None and path.exists():
        return pd.read_csv(path)
    start = time.perf_counter()
    df = make()
    if path is not None:
        write_csv(path, df)
        logger.info("%s: %d rows in %.0f s", path.name, len(df), time.perf_counter() - start)
    return df


def persona_vs_addition(
    model: Model,
    directions: RoleDirections,
    benchmark: MultipleChoice,
    layer: int,
    roles: Sequence[str] | None = None,
    alphas: Sequence[float] = (1.0, 3.0),
    position: PositionLabel = -1,
    per_domain: int = 0,
    parts: str | Path | None = None,
    batch_size: int = 16,
    seed: int = 0,
    n_boot: int = 2000,
    n_perm: int = 5000,
    progress: bool = True,
    system: str | None = None,
) -> pd.DataFrame:
    """Per role: the persona and the role direction's addition vs the baseline, own domain.

    Args:
        model: the model the directions were computed on.
        directions: role directions holding ``layer`` and ``position``.
        benchmark: questions with a ``domain`` per item; each role answers its own
            domain's.
        layer: the addition layer.
        roles: which roles (default: every role of ``directions``), run round-robin over
            their domains.
        alphas: addition strengths (raw: ``α · d``, the paper's 1 and 3 by default).
        position: the direction's post-instruction position.
        per_domain: questions per domain (0: all; else a seeded sample).
        parts: a folder for the resumable parts (``None``: nothing is written).
        batch_size: questions per forward pass.
        seed: the sample's and the statistics' seed.
        n_boot, n_perm: bootstrap resamples and permutation draws of :func:`roleprobe.compare`.
        progress: one bar over the roles.
        system: the questions' system-turn policy (default: the directions', so that the
            baseline and the addition read the format the directions were made in; a
            persona replaces the system turn where the template has one).

    Returns:
        One row per role and condition (``persona``, ``addition α=…``): ``role, domain,
        condition, alpha, layer`` and :func:`roleprobe.compare`'s columns (``base_accuracy,
        accuracy, delta_accuracy`` with its CI and McNemar p, ``delta_logprob`` with its CI
        and permutation p, ``n``) and ``delta_entropy``, the mean change of the entropy of
        the letter distribution (:func:`letter_entropy`; negative: sharper), sorted by
        domain, role and condition. On a model at chance, a sharper letter distribution
        alone lowers the mean correct-letter log-prob: read ``delta_logprob`` beside it.

    Raises:
        ValueError: an unknown role, a role with no questions in its domain, a layer or
            position the directions do not hold, or an empty ``alphas`` with nothing to add.
    """
    names = list(directions.roles) if roles is None else list(roles)
    for role in names:
        directions.role_index(role)
    directions.layer_index(layer)
    directions.position_index(position)
    if any(not math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be finite numbers, got {list(alphas)}")
    folder = Path(parts) if parts is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    order = round_robin(names)
    questions = {}
    for role in order:
        domain = get_role(role).domain
        if domain not in questions:
            questions[domain] = domain_questions(benchmark, domain, per_domain, seed)
            if len(questions[domain]) == 0:
                raise ValueError(f"{benchmark.name} has no {domain} questions for role {role!r}")
    quiet: dict[str, Any] = {
        "batch_size": batch_size,
        "progress": False,
        "system": directions.system if system is None else system,
    }
    rows = []
    with bar(total=len(order), enabled=progress, desc="persona vs addition", unit="role") as b:
        for role in order:
            domain = get_role(role).domain
            q = questions[domain]

            def baseline(q: MultipleChoice = q) -> pd.DataFrame:
                return evaluate(model, q, None, **quiet)

            base = _part(folder / f"baseline_{domain}.csv" if folder else None, baseline)

            def conditions(q: MultipleChoice = q, r: str = role) -> pd.DataFrame:
                frames = [evaluate(model, q, Persona(r), **quiet).assign(alpha=float("nan"))]
                d = directions.vector(r, layer, position)
                for alpha in alphas:
                    added = evaluate(model, q, Addition(d, layer, float(alpha)), **quiet)
                    frames.append(added.assign(condition="addition", role=r, alpha=float(alpha)))
                return pd.concat(frames, ignore_index=True)

            part = _part(folder / f"role_{_slug(role)}.csv" if folder else None, conditions)
            base = base.sort_values("id").reset_index(drop=True)
            for (condition, alpha), df in part.groupby(["condition", "alpha"], dropna=False):
                other = df.sort_values("id").reset_index(drop=True)
                stats = compare(base, other, n_boot=n_boot, n_perm=n_perm, seed=seed)
                entropy = float((letter_entropy(other) - letter_entropy(base)).mean())
                label = "persona" if condition == "persona" else f"addition α={alpha:g}"
                rows.append(
                    {
                        "role": role,
                        "domain": domain,
                        "condition": label,
                        "alpha": alpha,
                        "layer": layer,
                        **stats.to_dict(),
                        "delta_entropy": entropy,
                    }
                )
            b.update(1)
    table = pd.DataFrame(rows)
    return table.sort_values(["domain", "role", "condition"]).reset_index(drop=True)


def sample_per_domain(bench: MultipleChoice, per_domain: int, seed: int = 0) -> MultipleChoice:
    """``bench`` with at most ``per_domain`` seeded questions of each domain (0: all)."""
    if not per_domain:
        return bench
    parts = [domain_questions(bench, d, per_domain, seed).items for d in DOMAINS]
    items = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return MultipleChoice(items, f"{bench.name}|n{per_domain}", bench.split)


def by_domain(table: pd.DataFrame) -> pd.DataFrame:
    """Means per domain and condition of a :func:`persona_vs_addition` table."""
    columns = ["base_accuracy", "accuracy", "delta_accuracy", "delta_logprob", "delta_entropy"]
    return table.groupby(["domain", "condition"])[columns].mean().reset_index()
