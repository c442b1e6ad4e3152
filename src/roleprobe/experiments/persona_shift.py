"""Persona ↔ vector: does stating a role in the prompt move the residual stream along its direction?

A role direction ``d_r`` is a difference of means between role *instructions* and generic
ones. Asking the model to *be* the role (:class:`~roleprobe.Persona`, "You are a lawyer.")
is a different intervention on the same model; if the direction captures the role, the
persona should push the question's activations along ``d̂_r = d_r / |d_r|`` — and more
along its own role's direction than along the others'.

For each persona ``p``, direction ``r`` and layer ``l``, :func:`persona_shift` computes

    shift[p, r, l] = mean_q ⟨a_l(persona p, q), d̂_{r,l}⟩ − mean_q ⟨a_l(baseline, q), d̂_{r,l}⟩

where ``a_l(·, q)`` is the residual stream entering block ``l`` (``hook_resid_pre``) at the
**last position** of question ``q`` in the chat template (the token whose next-token logits
score the answer letter; the directions are read at the same post-instruction offset,
``position=-1`` by default). The last position is chosen because it is where the answer is
read out and where the persona can only act through attention, like an added direction at
that position; other post-instruction offsets can be chosen with ``position=``.

Everything streams: per batch, the selected activations are projected on the unit
directions in float64 and summed, so the persona × direction × layer matrix needs memory
independent of the number of questions. Per question only the projection on the persona's
*own* direction is kept (``[persona, item, layer]``), with the correct-letter log-probs of
the same forward pass, for :meth:`PersonaShift.item_correlation`: the per-item correlation
between the shift along the own direction and the change of the correct letter's log-prob.

Footguns:

* **The system turn.** With ``mode="auto"`` a persona *replaces* the template's default
  system prompt (SmolLM2's "You are a helpful AI assistant…"); the baseline keeps it (as
  :func:`roleprobe.evaluate` does). A shift thus measures "persona sentence vs default
  sentence", not "persona vs nothing"; use ``system="none"`` and ``mode="prefix"`` to
  compare with no system turn.
* **Shared component.** Raw role directions share a large "any role" part, so every
  persona can move the stream along every direction; read the diagonal against the
  off-diagonal (:meth:`PersonaShift.specificity`), not alone.

Example:
    >>> rd = rp.compute_directions(model, roles=["lawyer", "nurse"], positions=[-1])
    >>> ps = persona_shift(model, rd, rp.load_benchmark("builtin"))
    >>> ps.specificity()  # diagonal vs off-diagonal mean shift per layer
    >>> ps.item_correlation()  # per persona and layer: r(shift, Δ log-prob)
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.data.roles import ROLES
from roleprobe.model.chat import ChatTemplate, answer_letter_ids, collate, pad_token_id
from roleprobe.model.system_turn import normalize_system
from roleprobe.results.tables import pearson_test
from roleprobe.steering.persona import Persona, PromptTransform, apply_prompt_transforms
from roleprobe.steering.prefix import last_letter_logits, letter_only_supported
from roleprobe.vectors.activations import PositionLabel
from roleprobe.vectors.directions import RoleDirections

from .evaluation import encode_questions, length_batches, subject_domain

_DOMAIN = {role.name: role.domain for role in ROLES}
_SPEC_COLUMNS = ("diagonal", "off_diagonal", "difference", "centred_diagonal", "top1")


@dataclass(frozen=True)
class PersonaShift:
    """Persona-induced shifts of the residual stream along role directions.

    Attributes:
        shift: mean projection on each unit direction under the persona minus under the
            baseline, ``[persona, role, layer]`` (float64).
        base_mean: mean projection under the baseline, ``[role, layer]``.
        own_shift: per question, the shift along the persona's own direction
            (``[persona, item, layer]``; NaN where the persona is not one of the roles).
        base_logprob: the baseline's correct-letter log-prob per question, ``[item]``.
        persona_logprob: each persona's correct-letter log-prob, ``[persona, item]``.
        personas: the persona labels, in order (a role name for :class:`Persona`).
        roles: the directions' roles, in order.
        layers: the layer of each slice along ``layer``.
        position: the post-instruction offset read (activations and directions).
        items: ``id, subject, domain`` of each question, in the benchmark's order.
    """

    shift: Float[Tensor, "persona role layer"]
    base_mean: Float[Tensor, "role layer"]
    own_shift: Float[Tensor, "persona item layer"]
    base_logprob: Float[Tensor, " item"]
    persona_logprob: Float[Tensor, "persona item"]
    personas: tuple[str, ...]
    roles: tuple[str, ...]
    layers: tuple[int, ...]
    position: PositionLabel
    items: pd.DataFrame

    def layer_index(self, layer: int) -> int:
        """Index of ``layer`` along the ``layer`` axis."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not in this result (layers {list(self.layers)})")
        return self.layers.index(layer)

    def matrix(self, layer: int) -> pd.DataFrame:
        """The persona × direction shift matrix at one layer (rows: personas)."""
        values = self.shift[:, :, self.layer_index(layer)].numpy()
        return pd.DataFrame(values, index=list(self.personas), columns=list(self.roles))

    def to_dataframe(self) -> pd.DataFrame:
        """One row per (persona, role, layer): ``persona, role, layer, shift, base_mean,
        persona_domain, role_domain, own`` (``own``: the persona is the direction's role)."""
        p, r, la = np.meshgrid(
            np.arange(len(self.personas)),
            np.arange(len(self.roles)),
            np.arange(len(self.layers)),
            indexing="ij",
        )
        personas = np.array(self.personas, dtype=object)[p.ravel()]
        roles = np.array(self.roles, dtype=object)[r.ravel()]
        return pd.DataFrame(
            {
                "persona": personas,
                "role": roles,
                "layer": np.array(self.layers)[la.ravel()],
                "shift": self.shift.numpy().ravel(),
                "base_mean": self.base_mean.numpy()[r.ravel(), la.ravel()],
                "persona_domain": [_DOMAIN.get(x, "") for x in personas],
                "role_domain": [_DOMAIN.get(x, "") for x in roles],
                "own": personas == roles,
            }
        )

    def specificity(self) -> pd.DataFrame:
        """Per layer: is each persona's shift largest along its own direction?

        Only personas that are also direction roles count. Columns: ``layer``,
        ``diagonal`` (mean shift of a persona along its own direction), ``off_diagonal``
        (mean shift of the other personas along it), ``difference`` (the two's difference),
        ``centred_diagonal`` (the diagonal after removing each direction's mean over the
        personas and each persona's mean over the directions: what is specific to the
        pair), ``top1`` (fraction of directions whose largest shift comes from their own
        persona) and ``chance`` (``1 / personas``). A layer where no persona moves any
        direction (layer 0 at a template position) gets NaN.
        """
        own = [(i, self.roles.index(p)) for i, p in enumerate(self.personas) if p in self.roles]
        if not own:
            raise ValueError("no persona is one of the directions' roles; specificity needs one")
        rows = []
        p_idx = torch.tensor([i for i, _ in own])
        r_idx = torch.tensor([j for _, j in own])
        for k, layer in enumerate(self.layers):
            m = self.shift[p_idx][:, r_idx, k]  # square: personas × their own directions
            n = m.shape[0]
            if not m.any():  # e.g. layer 0 at a template position: nothing moves
                rows.append({"layer": layer, **dict.fromkeys(_SPEC_COLUMNS, math.nan)})
                rows[-1]["chance"] = 1.0 / n
                continue
            diag = m.diagonal()
            off = (m.sum() - diag.sum()) / max(n * n - n, 1)
            centred = m - m.mean(dim=0, keepdim=True) - m.mean(dim=1, keepdim=True) + m.mean()
            rows.append(
                {
                    "layer": layer,
                    "diagonal": float(diag.mean()),
                    "off_diagonal": float(off) if n > 1 else float("nan"),
                    "difference": float(diag.mean() - off) if n > 1 else float("nan"),
                    "centred_diagonal": float(centred.diagonal().mean()),
                    "top1": float((m.argmax(dim=0) == torch.arange(n)).double().mean()),
                    "chance": 1.0 / n,
                }
            )
        return pd.DataFrame(rows)

    def item_table(self) -> pd.DataFrame:
        """One row per (persona, question, layer): ``persona, id, subject, domain, layer,
        own_shift, delta_logprob`` (persona minus baseline correct-letter log-prob)."""
        n_p, n_i, n_l = self.own_shift.shape
        delta = (self.persona_logprob - self.base_logprob[None]).numpy()
        p, i, la = np.meshgrid(np.arange(n_p), np.arange(n_i), np.arange(n_l), indexing="ij")
        items = self.items.iloc[i.ravel()].reset_index(drop=True)
        return pd.DataFrame(
            {
                "persona": np.array(self.personas, dtype=object)[p.ravel()],
                "id": items["id"].to_numpy(),
                "subject": items["subject"].to_numpy(),
                "domain": items["domain"].to_numpy(),
                "layer": np.array(self.layers)[la.ravel()],
                "own_shift": self.own_shift.numpy().ravel(),
                "delta_logprob": delta[p.ravel(), i.ravel()],
            }
        )

    def item_correlation(self, pooled: bool = False) -> pd.DataFrame:
        """Pearson's r between the per-question own-direction shift and Δ log-prob.

        Args:
            pooled: one correlation per layer over every (persona, question) pair instead
                of one per persona and layer.

        Returns:
            ``persona`` (``"all"`` when pooled), ``layer``, ``r``, ``p``, ``n``; personas
            that are not direction roles are left out.
        """
        keep = [i for i, p in enumerate(self.personas) if p in self.roles]
        delta = (self.persona_logprob - self.base_logprob[None]).numpy()
        rows = []
        groups = [("all", keep)] if pooled else [(self.personas[i], [i]) for i in keep]
        for label, index in groups:
            for k, layer in enumerate(self.layers):
                x = self.own_shift[index, :, k].numpy().ravel()
                y = delta[index].ravel()
                r, p = pearson_test(x, y)
                rows.append({"persona": label, "layer": layer, "r": r, "p": p, "n": len(x)})
        return pd.DataFrame(rows)


def _label(transform: str | PromptTransform, index: int) -> str:
    if isinstance(transform, str):
        return transform
    role = getattr(transform, "role", None)
    return str(role) if role else f"{type(transform).__name__}{index}"


def persona_shift(
    model: Model,
    directions: RoleDirections,
    benchmark: MultipleChoice,
    personas: Sequence[str | PromptTransform] | None = None,
    layers: Sequence[int] | None = None,
    position: PositionLabel = -1,
    persona_mode: str = "auto",
    batch_size: int = 16,
    prompt_format: str = "paper",
    system: str | None = "default",
    progress: bool = True,
) -> PersonaShift:
    """Mean shift of question activations along each role direction under each persona.

    Runs the questions once under the baseline and once per persona; in each forward pass
    the residual stream entering every chosen layer is read at ``position`` and projected
    on every unit direction (float64 sums), and the letter logits give the correct letter's
    log-prob (normalised over A-D, as :func:`roleprobe.evaluate`).

    Args:
        model: a TransformerLens bridge with a chat tokenizer.
        directions: the role directions (their hook must be ``hook_resid_pre``).
        benchmark: the questions.
        personas: role names (each becomes ``Persona(name, mode=persona_mode)``) or prompt
            transforms (default: the directions' roles).
        layers: which of the directions' layers (default: all of them).
        position: the post-instruction offset read, in the directions' positions.
        persona_mode: the :class:`~roleprobe.Persona` mode for role names.
        batch_size: questions per forward pass.
        prompt_format: ``"paper"`` or ``"clean"`` (see :func:`roleprobe.evaluate`).
        system: the system-turn policy of the baseline (and of personas in prefix mode).
        progress: a tqdm bar over the conditions.

    Returns:
        :class:`PersonaShift` (``shift`` of shape ``[persona, role, layer]``).

    Raises:
        ValueError: a bad layer, position, hook or batch size, or an empty benchmark.

    Example:
        >>> ps = persona_shift(model, rd, bench, personas=["lawyer", "nurse"], layers=[8, 15])
        >>> ps.matrix(15)
    """
    if directions.hook != "hook_resid_pre":
        raise ValueError(
            f"persona_shift reads hook_resid_pre; the directions use {directions.hook}"
        )
    if not isinstance(position, int) or position >= 0:
        raise ValueError(f"position must be a negative post-instruction offset, got {position!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(benchmark) == 0:
        raise ValueError("the benchmark has no questions")
    directions.check_model(model, strict=False)
    letter_only_supported(model)  # probe the output head once, before any hook is on
    layer_list = list(directions.layers if layers is None else layers)
    layer_pos = [directions.layer_index(la) for la in layer_list]
    d = directions.role_means - directions.base_mean  # [role, pos, layer, d_model] float64
    d = d[:, directions.position_index(position)][:, layer_pos]
    units = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # zero directions project to 0
    transforms = [
        Persona(p, mode=persona_mode) if isinstance(p, str) else p
        for p in (list(directions.roles) if personas is None else personas)
    ]
    labels = tuple(_label(t, i) for i, t in enumerate(transforms))
    own = [directions.roles.index(x) if x in directions.roles else -1 for x in labels]
    n_items = len(benchmark)
    run = partial(
        _project,
        model,
        benchmark,
        units,
        layer_list,
        position,
        batch_size,
        prompt_format,
        normalize_system(system),
    )
    n_roles, n_layers = len(directions.roles), len(layer_list)
    shift = torch.zeros(len(transforms), n_roles, n_layers, dtype=torch.float64)
    own_shift = torch.full((len(transforms), n_items, n_layers), math.nan, dtype=torch.float64)
    persona_lp = torch.zeros(len(transforms), n_items, dtype=torch.float64)
    with bar(total=1 + len(transforms), enabled=progress, desc="persona shift", unit="cond") as b:
        base_sums, base_proj, base_lp = run(None, list(range(n_roles)))
        b.update()
        for k, transform in enumerate(transforms):
            sums, proj, lp = run(transform, [own[k]] if own[k] >= 0 else [])
            shift[k] = (sums - base_sums) / n_items
            if own[k] >= 0:
                own_shift[k] = proj[:, 0] - base_proj[:, own[k]]
            persona_lp[k] = lp
            b.update()
    items = benchmark.items
    return PersonaShift(
        shift=shift,
        base_mean=base_sums / n_items,
        own_shift=own_shift,
        base_logprob=base_lp,
        persona_logprob=persona_lp,
        personas=labels,
        roles=tuple(directions.roles),
        layers=tuple(layer_list),
        position=position,
        items=pd.DataFrame(
            {
                "id": items["id"].to_numpy(),
                "subject": items["subject"].to_numpy(),
                "domain": [subject_domain(s) for s in items["subject"]],
            }
        ),
    )


def _project(
    model: Model,
    benchmark: MultipleChoice,
    units: Float[Tensor, "role layer d_model"],
    layers: list[int],
    position: int,
    batch_size: int,
    prompt_format: str,
    system: str,
    transform: PromptTransform | None,
    keep: list[int],
) -> tuple[Float[Tensor, "role layer"], Float[Tensor, "item kept layer"], Float[Tensor, " item"]]:
    """One condition's projections on ``units`` at ``position`` and correct-letter log-probs.

    Returns:
        ``(sums, kept, logprob)``: float64 sums over the questions of the projections on
        every direction (``[role, layer]``), the per-question projections on the directions
        ``keep`` (``[item, len(keep), layer]``) and each question's correct-letter log-prob.
    """
    tokenizer = model.tokenizer
    sys_text, prefix = apply_prompt_transforms([transform] if transform else [], tokenizer, system)
    template = ChatTemplate.from_tokenizer(tokenizer, sys_text)
    if -position > template.n_post:
        raise ValueError(
            f"position {position} is not a post-instruction position; this template has "
            f"{template.n_post}: offsets {-template.n_post}..-1"
        )
    letter_ids = answer_letter_ids(tokenizer, LETTERS, sys_text)
    encoded = encode_questions(model, benchmark.items, template, prompt_format, prefix)
    answers = torch.tensor([LETTERS.index(a) for a in benchmark.items["answer"]])
    sums = torch.zeros(units.shape[0], len(layers), dtype=torch.float64)
    kept = torch.zeros(len(encoded), len(keep), len(layers), dtype=torch.float64)
    logprob = torch.zeros(len(encoded), dtype=torch.float64)
    pad = pad_token_id(tokenizer)
    device = cast(str, model.cfg.device)
    for rows in length_batches(encoded, batch_size):
        batch = collate([encoded[i] for i in rows], template.n_post, pad).to(device)
        reader = _Reader(units, position, keep, sums, kept, torch.tensor(rows))
        hooks = [
            (f"blocks.{layer}.hook_resid_pre", partial(reader, k=k))
            for k, layer in enumerate(layers)
        ]
        with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
            letters = last_letter_logits(model, batch.input_ids, batch.attention_mask, letter_ids)
        lp = torch.log_softmax(letters.double().cpu(), dim=-1)
        index = torch.tensor(rows)
        logprob[index] = lp.gather(1, answers[index][:, None])[:, 0]
    return sums, kept, logprob


@dataclass
class _Reader:
    """The hook of one batch: project the residual at ``position`` on every unit direction
    of layer ``k``, add to ``sums`` and keep the columns ``keep`` per question."""

    units: Tensor
    position: int
    keep: list[int]
    sums: Tensor
    kept: Tensor
    index: Tensor

    def __call__(self, act: Tensor, hook: Any, k: int) -> Tensor:
        if act.shape[0] != len(self.index):  # e.g. a probe forward pass
            raise RuntimeError(f"{hook.name} saw {act.shape[0]} rows, expected {len(self.index)}")
        picked = act[:, self.position].double().cpu()
        if not torch.isfinite(picked).all():
            raise FloatingPointError(f"non-finite activation at {hook.name}")
        proj = picked @ self.units[:, k].T  # [batch, role]
        self.sums[:, k] += proj.sum(dim=0)
        if self.keep:
            self.kept[self.index, :, k] = proj[:, self.keep]
        return act
