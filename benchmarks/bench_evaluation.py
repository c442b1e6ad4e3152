"""Benchmark: letter-only multiple-choice scoring vs full-vocabulary logits, same questions.

The letter-only path stops after the final norm and projects the last position onto the four
letter rows of the unembedding; the full path computes logits over the whole vocabulary at
every position. The speed-up grows with prompt length. Prints and writes JSON (``--out``).

    python benchmarks/bench_evaluation.py --source builtin --n 48
    python benchmarks/bench_evaluation.py --source paper --path ../shared/data/role-vectors-paper
"""

import argparse
import time

from _report import report

import roleprobe as rp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--source", default="builtin")
    parser.add_argument("--path", default=None)
    parser.add_argument("--domain", default=None)
    parser.add_argument("--n", type=int, default=48, help="questions (the first n)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = rp.load_model(args.model, device=args.device)
    bench = rp.load_benchmark(args.source, domain=args.domain, path=args.path)
    bench = rp.MultipleChoice(bench.items.head(args.n), f"{bench.name}[:{args.n}]")
    rp.evaluate(model, rp.MultipleChoice(bench.items.head(2), "warm-up"), progress=False)
    seconds = {}
    tables = {}
    for name, full in (("letters", False), ("full_logits", True)):
        start = time.perf_counter()
        tables[name] = rp.evaluate(
            model, bench, batch_size=args.batch_size, full_logits=full, progress=False
        )
        seconds[name] = time.perf_counter() - start
    same = bool((tables["letters"]["pred"] == tables["full_logits"]["pred"]).all())
    result = {
        "model": args.model,
        "benchmark": bench.name,
        "questions": len(bench),
        "seconds": seconds,
        "questions_per_s": {k: len(bench) / v for k, v in seconds.items()},
        "speedup_letters_over_full": seconds["full_logits"] / seconds["letters"],
        "same_predictions": same,
    }
    report(result, args.out)


if __name__ == "__main__":
    main()
