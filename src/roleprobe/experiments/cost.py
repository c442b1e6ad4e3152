"""What a run costs, counted before any compute: passes, tokens, FLOPs and GPU-hours.

``roleprobe plan`` answers "how long will the paper preset take on gemma-2-9b-it?" from the
model's ``config.json`` and a tokenizer alone: no weights are loaded and nothing runs. The
counts come from the library's own plan code, so they are what a run does, not a model of it.
:func:`plan_run` counts every stage of a run into a
:class:`~roleprobe.experiments.run_plan.RunPlan`; the pieces live apart:

* the model's shapes, FLOPs per token and tokenizer:
  :mod:`roleprobe.model.plan_model` (:func:`~roleprobe.model.plan_model.load_plan_model`);
* **the sweep**, counted as :func:`roleprobe.sweep` plans it:
  :mod:`roleprobe.experiments.sweep_cost`;
* the GPUs priced on: :mod:`roleprobe.experiments.gpus`; the text table:
  :mod:`roleprobe.app.plan`.

Here: **the other stages** (directions, validation, evaluation, readouts), counted from the
prompts and questions they read, one pass per length-sorted batch; validation and the
readouts' component attribution depend on what selection picks, so they are estimates
(upper bounds), and say so. The readouts' patchscope is greedy decoding with a KV cache, to
its full token budget (no early stop). GPU-hours = FLOPs / (peak x utilisation) / 3600.

Footgun: without the run's prompts (e.g. the paper's, not downloaded), the paper's 128 per
role are counted with the built-in prompts' lengths; the notes say so.

Example:
    >>> model = load_plan_model("tests/data/configs/gemma-2-9b-it.json")
    >>> plan = plan_run(config, model, benchmark, roles)  # config: a RunConfig
    >>> plan.stages()
"""

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.data.prompts import PAPER_N, RolePrompts, builtin_prompts
from roleprobe.experiments.evaluation import encode_items, length_batches, subject_domain
from roleprobe.experiments.gpus import GPUS, Gpu, check_utilisation
from roleprobe.experiments.run_plan import RunPlan
from roleprobe.experiments.selection import layer_cutoff, split_ids
from roleprobe.experiments.sweep_cost import (
    LETTER_ROWS,
    CostRow,
    Tally,
    count_sweep,
    pass_cost,
)
from roleprobe.experiments.sweeps import CPU_PREFIX_BUDGET, SweepConfig, role_group
from roleprobe.model.chat import ChatTemplate, EncodedPrompt, chat_ids, encode_prompt
from roleprobe.model.plan_model import Architecture, PlanModel
from roleprobe.vectors.directions import RoleDirections
from roleprobe.vectors.readouts import PATCHSCOPE_PROMPT

__all__ = ["DTYPE_BYTES", "READOUT_TOKENS", "RunSettings", "plan_run", "sweep_config"]

DTYPE_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
READOUT_TOKENS = {"placeholder": 32, "paper": 512}
"""New tokens per patchscope answer as stage 7 asks for them, by mode."""


@runtime_checkable
class RunSettings(Protocol):
    """The settings of a run a plan reads (:class:`roleprobe.app.run_config.RunConfig` has
    them all)."""

    @property
    def model(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def prompts(self) -> str: ...
    @property
    def heldout_fraction(self) -> float: ...
    @property
    def layers(self) -> tuple[int, ...]: ...
    @property
    def positions(self) -> tuple[int, ...]: ...
    @property
    def alphas(self) -> tuple[float, ...]: ...
    @property
    def ablation(self) -> bool: ...
    @property
    def controls(self) -> bool: ...
    @property
    def specific(self) -> bool: ...
    @property
    def scope(self) -> str: ...
    @property
    def evaluate_rules(self) -> tuple[str, ...]: ...
    @property
    def select_fraction(self) -> float: ...
    @property
    def evaluate_all_domains(self) -> bool: ...
    @property
    def patchscope(self) -> bool: ...
    @property
    def patchscope_mode(self) -> str: ...
    @property
    def system(self) -> str: ...
    @property
    def ablation_at(self) -> str: ...
    @property
    def tie_rule(self) -> str: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def seed(self) -> int: ...


def _default_stack() -> int:
    """The stack :func:`roleprobe.sweep` uses when the pipeline does not set one."""
    import inspect

    from roleprobe.experiments.sweeps import sweep

    return int(inspect.signature(sweep).parameters["stack"].default)


def sweep_config(
    settings: RunSettings, model: PlanModel, roles: Sequence[str], stack: int | None = None
) -> SweepConfig:
    """The :class:`SweepConfig` a run's sweep stage builds (every layer and post-instruction
    position when the settings list none; ``stack``: default :func:`roleprobe.sweep`'s)."""
    return SweepConfig(
        roles=tuple(roles),
        layers=settings.layers or tuple(range(model.arch.n_layers)),
        positions=settings.positions or tuple(range(-model.n_post, 0)),
        alphas=settings.alphas,
        ablation=settings.ablation,
        controls=settings.controls,
        scope=settings.scope,
        batch_size=settings.batch_size,
        stack=stack or int(getattr(settings, "stack", 0) or _default_stack()),
        seed=settings.seed,
        tie_rule=settings.tie_rule,
        ablation_at=settings.ablation_at,
        system=settings.system,
        specific=settings.specific,
    )


def _encode(model: PlanModel, texts: Sequence[str], template: ChatTemplate) -> list[EncodedPrompt]:
    n_ctx = model.arch.n_ctx
    return [
        encode_prompt(model.tokenizer, t, template, n_ctx, f"prompt {i}")
        for i, t in enumerate(texts)
    ]


def _batched(
    arch: Architecture,
    encoded: Sequence[EncodedPrompt],
    batch_size: int,
    blocks: int,
    head: int | None,
) -> Tally:
    """One pass per length-sorted batch of ``encoded`` (as the library batches them)."""
    tally = Tally()
    for batch in length_batches(encoded, batch_size):
        seq = max(len(encoded[i].ids) for i in batch)
        tally.add(1.0, *pass_cost(arch, len(batch), seq, blocks, head))
    return tally


def _generation(arch: Architecture, prompt: int, new: int) -> Tally:
    """Greedy decoding with a KV cache: the prompt in one pass (full logits), then one pass
    per new token attending over everything before it (an upper bound: no early stop)."""
    n, big_p = arch.n_layers, arch.block_params
    attention = 4 * arch.n_heads * arch.d_head
    prefill = prompt * n * arch.block_flops(prompt) + prompt * arch.head_flops()
    contexts = new * prompt + new * (new + 1) // 2
    decode = n * (new * 2 * big_p + attention * contexts) + new * arch.head_flops()
    return Tally(float(1 + new), float(prompt + new), float(prefill + decode))


def _stand_in(roles: Sequence[str], per_role: int, base: int) -> RolePrompts:
    """``per_role`` and ``base`` prompts whose lengths stand in for unavailable ones: the
    built-in prompts of each role (the built-in generic ones for other roles), repeated."""
    from roleprobe.data.prompts import PromptSet, builtin_generic

    generic = list(builtin_generic().instructions)
    known = builtin_prompts()

    def cycle(texts: Sequence[str], n: int, name: str) -> PromptSet:
        return PromptSet(name, tuple(f"{texts[i % len(texts)]} ({i})" for i in range(n)))

    sets = {
        r: cycle(list(known.roles[r].instructions) if r in known.roles else generic, per_role, r)
        for r in roles
    }
    return RolePrompts(sets, cycle(generic, base, "base"), "stand-in")


def plan_run(
    settings: RunSettings,
    model: PlanModel,
    benchmark: MultipleChoice,
    roles: Sequence[str],
    prompts: RolePrompts | None = None,
    heldout: RolePrompts | None = None,
    *,
    gpu: Gpu = GPUS["h100"],
    utilisation: float = 0.5,
    stack: int | None = None,
    stack_ablations: bool = True,
    prefix_budget: int | None = None,
    directions: RoleDirections | None = None,
) -> RunPlan:
    """Count every stage of a run (see the module docstring); nothing is loaded or run.

    Args:
        settings: the run's settings (a :class:`~roleprobe.app.run_config.RunConfig`).
        model: the model (:func:`~roleprobe.model.plan_model.load_plan_model`).
        benchmark: the run's questions.
        roles: the run's roles.
        prompts, heldout: the run's training and held-out prompts (``None``: not
            available; then the paper's 128 per role and 128 base prompts are counted, with
            the built-in prompts' lengths, and the notes say so).
        gpu, utilisation: what GPU-hours are priced at.
        stack: variants per stacked pass (default: :func:`roleprobe.sweep`'s).
        stack_ablations: ``False``: one ablation per pass (the count before stacking).
        prefix_budget: bytes for one batch's saved residuals (default: an eighth of the
            GPU's memory, 2 GiB with ``device = "cpu"``).
        directions: the run's directions, if already computed (zero candidates exactly).

    Returns:
        A :class:`RunPlan`.

    Raises:
        ValueError: a layer beyond the model, a role without questions, a bad utilisation.
    """
    check_utilisation(utilisation)
    arch, n_layers = model.arch, model.arch.n_layers
    beyond = [layer for layer in settings.layers if layer >= n_layers]
    if beyond:
        raise ValueError(
            f"layers {beyond} are beyond {model.name!r}, which has {n_layers} layers "
            f"(0-{n_layers - 1})"
        )
    notes: list[str] = []
    cfg = sweep_config(settings, model, roles, stack)
    layers = cfg.layers
    dtype_bytes = DTYPE_BYTES.get(settings.dtype, 4)
    if prefix_budget is None:
        prefix_budget = CPU_PREFIX_BUDGET if settings.device == "cpu" else gpu.prefix_budget
    sweep_count = count_sweep(
        model,
        benchmark,
        cfg,
        dtype_bytes=dtype_bytes,
        prefix_budget=prefix_budget,
        stack_ablations=stack_ablations,
        directions=directions,
    )
    template = ChatTemplate.from_tokenizer(model.tokenizer, settings.system)
    if prompts is None:
        n_train = round(PAPER_N * (1 - settings.heldout_fraction))
        prompts = _stand_in(roles, n_train, n_train)
        held = _stand_in(roles, PAPER_N - n_train, PAPER_N - n_train)
        heldout = held if settings.heldout_fraction > 0 else None
        notes.append(
            f"prompts not available here: counted {n_train} prompts per role and {n_train} base "
            f"prompts (the paper's {PAPER_N}, less the held-out share), with the built-in "
            "prompts' lengths"
        )
    rows = _prompt_rows(model, template, roles, prompts, heldout, cfg.batch_size, max(layers))
    rows += sweep_count.rows
    rows += _evaluation_rows(settings, model, benchmark, cfg, template)
    rows += _readout_rows(settings, model, cfg, prompts, template)
    groups = {role: role_group(role, cfg.scope) for role in roles}
    if directions is None:
        notes.append(
            "no directions: every layer-0 candidate is counted as a zero direction (skipped "
            "by the sweep) and every other candidate as live"
        )
    if model.proxy:
        notes.append(f"tokens counted with {model.tokenizer_name} (proxy)")
    notes.append(f"post-instruction positions: {model.n_post}, from {model.n_post_source}")
    notes.append(
        "stage 6 assumes no pick is the zero direction and stage 7 one pick per role with "
        f"{READOUT_TOKENS[settings.patchscope_mode]} new tokens (no early stop): upper bounds"
    )
    notes.append(
        "sweep: one worker over the whole plan (each batch's last prefix pass is also its "
        f"baseline); prefix budget {prefix_budget / 2**30:.2f} GiB per batch"
    )
    if settings.patchscope:
        notes.append(
            "stage 7 decodes one token per pass: those passes are bound by memory bandwidth, "
            "not FLOPs, so its GPU-hours here are a floor"
        )
    return RunPlan(
        model=model.name,
        arch=arch,
        dtype=settings.dtype,
        tokenizer=model.tokenizer_name,
        proxy=model.proxy,
        n_post=model.n_post,
        n_post_source=model.n_post_source,
        gpu=gpu,
        utilisation=utilisation,
        sweep=sweep_count,
        rows=tuple(rows),
        roles=tuple(roles),
        groups=groups,
        notes=tuple(notes),
    )


def _prompt_rows(
    model: PlanModel,
    template: ChatTemplate,
    roles: Sequence[str],
    prompts: RolePrompts,
    heldout: RolePrompts | None,
    batch_size: int,
    deepest: int,
) -> list[CostRow]:
    """Stage 2: the means of every prompt set, up to the deepest layer (no head); stage 3
    (an estimate): held-out AUROC of every set, and role-vs-role confusion of the roles'
    held-out prompts together."""

    def tally(texts: Sequence[str]) -> tuple[float, float, float]:
        encoded = _encode(model, texts, template)
        return _fields(_batched(model.arch, encoded, batch_size, deepest, None))

    rows = [CostRow("directions", "base prompts", "", *tally(prompts.base.instructions))]
    rows += [
        CostRow("directions", "role prompts", r, *tally(prompts.roles[r].instructions))
        for r in roles
    ]
    if heldout is None:
        return rows
    rows.append(CostRow("validation", "auroc", "", *tally(heldout.base.instructions), True))
    rows += [
        CostRow("validation", "auroc", r, *tally(heldout.roles[r].instructions), True)
        for r in roles
    ]
    if len(roles) >= 2:
        together = [t for r in roles for t in heldout.roles[r].instructions]
        rows.append(CostRow("validation", "confusion", "", *tally(together), True))
    return rows


def _evaluation_rows(
    settings: RunSettings,
    model: PlanModel,
    benchmark: MultipleChoice,
    cfg: SweepConfig,
    template: ChatTemplate,
) -> list[CostRow]:
    """Stage 6: the baseline on every question, then each rule's picks (every α, one
    ablation a role) on each role's questions (own domain: the held-out part for the
    held-out rule)."""
    arch = model.arch
    items = benchmark.items.reset_index(drop=True)
    domains = [subject_domain(s) for s in items["subject"]]
    groups = {role_group(role, cfg.scope) for role in cfg.roles}
    if not settings.evaluate_all_domains and "all" not in groups:
        keep = [d in groups for d in domains]
        items = items[keep].reset_index(drop=True)
        domains = [d for d, k in zip(domains, keep, strict=True) if k]
    encoded = encode_items(model.tokenizer, model.arch.n_ctx, items, template, cfg.prompt_format)
    full = arch.n_layers
    rows = [
        CostRow(
            "evaluation",
            "baseline",
            "",
            *_fields(_batched(arch, encoded, cfg.batch_size, full, LETTER_ROWS)),
        )
    ]
    conditions = len(cfg.alphas) + int(cfg.ablation)
    for rule in settings.evaluate_rules:
        for role in cfg.roles:
            group = role_group(role, cfg.scope)
            own = [group in ("all", d) for d in domains]
            report: set[Any] | None = None  # the held-out rule reads its report part
            if rule == "held-out":
                report = set(split_ids(items[own], settings.select_fraction, settings.seed)[1])
            chosen = [
                encoded[i]
                for i in range(len(items))
                if not own[i] or report is None or items["id"].iat[i] in report
            ]
            tally = _batched(arch, chosen, cfg.batch_size, full, LETTER_ROWS)
            tally = Tally(
                tally.passes * conditions, tally.tokens * conditions, tally.flops * conditions
            )
            rows.append(CostRow("evaluation", f"{rule} picks", role, *_fields(tally)))
    return rows


def _fields(tally: Tally) -> tuple[float, float, float]:
    return tally.passes, tally.tokens, tally.flops


def _readout_rows(
    settings: RunSettings,
    model: PlanModel,
    cfg: SweepConfig,
    prompts: RolePrompts,
    template: ChatTemplate,
) -> list[CostRow]:
    """Stage 7 per role's pick: the patchscope (steered and unsteered answers) and the
    component attribution on the base and the role's prompts, at the deepest layer the
    rules can pick (an estimate: the picked layer is not known yet)."""
    arch = model.arch
    rows: list[CostRow] = []
    prompt = len(chat_ids(model.tokenizer, PATCHSCOPE_PROMPT, settings.system))
    new = max(0, min(READOUT_TOKENS[settings.patchscope_mode], arch.n_ctx - prompt))
    deepest = max(1, layer_cutoff(arch.n_layers) - 1)
    base = _encode(model, prompts.base.instructions, template)
    for role in cfg.roles:
        if settings.patchscope:
            one = _generation(arch, prompt, new)
            rows.append(
                CostRow(
                    "readouts", "patchscope", role, 2 * one.passes, 2 * one.tokens, 2 * one.flops
                )
            )
        own = _encode(model, prompts.roles[role].instructions, template)
        tally = _batched(arch, base, cfg.batch_size, deepest, None)
        more = _batched(arch, own, cfg.batch_size, deepest, None)
        tally.add(more.passes, more.tokens, more.flops)
        rows.append(CostRow("readouts", "components", role, *_fields(tally), True))
    return rows
