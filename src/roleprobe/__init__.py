"""roleprobe: role vectors in a language model's residual stream.

Difference-of-means directions between role-specific and generic prompts, read at every
layer through TransformerLens hooks, applied as activation additions and directional
ablations, and measured on multiple-choice benchmarks (arXiv 2502.12055).

A notebook needs only ``import roleprobe as rp``. Importing is cheap: torch, transformers
and TransformerLens load on first use of a name that needs them.

Example:
    >>> import roleprobe as rp
    >>> model = rp.load_model()  # the embedded SmolLM2-135M-Instruct
    >>> batch = rp.encode_chat(model.tokenizer, ["What is the capital of France?"])
"""

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "models",
    "wrap_hf_model": "models",
    "available_models": "models",
    "resolve_device": "models",
    "resolve_dtype": "models",
    "ModelInfo": "models",
    "TINY_MODEL": "models",
    "EMBEDDED_MODEL": "embedded",
    "EmbeddedModelMissingError": "embedded",
    "embedded_gguf_path": "embedded",
    "load_embedded_hf": "embedded",
    "ChatBatch": "chat",
    "ChatTemplate": "chat",
    "answer_letter_ids": "chat",
    "chat_ids": "chat",
    "encode_chat": "chat",
    "left_pad": "chat",
    "generate": "generation",
    "TinyConfig": "tiny",
    "tiny_hf_model": "tiny",
    "tiny_tokenizer": "tiny",
    "cache_root": "snapshot",
    "ROLES": "roles",
    "DOMAINS": "roles",
    "DOMAIN_SUBJECTS": "roles",
    "Role": "roles",
    "list_roles": "roles",
    "get_role": "roles",
    "PromptSet": "prompts",
    "RolePrompts": "prompts",
    "load_prompts": "prompts",
    "builtin_prompts": "prompts",
    "paper_prompts": "prompts",
    "custom_prompts": "prompts",
    "TASK_TYPES": "prompts",
    "collect_means": "activations",
    "ActivationMeans": "activations",
    "RoleDirections": "directions",
    "compute_directions": "directions",
    "separation_auroc": "validation",
    "split_half_stability": "validation",
    "auroc": "validation",
    "model_fingerprint": "models",
    "Addition": "interventions",
    "Ablation": "interventions",
    "Clamp": "interventions",
    "steer": "interventions",
    "SteerState": "interventions",
    "Intervention": "interventions",
    "residual_norms": "interventions",
    "project_out": "operators",
    "clamp_projection": "operators",
    "orthogonalized": "orthogonalize",
    "logit_lens": "readouts",
    "patchscope": "readouts",
    "PatchscopeResult": "readouts",
    "BagOfWordsJudge": "readouts",
    "OpenAIJudge": "readouts",
    "load_benchmark": "benchmarks",
    "MultipleChoice": "benchmarks",
    "LETTERS": "benchmarks",
    "evaluate": "evaluation",
    "Baseline": "evaluation",
    "Persona": "evaluation",
    "format_question": "evaluation",
    "accuracy": "stats",
    "compare": "stats",
    "mcnemar_exact": "stats",
    "paired_permutation_test": "stats",
    "bootstrap_ci": "stats",
    "paired_bootstrap_ci": "stats",
    "relative_change": "stats",
    "adjust_pvalues": "stats",
    "accuracy_by": "stats",
    "builtin_generic": "prompts",
    "sweep": "sweeps",
    "merge": "sweeps",
    "SweepResult": "sweeps",
    "SweepConfig": "sweeps",
    "select": "selection",
    "paper_rule": "selection",
    "Pick": "selection",
    "ResultStore": "store",
    "effect_table": "tables",
    "pivot_effects": "tables",
    "model_correlation": "tables",
    "letter_attribution": "attribution",
    "FAMILIES": "families",
    "family_hf_model": "families",
    "family_tokenizer": "families",
    "run_checks": "conformance",
    "conformance_table": "conformance",
    "apply_picks": "picks",
    "PAPER_REVISIONS": "prompts",
    "PATCHSCOPE_MODES": "readouts",
    "paper_rounded_rule": "selection",
    "paired_accuracy_test": "stats",
    "TIE_RULES": "evaluation",
    "SystemTurn": "system_turn",
    "DATE_STRING": "system_turn",
    "ABLATION_PLACEMENTS": "interventions",
}

__all__ = [
    "ABLATION_PLACEMENTS",
    "DATE_STRING",
    "DOMAINS",
    "DOMAIN_SUBJECTS",
    "EMBEDDED_MODEL",
    "FAMILIES",
    "LETTERS",
    "PAPER_REVISIONS",
    "PATCHSCOPE_MODES",
    "ROLES",
    "TASK_TYPES",
    "TIE_RULES",
    "TINY_MODEL",
    "Ablation",
    "ActivationMeans",
    "Addition",
    "BagOfWordsJudge",
    "Baseline",
    "ChatBatch",
    "ChatTemplate",
    "Clamp",
    "EmbeddedModelMissingError",
    "Intervention",
    "ModelInfo",
    "MultipleChoice",
    "OpenAIJudge",
    "PatchscopeResult",
    "Persona",
    "Pick",
    "PromptSet",
    "ResultStore",
    "Role",
    "RoleDirections",
    "RolePrompts",
    "SteerState",
    "SweepConfig",
    "SweepResult",
    "SystemTurn",
    "TinyConfig",
    "__version__",
    "accuracy",
    "accuracy_by",
    "adjust_pvalues",
    "answer_letter_ids",
    "apply_picks",
    "auroc",
    "available_models",
    "bootstrap_ci",
    "builtin_generic",
    "builtin_prompts",
    "cache_root",
    "chat_ids",
    "clamp_projection",
    "collect_means",
    "compare",
    "compute_directions",
    "conformance_table",
    "custom_prompts",
    "effect_table",
    "embedded_gguf_path",
    "encode_chat",
    "evaluate",
    "family_hf_model",
    "family_tokenizer",
    "format_question",
    "generate",
    "get_role",
    "left_pad",
    "letter_attribution",
    "list_roles",
    "load_benchmark",
    "load_embedded_hf",
    "load_model",
    "load_prompts",
    "logit_lens",
    "mcnemar_exact",
    "merge",
    "model_correlation",
    "model_fingerprint",
    "orthogonalized",
    "paired_accuracy_test",
    "paired_bootstrap_ci",
    "paired_permutation_test",
    "paper_prompts",
    "paper_rounded_rule",
    "paper_rule",
    "patchscope",
    "pivot_effects",
    "project_out",
    "relative_change",
    "residual_norms",
    "resolve_device",
    "resolve_dtype",
    "run_checks",
    "select",
    "separation_auroc",
    "split_half_stability",
    "steer",
    "sweep",
    "tiny_hf_model",
    "tiny_tokenizer",
    "wrap_hf_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from roleprobe.activations import (
        ActivationMeans,
        collect_means,
    )
    from roleprobe.attribution import (
        letter_attribution,
    )
    from roleprobe.benchmarks import (
        LETTERS,
        MultipleChoice,
        load_benchmark,
    )
    from roleprobe.chat import (
        ChatBatch,
        ChatTemplate,
        answer_letter_ids,
        chat_ids,
        encode_chat,
        left_pad,
    )
    from roleprobe.conformance import (
        conformance_table,
        run_checks,
    )
    from roleprobe.directions import (
        RoleDirections,
        compute_directions,
    )
    from roleprobe.embedded import (
        EMBEDDED_MODEL,
        EmbeddedModelMissingError,
        embedded_gguf_path,
        load_embedded_hf,
    )
    from roleprobe.evaluation import (
        TIE_RULES,
        Baseline,
        Persona,
        evaluate,
        format_question,
    )
    from roleprobe.families import (
        FAMILIES,
        family_hf_model,
        family_tokenizer,
    )
    from roleprobe.generation import (
        generate,
    )
    from roleprobe.interventions import (
        ABLATION_PLACEMENTS,
        Ablation,
        Addition,
        Clamp,
        Intervention,
        SteerState,
        residual_norms,
        steer,
    )
    from roleprobe.models import (
        TINY_MODEL,
        ModelInfo,
        available_models,
        load_model,
        model_fingerprint,
        resolve_device,
        resolve_dtype,
        wrap_hf_model,
    )
    from roleprobe.operators import (
        clamp_projection,
        project_out,
    )
    from roleprobe.orthogonalize import (
        orthogonalized,
    )
    from roleprobe.picks import (
        apply_picks,
    )
    from roleprobe.prompts import (
        PAPER_REVISIONS,
        TASK_TYPES,
        PromptSet,
        RolePrompts,
        builtin_generic,
        builtin_prompts,
        custom_prompts,
        load_prompts,
        paper_prompts,
    )
    from roleprobe.readouts import (
        PATCHSCOPE_MODES,
        BagOfWordsJudge,
        OpenAIJudge,
        PatchscopeResult,
        logit_lens,
        patchscope,
    )
    from roleprobe.roles import (
        DOMAIN_SUBJECTS,
        DOMAINS,
        ROLES,
        Role,
        get_role,
        list_roles,
    )
    from roleprobe.selection import (
        Pick,
        paper_rounded_rule,
        paper_rule,
        select,
    )
    from roleprobe.snapshot import (
        cache_root,
    )
    from roleprobe.stats import (
        accuracy,
        accuracy_by,
        adjust_pvalues,
        bootstrap_ci,
        compare,
        mcnemar_exact,
        paired_accuracy_test,
        paired_bootstrap_ci,
        paired_permutation_test,
        relative_change,
    )
    from roleprobe.store import (
        ResultStore,
    )
    from roleprobe.sweeps import (
        SweepConfig,
        SweepResult,
        merge,
        sweep,
    )
    from roleprobe.system_turn import (
        DATE_STRING,
        SystemTurn,
    )
    from roleprobe.tables import (
        effect_table,
        model_correlation,
        pivot_effects,
    )
    from roleprobe.tiny import (
        TinyConfig,
        tiny_hf_model,
        tiny_tokenizer,
    )
    from roleprobe.validation import (
        auroc,
        separation_auroc,
        split_half_stability,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'roleprobe' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"roleprobe.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
