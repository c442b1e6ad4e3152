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
    "load_model": "model.models",
    "wrap_hf_model": "model.models",
    "available_models": "model.models",
    "resolve_device": "model.models",
    "resolve_dtype": "model.models",
    "ModelInfo": "model.models",
    "TINY_MODEL": "model.models",
    "EMBEDDED_MODEL": "model.embedded",
    "EmbeddedModelMissingError": "model.embedded",
    "embedded_gguf_path": "model.embedded",
    "load_embedded_hf": "model.embedded",
    "ChatBatch": "model.chat",
    "ChatTemplate": "model.chat",
    "answer_letter_ids": "model.chat",
    "chat_ids": "model.chat",
    "encode_chat": "model.chat",
    "left_pad": "model.chat",
    "generate": "steering.generation",
    "TinyConfig": "model.tiny",
    "tiny_hf_model": "model.tiny",
    "tiny_tokenizer": "model.tiny",
    "cache_root": "core.io",
    "ROLES": "data.roles",
    "DOMAINS": "data.roles",
    "DOMAIN_SUBJECTS": "data.roles",
    "Role": "data.roles",
    "list_roles": "data.roles",
    "get_role": "data.roles",
    "PromptSet": "data.prompts",
    "RolePrompts": "data.prompts",
    "load_prompts": "data.prompts",
    "builtin_prompts": "data.prompts",
    "paper_prompts": "data.prompts",
    "custom_prompts": "data.prompts",
    "TASK_TYPES": "data.prompts",
    "collect_means": "vectors.activations",
    "ActivationMeans": "vectors.activations",
    "RoleDirections": "vectors.directions",
    "compute_directions": "vectors.directions",
    "separation_auroc": "vectors.validation",
    "split_half_stability": "vectors.validation",
    "auroc": "vectors.validation",
    "load_settings": "model.models",
    "component_attribution": "vectors.components",
    "top_writers": "results.tables",
    "role_confusion": "vectors.confusion",
    "RoleConfusion": "vectors.confusion",
    "set_progress": "core.progress",
    "model_fingerprint": "model.models",
    "Addition": "steering.interventions",
    "Ablation": "steering.interventions",
    "Clamp": "steering.interventions",
    "steer": "steering.interventions",
    "SteerState": "steering.interventions",
    "Intervention": "steering.interventions",
    "residual_norms": "vectors.activations",
    "project_out": "steering.operators",
    "clamp_projection": "steering.operators",
    "orthogonalized": "steering.orthogonalize",
    "logit_lens": "vectors.readouts",
    "patchscope": "vectors.readouts",
    "patchscopes": "vectors.readouts",
    "PatchscopeResult": "vectors.readouts",
    "BagOfWordsJudge": "vectors.readouts",
    "OpenAIJudge": "vectors.readouts",
    "load_benchmark": "data.benchmarks",
    "MultipleChoice": "data.benchmarks",
    "LETTERS": "data.benchmarks",
    "evaluate": "experiments.evaluation",
    "Baseline": "steering.conditions",
    "Persona": "steering.persona",
    "format_question": "experiments.evaluation",
    "accuracy": "results.stats",
    "compare": "results.stats",
    "mcnemar_exact": "results.stats",
    "paired_permutation_test": "results.stats",
    "bootstrap_ci": "results.stats",
    "paired_bootstrap_ci": "results.stats",
    "relative_change": "results.stats",
    "adjust_pvalues": "results.stats",
    "accuracy_by": "results.stats",
    "builtin_generic": "data.prompts",
    "sweep": "experiments.sweeps",
    "merge": "experiments.sweeps",
    "SweepResult": "experiments.sweeps",
    "SweepConfig": "experiments.sweeps",
    "select": "experiments.selection",
    "paper_rule": "experiments.selection",
    "Pick": "experiments.selection",
    "ResultStore": "experiments.store",
    "effect_table": "results.tables",
    "pivot_effects": "results.tables",
    "model_correlation": "results.tables",
    "letter_attribution": "vectors.attribution",
    "FAMILIES": "model.families",
    "family_hf_model": "model.families",
    "family_tokenizer": "model.families",
    "run_checks": "experiments.conformance",
    "conformance_table": "experiments.conformance",
    "apply_picks": "experiments.picks",
    "PAPER_REVISIONS": "data.prompts",
    "PATCHSCOPE_MODES": "vectors.readouts",
    "paper_rounded_rule": "experiments.selection",
    "paired_accuracy_test": "results.stats",
    "TIE_RULES": "experiments.evaluation",
    "SystemTurn": "model.system_turn",
    "DATE_STRING": "model.system_turn",
    "ABLATION_PLACEMENTS": "steering.interventions",
    "StoreMismatchError": "experiments.store",
    "read_manifest": "experiments.store",
    "PromptTransform": "steering.persona",
    "PromptEdit": "steering.persona",
    "position_hook": "steering.interventions",
    "check_intervention": "steering.interventions",
    "describe": "steering.interventions",
    "layer_cutoff": "experiments.selection",
    "Model": "core.types",
    "shared_direction": "vectors.decomposition",
    "specific_directions": "vectors.decomposition",
    "shared_share": "vectors.decomposition",
    "shared_fraction": "vectors.decomposition",
    "band_summary": "vectors.decomposition",
    "persona_shift": "experiments.persona_shift",
    "PersonaShift": "experiments.persona_shift",
}

__all__ = ["__version__", *_EXPORTS]  # every public name is declared once, above

if TYPE_CHECKING:  # pragma: no cover - the same names, for type checkers and IDEs
    from roleprobe.core.io import (
        cache_root as cache_root,
    )
    from roleprobe.core.progress import (
        set_progress as set_progress,
    )
    from roleprobe.core.types import (
        Model as Model,
    )
    from roleprobe.data.benchmarks import (
        LETTERS as LETTERS,
    )
    from roleprobe.data.benchmarks import (
        MultipleChoice as MultipleChoice,
    )
    from roleprobe.data.benchmarks import (
        load_benchmark as load_benchmark,
    )
    from roleprobe.data.prompts import (
        PAPER_REVISIONS as PAPER_REVISIONS,
    )
    from roleprobe.data.prompts import (
        TASK_TYPES as TASK_TYPES,
    )
    from roleprobe.data.prompts import (
        PromptSet as PromptSet,
    )
    from roleprobe.data.prompts import (
        RolePrompts as RolePrompts,
    )
    from roleprobe.data.prompts import (
        builtin_generic as builtin_generic,
    )
    from roleprobe.data.prompts import (
        builtin_prompts as builtin_prompts,
    )
    from roleprobe.data.prompts import (
        custom_prompts as custom_prompts,
    )
    from roleprobe.data.prompts import (
        load_prompts as load_prompts,
    )
    from roleprobe.data.prompts import (
        paper_prompts as paper_prompts,
    )
    from roleprobe.data.roles import (
        DOMAIN_SUBJECTS as DOMAIN_SUBJECTS,
    )
    from roleprobe.data.roles import (
        DOMAINS as DOMAINS,
    )
    from roleprobe.data.roles import (
        ROLES as ROLES,
    )
    from roleprobe.data.roles import (
        Role as Role,
    )
    from roleprobe.data.roles import (
        get_role as get_role,
    )
    from roleprobe.data.roles import (
        list_roles as list_roles,
    )
    from roleprobe.experiments.conformance import (
        conformance_table as conformance_table,
    )
    from roleprobe.experiments.conformance import (
        run_checks as run_checks,
    )
    from roleprobe.experiments.evaluation import (
        TIE_RULES as TIE_RULES,
    )
    from roleprobe.experiments.evaluation import (
        evaluate as evaluate,
    )
    from roleprobe.experiments.evaluation import (
        format_question as format_question,
    )
    from roleprobe.experiments.persona_shift import (
        PersonaShift as PersonaShift,
    )
    from roleprobe.experiments.persona_shift import (
        persona_shift as persona_shift,
    )
    from roleprobe.experiments.picks import (
        apply_picks as apply_picks,
    )
    from roleprobe.experiments.selection import (
        Pick as Pick,
    )
    from roleprobe.experiments.selection import (
        layer_cutoff as layer_cutoff,
    )
    from roleprobe.experiments.selection import (
        paper_rounded_rule as paper_rounded_rule,
    )
    from roleprobe.experiments.selection import (
        paper_rule as paper_rule,
    )
    from roleprobe.experiments.selection import (
        select as select,
    )
    from roleprobe.experiments.store import (
        ResultStore as ResultStore,
    )
    from roleprobe.experiments.store import (
        StoreMismatchError as StoreMismatchError,
    )
    from roleprobe.experiments.store import (
        read_manifest as read_manifest,
    )
    from roleprobe.experiments.sweeps import (
        SweepConfig as SweepConfig,
    )
    from roleprobe.experiments.sweeps import (
        SweepResult as SweepResult,
    )
    from roleprobe.experiments.sweeps import (
        merge as merge,
    )
    from roleprobe.experiments.sweeps import (
        sweep as sweep,
    )
    from roleprobe.model.chat import (
        ChatBatch as ChatBatch,
    )
    from roleprobe.model.chat import (
        ChatTemplate as ChatTemplate,
    )
    from roleprobe.model.chat import (
        answer_letter_ids as answer_letter_ids,
    )
    from roleprobe.model.chat import (
        chat_ids as chat_ids,
    )
    from roleprobe.model.chat import (
        encode_chat as encode_chat,
    )
    from roleprobe.model.chat import (
        left_pad as left_pad,
    )
    from roleprobe.model.embedded import (
        EMBEDDED_MODEL as EMBEDDED_MODEL,
    )
    from roleprobe.model.embedded import (
        EmbeddedModelMissingError as EmbeddedModelMissingError,
    )
    from roleprobe.model.embedded import (
        embedded_gguf_path as embedded_gguf_path,
    )
    from roleprobe.model.embedded import (
        load_embedded_hf as load_embedded_hf,
    )
    from roleprobe.model.families import (
        FAMILIES as FAMILIES,
    )
    from roleprobe.model.families import (
        family_hf_model as family_hf_model,
    )
    from roleprobe.model.families import (
        family_tokenizer as family_tokenizer,
    )
    from roleprobe.model.models import (
        TINY_MODEL as TINY_MODEL,
    )
    from roleprobe.model.models import (
        ModelInfo as ModelInfo,
    )
    from roleprobe.model.models import (
        available_models as available_models,
    )
    from roleprobe.model.models import (
        load_model as load_model,
    )
    from roleprobe.model.models import (
        load_settings as load_settings,
    )
    from roleprobe.model.models import (
        model_fingerprint as model_fingerprint,
    )
    from roleprobe.model.models import (
        resolve_device as resolve_device,
    )
    from roleprobe.model.models import (
        resolve_dtype as resolve_dtype,
    )
    from roleprobe.model.models import (
        wrap_hf_model as wrap_hf_model,
    )
    from roleprobe.model.system_turn import (
        DATE_STRING as DATE_STRING,
    )
    from roleprobe.model.system_turn import (
        SystemTurn as SystemTurn,
    )
    from roleprobe.model.tiny import (
        TinyConfig as TinyConfig,
    )
    from roleprobe.model.tiny import (
        tiny_hf_model as tiny_hf_model,
    )
    from roleprobe.model.tiny import (
        tiny_tokenizer as tiny_tokenizer,
    )
    from roleprobe.results.stats import (
        accuracy as accuracy,
    )
    from roleprobe.results.stats import (
        accuracy_by as accuracy_by,
    )
    from roleprobe.results.stats import (
        adjust_pvalues as adjust_pvalues,
    )
    from roleprobe.results.stats import (
        bootstrap_ci as bootstrap_ci,
    )
    from roleprobe.results.stats import (
        compare as compare,
    )
    from roleprobe.results.stats import (
        mcnemar_exact as mcnemar_exact,
    )
    from roleprobe.results.stats import (
        paired_accuracy_test as paired_accuracy_test,
    )
    from roleprobe.results.stats import (
        paired_bootstrap_ci as paired_bootstrap_ci,
    )
    from roleprobe.results.stats import (
        paired_permutation_test as paired_permutation_test,
    )
    from roleprobe.results.stats import (
        relative_change as relative_change,
    )
    from roleprobe.results.tables import (
        effect_table as effect_table,
    )
    from roleprobe.results.tables import (
        model_correlation as model_correlation,
    )
    from roleprobe.results.tables import (
        pivot_effects as pivot_effects,
    )
    from roleprobe.results.tables import (
        top_writers as top_writers,
    )
    from roleprobe.steering.conditions import (
        Baseline as Baseline,
    )
    from roleprobe.steering.generation import (
        generate as generate,
    )
    from roleprobe.steering.interventions import (
        ABLATION_PLACEMENTS as ABLATION_PLACEMENTS,
    )
    from roleprobe.steering.interventions import (
        Ablation as Ablation,
    )
    from roleprobe.steering.interventions import (
        Addition as Addition,
    )
    from roleprobe.steering.interventions import (
        Clamp as Clamp,
    )
    from roleprobe.steering.interventions import (
        Intervention as Intervention,
    )
    from roleprobe.steering.interventions import (
        SteerState as SteerState,
    )
    from roleprobe.steering.interventions import (
        check_intervention as check_intervention,
    )
    from roleprobe.steering.interventions import (
        describe as describe,
    )
    from roleprobe.steering.interventions import (
        position_hook as position_hook,
    )
    from roleprobe.steering.interventions import (
        steer as steer,
    )
    from roleprobe.steering.operators import (
        clamp_projection as clamp_projection,
    )
    from roleprobe.steering.operators import (
        project_out as project_out,
    )
    from roleprobe.steering.orthogonalize import (
        orthogonalized as orthogonalized,
    )
    from roleprobe.steering.persona import (
        Persona as Persona,
    )
    from roleprobe.steering.persona import (
        PromptEdit as PromptEdit,
    )
    from roleprobe.steering.persona import (
        PromptTransform as PromptTransform,
    )
    from roleprobe.vectors.activations import (
        ActivationMeans as ActivationMeans,
    )
    from roleprobe.vectors.activations import (
        collect_means as collect_means,
    )
    from roleprobe.vectors.activations import (
        residual_norms as residual_norms,
    )
    from roleprobe.vectors.attribution import (
        letter_attribution as letter_attribution,
    )
    from roleprobe.vectors.components import (
        component_attribution as component_attribution,
    )
    from roleprobe.vectors.confusion import (
        RoleConfusion as RoleConfusion,
    )
    from roleprobe.vectors.confusion import (
        role_confusion as role_confusion,
    )
    from roleprobe.vectors.decomposition import (
        band_summary as band_summary,
    )
    from roleprobe.vectors.decomposition import (
        shared_direction as shared_direction,
    )
    from roleprobe.vectors.decomposition import (
        shared_fraction as shared_fraction,
    )
    from roleprobe.vectors.decomposition import (
        shared_share as shared_share,
    )
    from roleprobe.vectors.decomposition import (
        specific_directions as specific_directions,
    )
    from roleprobe.vectors.directions import (
        RoleDirections as RoleDirections,
    )
    from roleprobe.vectors.directions import (
        compute_directions as compute_directions,
    )
    from roleprobe.vectors.readouts import (
        PATCHSCOPE_MODES as PATCHSCOPE_MODES,
    )
    from roleprobe.vectors.readouts import (
        BagOfWordsJudge as BagOfWordsJudge,
    )
    from roleprobe.vectors.readouts import (
        OpenAIJudge as OpenAIJudge,
    )
    from roleprobe.vectors.readouts import (
        PatchscopeResult as PatchscopeResult,
    )
    from roleprobe.vectors.readouts import (
        logit_lens as logit_lens,
    )
    from roleprobe.vectors.readouts import (
        patchscope as patchscope,
    )
    from roleprobe.vectors.readouts import (
        patchscopes as patchscopes,
    )
    from roleprobe.vectors.validation import (
        auroc as auroc,
    )
    from roleprobe.vectors.validation import (
        separation_auroc as separation_auroc,
    )
    from roleprobe.vectors.validation import (
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
