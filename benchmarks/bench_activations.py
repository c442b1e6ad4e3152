"""Benchmark: activation-mean collection vs a bare forward pass over the same batches.

Prints and writes JSON (``--out``): tokens/s of ``collect_means`` (hooks at every layer's
``hook_resid_pre``, float64 accumulation, post-instruction positions) divided by tokens/s of a
bare forward pass with no hooks that stops at the same layer (no unembedding), timed
alternately on identical left-padded batches of the built-in prompts.

    python benchmarks/bench_activations.py --model smollm2-135m-instruct --repeats 3
"""

import argparse
import platform
import time

import torch
from _report import report

import roleprobe as rp
from roleprobe.activations import batches, check_layers, collect_means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = rp.load_model(args.model, device=args.device)
    prompts = list(rp.builtin_generic().instructions)[: args.n_prompts]
    layers = check_layers(model, None)
    data = list(batches(model, prompts, args.batch_size))
    n_tokens = sum(int(b.attention_mask.sum()) for _, b in data)
    padded = sum(b.input_ids.numel() for _, b in data)

    def bare() -> None:
        with torch.inference_mode():
            for _, b in data:
                model(b.input_ids, attention_mask=b.attention_mask, stop_at_layer=layers[-1])

    def ours() -> None:
        collect_means(model, prompts, batch_size=args.batch_size, progress=False)

    bare(), ours()  # warm-up
    times: dict[str, list[float]] = {"bare": [], "collect_means": []}
    for _ in range(args.repeats):
        for name, fn in (("bare", bare), ("collect_means", ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "real_tokens": n_tokens,
        "padded_tokens": padded,
        "seconds_best": best,
        "tokens_per_s": {k: n_tokens / v for k, v in best.items()},
        "ratio_collect_over_bare": best["bare"] / best["collect_means"],
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
