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

* **Pooled pairs are not independent.** ``item_correlation(pooled=True)`` pools every
  (persona, question) pair, but all personas answer the *same* questions against *one*
  shared baseline: ``Δ log-prob[p, q]`` subtracts the same ``base_logprob[q]`` for every
  persona, and a question that is easy to move moves under most personas. The pairs come
  in clusters of one question each, so the independent units are the questions (16 in the
  embedded run), not the 29 × 16 pairs, and the t-test ``p_naive`` of the pooled ``r`` is
  far too small. :meth:`PersonaShift.item_correlation` therefore also tests the pooled
  ``r`` by permuting whole questions and gives a cluster-bootstrap interval over questions,
  Holm-corrected across the layers scanned; :meth:`PersonaShift.specificity` tests
  ``top1`` by permuting the persona ↔ role assignment.
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
from scipy import stats as scipy_stats
from torch import Tensor

from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.data.roles import ROLES
from roleprobe.model.chat import ChatTemplate, answer_letter_ids, collate, pad_token_id
from roleprobe.model.system_turn import normalize_system
from roleprobe.results.stats import adjust_pvalues
from roleprobe.results.tables import pearson_test
from roleprobe.steering.persona import Persona, PromptTransform, apply_prompt_transforms
from roleprobe.steering.prefix import last_letter_logits, letter_only_supported
from roleprobe.vectors.activations import PositionLabel
from roleprobe.vectors.directions import RoleDirections

from .evaluation import encode_questions, length_batches, subject_domain

_DOMAIN = {role.name: role.domain for role in ROLES}
_SPEC_COLUMNS = ("diagonal", "off_diagonal", "difference", "centred_diagonal", "top1")
_CORR_COLUMNS = ("persona", "layer", "r", "p_naive", "n")
_CI_COLUMNS = ("r_ci_low", "r_ci_high")


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
        persona), ``chance`` (``1 / personas``), ``top1_p`` and ``top1_p_adj``. A layer
        where no persona moves any direction (layer 0 at a template position) gets NaN.

        ``top1_p`` is the exact permutation test of ``top1``: under "a persona's identity
        says nothing about which direction it moves most", which persona counts as a
        direction's own is exchangeable, so the p-value is the share of all ``personas!``
        persona ↔ role assignments under which at least as many directions are won by
        their own persona as observed (one-sided), with the matrix, and so which persona
        moves each direction most, held fixed. It is counted, not sampled
        (:func:`_top1_p`). It conditions on the winners: a layer where one persona wins
        every direction scores ``top1 = chance`` and ``p = 1`` whatever the labels.
        ``top1_p_adj`` is Holm over the layers with a defined ``top1_p``.

        Raises:
            ValueError: no persona is a direction role.
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
                nothing = dict.fromkeys(_SPEC_COLUMNS, math.nan)
                rows.append({"layer": layer, **nothing, "chance": 1.0 / n, "top1_p": math.nan})
                continue
            diag = m.diagonal()
            off = (m.sum() - diag.sum()) / max(n * n - n, 1)
            centred = m - m.mean(dim=0, keepdim=True) - m.mean(dim=1, keepdim=True) + m.mean()
            winners = m.argmax(dim=0).numpy()
            rows.append(
                {
                    "layer": layer,
                    "diagonal": float(diag.mean()),
                    "off_diagonal": float(off) if n > 1 else float("nan"),
                    "difference": float(diag.mean() - off) if n > 1 else float("nan"),
                    "centred_diagonal": float(centred.diagonal().mean()),
                    "top1": float((winners == np.arange(n)).mean()),
                    "chance": 1.0 / n,
                    "top1_p": _top1_p(winners),
                }
            )
        out = pd.DataFrame(rows)
        out["top1_p_adj"] = _holm(out["top1_p"].to_numpy())
        return out

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

    def item_correlation(
        self,
        pooled: bool = False,
        n_perm: int = 9999,
        n_boot: int = 2000,
        seed: int = 0,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Pearson's r between the per-question own-direction shift and Δ log-prob.

        Per persona, the pairs are the questions and ``p_naive`` (the t-test of ``r``) is
        the usual test. **Pooled, it is not valid**: the personas × questions pairs come in
        one cluster per question, because every persona answers the same questions against
        one shared baseline (each ``Δ log-prob[p, q]`` subtracts the same
        ``base_logprob[q]``, each shift the baseline's projection of the same question on
        directions that share most of their length, and a question that moves under one
        persona tends to move under the others). The t-test counts 29 × 16 = 464
        independent pairs where there are 16 independent questions. The pooled rows add a
        test with the question as the unit:

        * ``p_cluster``: permutation over questions. One random relabelling of the
          questions is applied to every persona's Δ log-prob at once (question ``q``'s
          column of Δ log-prob is paired with question ``π(q)``'s column of shifts), which
          keeps whatever the personas share within a question and breaks only the
          question-level link; two-sided, ``n_perm`` relabellings (all of them when
          ``n_perm`` reaches ``questions!``), the observed one counted
          (:func:`scipy.stats.permutation_test`). What it holds fixed is the persona-level
          part of ``r`` (personas that shift more also losing more): it tests the per-
          question association, which is what the pooled ``r`` is read as.
        * ``p_cluster_adj``: Holm over the layers with a defined ``p_cluster``.
        * ``r_ci_low``, ``r_ci_high``: percentile cluster-bootstrap interval of ``r``,
          resampling whole questions (every persona's pair of a drawn question comes
          along; :func:`scipy.stats.bootstrap`; resamples with an undefined ``r`` are
          dropped).
        * ``n_clusters``: the number of questions.

        Args:
            pooled: one correlation per layer over every (persona, question) pair instead
                of one per persona and layer.
            n_perm: question relabellings per layer (pooled only).
            n_boot: cluster-bootstrap resamples per layer (pooled only).
            seed: seed of the relabellings and the resamples (the same at every layer).
            level: coverage of the bootstrap interval.

        Returns:
            ``persona`` (``"all"`` when pooled), ``layer``, ``r``, ``p_naive``, ``n`` (the
            pairs), and when pooled the columns above; personas that are not direction
            roles are left out.

        Raises:
            ValueError: ``n_perm`` or ``n_boot`` below 1, or ``level`` not in (0, 1).

        Example:
            >>> ps.item_correlation(pooled=True)[["layer", "r", "p_naive", "p_cluster_adj"]]
        """
        if n_perm < 1 or n_boot < 1:
            raise ValueError(f"n_perm and n_boot must be at least 1, got {n_perm}, {n_boot}")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        keep = [i for i, p in enumerate(self.personas) if p in self.roles]
        delta = (self.persona_logprob - self.base_logprob[None]).numpy()
        rows = []
        groups = [("all", keep)] if pooled else [(self.personas[i], [i]) for i in keep]
        for label, index in groups:
            for k, layer in enumerate(self.layers):
                x = self.own_shift[index, :, k].numpy()
                y = delta[index]
                r, p = pearson_test(x.ravel(), y.ravel())
                row = dict(zip(_CORR_COLUMNS, (label, layer, r, p, x.size), strict=True))
                if pooled:
                    row |= _question_tests(x, y, math.isnan(r), n_perm, n_boot, seed, level)
                rows.append(row)
        out = pd.DataFrame(rows)
        if not pooled:
            return out
        out["p_cluster_adj"] = _holm(out["p_cluster"].to_numpy())
        return out[[*_CORR_COLUMNS, "p_cluster", "p_cluster_adj", *_CI_COLUMNS, "n_clusters"]]


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted ``p`` over its defined entries (NaN stays NaN)."""
    out = np.full(p.shape, math.nan)
    defined = ~np.isnan(p)
    out[defined] = adjust_pvalues(p[defined], "holm")
    return out


def _top1_p(winners: np.ndarray) -> float:
    """Exact P(at least the observed number of own winners) over the ``n!`` persona ↔ role
    assignments σ; ``winners[j]`` is the persona that moves direction ``j`` most.

    Direction ``j`` is an own winner under σ when ``σ(j) = winners[j]``: a rook on the board
    ``{(j, winners[j])}``. With ``c_i`` the number of directions persona ``i`` wins, ``k``
    non-attacking rooks can be placed in ``e_k(c)`` ways (the elementary symmetric
    polynomial: ``k`` distinct winning personas, one of each one's directions), and by
    inclusion-exclusion exactly ``m`` hits occur in ``Σ_{k≥m} (-1)^(k-m) C(k, m) e_k(c)
    (n-k)!`` assignments. Python integers keep the sum exact.
    """
    n = winners.size
    observed = int((winners == np.arange(n)).sum())
    rook = [1] + [0] * n  # e_0 .. e_n of the win counts
    for count in np.bincount(winners, minlength=n).tolist():
        for k in range(n, 0, -1):
            rook[k] += count * rook[k - 1]
    at_least = sum(
        (-1) ** (k - m) * math.comb(k, m) * rook[k] * math.factorial(n - k)
        for m in range(observed, n + 1)
        for k in range(m, n + 1)
    )
    return at_least / math.factorial(n)


def _pooled_r(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson's r over the last two axes (``[..., persona, item]``: every pair pooled)."""
    xc = x - x.mean(axis=(-2, -1), keepdims=True)
    yc = y - y.mean(axis=(-2, -1), keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=(-2, -1)) * (yc * yc).sum(axis=(-2, -1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(axis=(-2, -1)) / den, math.nan)


def _question_tests(
    x: np.ndarray, y: np.ndarray, undefined: bool, n_perm: int, n_boot: int, seed: int, level: float
) -> dict[str, float]:
    """Permutation p and cluster-bootstrap interval of the pooled r of ``x`` and ``y``
    (``[persona, item]``) with the question as the unit."""
    n_items = x.shape[1]
    if undefined or n_items < 2:
        return {
            "p_cluster": math.nan,
            "r_ci_low": math.nan,
            "r_ci_high": math.nan,
            "n_clusters": n_items,
        }
    questions = (np.arange(n_items),)

    def relabelled(order: np.ndarray, axis: int = -1) -> np.ndarray:  # order: [..., item]
        return _pooled_r(x, np.moveaxis(y[:, order], 0, -2))

    def resampled(draw: np.ndarray, axis: int = -1) -> np.ndarray:
        return _pooled_r(np.moveaxis(x[:, draw], 0, -2), np.moveaxis(y[:, draw], 0, -2))

    batch = max(1, 2_000_000 // x.size)
    perm = scipy_stats.permutation_test(
        questions,
        relabelled,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_perm,
        batch=batch,
        rng=np.random.default_rng(seed),
    )
    boot = scipy_stats.bootstrap(
        questions,
        resampled,
        n_resamples=n_boot,
        batch=batch,
        vectorized=True,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).bootstrap_distribution
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - level) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (math.nan, math.nan)
    return {
        "p_cluster": float(perm.pvalue),
        "r_ci_low": float(low),
        "r_ci_high": float(high),
        "n_clusters": n_items,
    }


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
    check_model: bool = True,
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
        check_model: refuse directions computed on another model's weights (``False``: use
            them anyway, with a warning).

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
    directions.check_model(model, strict=check_model, opt_out="persona_shift(check_model=False)")
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
