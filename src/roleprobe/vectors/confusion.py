"""Role vs role: can the directions tell *roles* apart, not only a role from generic prompts?

Two held-out measures, per position and layer, from directions computed without the held-out
prompts (split with :meth:`roleprobe.RolePrompts.split`):

* **one-vs-rest AUROC** — role ``r``'s held-out prompts against every other role's held-out
  prompts, all projected on ``r``'s unit direction. 0.5: the direction does not single the
  role out among roles (it may still separate roles from generic prompts: every role shares
  a large "any role" component).
* **nearest-direction confusion** — each held-out role prompt is assigned to the role whose
  direction it is most aligned with; row ``r`` of the matrix is the fraction of ``r``'s
  prompts assigned to each role (chance: ``1 / n_roles`` on the diagonal). Two rules:

  - ``"cosine"`` (raw): the role with the largest ``cos(x - μ_base, d_r)``;
  - ``"centred"``: the role with the largest ``cos(x - μ̄, d_r - d̄)``, with ``d̄`` the mean
    direction over the roles and ``μ̄ = μ_base + d̄`` the mean of the role means: the shared
    component is removed from both sides (nearest *role-specific* direction).

  ``|x - ref|`` is the same for every candidate role, so the argmax of the cosine is the
  argmax of the projection on the unit direction: one streamed projection per prompt and
  direction suffices (no activations are kept).

Example:
    >>> train, held = rp.load_prompts("builtin").split(0.25, seed=0)
    >>> rd = rp.compute_directions(model, source=train)
    >>> rc = role_confusion(model, rd, held)
    >>> rc.accuracy("centred")[rd.position_index(-1)]  # per layer
    >>> rc.matrix(layer=15, position=-1)  # [role, role], rows sum to 1
"""

from dataclasses import dataclass

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from roleprobe.core.hooks import check_hook
from roleprobe.core.types import Model
from roleprobe.data.prompts import RolePrompts
from roleprobe.data.roles import ROLES
from roleprobe.vectors.activations import (
    PositionLabel,
    ProjectionReducer,
    resolve_positions,
    stream,
)
from roleprobe.vectors.directions import RoleDirections
from roleprobe.vectors.validation import auroc

RULES = ("cosine", "centred")
_DOMAIN = {role.name: role.domain for role in ROLES}


def one_vs_rest_auroc(
    proj: Float[Tensor, "prompt role *rest"],
    labels: Int[Tensor, " prompt"],
) -> Float[Tensor, "role *rest"]:  # noqa: F821
    """AUROC of each role's prompts vs all other prompts, scored on that role's column.

    Args:
        proj: each prompt's score for every role (e.g. projection on the role's direction).
        labels: each prompt's true role index.
    """
    out = []
    for r in range(proj.shape[1]):
        own = labels == r
        if not own.any() or own.all():
            raise ValueError(f"role index {r} needs held-out prompts of its own and of others")
        out.append(auroc(proj[own, r], proj[~own, r]))
    return torch.stack(out)


def confusion_counts(
    scores: Float[Tensor, "prompt role"], labels: Int[Tensor, " prompt"], n_roles: int
) -> Float[Tensor, "role role"]:
    """Row-normalised confusion: row ``true``, column the role with the highest score."""
    assigned = scores.argmax(dim=1)
    counts = torch.zeros(n_roles, n_roles, dtype=torch.float64)
    counts.index_put_(
        (labels, assigned), torch.ones_like(labels, dtype=torch.float64), accumulate=True
    )
    return counts / counts.sum(dim=1, keepdim=True).clamp_min(1)


@dataclass(frozen=True)
class RoleConfusion:
    """Held-out role-vs-role separation of a set of role directions.

    Attributes:
        scores: each held-out prompt's alignment with each role, per rule (``RULES`` order):
            projection of ``x - ref`` on the unit direction, ``[rule, prompt, role, pos, layer]``.
        labels: each held-out prompt's true role index.
        auroc: one-vs-rest AUROC per role on the raw directions (NaN where a direction is 0).
        roles: role names.
        layers: the layer of each slice along ``layer``.
        positions: the position labels.
        defined: where the directions are not all zero, ``[rule, pos, layer]``.
    """

    scores: Float[Tensor, "rule prompt role pos layer"]
    labels: Int[Tensor, " prompt"]
    auroc: Float[Tensor, "role pos layer"]
    roles: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[PositionLabel, ...]
    defined: Bool[Tensor, "rule pos layer"]

    def _rule(self, rule: str) -> int:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
        return RULES.index(rule)

    def _index(self, layer: int, position: PositionLabel) -> tuple[int, int]:
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not in these results (layers {list(self.layers)})")
        if position not in self.positions:
            raise ValueError(
                f"position {position!r} is not in these results ({list(self.positions)})"
            )
        return self.positions.index(position), self.layers.index(layer)

    def matrix(
        self, layer: int, position: PositionLabel = -1, rule: str = "cosine"
    ) -> Float[Tensor, "role role"]:
        """Row-normalised confusion matrix (row: true role, column: assigned role)."""
        p, li = self._index(layer, position)
        k = self._rule(rule)
        if not self.defined[k, p, li]:
            return torch.full((len(self.roles),) * 2, float("nan"), dtype=torch.float64)
        return confusion_counts(self.scores[k, :, :, p, li], self.labels, len(self.roles))

    def accuracy(self, rule: str = "cosine") -> Float[Tensor, "pos layer"]:
        """Fraction of held-out prompts assigned to their own role (NaN where undefined)."""
        k = self._rule(rule)
        hit = self.scores[k].argmax(dim=1) == self.labels[:, None, None]
        acc = hit.double().mean(dim=0)
        return acc.masked_fill(~self.defined[k], float("nan"))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (rule, position, layer): accuracy, chance level, mean one-vs-rest AUROC."""
        rows = []
        chance = 1.0 / len(self.roles)
        for rule in RULES:
            acc = self.accuracy(rule)
            for p, pos in enumerate(self.positions):
                for li, layer in enumerate(self.layers):
                    rows.append(
                        {
                            "rule": rule,
                            "position": pos,
                            "layer": layer,
                            "accuracy": float(acc[p, li]),
                            "chance": chance,
                            "mean_auroc": float(self.auroc[:, p, li].nanmean()),
                            "n_prompts": int(self.labels.numel()),
                        }
                    )
        return pd.DataFrame(rows)

    def auroc_frame(self) -> pd.DataFrame:
        """Long rows ``role, domain, position, layer, auroc`` (one-vs-rest)."""
        rows = [
            {
                "role": role,
                "domain": _DOMAIN.get(role, ""),
                "position": pos,
                "layer": layer,
                "auroc": float(self.auroc[r, p, li]),
            }
            for r, role in enumerate(self.roles)
            for p, pos in enumerate(self.positions)
            for li, layer in enumerate(self.layers)
        ]
        return pd.DataFrame(rows)

    def most_confused(
        self, layer: int, position: PositionLabel = -1, rule: str = "cosine", k: int = 10
    ) -> pd.DataFrame:
        """The ``k`` largest off-diagonal cells: ``true, assigned, fraction`` (of ``true``'s
        prompts)."""
        m = self.matrix(layer, position, rule).clone()
        m.fill_diagonal_(float("nan"))
        rows = [
            {"true": self.roles[i], "assigned": self.roles[j], "fraction": float(m[i, j])}
            for i in range(len(self.roles))
            for j in range(len(self.roles))
            if i != j and float(m[i, j]) > 0
        ]
        table = pd.DataFrame(rows, columns=["true", "assigned", "fraction"])
        return (
            table.sort_values("fraction", ascending=False, kind="stable")
            .head(k)
            .reset_index(drop=True)
        )


def role_confusion(
    model: Model,
    directions: RoleDirections,
    heldout: RolePrompts,
    batch_size: int = 16,
    progress: bool = True,
) -> RoleConfusion:
    """Held-out one-vs-rest AUROC and nearest-direction assignments over the directions' roles.

    Args:
        model: the model the directions were computed on.
        directions: directions computed *without* the held-out prompts (at least 2 roles).
        heldout: held-out prompts for every role of ``directions`` (the baseline set is not
            used: the reference means come from ``directions``).
        batch_size: prompts per forward pass.
        progress: a tqdm bar.

    Returns:
        :class:`RoleConfusion` (call ``matrix``, ``accuracy``, ``to_dataframe``).
    """
    directions.check_model(model, strict=False)
    if len(directions.roles) < 2:
        raise ValueError("role vs role needs directions for at least 2 roles")
    missing = [r for r in directions.roles if r not in heldout.roles]
    if missing:
        raise ValueError(f"no held-out prompts for roles {missing}")
    texts: list[str] = []
    labels: list[int] = []
    for r, role in enumerate(directions.roles):
        batch = list(heldout.roles[role].instructions)
        texts += batch
        labels += [r] * len(batch)
    raw = directions.role_means - directions.base_mean  # [role, pos, layer, d_model] float64
    centred = raw - raw.mean(dim=0, keepdim=True)
    reducer = ProjectionReducer(torch.cat([raw, centred]), len(texts))
    labels_spec = directions.positions
    spec = (
        "instruction_mean"
        if labels_spec == ("instruction_mean",)
        else [int(p) for p in labels_spec]
    )
    stream(
        model,
        texts,
        reducer,
        directions.layers,
        check_hook(directions.hook),
        lambda n_post: resolve_positions(spec, n_post),
        batch_size,
        progress=progress,
        desc="held-out roles",
        system=directions.system,
    )
    n_roles = len(directions.roles)
    proj = reducer.values  # [prompt, 2*role, pos, layer]
    units = reducer.units.cpu()  # [2*role, pos, layer, d_model]
    refs = (directions.base_mean, directions.role_means.mean(dim=0))
    scores = []
    for k, ref in enumerate(refs):
        part = units[k * n_roles : (k + 1) * n_roles]
        offset = torch.einsum("rpld,pld->rpl", part, ref.double())
        scores.append(proj[:, k * n_roles : (k + 1) * n_roles] - offset)
    label_tensor = torch.tensor(labels)
    ovr = one_vs_rest_auroc(proj[:, :n_roles], label_tensor)
    norms = torch.stack([raw.norm(dim=-1), centred.norm(dim=-1)])  # [rule, role, pos, layer]
    ovr = ovr.masked_fill(norms[0] == 0, float("nan"))
    return RoleConfusion(
        scores=torch.stack(scores),
        labels=label_tensor,
        auroc=ovr,
        roles=directions.roles,
        layers=directions.layers,
        positions=directions.positions,
        defined=(norms > 0).any(dim=1),
    )
