"""Benchmarks 8 and 9: roleprobe's forward passes against plain ``transformers`` ones.

Each compares the time of a roleprobe pass with plain Hugging Face forward passes of the
same weights (:mod:`_plain`: the decoder only, no hooks, no logits) over the same rows and
tokens, alternately, best of ``repeats`` after a warm-up; a ratio of 1 means no overhead.

8. activation means: tokens/s of ``collect_means`` (hooks at every ``hook_resid_pre``,
   float64 sums, stopping before the last block) ÷ tokens/s of plain forwards of the same
   batches through the same blocks — goal ≥ 0.98.
9. one sweep work item of ablations (``_run_item`` with the ablation condition only): its
   full passes, ``stack`` directions per pass (one block of rows each, hooks at every
   layer), against plain full forwards of ``ids.repeat(k, 1)`` for the same ``k`` per pass
   — plain time ÷ item time, goal ≥ 0.9.
9b. one work item of additions (α 1 and 3, from the saved residual entering layer ``l``):
   each pass runs blocks ``l..L-1`` on ``stack`` stacked (variant, α) jobs; the plain
   reference runs the same blocks ``l..L-1`` of the plain decoder on the same residual
   repeated ``k`` times (``inputs_embeds``) — no goal. The saved residual itself (one
   prefix pass per batch, shared by every layer) is outside both.

The work item is a real one of a sweep's plan: the roles' candidate directions (random,
synthetic directions of the model's width: only timings matter) at ``positions`` with their
controls, on one question batch (the middle one by length) of the built-in bank, one layer
(the middle one by default). :func:`sync_counts` also counts host synchronisations
(:mod:`_host_syncs`) during one means pass, one addition item and one ablation item, and during
the plain references (whatever the plain model itself syncs is the floor).
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from _host_syncs import counting_syncs
from _plain import n_layers, plain_pass
from _report import best_of, row
from bench_plan import random_directions
from torch import Tensor

import roleprobe as rp
from roleprobe.core.hooks import check_layers
from roleprobe.experiments.sweeps import (
    SweepConfig,
    WorkItem,
    _batch,
    _conditions,
    _derangement,
    _Plan,
    _prefix_pass,
    _run_item,
    _variants,
    item_passes,
    role_group,
)
from roleprobe.model.chat import ChatBatch, ChatTemplate
from roleprobe.vectors.activations import batches, collect_means

GOALS = {"means": ">= 0.98", "ablation": ">= 0.9"}
ALPHAS = (1.0, 3.0)


@dataclass
class ItemSetup:
    """One work item of a sweep's plan, with its batch and the residual saved for it."""

    directions: rp.RoleDirections
    plan: Any
    donors: dict[str, str]
    item: WorkItem
    batch: ChatBatch
    resid: Tensor
    n_variants: int

    @property
    def layer(self) -> int:
        return cast(int, self.item.layer)

    @property
    def cfg(self) -> SweepConfig:
        return cast(SweepConfig, self.plan.cfg)

    def conditions(self, kind: str) -> list[Any]:
        """The sweep's conditions of one kind: ``"addition"`` (every α) or ``"ablation"``."""
        if kind == "addition":
            return _conditions(replace(self.cfg, ablation=False), {}, None)
        return _conditions(replace(self.cfg, alphas=()), {}, None)

    def chunks(self, kind: str) -> list[int]:
        """Rows-blocks per forward pass of the item's jobs of ``kind`` (as ``_run_item``
        stacks them)."""
        jobs = self.n_variants * (len(self.cfg.alphas) if kind == "addition" else 1)
        # ablations: as many per pass as the sweep stacks on this device (1 on a CPU)
        stack = self.cfg.stack if kind == "addition" else self.plan.ablation_stack
        chunks = [min(stack, jobs - i) for i in range(0, jobs, stack)]
        cfg = self.cfg if kind == "addition" else replace(self.cfg, stack=stack)
        if len(chunks) != item_passes(self.n_variants, cfg)[kind]:
            raise AssertionError(f"the plain reference of the {kind} item does other passes")
        return chunks

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "group": self.item.group,
            "batch": self.item.batch,
            "layer": self.layer,
            "roles": list(cfg.roles),
            "positions": list(cfg.positions),
            "controls": cfg.controls,
            "alphas": list(cfg.alphas),
            "stack": cfg.stack,
            "variants": self.n_variants,
            "rows": int(self.batch.input_ids.shape[0]),
            "seq_len": int(self.batch.input_ids.shape[1]),
            "real_tokens": int(self.batch.attention_mask.sum()),
            "passes": item_passes(self.n_variants, cfg),
        }


def item_setup(
    model: Any,
    roles: Sequence[str] = ("lawyer",),
    n_positions: int = 5,
    controls: bool = True,
    scope: str = "all",
    batch_size: int = 32,
    stack: int = 4,
    layer: int | None = None,
    batch_index: int | None = None,
) -> ItemSetup:
    """A sweep's plan over random directions of the model's width, and one layer work item.

    The directions cover all 29 roles (so that the shuffled control has donors) at the last
    ``n_positions`` post-instruction positions; the item sweeps ``roles``.
    """
    n_post = ChatTemplate.from_tokenizer(model.tokenizer).n_post
    positions = list(range(-min(n_positions, n_post), 0))
    d_model, depth = int(model.cfg.d_model), int(model.cfg.n_layers)
    rd = random_directions(
        [r.name for r in rp.ROLES], depth, positions, d_model, scale=d_model**-0.5
    )
    layer = depth // 2 if layer is None else layer
    cfg = SweepConfig(
        roles=tuple(roles),
        layers=(layer,),
        positions=tuple(positions),
        alphas=ALPHAS,
        ablation=True,
        controls=controls,
        scope=scope,
        batch_size=batch_size,
        stack=stack,
    )
    plan = _Plan(model, rd, rp.load_benchmark("builtin"), cfg)
    group = role_group(roles[0], scope)
    n_batches = len(plan.batches[group])
    b = n_batches // 2 if batch_index is None else batch_index
    donors = _derangement(rd.roles, cfg.seed) if controls else {}
    batch = _batch(model, plan, group, b)
    resid = _prefix_pass(model, batch, [layer], plan.letters, False)[0][layer]
    device = model.cfg.device
    n = len(_variants(rd, plan.groups[group], layer, cfg, donors, None, plan.null, device))
    return ItemSetup(rd, plan, donors, WorkItem(group, b, layer), batch, resid, n)


def run_item(model: Any, setup: ItemSetup, kind: str) -> Callable[[], Any]:
    """The item's jobs of ``kind`` as the sweep runs them (a table of scores)."""
    conditions = setup.conditions(kind)
    resid = setup.resid if kind == "addition" else None
    s = setup
    return lambda: _run_item(
        model, s.directions, s.plan, s.item, s.donors, s.batch, resid, conditions
    )


def plain_item(plain: Any, setup: ItemSetup, kind: str) -> Callable[[], None]:
    """Plain forwards over the same rows and blocks as the item's passes of ``kind``."""
    ids, mask, chunks = setup.batch.input_ids, setup.batch.attention_mask, setup.chunks(kind)
    layer = setup.layer

    def ablations() -> None:
        for k in chunks:
            plain_pass(plain, ids.repeat(k, 1), mask.repeat(k, 1))

    def additions() -> None:
        for k in chunks:
            plain_pass(plain, setup.resid.repeat(k, 1, 1), mask.repeat(k, 1), start=layer)

    return additions if kind == "addition" else ablations


def _means_variants(
    model: Any, plain: Any, prompts: Sequence[str], batch_size: int
) -> tuple[Callable[[], Any], Callable[[], None], int, int]:
    """``collect_means`` and the plain passes through the same blocks (it stops before the
    last one), with the real and padded token counts."""
    stop = check_layers(model, None)[-1]
    data = [b for _, b in batches(model, prompts, batch_size)]

    def ours() -> Any:
        return collect_means(model, prompts, batch_size=batch_size, progress=False)

    def plain_means() -> None:
        for b in data:
            plain_pass(plain, b.input_ids, b.attention_mask, 0, stop)

    real = sum(int(b.attention_mask.sum()) for b in data)
    return ours, plain_means, real, sum(b.input_ids.numel() for b in data)


def means_vs_plain(
    model: Any, plain: Any, prompts: Sequence[str], batch_size: int = 32, repeats: int = 3
) -> dict[str, Any]:
    """Benchmark 8: tokens/s of ``collect_means`` ÷ plain forwards through the same blocks."""
    ours, plain_means, real, padded = _means_variants(model, plain, prompts, batch_size)
    timed = best_of({"plain_hf": plain_means, "collect_means": ours}, repeats, model.cfg.device)
    best = timed["best"]
    return {
        "prompts": len(prompts),
        "batch_size": batch_size,
        "blocks": check_layers(model, None)[-1],
        "real_tokens": real,
        "padded_tokens": padded,
        "repeats": repeats,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "tokens_per_s": {k: real / v for k, v in best.items()},
        "ratio_ours_over_plain": best["plain_hf"] / best["collect_means"],
        "goal": GOALS["means"],
    }


def item_vs_plain(model: Any, plain: Any, setup: ItemSetup, kind: str, repeats: int = 3) -> Any:
    """Benchmarks 9 (``kind="ablation"``) and 9b (``"addition"``): plain ÷ item seconds."""
    timed = best_of(
        {"plain_hf": plain_item(plain, setup, kind), "item": run_item(model, setup, kind)},
        repeats,
        model.cfg.device,
    )
    best = timed["best"]
    chunks = setup.chunks(kind)
    rows = int(setup.batch.input_ids.shape[0])
    depth = n_layers(plain)
    blocks = depth - setup.layer if kind == "addition" else depth
    table = timed["last"]["item"]
    return {
        "kind": kind,
        "passes": len(chunks),
        "rows_per_pass": [k * rows for k in chunks],
        "blocks_per_pass": blocks,
        "full_pass_equivalents": sum(chunks) * blocks / depth,
        "scored_rows": len(table),
        "repeats": repeats,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "ratio_plain_over_item": best["plain_hf"] / best["item"],
        "goal": GOALS.get(kind),
    }


def sync_counts(
    model: Any, plain: Any, setup: ItemSetup, prompts: Sequence[str], batch_size: int = 32
) -> dict[str, Any]:
    """Host synchronisations during one means pass, one addition item, one ablation item,
    and during their plain references (run once each; call it after the timings, so that
    one-time work such as the output-head check is not counted)."""
    ours, plain_means, _, _ = _means_variants(model, plain, prompts, batch_size)
    runs = {
        "means": ours,
        "addition_item": run_item(model, setup, "addition"),
        "ablation_item": run_item(model, setup, "ablation"),
        "plain_means": plain_means,
        "plain_addition": plain_item(plain, setup, "addition"),
        "plain_ablation": plain_item(plain, setup, "ablation"),
    }
    n_means = math.ceil(len(prompts) / batch_size)
    n_add, n_abl = len(setup.chunks("addition")), len(setup.chunks("ablation"))
    passes = dict(zip(runs, (n_means, n_add, n_abl, n_means, n_add, n_abl), strict=True))
    out: dict[str, Any] = {}
    for name, fn in runs.items():
        with counting_syncs(model.cfg.device) as count:
            fn()
        out[name] = count.to_dict() | {"passes": passes[name]}
    return out


def run(
    model: Any,
    plain: Any,
    prompts: Sequence[str],
    repeats: int = 3,
    means_batch_size: int = 32,
    syncs: bool = True,
    means: bool = True,
    **item: Any,
) -> dict[str, Any]:
    """Benchmarks 8 (unless not ``means``), 9 and 9b, and the sync counts; ``item``:
    :func:`item_setup`'s options."""
    setup = item_setup(model, **item)
    out: dict[str, Any] = {"item": setup.describe()}
    if means:
        out["8"] = means_vs_plain(model, plain, prompts, means_batch_size, repeats)
    out["9"] = item_vs_plain(model, plain, setup, "ablation", repeats)
    out["9b"] = item_vs_plain(model, plain, setup, "addition", repeats)
    if syncs:
        out["syncs"] = sync_counts(model, plain, setup, prompts, means_batch_size)
    return out


SYNC_ROWS = {
    "means": "means pass",
    "addition_item": "addition item",
    "ablation_item": "ablation item",
}


def table_rows(
    r: dict[str, Any], suffix: str = "", label: str = "", only: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Rows 8, 9 and 9b of a :func:`run` result (those present, or ``only`` these ids; with
    ``"syncs"``: one row of sync counts per pass kind, the plain reference's as reference)."""
    wanted = set(only if only is not None else ("8", "9", "9b", "syncs")) & set(r)
    out = []
    if "8" in wanted:
        m = r["8"]
        out.append(
            row(
                "8" + suffix,
                f"activation means ÷ plain HF forward, same {_n(m['blocks'], 'block')} (tokens/s)"
                + label,
                m["tokens_per_s"]["collect_means"],
                m["tokens_per_s"]["plain_hf"],
                "tok/s",
                m["ratio_ours_over_plain"],
                m["goal"],
            )
        )
    item = r.get("item", {})
    where = (
        f"{item.get('rows')} questions, layer {item.get('layer')}, {item.get('variants')} variants"
    )
    if "9" in wanted:
        ab = r["9"]
        out.append(
            row(
                "9" + suffix,
                f"ablation work item ({where}, {_n(ab['passes'], 'stacked full pass')}): plain HF "
                "forwards of the same rows ÷ item (s)" + label,
                ab["seconds_best"]["item"],
                ab["seconds_best"]["plain_hf"],
                "s",
                ab["ratio_plain_over_item"],
                ab["goal"],
            )
        )
    if "9b" in wanted:
        add = r["9b"]
        layer = item.get("layer")
        out.append(
            row(
                "9b" + suffix,
                f"addition work item ({where}, {_n(add['passes'], 'pass')} of blocks "
                f"{layer}..L-1): plain HF blocks {layer}..L-1 on the same rows ÷ item (s)" + label,
                add["seconds_best"]["item"],
                add["seconds_best"]["plain_hf"],
                "s",
                add["ratio_plain_over_item"],
            )
        )
    syncs = r.get("syncs") if "syncs" in wanted else None
    for i, (key, name) in enumerate(SYNC_ROWS.items()):
        if not syncs or key not in syncs:
            continue
        ours, plain = syncs[key], syncs["plain_" + key.removesuffix("_item")]
        method = "" if ours["method"].startswith("cuda") else "; CPU stand-in"
        out.append(
            row(
                f"S{i + 1}{suffix}",
                f"host syncs, one {name} ({_n(ours['passes'], 'pass')}{method}); reference: the "
                "plain HF passes" + label,
                ours["count"],
                plain["count"],
                "syncs",
                None,
            )
        )
    return out


def _n(count: Any, noun: str) -> str:
    """``1 pass``, ``2 passes``, ``3 blocks``."""
    plural = noun + ("es" if noun.endswith("s") else "s")
    return f"{count} {noun if count == 1 else plural}"
