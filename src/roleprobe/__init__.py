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
    "cache_root": "io",
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
    "residual_norms": "activations",
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
    "Baseline": "conditions",
    "Persona": "persona",
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
    "StoreMismatchError": "store",
    "read_manifest": "store",
    "PromptTransform": "persona",
    "PromptEdit": "persona",
    "position_hook": "interventions",
    "check_intervention": "interventions",
    "describe": "interventions",
    "layer_cutoff": "selection",
    "Model": "types",
}

__all__ = ["__version__", *_EXPORTS]  # every public name is declared once, above

if TYPE_CHECKING:  # pragma: no cover - the same names, for type checkers and IDEs
    from roleprobe.activations import (
        ActivationMeans as ActivationMeans,
    )
    from roleprobe.activations import (
        collect_means as collect_means,
    )
    from roleprobe.activations import (
        residual_norms as residual_norms,
    )
    from roleprobe.attribution import (
        letter_attribution as letter_attribution,
    )
    from roleprobe.benchmarks import (
        LETTERS as LETTERS,
    )
    from roleprobe.benchmarks import (
        MultipleChoice as MultipleChoice,
    )
    from roleprobe.benchmarks import (
        load_benchmark as load_benchmark,
    )
    from roleprobe.chat import (
        ChatBatch as ChatBatch,
    )
    from roleprobe.chat import (
        ChatTemplate as ChatTemplate,
    )
    from roleprobe.chat import (
        answer_letter_ids as answer_letter_ids,
    )
    from roleprobe.chat import (
        chat_ids as chat_ids,
    )
    from roleprobe.chat import (
        encode_chat as encode_chat,
    )
    from roleprobe.chat import (
        left_pad as left_pad,
    )
    from roleprobe.conditions import (
        Baseline as Baseline,
    )
    from roleprobe.conformance import (
        conformance_table as conformance_table,
    )
    from roleprobe.conformance import (
        run_checks as run_checks,
    )
    from roleprobe.directions import (
        RoleDirections as RoleDirections,
    )
    from roleprobe.directions import (
        compute_directions as compute_directions,
    )
    from roleprobe.embedded import (
        EMBEDDED_MODEL as EMBEDDED_MODEL,
    )
    from roleprobe.embedded import (
        EmbeddedModelMissingError as EmbeddedModelMissingError,
    )
    from roleprobe.embedded import (
        embedded_gguf_path as embedded_gguf_path,
    )
    from roleprobe.embedded import (
        load_embedded_hf as load_embedded_hf,
    )
    from roleprobe.evaluation import (
        TIE_RULES as TIE_RULES,
    )
    from roleprobe.evaluation import (
        evaluate as evaluate,
    )
    from roleprobe.evaluation import (
        format_question as format_question,
    )
    from roleprobe.families import (
        FAMILIES as FAMILIES,
    )
    from roleprobe.families import (
        family_hf_model as family_hf_model,
    )
    from roleprobe.families import (
        family_tokenizer as family_tokenizer,
    )
    from roleprobe.generation import (
        generate as generate,
    )
    from roleprobe.interventions import (
        ABLATION_PLACEMENTS as ABLATION_PLACEMENTS,
    )
    from roleprobe.interventions import (
        Ablation as Ablation,
    )
    from roleprobe.interventions import (
        Addition as Addition,
    )
    from roleprobe.interventions import (
        Clamp as Clamp,
    )
    from roleprobe.interventions import (
        Intervention as Intervention,
    )
    from roleprobe.interventions import (
        SteerState as SteerState,
    )
    from roleprobe.interventions import (
        check_intervention as check_intervention,
    )
    from roleprobe.interventions import (
        describe as describe,
    )
    from roleprobe.interventions import (
        position_hook as position_hook,
    )
    from roleprobe.interventions import (
        steer as steer,
    )
    from roleprobe.io import (
        cache_root as cache_root,
    )
    from roleprobe.models import (
        TINY_MODEL as TINY_MODEL,
    )
    from roleprobe.models import (
        ModelInfo as ModelInfo,
    )
    from roleprobe.models import (
        available_models as available_models,
    )
    from roleprobe.models import (
        load_model as load_model,
    )
    from roleprobe.models import (
        model_fingerprint as model_fingerprint,
    )
    from roleprobe.models import (
        resolve_device as resolve_device,
    )
    from roleprobe.models import (
        resolve_dtype as resolve_dtype,
    )
    from roleprobe.models import (
        wrap_hf_model as wrap_hf_model,
    )
    from roleprobe.operators import (
        clamp_projection as clamp_projection,
    )
    from roleprobe.operators import (
        project_out as project_out,
    )
    from roleprobe.orthogonalize import (
        orthogonalized as orthogonalized,
    )
    from roleprobe.persona import (
        Persona as Persona,
    )
    from roleprobe.persona import (
        PromptEdit as PromptEdit,
    )
    from roleprobe.persona import (
        PromptTransform as PromptTransform,
    )
    from roleprobe.picks import (
        apply_picks as apply_picks,
    )
    from roleprobe.prompts import (
        PAPER_REVISIONS as PAPER_REVISIONS,
    )
    from roleprobe.prompts import (
        TASK_TYPES as TASK_TYPES,
    )
    from roleprobe.prompts import (
        PromptSet as PromptSet,
    )
    from roleprobe.prompts import (
        RolePrompts as RolePrompts,
    )
    from roleprobe.prompts import (
        builtin_generic as builtin_generic,
    )
    from roleprobe.prompts import (
        builtin_prompts as builtin_prompts,
    )
    from roleprobe.prompts import (
        custom_prompts as custom_prompts,
    )
    from roleprobe.prompts import (
        load_prompts as load_prompts,
    )
    from roleprobe.prompts import (
        paper_prompts as paper_prompts,
    )
    from roleprobe.readouts import (
        PATCHSCOPE_MODES as PATCHSCOPE_MODES,
    )
    from roleprobe.readouts import (
        BagOfWordsJudge as BagOfWordsJudge,
    )
    from roleprobe.readouts import (
        OpenAIJudge as OpenAIJudge,
    )
    from roleprobe.readouts import (
        PatchscopeResult as PatchscopeResult,
    )
    from roleprobe.readouts import (
        logit_lens as logit_lens,
    )
    from roleprobe.readouts import (
        patchscope as patchscope,
    )
    from roleprobe.roles import (
        DOMAIN_SUBJECTS as DOMAIN_SUBJECTS,
    )
    from roleprobe.roles import (
        DOMAINS as DOMAINS,
    )
    from roleprobe.roles import (
        ROLES as ROLES,
    )
    from roleprobe.roles import (
        Role as Role,
    )
    from roleprobe.roles import (
        get_role as get_role,
    )
    from roleprobe.roles import (
        list_roles as list_roles,
    )
    from roleprobe.selection import (
        Pick as Pick,
    )
    from roleprobe.selection import (
        layer_cutoff as layer_cutoff,
    )
    from roleprobe.selection import (
        paper_rounded_rule as paper_rounded_rule,
    )
    from roleprobe.selection import (
        paper_rule as paper_rule,
    )
    from roleprobe.selection import (
        select as select,
    )
    from roleprobe.stats import (
        accuracy as accuracy,
    )
    from roleprobe.stats import (
        accuracy_by as accuracy_by,
    )
    from roleprobe.stats import (
        adjust_pvalues as adjust_pvalues,
    )
    from roleprobe.stats import (
        bootstrap_ci as bootstrap_ci,
    )
    from roleprobe.stats import (
        compare as compare,
    )
    from roleprobe.stats import (
        mcnemar_exact as mcnemar_exact,
    )
    from roleprobe.stats import (
        paired_accuracy_test as paired_accuracy_test,
    )
    from roleprobe.stats import (
        paired_bootstrap_ci as paired_bootstrap_ci,
    )
    from roleprobe.stats import (
        paired_permutation_test as paired_permutation_test,
    )
    from roleprobe.stats import (
        relative_change as relative_change,
    )
    from roleprobe.store import (
        ResultStore as ResultStore,
    )
    from roleprobe.store import (
        StoreMismatchError as StoreMismatchError,
    )
    from roleprobe.store import (
        read_manifest as read_manifest,
    )
    from roleprobe.sweeps import (
        SweepConfig as SweepConfig,
    )
    from roleprobe.sweeps import (
        SweepResult as SweepResult,
    )
    from roleprobe.sweeps import (
        merge as merge,
    )
    from roleprobe.sweeps import (
        sweep as sweep,
    )
    from roleprobe.system_turn import (
        DATE_STRING as DATE_STRING,
    )
    from roleprobe.system_turn import (
        SystemTurn as SystemTurn,
    )
    from roleprobe.tables import (
        effect_table as effect_table,
    )
    from roleprobe.tables import (
        model_correlation as model_correlation,
    )
    from roleprobe.tables import (
        pivot_effects as pivot_effects,
    )
    from roleprobe.tiny import (
        TinyConfig as TinyConfig,
    )
    from roleprobe.tiny import (
        tiny_hf_model as tiny_hf_model,
    )
    from roleprobe.tiny import (
        tiny_tokenizer as tiny_tokenizer,
    )
    from roleprobe.types import (
        Model as Model,
    )
    from roleprobe.validation import (
        auroc as auroc,
    )
    from roleprobe.validation import (
        separation_auroc as separation_auroc,
    )
    from roleprobe.validation import (
        split_half_stability as split_half_stability,
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
