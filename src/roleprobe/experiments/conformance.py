"""The conformance suite: every roleprobe operation on each model family, against a reference.

Each check takes a :class:`Subject` (a family's tiny model loaded through
:func:`roleprobe.load_model` plus an independent plain ``transformers`` copy with the same
seed) and either returns a short description of what it measured or raises
:class:`ConformanceError`. The references use only ``transformers`` modules and PyTorch
forward hooks placed as the paper's code places them (a forward pre-hook on every decoder
layer, forward hooks on every ``self_attn`` and ``mlp``), and share no code with the
TransformerLens hooks they are compared with.

``tests/test_families.py`` runs :data:`CHECKS` over :data:`roleprobe.model.families.FAMILIES`;
:func:`conformance_table` runs the same checks and writes the "Supported model families"
Markdown table (``python analyses/_families_table.py``).

Example:
    >>> subject = Subject.load("gemma2")
    >>> CHECKS["bridge_logits"](subject)
    'max |Δ| 2.1e-06'
"""

import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor, nn

from roleprobe.core.types import Model
from roleprobe.model.families import FAMILIES, Family, family_hf_model, get_family

logger = logging.getLogger(__name__)

PROMPTS = (
    "Hi",
    "Describe the water cycle briefly, with one example.",
    "What is two plus two?",
)
ATOL = 1e-4
LAYER = 1  # where additions and prefix reuse start (every tiny model has two layers)
ALPHA = 3.0


class ConformanceError(AssertionError):
    """A family differs from its reference in one check."""


@dataclass
class Subject:
    """One family under test.

    Attributes:
        family: the family.
        model: its tiny model as :func:`roleprobe.load_model` returns it.
        reference: a separate plain ``transformers`` model with the same weights.
    """

    family: Family
    model: Model
    reference: nn.Module

    @classmethod
    def load(cls, name: str, seed: int = 0) -> "Subject":
        """Load ``tiny-random-<name>`` and its reference copy (CPU, float32)."""
        from roleprobe.model.models import load_model

        family = get_family(name)
        return cls(
            family,
            load_model(family.model_name, device="cpu"),
            family_hf_model(family.name, seed=seed),
        )

    @property
    def tokenizer(self) -> Any:
        """The bridge's tokenizer."""
        return self.model.tokenizer

    def direction(self, scale: float = 1.0) -> Float[Tensor, " d_model"]:
        """A fixed random direction of the model's width (seeded, independent of the RNG)."""
        generator = torch.Generator().manual_seed(1234)
        return scale * torch.randn(int(self.model.cfg.d_model), generator=generator)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceError(message)


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _close(name: str, got: Tensor, want: Tensor, atol: float = ATOL) -> str:
    diff = _max_diff(got, want)
    _check(diff <= atol, f"{name}: max |Δ| {diff:.2e} > {atol:g}")
    return f"max |Δ| {diff:.1e}"


# ----------------------------------------------------------------- plain transformers references


def decoder_layers(hf_model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a ``transformers`` causal LM (``model.model.layers``)."""
    return list(hf_model.model.layers)  # type: ignore[union-attr, arg-type]


def _first(value: Any) -> Tensor:
    return value[0] if isinstance(value, tuple) else value


def _replace_first(value: Any, new: Tensor) -> Any:
    return (new, *value[1:]) if isinstance(value, tuple) else new


def _remove(x: Tensor, d_hat: Tensor) -> Tensor:
    d = d_hat.to(x)
    return x - (x @ d)[..., None] * d


@contextmanager
def hf_hooks(
    pre: Sequence[tuple[nn.Module, Callable[[Tensor], Tensor]]] = (),
    post: Sequence[tuple[nn.Module, Callable[[Tensor], Tensor]]] = (),
) -> Iterator[None]:
    """Plain PyTorch hooks: ``pre`` edit a module's first input, ``post`` its first output."""

    def pre_hook(fn: Callable[[Tensor], Tensor]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

        return hook

    def post_hook(fn: Callable[[Tensor], Tensor]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            return _replace_first(output, fn(_first(output)))

        return hook

    with ExitStack() as stack:
        for module, fn in pre:
            handle = module.register_forward_pre_hook(pre_hook(fn), with_kwargs=True)
            stack.callback(handle.remove)
        for module, fn in post:
            handle = module.register_forward_hook(post_hook(fn))
            stack.callback(handle.remove)
        yield


def paper_ablation_hooks(
    hf_model: nn.Module, direction: Tensor, at: str = "paper"
) -> tuple[list[Any], list[Any]]:
    """The paper's ablation as plain hooks: every decoder layer's input, and every
    attention and MLP output (``at="paper"``: the sub-layer modules' own outputs;
    ``at="stream"``: after the post-attention/post-feed-forward norms where a family has
    them, i.e. what is added to the residual stream)."""
    d_hat = direction.double() / direction.double().norm()

    def fn(x: Tensor) -> Tensor:
        return _remove(x, d_hat)

    layers = decoder_layers(hf_model)
    post = []
    for layer in layers:
        if at == "stream" and hasattr(layer, "post_feedforward_layernorm"):
            post += [(layer.post_attention_layernorm, fn), (layer.post_feedforward_layernorm, fn)]
        else:
            post += [(layer.self_attn, fn), (layer.mlp, fn)]
    return [(layer, fn) for layer in layers], post


def reference_means(
    hf_model: nn.Module, id_rows: Sequence[Sequence[int]], n_post: int
) -> Float[Tensor, "pos layer d_model"]:
    """Mean input of each decoder layer at the last ``n_post`` positions, one prompt at a
    time (no padding), float64 sums."""
    layers = decoder_layers(hf_model)
    width = int(getattr(hf_model, "config").hidden_size)  # noqa: B009
    sums = torch.zeros(n_post, len(layers), width, dtype=torch.float64)
    seen: dict[int, Tensor] = {}

    def grab(index: int) -> Callable[[Tensor], Tensor]:
        def fn(x: Tensor) -> Tensor:
            seen[index] = x[0, -n_post:].double()
            return x

        return fn

    with hf_hooks(pre=[(layer, grab(i)) for i, layer in enumerate(layers)]), torch.no_grad():
        for ids in id_rows:
            hf_model(torch.tensor([list(ids)]))
            for i in range(len(layers)):
                sums[:, i] += seen[i]
    return sums / len(id_rows)


# ------------------------------------------------------------------------------------ the checks


def _batch(subject: Subject) -> Any:
    from roleprobe.model.chat import encode_chat

    return encode_chat(subject.tokenizer, list(PROMPTS))


def _bridge_last(subject: Subject, batch: Any) -> Tensor:
    with torch.no_grad():
        return subject.model(batch.input_ids, attention_mask=batch.attention_mask)[:, -1]


def _hf_last(subject: Subject, batch: Any) -> Tensor:
    with torch.no_grad():
        out = subject.reference(batch.input_ids, attention_mask=batch.attention_mask)
    return out.logits[:, -1]


def check_bridge_logits(subject: Subject) -> str:
    """``load_model`` logits equal the plain ``transformers`` model's on a left-padded batch."""
    batch = _batch(subject)
    with torch.no_grad():
        got = subject.model(batch.input_ids, attention_mask=batch.attention_mask)
        want = subject.reference(batch.input_ids, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    return _close("bridge logits", got[real], want[real])


def check_chat_template(subject: Subject) -> str:
    """Post-instruction tokens are found and spell the family's documented suffix; BOS
    appears at most once, first."""
    from roleprobe.model.chat import ChatTemplate, chat_ids

    tokenizer = subject.tokenizer
    template = ChatTemplate.from_tokenizer(tokenizer)
    suffix = tokenizer.decode(list(template.suffix_ids))
    _check(
        suffix == subject.family.suffix,
        f"post-instruction tokens spell {suffix!r}, not {subject.family.suffix!r}",
    )
    # The family's own BOS (TransformerLens gives BOS-less tokenizers their EOS as "BOS").
    spec = subject.family.tokenizer
    if spec.bos is not None:
        ids = chat_ids(tokenizer, PROMPTS[1])
        bos = tokenizer.convert_tokens_to_ids(spec.bos)
        want = 1 if "bos_token" in spec.template else 0
        count = ids.count(bos)
        _check(count == want, f"BOS {spec.bos} appears {count} times, expected {want}")
        _check(count == 0 or ids[0] == bos, f"BOS {spec.bos} is not the first token")
    return f"{template.n_post} tokens"


def check_paper_format(subject: Subject) -> str:
    """``system="none"`` renders the family's no-system format (the authors' for llama,
    gemma2, qwen2) and its token ids equal that text's; the default rendering differs from it
    exactly where the family's template adds a default system turn."""
    from roleprobe.model.chat import ChatTemplate, chat_ids

    tokenizer, family = subject.tokenizer, subject.family
    none = ChatTemplate.from_tokenizer(tokenizer, "none")
    rendered = none.render(tokenizer)
    _check(
        rendered == family.paper_format,
        f"system='none' renders {rendered!r}, not {family.paper_format!r}",
    )
    text = family.paper_format.replace("{instruction}", PROMPTS[1])
    want = tokenizer(text, add_special_tokens=False)["input_ids"]
    got = chat_ids(tokenizer, PROMPTS[1], "none")
    _check(got == list(want), "system='none' ids differ from the no-system text's ids")
    default = ChatTemplate.from_tokenizer(tokenizer).render(tokenizer)
    return "same as default" if default == rendered else "default system turn removed"


def check_letter_ids(subject: Subject) -> str:
    """``answer_letter_ids`` finds one token per letter, each decoding to the letter."""
    from roleprobe.model.chat import answer_letter_ids

    ids = answer_letter_ids(subject.tokenizer, ("A", "B", "C", "D"))
    decoded = [subject.tokenizer.decode([i]).strip() for i in ids]
    _check(decoded == ["A", "B", "C", "D"], f"letter ids decode to {decoded}")
    _check(len(set(ids)) == 4, f"letter ids repeat: {ids}")
    return "A–D single tokens"


def check_activation_means(subject: Subject) -> str:
    """``collect_means`` (batched, padded, bridge hooks) equals a one-prompt-at-a-time
    forward-pre-hook reference on the decoder layers."""
    from roleprobe.model.chat import chat_ids
    from roleprobe.vectors.activations import collect_means

    got = collect_means(subject.model, list(PROMPTS), batch_size=2, progress=False)
    rows = [chat_ids(subject.tokenizer, p) for p in PROMPTS]
    want = reference_means(subject.reference, rows, len(got.positions))
    return _close("activation means", got.mean, want, atol=1e-5)


def check_addition(subject: Subject) -> str:
    """``Addition(d, layer, alpha)`` equals adding ``alpha * d`` to the decoder layer's input
    with a forward pre-hook."""
    from roleprobe.steering.interventions import Addition, steer

    batch, d = _batch(subject), subject.direction()
    with steer(subject.model, Addition(d, LAYER, ALPHA), attention_mask=batch.attention_mask):
        got = _bridge_last(subject, batch)
    layer = decoder_layers(subject.reference)[LAYER]
    with hf_hooks(pre=[(layer, lambda x: x + ALPHA * d.to(x))]):
        want = _hf_last(subject, batch)
    _check(_max_diff(want, _hf_last(subject, batch)) > 1e-3, "the addition changes nothing")
    return _close("addition", got, want)


def _ablation(subject: Subject, at: str) -> str:
    from roleprobe.steering.interventions import Ablation, steer

    batch, d = _batch(subject), subject.direction()
    spec = Ablation(d, at=at)
    with steer(subject.model, spec, attention_mask=batch.attention_mask):
        got = _bridge_last(subject, batch)
    pre, post = paper_ablation_hooks(subject.reference, d, at)
    with hf_hooks(pre, post):
        want = _hf_last(subject, batch)
    _check(_max_diff(want, _hf_last(subject, batch)) > 1e-3, "the ablation changes nothing")
    return _close(f"ablation at={at!r}", got, want)


def check_ablation_paper(subject: Subject) -> str:
    """``Ablation(d, at="paper")`` equals the paper's hooks: a pre-hook on every decoder
    layer and output hooks on every ``self_attn`` and ``mlp`` module."""
    return _ablation(subject, "paper")


def check_ablation_stream(subject: Subject) -> str:
    """``Ablation(d, at="stream")`` equals the same hooks placed on what is added to the
    residual stream (after Gemma's post-norms; the sub-layer outputs elsewhere)."""
    return _ablation(subject, "stream")


def _small_benchmark() -> Any:
    from roleprobe.data.benchmarks import MultipleChoice, load_benchmark

    items = load_benchmark("builtin").items
    length = items[["question", "A", "B", "C", "D"]].apply(lambda r: len("".join(r)), axis=1)
    return MultipleChoice(items.loc[length.sort_values(kind="stable").index[:4]], "builtin-4")


def check_letter_scores(subject: Subject) -> str:
    """``evaluate``'s letter-only scores equal ``full_logits=True`` (which applies any final
    logit soft-cap), baseline and under an addition."""
    from roleprobe.experiments.evaluation import evaluate
    from roleprobe.steering.interventions import Addition

    bench, columns = _small_benchmark(), [f"logprob_{x}" for x in "ABCD"]
    worst = 0.0
    for condition in (None, Addition(subject.direction(), LAYER, ALPHA)):
        tables = [
            evaluate(
                subject.model, bench, condition, batch_size=4, full_logits=full, progress=False
            )
            for full in (False, True)
        ]
        fast, full = (torch.tensor(t[columns].to_numpy()) for t in tables)
        _close("letter-only log-probs", fast, full, atol=1e-4)
        _check(list(tables[0]["pred"]) == list(tables[1]["pred"]), "letter-only argmax differs")
        worst = max(worst, _max_diff(fast, full))
    return f"max |Δ logprob| {worst:.1e}"


def check_prefix_reuse(subject: Subject) -> str:
    """Running only the blocks above a layer from a saved residual
    (``roleprobe.steering.prefix``, as
    sweeps do) gives the letter logits of a full hooked pass."""
    from roleprobe.model.chat import answer_letter_ids
    from roleprobe.steering.interventions import Addition, steer
    from roleprobe.steering.prefix import letters_from, resid_at

    batch, d = _batch(subject), subject.direction()
    letters = answer_letter_ids(subject.tokenizer, ("A", "B", "C", "D"))
    mask = batch.attention_mask
    with torch.no_grad():
        with steer(subject.model, Addition(d, LAYER, ALPHA), attention_mask=mask):
            full = subject.model(batch.input_ids, attention_mask=mask)[:, -1, letters]
        resid = resid_at(subject.model, batch.input_ids, mask, LAYER)
        moved = torch.where(mask.bool()[..., None], resid + ALPHA * d, resid)
        upper = letters_from(subject.model, moved, LAYER, mask, letters)
    return _close("prefix reuse", upper, full)


def check_generate_alpha0(subject: Subject) -> str:
    """``generate`` under ``Addition(alpha=0)`` equals unsteered generation."""
    from roleprobe.steering.generation import generate
    from roleprobe.steering.interventions import Addition

    plain = generate(subject.model, list(PROMPTS), max_new_tokens=5)
    zero = generate(
        subject.model, list(PROMPTS), [Addition(subject.direction(), LAYER, 0.0)], max_new_tokens=5
    )
    _check(zero == plain, f"alpha=0 generation differs: {zero} vs {plain}")
    return "identical text"


@contextmanager
def _scripted_logits(
    module: Any, script: Sequence[int], filler: int, hook_name: str | None = None
) -> Iterator[None]:
    """Make greedy decoding say ``script`` token by token, then ``filler`` forever: the last
    position's logits are replaced at each forward pass (at a bridge hook point when
    ``hook_name`` is given, else by a forward hook on ``module``, e.g. the ``lm_head``)."""
    step = 0

    def force(logits: Tensor) -> Tensor:
        nonlocal step
        out = logits.clone()
        out[:, -1] = -30.0
        out[:, -1, script[step] if step < len(script) else filler] = 30.0
        step += 1
        return out

    if hook_name is None:
        with hf_hooks(post=[(module, force)]):
            yield
    else:
        with module.hooks(fwd_hooks=[(hook_name, lambda x, hook: force(x))]):
            yield


def check_generate_stops(subject: Subject) -> str:
    """``generate`` stops where ``transformers``' ``generate`` does: at every id of the
    model's ``generation_config.eos_token_id`` (which lists the template's end-of-turn token,
    as the real checkpoints' do), not only at the tokenizer's EOS."""
    from roleprobe.model.chat import ChatTemplate, encode_chat, pad_token_id
    from roleprobe.steering.generation import generate

    tokenizer, reference = subject.tokenizer, cast(Any, subject.reference)
    end = ChatTemplate.from_tokenizer(tokenizer).end_of_turn_id(tokenizer)
    listed = reference.generation_config.eos_token_id
    listed = [listed] if isinstance(listed, int) else list(listed or ())
    _check(end is not None, "the chat template's end-of-turn token is not found")
    _check(end in listed, f"generation_config.eos_token_id {listed} lacks the end of turn {end}")
    words = [int(i) for i in tokenizer.convert_tokens_to_ids(["O", "K"])]
    filler = int(tokenizer.convert_tokens_to_ids("x"))
    batch = encode_chat(tokenizer, [PROMPTS[0]])
    for stop in listed:
        script = [*words, stop]
        with _scripted_logits(subject.model, script, filler, "unembed.hook_out"):
            (got,) = generate(subject.model, [PROMPTS[0]], max_new_tokens=6)
        with _scripted_logits(reference.lm_head, script, filler), torch.no_grad():
            ids = reference.generate(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=6,
                do_sample=False,
                pad_token_id=pad_token_id(tokenizer),
            )
        want = tokenizer.decode(ids[0, batch.input_ids.shape[1] :], skip_special_tokens=True)
        name = tokenizer.convert_ids_to_tokens(stop)
        _check(got == want.strip() == "OK", f"at {name}: generate says {got!r}, HF {want!r}")
    return f"stops at {tokenizer.convert_ids_to_tokens(listed)}"


def check_orthogonalized(subject: Subject) -> str:
    """``orthogonalized`` equals hook ablation, or refuses with a ``NotImplementedError``.

    Families with post-norms (Gemma-2/3) must refuse: weight orthogonalisation there equals
    neither ablation placement.
    """
    from roleprobe.steering.interventions import Ablation, steer
    from roleprobe.steering.orthogonalize import orthogonalized

    batch, d = _batch(subject), subject.direction()
    try:
        with orthogonalized(subject.model, d):
            baked = _bridge_last(subject, batch)
    except NotImplementedError as err:
        _check(
            subject.family.post_norms,
            f"orthogonalized refuses a family without post-norms: {err}",
        )
        return "refused (NotImplementedError)"
    _check(not subject.family.post_norms, "orthogonalized accepted a family with post-norms")
    with steer(subject.model, Ablation(d), attention_mask=batch.attention_mask):
        hooked = _bridge_last(subject, batch)
    return _close("orthogonalized vs hook ablation", baked, hooked)


def check_left_padding(subject: Subject) -> str:
    """A left-padded batch gives each prompt's logits as when run alone."""
    from roleprobe.model.chat import encode_chat

    batch = _batch(subject)
    batched = _bridge_last(subject, batch)
    worst = 0.0
    for row, prompt in enumerate(PROMPTS):
        alone = _bridge_last(subject, encode_chat(subject.tokenizer, [prompt]))
        _close(f"left padding ({prompt!r})", batched[row], alone[0])
        worst = max(worst, _max_diff(batched[row], alone[0]))
    return f"max |Δ| {worst:.1e}"


CHECKS: dict[str, Callable[[Subject], str]] = {
    "bridge_logits": check_bridge_logits,
    "chat_template": check_chat_template,
    "paper_format": check_paper_format,
    "letter_ids": check_letter_ids,
    "activation_means": check_activation_means,
    "addition": check_addition,
    "ablation_paper": check_ablation_paper,
    "ablation_stream": check_ablation_stream,
    "letter_scores": check_letter_scores,
    "prefix_reuse": check_prefix_reuse,
    "generate_alpha0": check_generate_alpha0,
    "generate_stops": check_generate_stops,
    "orthogonalized": check_orthogonalized,
    "left_padding": check_left_padding,
}


def run_checks(
    families: Sequence[str] | None = None, checks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Run checks over families: one row per (family, check) with ``passed`` and ``detail``
    (the measurement, or the error)."""
    names = list(families) if families is not None else list(FAMILIES)
    wanted = list(checks) if checks is not None else list(CHECKS)
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks {unknown}; use some of {list(CHECKS)}")
    rows = []
    for name in names:
        subject = Subject.load(name)
        for check in wanted:
            try:
                detail, passed = CHECKS[check](subject), True
            except Exception as err:  # every failure is a table cell, not a crash
                detail, passed = f"{type(err).__name__}: {err}", False
            logger.info("%s / %s: %s (%s)", name, check, passed, detail)
            rows.append({"family": name, "check": check, "passed": passed, "detail": detail})
    return pd.DataFrame(rows)


def _mark(cell: "pd.Series[Any]") -> str:
    if not bool(cell["passed"]):
        return "✗"
    return "✓ (refuses)" if str(cell["detail"]).startswith("refused") else "✓"


def conformance_table(results: pd.DataFrame | None = None) -> str:
    """The "Supported model families" Markdown: one row per family, one column per check
    (✓ passed, ✓ (refuses) for a clear refusal, ✗ failed), then what each check compares and
    what each tiny model reproduces, from :func:`run_checks` (run now when ``None``)."""
    results = run_checks() if results is None else results
    families = list(dict.fromkeys(results["family"]))
    checks = list(dict.fromkeys(results["check"]))
    header = ["family", "transformers class", *checks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cells = results.set_index(["check", "family"])
    for f in families:
        family = get_family(f)
        marks = [_mark(cells.loc[(check, f)]) for check in checks]
        lines.append(
            f"| `{family.model_name}` | `{family.model_class.__name__}` | "
            + " | ".join(marks)
            + " |"
        )
    lines += ["", "The checks:", ""]
    for check in checks:
        doc = (inspect.getdoc(CHECKS[check]) or check).split("\n\n")[0].replace("\n", " ")
        lines.append(f"- **{check}**: {doc}")
    lines += ["", "The tiny models:", ""]
    for f in families:
        family = get_family(f)
        lines.append(f"- `{family.model_name}`: {family.notes}")
    return "\n".join(lines)
