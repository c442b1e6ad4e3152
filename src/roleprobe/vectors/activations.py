"""Streaming activation statistics at chosen hook points and positions.

Prompts go through the model in left-padded batches; a TransformerLens hook at
``blocks.{l}.hook_resid_pre`` (or another per-block hook) picks the chosen positions out of
each batch and hands them to a *reducer*: :class:`MeanReducer` keeps float64 sums and a
count (memory independent of the number of prompts), :class:`ProjectionReducer` keeps one
scalar per prompt, position and layer (for held-out AUROC). Per-prompt activations are
never stored, and the forward pass stops at the last layer needed (no unembedding).

Positions (a :class:`PositionSelector`, selected by name):

* ``"post_instruction"`` (default): the template tokens after the instruction, labelled by
  their offset from the end (``-n_post .. -1``); with left padding these are the last
  columns of every row.
* ``"last"``: the final token (offset ``-1``).
* ``"instruction_mean"``: the mean over the instruction's own tokens.
* a list of negative offsets, e.g. ``[-2, -1]`` (each must be a post-instruction position).

String prompts are formatted under a system-turn policy (``system=``: ``"default"``, the
template's own; ``"none"``, no system turn, the paper's format; or a system text), see
:mod:`roleprobe.model.system_turn`. The policy changes every activation: record it with the means.

Position 0 (BOS) and padding are never selected: in these models they carry residual norms
two orders of magnitude above the rest (SmolLM2: ~25,000 at layer 15 vs a median ~170) and
would swamp any mean.

Why hooks and not ``run_with_cache``: the bridge's ``run_with_cache(stop_at_layer=k)`` does
not cache ``blocks.k.hook_resid_pre`` (it returns it instead) and caches each residual twice
under its alias names; a hook that reduces in place avoids both and any full-size copies.

Example:
    >>> means = collect_means(model, ["Explain inflation.", "Draft a will."], batch_size=8)
    >>> means.mean.shape  # [pos, layer, d_model], float64
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from roleprobe.core.hooks import check_hook, check_layers
from roleprobe.core.progress import bar
from roleprobe.core.types import Model
from roleprobe.model.chat import (
    ChatBatch,
    ChatTemplate,
    collate,
    encode_prompt,
    left_pad,
    pad_token_id,
)
from roleprobe.model.system_turn import normalize_system

POSITION_NAMES = ("post_instruction", "last", "instruction_mean")

PositionLabel = int | str
Prompts = Sequence[str] | Sequence[Sequence[int]] | Int[Tensor, "batch pos"]


@dataclass(frozen=True)
class PositionSelector:
    """Which positions to read, as a weight matrix over each row's tokens.

    Attributes:
        labels: one label per selected position (offsets from the end, or a name).
        offsets: the offsets from the end, or ``None`` for the instruction mean.
    """

    labels: tuple[PositionLabel, ...]
    offsets: tuple[int, ...] | None

    def picker(self, batch: ChatBatch) -> Callable[[Tensor], Tensor]:
        """A function ``act [batch, pos, d_model] -> float64 [batch, sel, d_model]`` for this
        batch, after checking that no selected position is padding or a row's first token."""
        real = batch.attention_mask.bool()
        if self.offsets is None:
            weights = batch.instruction_mask.double()
            counts = weights.sum(dim=1, keepdim=True)
            if (counts == 0).any():
                row = int((counts[:, 0] == 0).nonzero()[0, 0])
                raise ValueError(f"prompt {row} of the batch has no instruction tokens to average")
            weights = (weights / counts)[:, None, :]
            mask = real[:, :, None]
            return lambda act: torch.einsum(
                "bsp,bpd->bsd", weights, act.masked_fill(~mask, 0).double()
            )
        width = batch.input_ids.shape[1]
        columns = torch.tensor([width + o for o in self.offsets], device=real.device)
        if (columns < 0).any():
            raise ValueError(f"positions {self.offsets} reach before the start of the batch")
        first_real = real.float().argmax(dim=1)  # BOS / position 0 of each row
        bad = ~real[:, columns] | (columns[None, :] <= first_real[:, None])
        if bad.any():
            row, col = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"position {self.offsets[col]} of prompt {row} in the batch is padding or its "
                "first token (BOS); position selectors never read those"
            )
        return lambda act: act[:, columns].double()


def resolve_positions(spec: str | Sequence[int], n_post: int) -> PositionSelector:
    """A :class:`PositionSelector` from a name or a list of negative offsets.

    Args:
        spec: ``"post_instruction"``, ``"last"``, ``"instruction_mean"`` or offsets such as
            ``[-2, -1]``.
        n_post: the number of post-instruction positions of the chat template.
    """
    if spec == "post_instruction":
        offsets: tuple[int, ...] = tuple(range(-n_post, 0))
    elif spec == "last":
        offsets = (-1,)
    elif spec == "instruction_mean":
        return PositionSelector(("instruction_mean",), None)
    elif isinstance(spec, str):
        raise ValueError(f"unknown positions {spec!r}; use one of {POSITION_NAMES} or offsets")
    else:
        offsets = tuple(int(o) for o in spec)
        if not offsets:
            raise ValueError("no positions given (the offset list is empty)")
        outside = [o for o in offsets if not -n_post <= o <= -1]
        if outside:
            raise ValueError(
                f"positions {outside} are not post-instruction positions; this template has "
                f"{n_post}: offsets {-n_post}..-1"
            )
        if len(set(offsets)) != len(offsets):
            raise ValueError(f"positions {list(offsets)} repeat an offset")
    return PositionSelector(offsets, offsets)


def float64_device(tensor: Tensor) -> torch.device:
    """Where float64 work on ``tensor`` happens: its own device, except MPS (no float64)."""
    return torch.device("cpu") if tensor.device.type == "mps" else tensor.device


def batches(
    model: Model,
    prompts: Prompts,
    batch_size: int,
    n_post: int | None = None,
    system: str | None = "default",
) -> Iterator[tuple[list[int], ChatBatch]]:
    """Left-padded batches of prompts, shortest first, with each row's index in ``prompts``.

    Strings are formatted with the model's chat template under the system-turn policy
    ``system``; token ids (lists or a tensor, one prompt per row) are used as given and need
    ``n_post`` for post-instruction positions.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(prompts) == 0:
        raise ValueError("no prompts given (the prompt list is empty)")
    device = model.cfg.device
    if isinstance(prompts[0], str):
        tokenizer = model.tokenizer
        if tokenizer is None:
            raise ValueError("string prompts need a model with a tokenizer; pass token ids")
        template = ChatTemplate.from_tokenizer(tokenizer, system)
        encoded = [
            encode_prompt(tokenizer, str(text), template, model.cfg.n_ctx, f"prompt {i}")
            for i, text in enumerate(prompts)
        ]
        order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].ids), i))
        pad = pad_token_id(tokenizer)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield rows, collate([encoded[i] for i in rows], template.n_post, pad).to(device)
        return
    sequences = _token_rows(prompts)
    order = sorted(range(len(sequences)), key=lambda i: (len(sequences[i]), i))
    pad = pad_token_id(model.tokenizer) if model.tokenizer is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield rows, token_batch([sequences[i] for i in rows], n_post or 1, pad).to(device)


def _token_rows(prompts: Any) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.ndim != 2 or prompts.is_floating_point():
            raise ValueError(
                f"token prompts must be an integer [batch, pos] tensor, got {prompts.shape}"
            )
        return [row.tolist() for row in prompts]
    return [[int(t) for t in row] for row in prompts]


def token_batch(sequences: Sequence[Sequence[int]], n_post: int, pad_id: int = 0) -> ChatBatch:
    """A :class:`ChatBatch` from token ids: the last ``n_post`` tokens of each row are its
    post-instruction positions, the tokens between the first and those its instruction."""
    for i, seq in enumerate(sequences):
        if len(seq) < n_post + 2:
            raise ValueError(f"token prompt {i} has {len(seq)} tokens; need at least n_post + 2")
    ids, mask = left_pad(sequences, pad_id)
    instruction = mask.clone()
    width = ids.shape[1]
    for row, seq in enumerate(sequences):
        instruction[row, width - len(seq)] = 0
    instruction[:, width - n_post :] = 0
    return ChatBatch(ids, mask, instruction, n_post)


Reducer = Callable[[int, list[int], Float[Tensor, "batch sel d_model"]], None]


class MeanReducer:
    """Float64 sums and counts per (position, layer): the means of the streamed prompts."""

    def __init__(self, n_sel: int, n_layers: int, d_model: int, device: torch.device | str) -> None:
        self.sums = torch.zeros(n_sel, n_layers, d_model, dtype=torch.float64, device=device)
        self.count = 0

    def __call__(self, layer_index: int, rows: list[int], selected: Tensor) -> None:
        self.sums[:, layer_index] += selected.sum(dim=0)
        if layer_index == 0:
            self.count += len(rows)

    def mean(self) -> Float[Tensor, "sel layer d_model"]:
        """The means (on the CPU)."""
        return (self.sums / self.count).cpu()


class NormReducer:
    """Mean L2 norm per layer of the selected activations (one selected position)."""

    def __init__(self, n_layers: int) -> None:
        self.sums = torch.zeros(n_layers, dtype=torch.float64)
        self.count = 0

    def __call__(self, layer_index: int, rows: list[int], selected: Tensor) -> None:
        if self.sums.device != selected.device:  # kept where the activations are
            self.sums = self.sums.to(selected.device)
        self.sums[layer_index] += selected.norm(dim=-1).mean(dim=1).sum()
        if layer_index == 0:
            self.count += len(rows)

    def mean(self) -> Float[Tensor, " layer"]:
        """Mean norms (on the CPU)."""
        return (self.sums / self.count).cpu()


class ProjectionReducer:
    """Per-prompt projections onto fixed unit directions, for each (direction, position, layer).

    Zero directions (e.g. layer 0 at template positions, where every prompt has the same
    token embedding) project to 0.
    """

    def __init__(self, directions: Float[Tensor, "dir sel layer d_model"], n_prompts: int) -> None:
        norms = directions.double().norm(dim=-1, keepdim=True)
        self.units = directions.double() / norms.clamp_min(1e-30)
        n_dir, n_sel, n_layers, _ = directions.shape
        self.values = torch.zeros(n_prompts, n_dir, n_sel, n_layers, dtype=torch.float64)

    def __call__(self, layer_index: int, rows: list[int], selected: Tensor) -> None:
        if self.units.device != selected.device:  # moved once, not per call
            self.units = self.units.to(selected.device)
            self.values = self.values.to(selected.device)
        proj = torch.einsum("bsd,rsd->brs", selected, self.units[:, :, layer_index])
        contiguous = rows == list(range(rows[0], rows[0] + len(rows)))
        where = slice(rows[0], rows[0] + len(rows)) if contiguous else rows
        self.values[where, :, :, layer_index] = proj


def stream(
    model: Model,
    prompts: Prompts,
    reducer: Reducer,
    layers: tuple[int, ...],
    hook: str,
    selector_for: Callable[[int], PositionSelector],
    batch_size: int = 16,
    n_post: int | None = None,
    progress: bool = True,
    desc: str = "activations",
    system: str | None = "default",
) -> None:
    """Run ``prompts`` through ``model`` and feed the selected activations to ``reducer``.

    ``selector_for(n_post)`` builds the position selector once the template is known;
    string prompts are formatted under the system-turn policy ``system``.
    """
    stop = layers[-1] if hook == "hook_resid_pre" else layers[-1] + 1
    stop_at = stop if stop < model.cfg.n_layers else None
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n_batches = -(-len(prompts) // batch_size)
    with bar(
        batches(model, prompts, batch_size, n_post, system),
        progress,
        total=n_batches,
        desc=desc,
        unit="batch",
    ) as bars:
        for rows, batch in bars:
            finite: list[Tensor] = []  # per layer: which rows' selected activations are finite
            read = partial(
                _read_selected,
                pick=selector_for(batch.n_post).picker(batch.to(float64_device(batch.input_ids))),
                rows=rows,
                reducer=reducer,
                finite=finite,
            )
            names = [f"blocks.{layer}.{hook}" for layer in layers]
            fwd_hooks = [(name, partial(read, index=i)) for i, name in enumerate(names)]
            with torch.inference_mode(), model.hooks(fwd_hooks=fwd_hooks):
                model(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=stop_at)
            _check_finite(finite, names, rows, prompts)


def _read_selected(
    act: Tensor,
    hook: Any,
    index: int,
    pick: Callable[[Tensor], Tensor],
    rows: list[int],
    reducer: Reducer,
    finite: list[Tensor],
) -> Tensor:
    """The hook: pick the selected positions in float64 and hand them to the reducer.

    Whether they are finite is noted on the device and checked after the pass
    (:func:`_check_finite`): nothing is read back to the host inside a hook.
    """
    picked = pick(act.to(float64_device(act)))
    finite.append(torch.isfinite(picked).flatten(1).all(dim=1))
    reducer(index, rows, picked)
    return act


def _check_finite(
    finite: Sequence[Tensor], names: Sequence[str], rows: list[int], prompts: Prompts
) -> None:
    """Raise for the first layer and prompt whose selected activations were not finite
    (one read-back per batch)."""
    if not finite:
        return
    flags = torch.stack(list(finite))  # [layer, row]
    if bool(flags.all()):
        return
    layer, bad = (int(i) for i in (~flags).nonzero()[0])
    raise FloatingPointError(
        f"non-finite activation at {names[layer]} for prompt {rows[bad]} "
        f"({_describe_prompt(prompts, rows[bad])})"
    )


def _describe_prompt(prompts: Prompts, index: int) -> str:
    item = prompts[index]
    if isinstance(item, str):
        return repr(item if len(item) <= 50 else item[:50] + "…")
    return "token ids"


@dataclass(frozen=True)
class ActivationMeans:
    """Mean activations of a prompt set.

    Attributes:
        mean: float64 means, ``[pos, layer, d_model]``.
        count: number of prompts averaged.
        layers: the layer of each slice along ``layer``.
        positions: the label of each slice along ``pos``.
        hook: the hook point read (e.g. ``"hook_resid_pre"``).
        system: the system-turn policy string prompts were formatted with.
    """

    mean: Float[Tensor, "pos layer d_model"]
    count: int
    layers: tuple[int, ...]
    positions: tuple[PositionLabel, ...]
    hook: str
    system: str = "default"


def collect_means(
    model: Model,
    prompts: Prompts,
    layers: Sequence[int] | None = None,
    hook: str = "hook_resid_pre",
    positions: str | Sequence[int] = "post_instruction",
    batch_size: int = 16,
    n_post: int | None = None,
    progress: bool = True,
    desc: str = "activations",
    system: str | None = "default",
) -> ActivationMeans:
    """Mean activation of ``prompts`` at every chosen layer and position, in float64.

    Args:
        model: a TransformerLens ``TransformerBridge``.
        prompts: instructions (formatted with the chat template) or token ids, one prompt
            per row (then ``n_post`` says how many final tokens are post-instruction).
        layers: which blocks (default: all).
        hook: per-block hook point (default ``"hook_resid_pre"``, the block's input).
        positions: see the module docstring.
        batch_size: prompts per forward pass.
        n_post: post-instruction length for token prompts (ignored for strings).
        progress: show a tqdm bar over batches.
        desc: the bar's label.
        system: the system-turn policy for string prompts: ``"default"`` (or ``None``: the
            template's own), ``"none"`` (no system turn, the paper's format) or a text.

    Returns:
        :class:`ActivationMeans` with ``mean`` of shape ``[pos, layer, d_model]``.
    """
    layer_tuple, hook = check_layers(model, layers), check_hook(hook)

    def selector_for(n: int) -> PositionSelector:
        return resolve_positions(positions, n)

    first = resolve_positions(positions, n_post or _template_n_post(model, prompts, system))
    device = float64_device(torch.empty(0, device=model.cfg.device))
    reducer = MeanReducer(len(first.labels), len(layer_tuple), model.cfg.d_model, device)
    stream(
        model,
        prompts,
        reducer,
        layer_tuple,
        hook,
        selector_for,
        batch_size,
        n_post,
        progress,
        desc,
        system=system,
    )
    return ActivationMeans(
        reducer.mean(), reducer.count, layer_tuple, first.labels, hook, normalize_system(system)
    )


def _template_n_post(model: Model, prompts: Prompts, system: str | None) -> int:
    if len(prompts) and isinstance(prompts[0], str) and model.tokenizer is not None:
        return ChatTemplate.from_tokenizer(model.tokenizer, system).n_post
    return 1


def residual_norms(
    model: Model, prompts: Sequence[str] | None = None, batch_size: int = 16
) -> Float[Tensor, " layer"]:
    """Mean L2 norm of ``hook_resid_pre`` per layer, at the last prompt token.

    The reference for :class:`Addition`'s ``reference_norm``; defaults to 32 of the built-in
    generic prompts.
    """
    from roleprobe.data.prompts import builtin_generic

    texts = list(prompts) if prompts is not None else list(builtin_generic().instructions)[:32]
    layers = check_layers(model, None)
    reducer = NormReducer(len(layers))
    stream(
        model,
        texts,
        reducer,
        layers,
        "hook_resid_pre",
        lambda n_post: resolve_positions("last", n_post),
        batch_size,
        progress=False,
    )
    return reducer.mean()
