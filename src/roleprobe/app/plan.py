"""``roleprobe plan``'s text table: a :class:`~roleprobe.experiments.run_plan.RunPlan` as text.

Per stage (passes, tokens, FLOPs, GPU-hours at each utilisation shown), the sweep's detail
(work items, passes by part, prefix memory), per role, and the assumptions. Big numbers are
shown as ``1.23e+18``, counts with thousands separators; ``~`` marks an estimate.

Example:
    >>> print(format_plan(plan, {s.key: s.name for s in STAGES}))
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from roleprobe.experiments.run_plan import RunPlan

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.app.run_config import RunConfig
    from roleprobe.experiments.gpus import Gpu

__all__ = ["build_plan", "format_plan"]


def build_plan(config: "RunConfig", gpu: "Gpu", utilisation: float) -> RunPlan:
    """The :class:`RunPlan` of a run's settings: the model's config (no weights), the run's
    questions and roles, and its prompts when they are on this machine."""
    from roleprobe.app.inputs import NEEDS_DATA, run_benchmark, run_prompts, run_roles
    from roleprobe.experiments.cost import plan_run
    from roleprobe.model.plan_model import load_plan_model

    model = load_plan_model(
        config.model, config.model_revision or None, config.trust_remote_code, config.system
    )
    local = config.prompts not in NEEDS_DATA["prompts"] or (
        bool(config.data) and Path(config.data).expanduser().is_dir()
    )
    train, held = run_prompts(config) if local else (None, None)
    return plan_run(
        config,
        model,
        run_benchmark(config),
        run_roles(config),
        train,
        held,
        gpu=gpu,
        utilisation=utilisation,
    )


def _si(value: float) -> str:
    """``1.23e+18`` style for big numbers, thousands separators for counts."""
    return f"{value:.2e}" if value >= 1e6 else f"{value:,.0f}"


def _hours(value: float) -> str:
    return f"{value:.2f}" if value >= 0.01 or value == 0 else f"{value:.1e}"


def _bytes(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_plan(plan: RunPlan, stage_names: Mapping[str, str] | None = None) -> str:
    """The plan as a text table: per stage, the sweep's detail, per role and the notes.

    Args:
        plan: the plan.
        stage_names: how to show a stage key (e.g. ``{"sweep": "04_sweep"}``).
    """
    names = dict(stage_names or {})
    arch, sweep = plan.arch, plan.sweep
    pct = [round(u * 100) for u in plan.utilisations]
    lines = [
        f"model {plan.model}: {arch.model_type or '?'}, {arch.n_layers} layers, d_model "
        f"{arch.d_model}, {arch.n_heads} heads ({arch.n_kv_heads} KV) x {arch.d_head}, MLP "
        f"{arch.d_mlp} ({'gated' if arch.gated_mlp else 'plain'}), vocab {arch.d_vocab}; "
        f"dtype {plan.dtype}",
        f"tokens counted with {plan.tokenizer}" + (" (proxy)" if plan.proxy else ""),
        f"{arch.flops_per_token(1) / 1e9:.3g} GFLOPs per token through all blocks (+ "
        f"{arch.n_layers * 4 * arch.n_heads * arch.d_head:,} per token of context)",
        f"GPU {plan.gpu.name}: {plan.gpu.peak_flops / 1e12:.0f} TFLOP/s bf16 dense peak; "
        f"GPU-hours at {', '.join(f'{p} %' for p in pct)} of peak (asked: "
        f"{round(plan.utilisation * 100)} %)",
        "",
    ]
    stages = plan.stages()
    header = f"{'stage':16} {'passes':>10} {'tokens':>10} {'FLOPs':>10}" + "".join(
        f" {'GPU-h@' + str(p) + '%':>11}" for p in pct
    )
    lines += [header, "-" * len(header)]
    for row in stages.to_dict(orient="records"):
        label = names.get(str(row["stage"]), str(row["stage"])) + (" ~" if row["estimate"] else "")
        lines.append(
            f"{label:16} {row['passes']:>10,} {_si(row['tokens']):>10} {_si(row['flops']):>10}"
            + "".join(f" {_hours(row[f'gpu_hours_{p}']):>11}" for p in pct)
        )
    all_at_once, chunked = plan.prefix_bytes()
    stacked = sweep.total_passes
    lines += [
        "(tokens: padded, as full-pass equivalents; ~: an estimate, an upper bound)",
        "",
        f"sweep: {sweep.work_items:,} work items ({sweep.baseline_items:,} baseline + "
        f"{sweep.work_items - sweep.baseline_items:,} layer items; {len(sweep.live_layers)} live "
        f"layers; {sum(sweep.batches.values())} question batches in {len(sweep.batches)} groups)",
        f"  forward passes: {stacked:,} (prefix/baseline {sweep.passes['prefix']:,}, addition "
        f"{sweep.passes['addition']:,}, ablation {sweep.passes['ablation']:,}, alpha probe "
        f"{sweep.passes.get('probe', 0)}); "
        f"{sweep.passes_unstacked:,} with one ablation per pass",
        f"  prefix memory: {_bytes(sweep.prefix_bytes_per_layer)} per layer (batch x "
        f"{sweep.max_padded} tokens x {arch.d_model} x {plan.dtype}); all "
        f"{len(sweep.live_layers)} live layers at once {_bytes(all_at_once)}; within the "
        f"{_bytes(sweep.prefix_budget)} budget {sweep.prefix_layers_at_once} layers at once, "
        f"peak {_bytes(chunked)}",
        "",
    ]
    roles = plan.by_role()
    columns = [c for c in roles.columns if c.endswith("_passes")]
    head = f"{'role':24} {'group':16}" + "".join(
        f" {names.get(c[: -len('_passes')], c[: -len('_passes')]) + ' passes':>18}" for c in columns
    )
    head += f" {'FLOPs':>10} {'GPU-h@' + str(round(plan.utilisation * 100)) + '%':>11}"
    lines += [
        "per role (shared passes split by share; prefix and base prompts not included):",
        head,
    ]
    key = f"gpu_hours_{round(plan.utilisation * 100)}"
    for row in roles.to_dict(orient="records"):
        lines.append(
            f"{row['role']!s:24} {row['group']!s:16}"
            + "".join(f" {row[c]:>18,.1f}" for c in columns)
            + f" {_si(row['flops']):>10} {_hours(row[key]):>11}"
        )
    lines += ["", "assumptions:", *(f"  - {note}" for note in plan.notes)]
    return "\n".join(lines)
