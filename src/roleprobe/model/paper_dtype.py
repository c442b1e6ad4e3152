"""The dtype the paper's authors loaded each model in (``dtype = "paper"`` in a run).

The authors' code (danielepoterti/rolevectors_reasoning at cfa1e6e,
``model_utils/model_factory.py``) picks a loader by matching the model's path, in this
order, and each loader has its own dtype:

===============  =====================  ============
path contains    loader                 dtype
===============  =====================  ============
``qwen``         ``qwen_model``         float16
``llama-3``      ``llama3_model``       bfloat16
``llama``        ``llama2_model``       float16
``gemma-2-``     ``gemma2_model``       bfloat16
``gemma``        ``gemma_model``        bfloat16
``yi``           ``yi_model``           float16
===============  =====================  ============

Why it matters: the paper's accuracies come from bf16/fp16 logits, where two letters often
share the top logit (the tie rule ``"paper"`` exists for them); in float32 such ties hardly
occur, so a float32 run does not reproduce the authors' table even with their rule.

A name that matches none of these had no loader in the authors' code: :func:`paper_dtype`
returns ``None`` for it and the caller keeps float32, saying so. roleprobe's tiny test
families follow the family they imitate (``tiny-random-llama`` is Llama-3.2 style).

Example:
    >>> paper_dtype("google/gemma-2-9b-it")
    'bfloat16'
    >>> paper_dtype("Qwen/Qwen2.5-7B-Instruct")
    'float16'
"""

import re

__all__ = ["PAPER_DTYPE", "TINY_PAPER_DTYPES", "paper_dtype"]

PAPER_DTYPE = "paper"
"""The ``dtype`` setting that asks for the authors' dtype of the model's family."""

_FACTORY: tuple[tuple[str, str], ...] = (
    ("qwen", "float16"),
    ("llama-3", "bfloat16"),
    ("llama", "float16"),
    ("gemma-2-", "bfloat16"),
    ("gemma", "bfloat16"),
)
_YI = re.compile(r"(^|[/_\-.])yi([/_\-.]|$)")
"""The factory's last test, ``'yi' in path``, read as a word (``01-ai/Yi-6B-Chat``), so
that names merely containing the two letters are not taken for Yi models."""

TINY_PAPER_DTYPES: dict[str, str | None] = {
    "tiny-random": None,
    "tiny-random-llama": "bfloat16",
    "tiny-random-gemma2": "bfloat16",
    "tiny-random-gemma3": "bfloat16",
    "tiny-random-qwen2": "float16",
    "tiny-random-mistral": None,
    "tiny-random-phi3": None,
}
"""roleprobe's tiny test models, as the authors' loader of the family they imitate."""


def paper_dtype(model: str) -> str | None:
    """The dtype the authors' loader used for ``model``, or ``None`` if they had none.

    Args:
        model: a model name or path as given to :func:`roleprobe.load_model`.

    Returns:
        ``"bfloat16"``, ``"float16"`` or ``None`` (no loader of the authors matches).
    """
    name = model.strip().lower()
    if name in TINY_PAPER_DTYPES:
        return TINY_PAPER_DTYPES[name]
    for needle, dtype in _FACTORY:
        if needle in name:
            return dtype
    return "float16" if _YI.search(name) else None
