"""Benchmark: activation-mean collection vs a bare forward pass over the same batches.

Prints and writes JSON (``--out``): tokens/s of ``collect_means`` (hooks at every layer's
``hook_resid_pre``, float64 accumulation, post-instruction positions) divided by tokens/s of a
bare forward pass with no hooks that stops at the same layer (no unembedding), timed
alternately on identical left-padded batches of the built-in prompts (best of ``--repeats``
after a warm-up). ``run_all.py`` runs it as benchmark 1.

    python benchmarks/bench_activations.py --model smollm2-135m-instruct --repeats 3
"""

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from _models import load
from _report import best_of, machine_info, report, row

import roleprobe as rp
from roleprobe.core.hooks import check_layers
from roleprobe.vectors.activations import batches, collect_means

GOAL = ">= 0.95"


def run(
    model: Any, prompts: Sequence[str], batch_size: int = 16, repeats: int = 3
) -> dict[str, Any]:
    """Time ``collect_means`` against a bare forward pass; tokens are real (unpadded) ones."""
    layers = check_layers(model, None)
    data = list(batches(model, prompts, batch_size))
    n_tokens = sum(int(b.attention_mask.sum()) for _, b in data)
    padded = sum(b.input_ids.numel() for _, b in data)

    def bare() -> None:
        with torch.inference_mode():
            for _, b in data:
                model(b.input_ids, attention_mask=b.attention_mask, stop_at_layer=layers[-1])

    def ours() -> None:
        collect_means(model, prompts, batch_size=batch_size, progress=False)

    timed = best_of({"bare": bare, "collect_means": ours}, repeats, model.cfg.device)
    best = timed["best"]
    return {
        "prompts": len(prompts),
        "batch_size": batch_size,
        "repeats": repeats,
        "real_tokens": n_tokens,
        "padded_tokens": padded,
        "seconds_best": best,
        "seconds_all": timed["all"],
        "tokens_per_s": {k: n_tokens / v for k, v in best.items()},
        "ratio_collect_over_bare": best["bare"] / best["collect_means"],
        "goal": GOAL,
    }


def table_rows(r: dict[str, Any], suffix: str = "", label: str = "") -> list[dict[str, Any]]:
    """The summary-table row of a :func:`run` result (``suffix``: of the id, e.g. ``-gpu``)."""
    tps = r["tokens_per_s"]
    name = "activation means ÷ bare forward (tokens/s)" + label
    ratio = r["ratio_collect_over_bare"]
    return [row("1" + suffix, name, tps["collect_means"], tps["bare"], "tok/s", ratio, r["goal"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = load(args.model, device=args.device)
    prompts = list(rp.builtin_generic().instructions)[: args.n_prompts]
    result = {"model": args.model, "machine": machine_info(args.device)}
    result |= run(model, prompts, args.batch_size, args.repeats)
    report(result, args.out)


if __name__ == "__main__":
    main()
