"""Benchmark: letter-only multiple-choice scoring vs full-vocabulary logits, same questions.

The letter-only path stops after the final norm and projects the last position onto the four
letter rows of the unembedding; the full path computes logits over the whole vocabulary at
every position. The speed-up grows with prompt length and vocabulary size. The two are timed
alternately (best of ``--repeats`` after a warm-up) and must give the same predictions.
Prints and writes JSON (``--out``). ``run_all.py`` runs it as benchmark 4.

    python benchmarks/bench_evaluation.py --source builtin --n 48
    python benchmarks/bench_evaluation.py --source paper --path ../shared/data/role-vectors-paper
"""

import argparse
from typing import Any

from _models import load
from _report import best_of, machine_info, report, row

import roleprobe as rp

GOAL = ">= 1.2"


def run(
    model: Any, bench: "rp.MultipleChoice", batch_size: int = 16, repeats: int = 3
) -> dict[str, Any]:
    """Time letter-only scoring against full logits on ``bench``; check the predictions agree."""

    def scorer(full: bool) -> Any:
        return lambda: rp.evaluate(
            model, bench, batch_size=batch_size, full_logits=full, progress=False
        )

    timed = best_of(
        {"letters": scorer(False), "full_logits": scorer(True)}, repeats, model.cfg.device
    )
    seconds, tables = timed["best"], timed["last"]
    same = bool((tables["letters"]["pred"] == tables["full_logits"]["pred"]).all())
    diff = (tables["letters"]["logprob_correct"] - tables["full_logits"]["logprob_correct"]).abs()
    return {
        "benchmark": bench.name,
        "questions": len(bench),
        "batch_size": batch_size,
        "repeats": repeats,
        "seconds": seconds,
        "seconds_all": timed["all"],
        "questions_per_s": {k: len(bench) / v for k, v in seconds.items()},
        "speedup_letters_over_full": seconds["full_logits"] / seconds["letters"],
        "same_predictions": same,
        "max_abs_logprob_diff": float(diff.max()),
        "goal": GOAL,
    }


def first_n(bench: "rp.MultipleChoice", n: int) -> "rp.MultipleChoice":
    """The first ``n`` questions."""
    return rp.MultipleChoice(bench.items.head(n), f"{bench.name}[:{n}]")


def table_rows(r: dict[str, Any], suffix: str = "", label: str = "") -> list[dict[str, Any]]:
    """The summary-table row of a :func:`run` result (``suffix``: of the id, e.g. ``-gpu``)."""
    qps = r["questions_per_s"]
    return [
        row(
            "4" + suffix,
            "MMLU scoring, letter-only ÷ full logits (questions/s)" + label,
            qps["letters"],
            qps["full_logits"],
            "q/s",
            r["speedup_letters_over_full"],
            r["goal"],
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--source", default="builtin")
    parser.add_argument("--path", default=None)
    parser.add_argument("--domain", default=None)
    parser.add_argument("--n", type=int, default=48, help="questions (the first n)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = load(args.model, device=args.device)
    bench = rp.load_benchmark(args.source, domain=args.domain, path=args.path)
    result = {"model": args.model, "machine": machine_info(args.device)}
    result |= run(model, first_n(bench, args.n), args.batch_size, args.repeats)
    report(result, args.out)


if __name__ == "__main__":
    main()
