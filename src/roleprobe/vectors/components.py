"""Which components write a role direction: an exact decomposition of ``d̂ · d`` by head and MLP.

In a pre-norm transformer the residual stream entering block ``L`` is a sum of what every
earlier component wrote into it::

    resid_pre[L] = embed + Σ_{l<L} ( Σ_h z[l,h] · W_O[l,h] + b_O[l] + mlp_out[l] )

with ``embed`` everything entering block 0 (token and any position embedding, Gemma's
scaling included) and ``z[l,h]`` head ``h``'s mixed values (``blocks.{l}.attn.hook_z``).
Means are linear, so the role direction ``d = mean_role(resid_pre[L]) - mean_base(resid_pre[L])``
splits into the same terms, each a role-mean minus generic-mean, and projecting every term on
the unit direction ``d̂ = d / |d|`` gives numbers that sum to ``d̂ · d = |d|`` exactly (up to the
model's own floating-point rounding: run it in float64 to see 1e-12). A term's value is how
much of the direction's length that component writes; negative values write against it.

The attention output bias ``b_O`` is the same at every position and for every prompt, so its
term is always exactly 0 (it is listed where the model has one, to make that visible). The
embedding term is 0 at the post-instruction positions of rotary models (every prompt has
the same template tokens there) and carries weight only for ``"instruction_mean"``.

Sums are float64 and streamed: per prompt set one running sum per component (``z`` summed
before ``W_O``, which is linear), so memory does not grow with the number of prompts.

**Post-norm models** (Gemma-2/3: ``ln1_post``/``ln2_post`` normalise each sub-layer's
output before the residual add). The stream receives ``norm(Σ_h z W_O)``, which is not a
sum over heads, so per-head terms would not add up. There the decomposition uses the
sub-layer outputs the stream actually receives (``hook_attn_out``, ``hook_mlp_out``): one
``"L{l} attn"`` and one ``"L{l} MLP"`` term per block (``per_head=None`` picks this
automatically; ``per_head=True`` raises ``NotImplementedError``).

Example:
    >>> df = component_attribution(model, "builtin", layer=15, roles=["lawyer", "nurse"])
    >>> df.groupby(["role", "position"])["value"].sum()  # == |d| per role and position
    >>> rp.top_writers(df, k=5)  # roleprobe.results.tables
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.types import Model
from roleprobe.data.prompts import BASE_NAME, RolePrompts, load_prompts
from roleprobe.data.roles import ROLES
from roleprobe.model.chat import ChatTemplate
from roleprobe.vectors.activations import (
    PositionLabel,
    batches,
    float64_device,
    resolve_positions,
)
from roleprobe.vectors.directions import RoleDirections

logger = logging.getLogger(__name__)

EMBED = "embed"
COLUMNS = ("role", "domain", "position", "component", "kind", "layer", "head", "value", "share")
RESIDUAL_WARN = 1e-3  # relative mismatch that means the decomposition does not hold
_DOMAIN = {role.name: role.domain for role in ROLES}


def has_post_norms(model: Model) -> bool:
    """Whether the blocks normalise sub-layer outputs before the residual add (Gemma-2/3)."""
    names = {name for name, _ in model.blocks[0].named_children()}
    return bool(names & {"ln1_post", "ln2_post"})


def head_name(layer: int, head: int) -> str:
    """The component label of one attention head, e.g. ``"L3H2"``."""
    return f"L{layer}H{head}"


@dataclass(frozen=True)
class _Layout:
    """The components of a decomposition at ``layer``, in order, with their labels."""

    layer: int
    per_head: bool
    n_heads: int
    has_bias: tuple[bool, ...]

    def rows(self) -> list[tuple[str, str, int | None, int | None]]:
        """``(component, kind, layer, head)`` per term, in the order of the value tensor."""
        out: list[tuple[str, str, int | None, int | None]] = [(EMBED, "embed", None, None)]
        for layer in range(self.layer):
            if self.per_head:
                out += [(head_name(layer, h), "head", layer, h) for h in range(self.n_heads)]
                if self.has_bias[layer]:
                    out.append((f"L{layer} attn bias", "attn_bias", layer, None))
            else:
                out.append((f"L{layer} attn", "attn", layer, None))
            out.append((f"L{layer} MLP", "mlp", layer, None))
        return out


class _ComponentSums:
    """Float64 running sums of every component's output, and of ``resid_pre[L]``, for one set."""

    def __init__(self, n_sel: int, layout: _Layout, model: Model, device: torch.device) -> None:
        d_model, n_below = int(model.cfg.d_model), layout.layer
        self.layout = layout
        self.embed = torch.zeros(n_sel, d_model, dtype=torch.float64, device=device)
        self.target = torch.zeros_like(self.embed)
        self.mlp = torch.zeros(n_below, n_sel, d_model, dtype=torch.float64, device=device)
        if layout.per_head:
            d_head = int(model.blocks[0].attn.W_O.shape[1])
            shape = (n_below, n_sel, layout.n_heads, d_head)
            self.attn = torch.zeros(shape, dtype=torch.float64, device=device)
        else:
            self.attn = torch.zeros_like(self.mlp)
        self.count = 0

    def hooks(self, pick: Any) -> list[tuple[str, Any]]:
        """``(hook name, fn)`` pairs that add one batch's selected activations to the sums."""
        out = [
            ("blocks.0.hook_resid_pre", partial(self._add, pick=pick, into=self.embed)),
            (
                f"blocks.{self.layout.layer}.hook_resid_pre",
                partial(self._add, pick=pick, into=self.target),
            ),
        ]
        for layer in range(self.layout.layer):
            attn_hook = "attn.hook_z" if self.layout.per_head else "hook_attn_out"
            out.append(
                (
                    f"blocks.{layer}.{attn_hook}",
                    partial(self._add, pick=pick, into=self.attn[layer]),
                )
            )
            out.append(
                (
                    f"blocks.{layer}.hook_mlp_out",
                    partial(self._add, pick=pick, into=self.mlp[layer]),
                )
            )
        return out

    @staticmethod
    def _add(act: Tensor, hook: Any, pick: Any, into: Tensor) -> Tensor:
        flat = act.reshape(*act.shape[:2], -1).to(
            into.device
        )  # z: [b, p, h, d_head] -> [b, p, h*d]
        into += pick(flat).sum(dim=0).reshape(into.shape)
        return act

    def means(
        self, model: Model
    ) -> tuple[Float[Tensor, "sel comp d_model"], Float[Tensor, "sel d_model"]]:
        """Each component's mean output at each selected position, and the mean ``resid_pre[L]``."""
        terms: list[Tensor] = [self.embed]
        for layer in range(self.layout.layer):
            if self.layout.per_head:
                w_o = model.blocks[layer].attn.W_O.detach().to(self.attn.device, torch.float64)
                terms += list(torch.einsum("shd,hdm->hsm", self.attn[layer], w_o))
                if self.layout.has_bias[layer]:
                    terms.append(torch.zeros_like(self.embed))  # b_O - b_O: identical for all
            else:
                terms.append(self.attn[layer])
            terms.append(self.mlp[layer])
        stacked = torch.stack(terms, dim=1) / self.count
        return stacked.cpu(), (self.target / self.count).cpu()


def _layout(model: Model, layer: int, per_head: bool | None) -> _Layout:
    n_layers = int(model.cfg.n_layers)
    if not 1 <= layer < n_layers:
        raise ValueError(
            f"layer {layer} is out of range: attribution reads resid_pre of layers "
            f"1..{n_layers - 1} (layer 0's input is the embedding alone)"
        )
    post = has_post_norms(model)
    if per_head is None:
        per_head = not post
        if post:
            logger.info("post-norm model: attributing per block (attn, MLP), not per head")
    elif per_head and post:
        raise NotImplementedError(
            "per-head attribution needs a pre-norm model; this one normalises each attention "
            "output before the residual add (post-norms, e.g. Gemma-2/3), so heads do not sum "
            "to what the stream receives. Use per_head=False (per-block terms)"
        )
    bias = tuple(model.blocks[li].attn.b_O is not None for li in range(layer))
    return _Layout(layer, per_head, int(model.cfg.n_heads), bias)


def _stream_set(
    model: Model,
    prompts: Sequence[str],
    layout: _Layout,
    positions: str | Sequence[int],
    n_sel: int,
    batch_size: int,
    system: str,
    desc: str,
) -> tuple[Tensor, Tensor, int]:
    device = float64_device(torch.empty(0, device=model.cfg.device))
    sums = _ComponentSums(n_sel, layout, model, device)
    for rows, batch in batches(model, list(prompts), batch_size, None, system):
        pick = resolve_positions(positions, batch.n_post).picker(batch.to(device))
        with torch.inference_mode(), model.hooks(fwd_hooks=sums.hooks(pick)):
            model(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=layout.layer)
        sums.count += len(rows)
    comps, target = sums.means(model)
    if not (torch.isfinite(comps).all() and torch.isfinite(target).all()):
        raise FloatingPointError(f"non-finite activations in the prompt set {desc!r}")
    return comps, target, sums.count


def component_attribution(
    model: Model,
    prompts: "str | Path | RolePrompts",
    layer: int,
    roles: str | Sequence[str] | None = None,
    positions: str | Sequence[int] = "post_instruction",
    batch_size: int = 16,
    directions: RoleDirections | None = None,
    per_head: bool | None = None,
    system: str | None = None,
    data_dir: str | Path | None = None,
) -> pd.DataFrame:
    """How much every head, MLP and the embedding write along each role's direction at ``layer``.

    For each role and position, the role-mean minus generic-mean of every component's output
    (see the module docstring), projected on the unit direction ``d̂``. With ``directions=None``
    ``d̂ = d / |d|`` for ``d`` the same prompts' difference of means at ``resid_pre[layer]`` (what
    :func:`roleprobe.compute_directions` gives for them), and the values sum to ``|d|``.
    With ``directions``, ``d̂`` is that direction's unit vector (e.g. from training prompts)
    and the values sum to ``d̂ · d`` of these prompts.

    Args:
        model: a TransformerLens bridge (pre-norm for per-head terms).
        prompts: ``"builtin"``, ``"paper"``, a folder or a :class:`RolePrompts`.
        layer: the block whose input ``resid_pre`` is decomposed (``1 <= layer < n_layers``).
        roles: which roles (default: every role of ``prompts``).
        positions: ``"post_instruction"``, ``"last"``, ``"instruction_mean"`` or offsets.
        batch_size: prompts per forward pass.
        directions: take ``d̂`` from these (same positions needed) instead of the prompts.
        per_head: per-head terms (``True``), per-block terms (``False``) or per-head where the
            model allows it (``None``; post-norm models get per-block terms).
        system: the system-turn policy (default: ``directions.system``, else ``"default"``).
        data_dir: the paper's data folder (``prompts="paper"``).

    Returns:
        Long rows ``role, domain, position, component, kind, layer, head, value, share``:
        ``kind`` is ``embed``/``head``/``attn_bias``/``attn``/``mlp``; ``layer`` and ``head``
        are nullable integers (``<NA>`` for the embedding, and for non-head terms' ``head``);
        ``share`` is ``value / (d̂ · d)``. ``df.attrs`` holds ``layer``, ``per_head``,
        ``totals`` (``{(role, position): d̂ · d}``), ``norms`` (``|d|``) and ``residual``,
        the largest ``|d̂ · d - Σ values|`` (float rounding of the model's own sums).

    Raises:
        ValueError: a bad layer, position or role.
        NotImplementedError: ``per_head=True`` on a post-norm model.
    """
    layout = _layout(model, layer, per_head)
    rp_prompts = load_prompts(prompts, roles, data_dir)
    policy = system if system is not None else directions.system if directions else "default"
    template = ChatTemplate.from_tokenizer(model.tokenizer, policy)
    labels = resolve_positions(positions, template.n_post).labels
    if directions is not None:
        directions.check_model(model, strict=False)
        directions.layer_index(layer)
        for label in labels:
            directions.position_index(label)
    run = partial(
        _stream_set,
        model,
        layout=layout,
        positions=positions,
        n_sel=len(labels),
        batch_size=batch_size,
        system=template.system,
    )
    base_comps, base_target, _ = run(list(rp_prompts.base.instructions), desc=BASE_NAME)
    rows: list[dict[str, Any]] = []
    totals: dict[tuple[str, PositionLabel], float] = {}
    norms: dict[tuple[str, PositionLabel], float] = {}
    residual = 0.0
    components = layout.rows()
    for role, prompt_set in rp_prompts.roles.items():
        comps, target, _ = run(list(prompt_set.instructions), desc=role)
        diff, d = comps - base_comps, target - base_target
        for p, label in enumerate(labels):
            unit = _unit(
                d[p] if directions is None else directions.vector(role, layer, label).double()
            )
            values = diff[p] @ unit
            total = float(d[p] @ unit)
            totals[(role, label)], norms[(role, label)] = total, float(d[p].norm())
            residual = max(residual, abs(total - float(values.sum())))
            if abs(total - float(values.sum())) > RESIDUAL_WARN * max(float(d[p].norm()), 1e-12):
                logger.warning(
                    "%s, position %s: the components sum to %.6g but d̂·d is %.6g; the "
                    "decomposition does not hold for this architecture",
                    role,
                    label,
                    float(values.sum()),
                    total,
                )
            for (name, kind, li, head), value in zip(components, values.tolist(), strict=True):
                rows.append(
                    {
                        "role": role,
                        "domain": _DOMAIN.get(role, ""),
                        "position": label,
                        "component": name,
                        "kind": kind,
                        "layer": li,
                        "head": head,
                        "value": value,
                        "share": value / total if total else float("nan"),
                    }
                )
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype({"layer": "Int64", "head": "Int64"})
    df.attrs.update(
        layer=layer,
        per_head=layout.per_head,
        totals=totals,
        norms=norms,
        residual=residual,
        system=template.system,
    )
    return df


def _unit(d: Tensor) -> Tensor:
    norm = d.norm()
    return d / norm if norm > 0 else torch.zeros_like(d)
