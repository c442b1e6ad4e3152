"""Score multiple-choice questions by their answer letters, under any condition.

The question goes into the model's chat template as the user turn, in the paper's format
(its code's tabs included) by default::

    {question}\\n\\t\\t\\tA. {a}\\n\\t\\t\\tB. {b}\\n\\t\\t\\tC. {c}\\n\\t\\t\\tD. {d}
    \\n\\t\\t\\tAnswer with the letter of the correct answer.\\n\\t\\t\\tAnswer:

and the prediction is the argmax over the logits of the tokens ``A``-``D`` (no leading
space, as the model emits them first in the assistant turn) at the last position. Only
what is needed is computed: the forward pass stops after the final norm and the last
position's normalised residual is projected onto the four letter rows of the unembedding.
Per item we keep the predicted letter, the four letter log-probs (normalised over A-D), the
log-prob of the correct letter and the margin of the correct letter over the best other —
continuous scores that still move when accuracy sits at chance.

**Ties.** In bf16 several letters often share the top logit exactly (34 of 200 law questions
on SmolLM2). ``tied`` counts the letters at the maximum (1: no tie; compared exactly, as the
model produced them) and ``correct`` is the credit an item earns under a tie rule
(``tie_rule`` column): ``"fractional"`` (default; ``1/k`` when the correct letter is one of
``k`` tied), ``"paper"`` (the authors' code: a tie that includes the correct letter counts as
correct, because their argmax lists the correct letter first) or ``"first"`` (the earliest
letter wins). ``correct`` is therefore a float in [0, 1]; its mean is the accuracy under the
rule, and :func:`roleprobe.accuracy` reports the rule and the number of ties.

Conditions (:mod:`roleprobe.steering.conditions`): :class:`Baseline`; a prompt transform such as
:class:`Persona` (the role in the prompt, as a system prompt where the template has one,
else prefixed to the user turn); any :class:`~roleprobe.Intervention` — the built-ins
(:class:`~roleprobe.Addition`, :class:`~roleprobe.Ablation`, :class:`~roleprobe.Clamp`) or
a class of your own with a ``hooks(model, state)`` method; or a list of these, applied
together. The condition is checked before any question is scored, and the table's
condition columns come from each part's ``columns()`` (:func:`roleprobe.describe`).

Example:
    >>> df = evaluate(model, load_benchmark("builtin"), rp.Persona("lawyer"))
    >>> rp.accuracy(df)
    >>> both = evaluate(model, bench, [rp.Persona("lawyer"), rp.Addition(d, 12, 3.0)])
"""

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.progress import bar
from roleprobe.core.types import Model, check_model_arg
from roleprobe.data.benchmarks import LETTERS, MultipleChoice
from roleprobe.data.roles import DOMAIN_SUBJECTS
from roleprobe.model.chat import (
    ChatTemplate,
    EncodedPrompt,
    answer_letter_ids,
    collate,
    encode_prompt,
    pad_token_id,
)
from roleprobe.model.models import model_name
from roleprobe.model.system_turn import normalize_system
from roleprobe.steering.conditions import Baseline as Baseline
from roleprobe.steering.conditions import Condition, split_condition
from roleprobe.steering.conditions import condition_columns as condition_columns
from roleprobe.steering.interventions import steer
from roleprobe.steering.persona import PERSONA_MODES as PERSONA_MODES
from roleprobe.steering.persona import Persona as Persona
from roleprobe.steering.persona import apply_prompt_transforms
from roleprobe.steering.persona import template_has_system as template_has_system
from roleprobe.steering.prefix import last_letter_logits, letter_only_supported

FORMATS = ("paper", "clean")
TIE_RULES = ("fractional", "paper", "first")
"""How a tie at the top of the letter logits is scored (see the module docstring)."""
_SUBJECT_DOMAIN = {s: d for d, subjects in DOMAIN_SUBJECTS.items() for s in subjects}


def subject_domain(subject: str) -> str:
    """The paper's domain of an MMLU subject (``""`` if it is in none of the eight)."""
    return _SUBJECT_DOMAIN.get(subject, "")


def format_question(row: "Mapping[str, Any] | pd.Series[Any]", prompt_format: str = "paper") -> str:
    """The user turn for one question (``row`` has ``question`` and ``A``-``D``)."""
    if prompt_format == "paper":
        sep = "\n\t\t\t"
    elif prompt_format == "clean":
        sep = "\n"
    else:
        raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {FORMATS}")
    options = "".join(f"{sep}{letter}. {row[letter]}" for letter in LETTERS)
    return (
        f"{row['question']}{options}{sep}Answer with the letter of the correct answer.{sep}Answer:"
    )


def few_shot_prefix(dev: MultipleChoice | None, subject: str, k: int, prompt_format: str) -> str:
    """``k`` solved examples of the same subject from the dev split, as text before the question."""
    if k == 0:
        return ""
    if dev is None:
        raise ValueError("k_shot > 0 needs dev= (e.g. load_benchmark(..., split='dev'))")
    examples = dev.items[dev.items["subject"] == subject].head(k)
    if len(examples) < k:
        raise ValueError(f"the dev split has {len(examples)} questions for {subject!r}; k_shot={k}")
    shots = [f"{format_question(r, prompt_format)} {r['answer']}" for _, r in examples.iterrows()]
    return "\n\n".join(shots) + "\n\n"


def evaluate(
    model: Model,
    benchmark: MultipleChoice,
    condition: Condition = None,
    batch_size: int = 16,
    prompt_format: str = "paper",
    k_shot: int = 0,
    dev: MultipleChoice | None = None,
    labels: Mapping[str, Any] | None = None,
    full_logits: bool = False,
    progress: bool = True,
    tie_rule: str = "fractional",
    system: str | None = "default",
) -> pd.DataFrame:
    """Score every question of ``benchmark`` under one condition.

    Args:
        model: a TransformerLens bridge with a chat tokenizer.
        benchmark: the questions.
        condition: ``None``/:class:`Baseline` (default), a prompt transform
            (:class:`Persona`), any :class:`~roleprobe.Intervention` (built-in or your own),
            or a list of these applied together (see :mod:`roleprobe.steering.conditions`).
        batch_size: questions per forward pass (sorted by length to cut padding).
        prompt_format: ``"paper"`` (tabs, as the paper's code) or ``"clean"``.
        k_shot: solved dev examples before each question (0: zero-shot, the paper's setting).
        dev: the dev split, for ``k_shot > 0``.
        labels: extra constant columns (e.g. ``{"role": "lawyer", "pos": -1}``).
        full_logits: compute the whole vocabulary's logits and pick the letters from them
            (slower; the letter-only path gives the same scores).
        progress: a tqdm bar over batches (transient when called inside another
            roleprobe bar, e.g. a sweep's).
        tie_rule: how a tie at the top of the letter logits is scored: ``"fractional"``
            (``1/k`` credit), ``"paper"`` (the authors' rule) or ``"first"`` (earliest letter).
        system: the system-turn policy of the chat template: ``"default"`` (the template's
            own, date pinned), ``"none"`` (no system turn: the paper's format) or a text. A
            :class:`Persona` in system mode replaces it with the persona's sentence.

    Returns:
        One row per question, in the benchmark's order: ``id, subject, domain, answer, pred,
        correct, logprob_A..logprob_D, logprob_correct, margin, tied, tie_rule``, how the
        question was asked (``system``: the system turn as rendered, a persona's included;
        ``system_policy``: the policy asked for, before any persona; ``prompt_format``,
        ``model``, ``dtype``: :data:`roleprobe.results.stats.SETUP_COLUMNS`, which
        :func:`roleprobe.compare` and :func:`roleprobe.effect_table` check) and the
        condition's columns (:func:`condition_columns`; see :func:`score_table`).

    Raises:
        TypeError: a part of ``condition`` is neither an intervention nor a prompt
            transform (before any forward pass).
        ValueError: a bad argument, or an intervention that does not fit the model (also
            before any question is scored).
    """
    check_model_arg(model)
    transforms, interventions = split_condition(condition)
    columns = condition_columns(condition)
    check_tie_rule(tie_rule)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer = model.tokenizer
    policy = normalize_system(system)
    system, prefix = apply_prompt_transforms(transforms, tokenizer, policy)
    template = ChatTemplate.from_tokenizer(tokenizer, system)
    letter_ids = answer_letter_ids(tokenizer, LETTERS, system)
    if not full_logits:
        letter_only_supported(model)  # probe the output head once, before any hooks are on
    items = benchmark.items
    encoded = encode_questions(model, items, template, prompt_format, prefix, k_shot, dev)
    order = length_batches(encoded, batch_size)
    scores = torch.empty(len(encoded), len(LETTERS), dtype=torch.float64)
    pad = pad_token_id(tokenizer)
    # one steer for the whole benchmark: the hooks are built (and checked) before any
    # question runs; each batch tells them its attention mask
    # (one bar, closed even on error; inside another roleprobe bar it is transient)
    with (
        torch.inference_mode(),
        steer(model, *interventions) as state,
        bar(order, progress, desc=f"evaluate {benchmark.name}", unit="batch") as batches,
    ):
        for rows in batches:
            batch = collate([encoded[i] for i in rows], template.n_post, pad)
            batch = batch.to(cast(str, model.cfg.device))
            state.attention_mask = batch.attention_mask
            if full_logits:
                logits = model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]
                letters = logits[:, letter_ids]
            else:
                letters = letter_logits(model, batch.input_ids, batch.attention_mask, letter_ids)
            scores[torch.tensor(rows)] = letters.double().cpu()
    if interventions or transforms:
        check_scores(scores, f"evaluate {benchmark.name} under {columns or condition!r}")
    setup = {
        "system": template.system,
        "system_policy": policy,
        "prompt_format": prompt_format,
        "model": model_name(model),
        "dtype": str(model.cfg.dtype).removeprefix("torch."),
    }
    return score_table(items, scores, {**setup, **columns, **(labels or {})}, tie_rule=tie_rule)


def encode_questions(
    model: Model,
    items: pd.DataFrame,
    template: ChatTemplate,
    prompt_format: str = "paper",
    prefix: str = "",
    k_shot: int = 0,
    dev: MultipleChoice | None = None,
) -> list[EncodedPrompt]:
    """Token ids of each question in the chat template (over-long ones are named)."""
    return encode_items(
        model.tokenizer, int(model.cfg.n_ctx), items, template, prompt_format, prefix, k_shot, dev
    )


def encode_items(
    tokenizer: Any,
    n_ctx: int,
    items: pd.DataFrame,
    template: ChatTemplate,
    prompt_format: str = "paper",
    prefix: str = "",
    k_shot: int = 0,
    dev: MultipleChoice | None = None,
) -> list[EncodedPrompt]:
    """:func:`encode_questions` from a tokenizer and a context length alone (no model:
    ``roleprobe plan`` counts tokens this way)."""
    return [
        encode_prompt(
            tokenizer,
            prefix
            + few_shot_prefix(dev, row["subject"], k_shot, prompt_format)
            + format_question(row, prompt_format),
            template,
            n_ctx,
            f"question {row['id']}",
        )
        for _, row in items.iterrows()
    ]


def length_batches(encoded: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Indices of ``encoded`` in batches of similar length (sorted, to cut padding)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].ids), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def letter_logits(
    model: Model, input_ids: Tensor, attention_mask: Tensor, letter_ids: Sequence[int]
) -> Float[Tensor, "batch choice"]:
    """Logits of the letter tokens at the last position, without the full unembedding.

    The forward pass is cut right after the final norm (see
    :func:`roleprobe.steering.prefix.final_last`), and the last position's normalised residual is
    multiplied by the unembedding rows of the letters only, followed by whatever the model's
    head does after the unembedding (bias, Gemma-2's soft-cap, logit scales). A head that
    cannot be reproduced falls back to full logits
    (:func:`roleprobe.steering.prefix.last_letter_logits`).
    """
    return last_letter_logits(model, input_ids, attention_mask, letter_ids)


def check_tie_rule(tie_rule: str) -> None:
    """Raise a ValueError naming the allowed tie rules if ``tie_rule`` is not one of them."""
    if tie_rule not in TIE_RULES:
        raise ValueError(f"unknown tie_rule {tie_rule!r}; use one of {TIE_RULES}")


def check_scores(scores: Float[Tensor, "item choice"], what: str) -> None:
    """Refuse letter logits that are not a result: non-finite, or every question's four
    letters tied (what a residual stream that overflowed gives: its norm is infinite, the
    final norm zeroes it, every logit equals every other). ``what`` names the condition.

    Raises:
        ValueError: naming ``what`` and the likely cause.
    """
    if not bool(torch.isfinite(scores).all()):
        raise ValueError(
            f"{what}: the letter logits are not finite (the intervention overflowed the "
            "residual stream: use a smaller alpha or a wider dtype)"
        )
    top = scores == scores.max(dim=-1, keepdim=True).values
    if len(scores) and bool(top.all()):
        raise ValueError(
            f"{what}: all four letter logits tie on every question — a degenerate output, "
            "not an effect (the intervention overflowed the residual stream: use a smaller "
            "alpha or a wider dtype)"
        )


def score_table(
    items: pd.DataFrame,
    scores: Float[Tensor, "item choice"],
    labels: Mapping[str, Any] | None = None,
    tie_rule: str = "fractional",
) -> pd.DataFrame:
    """The per-item table from the letter logits of ``items`` (rows in the same order).

    Args:
        items: the questions (``id, subject, answer``).
        scores: the letter logits A-D as the model produced them (upcast exactly, e.g. bf16
            to float64, so a tie in the model's dtype stays a tie).
        labels: constant columns (e.g. the condition's parameters).
        tie_rule: ``"fractional"``, ``"paper"`` or ``"first"`` (see the module docstring).

    Returns:
        ``id, subject, domain, answer, pred`` (the earliest of the tied letters; under
        ``"paper"`` the correct letter when it is among them, as the authors' argmax),
        ``correct`` (the credit under the rule, a float in [0, 1]), ``logprob_A..logprob_D``,
        ``logprob_correct``, ``margin``, ``tied`` (letters at the maximal logit; 1 = no tie),
        ``tie_rule`` and the ``labels``.

    Raises:
        ValueError: an unknown tie rule or NaN scores.
    """
    check_tie_rule(tie_rule)
    if torch.isnan(scores).any():
        raise ValueError("the letter scores contain NaN")
    logprobs = torch.log_softmax(scores, dim=-1)
    answer_index = torch.tensor([LETTERS.index(a) for a in items["answer"]])
    at_max = scores == scores.max(dim=-1, keepdim=True).values
    tied = at_max.sum(dim=-1)
    first = at_max.int().argmax(dim=-1)  # the earliest letter at the maximum
    answer_at_max = at_max.gather(1, answer_index[:, None])[:, 0]
    if tie_rule == "first":
        pred_index = first
        credit = (first == answer_index).double()
    elif tie_rule == "paper":
        pred_index = torch.where(answer_at_max, answer_index, first)
        credit = answer_at_max.double()
    else:
        pred_index = first
        credit = answer_at_max.double() / tied.double()
    correct_lp = logprobs.gather(1, answer_index[:, None])[:, 0]
    others = logprobs.masked_fill(
        torch.nn.functional.one_hot(answer_index, 4).bool(), float("-inf")
    )
    table = pd.DataFrame(
        {
            "id": items["id"].to_numpy(),
            "subject": items["subject"].to_numpy(),
            "domain": [subject_domain(s) for s in items["subject"]],
            "answer": items["answer"].to_numpy(),
            "pred": [LETTERS[i] for i in pred_index.tolist()],
            "correct": credit.numpy(),
            **{f"logprob_{letter}": logprobs[:, i].numpy() for i, letter in enumerate(LETTERS)},
            "logprob_correct": correct_lp.numpy(),
            "margin": (correct_lp - others.max(dim=-1).values).numpy(),
            "tied": tied.numpy().astype(np.int64),
            "tie_rule": tie_rule,
        }
    )
    for key, value in (labels or {}).items():
        table[key] = value
    return table
