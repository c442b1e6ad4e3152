"""Directional ablation baked into the weights (weight orthogonalisation).

Projecting ``d_hat`` out of every matrix that *writes* to the residual stream — the token
(and learned position) embeddings, each attention output projection and each MLP output
projection, with their biases — leaves nothing in the stream along ``d_hat``. For
pre-norm architectures whose blocks add those outputs to the stream directly (GPT-2, Llama,
Mistral, Qwen, SmolLM2, ...), this equals hook ablation of ``d_hat`` at every block's input
and every attention and MLP output (:class:`roleprobe.Ablation`) up to float error, while
costing nothing per forward pass.

On those architectures both placements of :class:`roleprobe.Ablation` (``at="stream"``
and ``at="paper"``) coincide, and either ``at`` is accepted.

Where they differ: architectures that normalise a sub-layer's output *before* adding it
(Gemma 2/3's post-attention and post-feed-forward norms, OLMo 2) rescale each coordinate of
the write, so a write orthogonal to ``d_hat`` is no longer orthogonal after the norm. There
the edited weights equal neither placement: ``at="paper"`` also projects every block's
input (which the post-norms have moved off ``d_hat`` again) and ``at="stream"`` projects
the post-norm outputs, which no weight edit can do. (The authors'
``orthogonalize_gemma_weights`` makes this same edit, so it differs from their own hook
ablation on Gemma-2.) :func:`orthogonalized` refuses those models rather than returning a
silently different intervention; use ``rp.steer(model, rp.Ablation(d, at=...))``.

Tied input/output embeddings are untied for the duration, so the unembedding
keeps reading the original vocabulary.

The edit is in place and temporary: the original weights are copied and written back on
exit (bitwise), so memory grows by one copy of the writing matrices while it is active.

Example:
    >>> with orthogonalized(model, rd.vector("lawyer", layer=15)):
    ...     logits = model(tokens)  # same as under rp.steer(model, rp.Ablation(d))
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from roleprobe.core.types import Model
from roleprobe.steering.interventions import ABLATION_PLACEMENTS
from roleprobe.steering.operators import orthogonalize_output, orthogonalize_rows, project_out, unit

_POST_NORM_FLAGS = ("use_normalization_before_and_after",)
_POST_NORMS = ("ln1_post", "ln2_post")


def has_post_norms(model: Model) -> bool:
    """Whether ``model`` normalises attention/MLP outputs before adding them to the stream."""
    if any(getattr(model.cfg, flag, False) for flag in _POST_NORM_FLAGS):
        return True
    return any(name in block._modules for block in model.blocks for name in _POST_NORMS)


def _component(module: Any, path: str) -> Any:
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return getattr(module, "original_component", module)


def writers(model: Model) -> list[tuple[str, nn.Module, str]]:
    """The modules that write to the residual stream: ``(name, module, kind)`` where kind is
    ``"rows"`` (an embedding table) or ``"output"`` (a linear map into the stream)."""
    found: list[tuple[str, nn.Module, str]] = []
    for name in ("embed", "pos_embed"):
        module = _component(model, name)
        if isinstance(module, nn.Embedding):
            found.append((name, module, "rows"))
    for layer in range(model.cfg.n_layers):
        for path in ("attn.o", "mlp.out"):
            module = _component(model, f"blocks.{layer}.{path}")
            if not isinstance(module, nn.Linear):
                raise NotImplementedError(
                    f"blocks.{layer}.{path} is {type(module).__name__}, not a linear layer; weight "
                    "orthogonalisation supports standard attention and MLP output projections "
                    "(use hook ablation, roleprobe.Ablation, for this model)"
                )
            found.append((f"blocks.{layer}.{path}", module, "output"))
    if not found or found[0][2] != "rows":
        raise NotImplementedError("no token embedding found; use hook ablation for this model")
    return found


@contextmanager
def orthogonalized(
    model: Model, direction: Float[Tensor, " d_model"], at: str = "stream"
) -> Iterator[Any]:
    """Temporarily project ``direction`` out of every weight that writes to the residual stream.

    Args:
        model: a TransformerLens ``TransformerBridge`` of a pre-norm architecture.
        direction: ``[d_model]``, non-zero (only its direction matters).
        at: the :class:`roleprobe.Ablation` placement this must equal (``"stream"`` or
            ``"paper"``); both coincide, and equal the weight edit, on the architectures
            accepted here.

    Yields:
        The same model, edited; it is restored bitwise on exit.

    Raises:
        ValueError: an unknown ``at``, or a bad direction.
        NotImplementedError: architectures with norms after the residual writes (Gemma-2/3),
            where the weight edit equals neither placement.
    """
    if at not in ABLATION_PLACEMENTS:
        raise ValueError(f"unknown ablation placement at={at!r}; use one of {ABLATION_PLACEMENTS}")
    if has_post_norms(model):
        raise NotImplementedError(
            f"{model.cfg.model_name} normalises attention/MLP outputs before adding them to the "
            f"residual stream, so orthogonalised weights equal neither ablation placement "
            f"(asked: at={at!r}). Use hook ablation instead: "
            "rp.steer(model, rp.Ablation(d, at='paper')) projects the sub-layer outputs before "
            "the post-norms (the authors' hooks), rp.steer(model, rp.Ablation(d, at='stream')) "
            "projects what is added to the stream, after them"
        )
    d_hat = unit(direction.detach().double())
    if direction.shape[0] != model.cfg.d_model:
        raise ValueError(
            f"direction has {direction.shape[0]} dimensions; d_model={model.cfg.d_model}"
        )
    targets = writers(model)
    embedding_weight: Tensor = targets[0][1].weight  # type: ignore[assignment]
    unembed = _component(model, "unembed")
    tied = isinstance(unembed, nn.Linear) and unembed.weight is embedding_weight
    saved: list[tuple[Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            if tied:
                unembed.weight = nn.Parameter(
                    embedding_weight.detach().clone(), requires_grad=False
                )
            for _, module, kind in targets:
                weight: Tensor = module.weight  # type: ignore[assignment]
                saved.append((weight, weight.detach().clone()))
                d = d_hat.to(device=weight.device, dtype=weight.dtype)
                new = (
                    orthogonalize_rows(weight, d)
                    if kind == "rows"
                    else orthogonalize_output(weight, d)
                )
                weight.copy_(new)
                bias: Tensor | None = getattr(module, "bias", None)
                if kind == "output" and bias is not None:
                    saved.append((bias, bias.detach().clone()))
                    bias.copy_(project_out(bias, d))
        yield model
    finally:
        with torch.no_grad():
            for tensor, original in saved:
                tensor.copy_(original)
            if tied:
                unembed.weight = embedding_weight
