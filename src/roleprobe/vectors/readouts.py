"""What does a direction mean? Logit lens and patchscope readouts, and judges for them.

* :func:`logit_lens` — put the direction (and its negative) through the final norm and the
  unembedding and list the tokens it promotes, per layer. RMS/LayerNorm makes the readout
  independent of the direction's scale.
* :func:`patchscope` — the model answers "What does ⧫ represent?" greedily with the
  direction added (``alpha``, default 3) in one layer, and once unsteered; both texts are
  kept. :func:`patchscopes` does it for many directions (each at its own layer): the
  unsteered answer once, the steered ones batched, one direction per row. Two modes
  (:data:`PATCHSCOPE_MODES`):

  - ``"placeholder"`` (default): the direction is added at the placeholder's tokens only,
    as in the patchscopes method, and the answer is short (48 tokens). The question then
    reads the patched representation rather than a globally shifted model.
  - ``"paper"``: what the authors' code does (``test_directions`` in
    ``submodules/select_direction.py`` at cfa1e6e): a forward pre-hook on the block adds
    ``alpha * direction`` at **every** position — every prompt token, the placeholder
    included, and every generated token — greedy decoding, 512 new tokens
    (``Config.max_new_tokens``), the raw (unnormalised) direction, α ∈ {1, 3} (their
    interpretation tables read α = 3), run for every (position, layer) candidate and judged
    by an LLM (claude-3.5-haiku, temperature 0) against the unsteered answer.

  Whether the steered text adopts the role is then a *judgement*:

  - :class:`BagOfWordsJudge` (built in, offline): TF-IDF cosine between the text and each
    role's prompt set; it reports the target role's similarity and rank among the roles.
    We use word statistics rather than the model's own activations on purpose: judging a
    model's steered text with that same model's representation of roles would be circular
    (the steering direction *is* that representation). It is crude (it sees topic words,
    not stance) and deterministic.
  - :class:`OpenAIJudge`: any OpenAI-compatible ``/chat/completions`` endpoint (your key in
    ``OPENAI_API_KEY``) asked a yes/no question, as the paper does with an LLM judge.
  - any callable ``(text, role) -> float``.

Example:
    >>> logit_lens(model, rd, "lawyer", k=5)
    >>> result = patchscope(model, rd.vector("lawyer", 20), layer=20)
    >>> results = patchscopes(model, [(rd.vector("lawyer", 20), 20), (rd.vector("nurse", 14), 14)])
    >>> BagOfWordsJudge(rp.load_prompts("builtin"))(result.steered, "lawyer")
"""

import json
import logging
import math
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from roleprobe.core.hooks import check_layers
from roleprobe.core.types import Model
from roleprobe.data.prompts import RolePrompts
from roleprobe.model.chat import chat_ids, common_prefix_length
from roleprobe.steering.generation import generate
from roleprobe.steering.operators import check_direction
from roleprobe.steering.rows import RowAdditions
from roleprobe.vectors.directions import RoleDirections

logger = logging.getLogger(__name__)

PATCHSCOPE_PROMPT = "What does ⧫ represent?"
PLACEHOLDER = "⧫"
PATCHSCOPE_MODES = ("placeholder", "paper")
"""``placeholder``: add at the placeholder's tokens (ours); ``paper``: at every position."""
PATCHSCOPE_POSITIONS = ("placeholder", "all")
_MODE_DEFAULTS = {"placeholder": ("placeholder", 48), "paper": ("all", 512)}
Judge = Callable[[str, str], float]


def logit_lens(
    model: Model,
    directions: RoleDirections | Float[Tensor, "layer d_model"],
    role: str | None = None,
    pos: int | str = -1,
    k: int = 10,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Top tokens of a direction and of its negative through the final norm and unembedding.

    Args:
        model: the model the direction lives in.
        directions: a :class:`RoleDirections` (then give ``role`` and ``pos``) or a stack of
            vectors, one per layer in ``layers``.
        role: the role, for :class:`RoleDirections`.
        pos: the position label, for :class:`RoleDirections`.
        k: tokens per layer and sign.
        layers: which layers (default: all layers of the directions).

    Returns:
        One row per (layer, sign, rank): ``token``, ``token_id``, ``logit``; zero directions
        (layer 0 at template positions) are skipped.
    """
    if isinstance(directions, RoleDirections):
        if role is None:
            raise ValueError("logit_lens on RoleDirections needs role=")
        all_layers = directions.layers
        chosen = all_layers if layers is None else tuple(layers)
        stack = torch.stack([directions.vector(role, layer, pos) for layer in chosen])
    else:
        stack = directions
        if stack.ndim == 1:
            stack = stack[None]
        chosen = tuple(layers) if layers is not None else tuple(range(stack.shape[0]))
        if len(chosen) != stack.shape[0]:
            raise ValueError(f"{stack.shape[0]} vectors but {len(chosen)} layers")
    for vector in stack:
        check_direction(vector, int(model.cfg.d_model))
    param = next(model.parameters())
    rows = []
    with torch.no_grad():
        for sign, label in ((1.0, "+"), (-1.0, "-")):
            x = (sign * stack).to(device=param.device, dtype=param.dtype)[None]
            logits = model.unembed(model.ln_final(x))[0].float()
            top = logits.topk(k, dim=-1)
            for i, layer in enumerate(chosen):
                if stack[i].norm() == 0:
                    continue
                for rank in range(k):
                    token_id = int(top.indices[i, rank])
                    rows.append(
                        {
                            "layer": layer,
                            "sign": label,
                            "rank": rank,
                            "token": model.tokenizer.decode([token_id]),
                            "token_id": token_id,
                            "logit": float(top.values[i, rank]),
                        }
                    )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class PatchscopeResult:
    """Texts of one patchscope readout.

    Attributes:
        steered: the answer with the direction added.
        unsteered: the answer without it.
        layer: where it was added.
        alpha: its strength.
        prompt: the question asked.
        positions: the prompt columns it was added at (relative to the prompt's end);
            ``()`` when it was added at every position.
        mode: ``"placeholder"`` or ``"paper"`` (see :func:`patchscope`).
    """

    steered: str
    unsteered: str
    layer: int
    alpha: float
    prompt: str
    positions: tuple[int, ...]
    mode: str = "placeholder"


def placeholder_positions(
    tokenizer: Any, prompt: str, placeholder: str = PLACEHOLDER, system: str | None = "default"
) -> tuple[int, ...]:
    """Offsets from the end of the chat-formatted prompt of the placeholder's tokens."""
    if prompt.count(placeholder) != 1:
        raise ValueError(f"the prompt must contain the placeholder {placeholder!r} exactly once")
    full = chat_ids(tokenizer, prompt, system)
    without = chat_ids(tokenizer, prompt.replace(placeholder, ""), system)
    start = common_prefix_length(full, without)
    end = common_prefix_length(full[start:][::-1], without[start:][::-1])
    return tuple(range(start - len(full), -end))


def check_patchscope_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`PATCHSCOPE_MODES`, else a ValueError listing them."""
    if mode not in PATCHSCOPE_MODES:
        raise ValueError(f"unknown patchscope mode {mode!r}; use one of {list(PATCHSCOPE_MODES)}")
    return mode


def patchscopes(
    model: Model,
    readouts: Sequence[tuple[Float[Tensor, " d_model"], int]],
    alpha: float = 3.0,
    prompt: str = PATCHSCOPE_PROMPT,
    positions: str | None = None,
    max_new_tokens: int | None = None,
    mode: str = "placeholder",
    system: str | None = "default",
    batch_size: int = 8,
) -> list[PatchscopeResult]:
    """:func:`patchscope` for many directions, each at its own layer, in batches.

    The unsteered answer is generated once; the steered ones ``batch_size`` at a time, one
    direction per row of a batch of the same prompt (no padding), with
    :class:`~roleprobe.steering.rows.RowAdditions`. Each result is the one
    :func:`patchscope` gives for its direction (greedy decoding; identical where batching
    does not change the model's numerics, e.g. float32 on the CPU).

    Args:
        model: a TransformerLens bridge with a chat tokenizer.
        readouts: ``(direction, layer)`` pairs: the raw direction and the block whose input
            receives ``alpha * direction``.
        alpha: strength, shared by every direction.
        prompt: the question, containing the placeholder ``⧫`` once.
        positions: ``"placeholder"`` or ``"all"``; ``None``: the mode's.
        max_new_tokens: answer length; ``None``: the mode's, capped to the context.
        mode: ``"placeholder"`` (default) or ``"paper"``.
        system: the system-turn policy of the prompt (use the directions' own, ``rd.system``).
        batch_size: steered answers per generation (each row holds a KV cache of up to
            ``max_new_tokens`` tokens).

    Returns:
        One :class:`PatchscopeResult` per pair, in order (all share the unsteered text).

    Example:
        >>> picks = [(rd.vector("lawyer", 6), 6), (rd.vector("nurse", 9), 9)]
        >>> [r.steered for r in patchscopes(model, picks, mode="paper")]
    """
    default_positions, default_tokens = _MODE_DEFAULTS[check_patchscope_mode(mode)]
    positions = default_positions if positions is None else positions
    if positions not in PATCHSCOPE_POSITIONS:
        raise ValueError(
            f"positions must be one of {list(PATCHSCOPE_POSITIONS)}, got {positions!r}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pairs = [(direction, int(layer)) for direction, layer in readouts]
    for direction, _ in pairs:
        check_direction(direction, int(model.cfg.d_model))
    if not pairs:
        return []
    check_layers(model, [layer for _, layer in pairs])
    if max_new_tokens is None:
        room = int(model.cfg.n_ctx) - len(chat_ids(model.tokenizer, prompt, system))
        max_new_tokens = min(default_tokens, room)
        if max_new_tokens < default_tokens:
            logger.warning(
                "patchscope: the model's context (%d tokens) leaves room for %d new tokens, "
                "not the %s mode's %d",
                model.cfg.n_ctx,
                max_new_tokens,
                mode,
                default_tokens,
            )
    where: str | tuple[int, ...] = "all"
    if positions == "placeholder":
        where = placeholder_positions(model.tokenizer, prompt, system=system)
    (unsteered,) = generate(model, [prompt], max_new_tokens=max_new_tokens, system=system)
    steered: list[str] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        vectors = torch.stack([direction for direction, _ in chunk])
        spec = RowAdditions(vectors, [layer for _, layer in chunk], alpha, positions=where)
        steered += generate(
            model,
            [prompt] * len(chunk),
            [spec],
            max_new_tokens=max_new_tokens,
            system=system,
            batch_size=len(chunk),
        )
    offsets = where if isinstance(where, tuple) else ()
    return [
        PatchscopeResult(text, unsteered, layer, alpha, prompt, offsets, mode)
        for text, (_, layer) in zip(steered, pairs, strict=True)
    ]


def patchscope(
    model: Model,
    direction: Float[Tensor, " d_model"],
    layer: int,
    alpha: float = 3.0,
    prompt: str = PATCHSCOPE_PROMPT,
    positions: str | None = None,
    max_new_tokens: int | None = None,
    mode: str = "placeholder",
    system: str | None = "default",
) -> PatchscopeResult:
    """Ask the model what the direction "represents": greedy answers with and without it.

    ``mode`` sets the defaults (see the module docstring):

    ========================  ==========================  ===============================
    mode                      added at                    new tokens
    ========================  ==========================  ===============================
    ``"placeholder"``         the placeholder's tokens    48
    ``"paper"`` (authors')    every position, generated   512
                              tokens included
    ========================  ==========================  ===============================

    Both decode greedily, add the raw direction times ``alpha`` to the input of block
    ``layer`` and ask the same prompt; ``positions`` and ``max_new_tokens`` override the
    mode's defaults. For many directions use :func:`patchscopes`, which generates the
    unsteered answer once and the steered ones in batches.

    Args:
        model: a TransformerLens bridge with a chat tokenizer.
        direction: the raw direction (``rd.vector(role, layer, pos)``).
        layer: the block whose input receives ``alpha * direction``.
        alpha: strength (the paper uses 1 and 3; its tables read 3).
        prompt: the question, containing the placeholder ``⧫`` once.
        positions: ``"placeholder"`` (the placeholder's tokens, as in patchscopes) or
            ``"all"`` (every position, generated ones included); ``None``: the mode's.
        max_new_tokens: answer length; ``None``: the mode's (48 or 512), capped to what
            the model's context leaves after the prompt.
        mode: ``"placeholder"`` (default) or ``"paper"``.
        system: the system-turn policy of the prompt (``"default"``, ``"none"`` — the
            paper's — or a text; use the directions' own, ``rd.system``).

    Returns:
        A :class:`PatchscopeResult` with both texts, the offsets used and the mode.

    Example:
        >>> patchscope(model, rd.vector("lawyer", 6), layer=6, mode="paper").steered
    """
    (result,) = patchscopes(
        model, [(direction, layer)], alpha, prompt, positions, max_new_tokens, mode, system
    )
    return result


_WORD = re.compile(r"[a-z][a-z'-]+")
_STOP_WORDS = (
    "the a an and or of to in on for with by is are be as at this that it from how what which "
    "do does i my me we our you your can should would could into about between"
)
_STOP = frozenset(_STOP_WORDS.split())


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class BagOfWordsJudge:
    """Offline judge: TF-IDF cosine of a text to each role's prompts (see module docstring).

    Calling it returns the text's similarity to the target role's prompts; :meth:`rank`
    gives the target's rank among all roles (1 = most similar).
    """

    def __init__(self, prompts: RolePrompts) -> None:
        docs = {
            role: Counter(_words(" ".join(p.instructions))) for role, p in prompts.roles.items()
        }
        n_docs = len(docs)
        df = Counter(word for counts in docs.values() for word in counts)
        self.idf = {w: math.log((1 + n_docs) / (1 + c)) + 1 for w, c in df.items()}
        self.vectors = {role: self._vector(counts) for role, counts in docs.items()}

    def _vector(self, counts: Counter[str]) -> dict[str, float]:
        vec = {w: c * self.idf.get(w, 0.0) for w, c in counts.items() if w in self.idf}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {w: v / norm for w, v in vec.items()}

    def similarities(self, text: str) -> dict[str, float]:
        """Cosine similarity of ``text`` to every role's prompts."""
        vec = self._vector(Counter(_words(text)))
        return {
            role: float(sum(v * ref.get(w, 0.0) for w, v in vec.items()))
            for role, ref in self.vectors.items()
        }

    def rank(self, text: str, role: str) -> float:
        """The target role's rank among all roles by similarity (1 = most similar).

        Ties share the mean of their ranks, so a text that matches no role's words ranks
        in the middle (15 of 29), not first.
        """
        sims = self.similarities(text)
        if role not in sims:
            raise ValueError(f"role {role!r} is not among the judge's roles ({sorted(sims)})")
        above = sum(s > sims[role] for s in sims.values())
        tied = sum(s == sims[role] for s in sims.values())
        return 1 + above + (tied - 1) / 2

    def __call__(self, text: str, role: str) -> float:
        sims = self.similarities(text)
        if role not in sims:
            raise ValueError(f"role {role!r} is not among the judge's roles ({sorted(sims)})")
        return sims[role]


class OpenAIJudge:
    """An LLM judge behind any OpenAI-compatible chat-completions endpoint.

    Returns 1.0 when the judge answers yes (the text adopts the role), 0.0 for no.

    Args:
        model: the judge model's name at the endpoint.
        base_url: the API root (default ``$OPENAI_BASE_URL`` or OpenAI's).
        api_key: default ``$OPENAI_API_KEY``.
        timeout: seconds per request.
    """

    QUESTION = (
        "Here is a text written by an AI assistant:\n\n{text}\n\nDoes this text adopt the "
        "perspective, vocabulary or concerns of a {role}? Answer with one word: yes or no."
    )

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        ).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout

    def __call__(self, text: str, role: str) -> float:
        if not self.api_key:
            raise ValueError("OpenAIJudge needs an API key (api_key= or OPENAI_API_KEY)")
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "user", "content": self.QUESTION.format(text=text, role=role)}],
        }
        request = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
            answer = reply["choices"][0]["message"]["content"].strip().lower()
        except (OSError, ValueError, KeyError, IndexError) as err:
            raise RuntimeError(f"judge request to {self.base_url} failed: {err}") from err
        if answer.startswith("yes"):
            return 1.0
        if answer.startswith("no"):
            return 0.0
        raise RuntimeError(f"the judge answered neither yes nor no: {answer[:80]!r}")
