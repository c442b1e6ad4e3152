"""Run roleprobe's benchmark suite (issues 8 and 22): one table of ratios, and a JSON file.

Each ratio compares two variants run side by side in this one process, on the same inputs,
alternately, best of ``--repeats`` rounds after a warm-up round:

1. activation means: tokens/s of ``rp.collect_means`` ÷ a bare forward pass (no hooks, no
   logits, ``stop_at_layer``) — goal ≥ 0.95.
2. activation means: ours ÷ the paper's approach (plain Hugging Face model, forward pre-hooks
   on every decoder layer, batches of 32, full forward with logits), same prompts.
3. peak RSS of ``collect_means``, 2,048 ÷ 128 prompts, each in a fresh process — goal ≤ 1.05.
4. MMLU scoring, questions/s: letter-only ÷ full-vocabulary logits — goal ≥ 1.2.
5. sweep (one role, 4 layers spread over 1..L-1 × the last 4 positions, α 1 and 3 and the
   ablation): naive ``evaluate`` reruns ÷ ``rp.sweep`` with prefix reuse and stacked
   ablations, in seconds — goal ≥ 2.2; also ``stack=1`` ÷ ``stack=4`` (5b).
6. wall time of ``roleprobe run --preset demo`` (skip with ``--skip-demo``).
7. a sweep's set-up at the paper's size (29 roles × 5 positions × 42 layers × 3,584,
   random directions): plan + directions hash + one work item's variants — goal ≤ 1 s.
8. activation means ÷ plain Hugging Face forwards of the same batches through the same
   blocks (no hooks, no logits), tokens/s — goal ≥ 0.98.
9. one ablation work item of a sweep (stacked full passes): plain HF forwards of the same
   rows ÷ the item — goal ≥ 0.9; 9b: one addition work item (blocks l..L-1 from the saved
   residual) ÷ plain HF blocks l..L-1 on the same rows (no goal). 8 and 9 also count host
   syncs (S1-S3; a CPU stand-in off CUDA).

``gpu`` (with CUDA) runs ``benchmarks/bench_gpu.py``: 7, 8, 9, 1, 4 and 5 on a random-weight
model of Gemma-2-9B's shape in bfloat16 (``--gpu-shape llama3-8b``; ``--gpu-layers`` for a
shallower one). ``--quick`` shrinks every size for smoke tests (the goals are meant for the
real sizes). Model names: anything ``rp.load_model`` knows, plus ``tiny-random-N`` (the tiny
random model with N layers, built in memory; the sweep benchmark is degenerate with the
2-layer ``tiny-random``).

    python benchmarks/run_all.py                      # the real run (minutes)
    python benchmarks/run_all.py --model tiny-random --quick --skip-demo
    python benchmarks/run_all.py --model tiny-random-4 --quick --only 5,7,8,9
"""

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gpu
import torch
from _models import fresh_hf, load
from _report import machine_info, markdown_table, row

import roleprobe as rp

BENCHMARKS = ("1", "2", "3", "4", "5", "6", "7", "8", "9", "gpu")
NEEDS_MODEL = {"1", "2", "4", "5", "7", "8", "9"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=rp.EMBEDDED_MODEL)
    parser.add_argument("--device", default="cpu", help="for 1-6 (the GPU variant uses cuda)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (3; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument("--only", default=None, help=f"comma-separated, of {','.join(BENCHMARKS)}")
    parser.add_argument("--skip-demo", action="store_true", help="do not run benchmark 6")
    parser.add_argument(
        "--gpu-layers",
        type=int,
        default=None,
        help="layers of the GPU model (default: its shape's)",
    )
    parser.add_argument(
        "--gpu-shape",
        default="gemma2-9b",
        choices=[*bench_gpu.SHAPES, *bench_gpu.ALIASES],
        help="toy, toy-llama: check the code, not speed",
    )
    parser.add_argument(
        "--gpu-device", default="cuda", help="cpu (with --gpu-shape toy): test the GPU code path"
    )
    parser.add_argument("--role", default="lawyer", help="the role of the sweep benchmark")
    parser.add_argument("--batch-size", type=int, default=16, help="for collect_means")
    parser.add_argument("--out", default="benchmarks/results/bench.json")
    args = parser.parse_args(argv)
    chosen = BENCHMARKS if args.only is None else tuple(x.strip() for x in args.only.split(","))
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"--only: unknown benchmarks {unknown}; use {','.join(BENCHMARKS)}")
    args.chosen = [b for b in BENCHMARKS if b in chosen]
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    return args


class Suite:
    """Runs the chosen benchmarks, collecting table rows, details, skips and errors."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.results: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.seconds: dict[str, float] = {}
        self._model: Any = None
        self._plain: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load(self.args.model, device=self.args.device)
        return self._model

    @property
    def n_prompts(self) -> int:
        return 32 if self.args.quick else 128

    def attempt(self, bench_id: str, fn: Callable[[], None]) -> None:
        print(f"[bench] {bench_id} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            fn()
        except Exception as err:  # keep going: one broken benchmark must not hide the rest
            self.errors[bench_id] = f"{type(err).__name__}: {err}"
            self.rows.append(row(bench_id, f"ERROR: {type(err).__name__}", None, None, "", None))
            traceback.print_exc()
        self.seconds[bench_id] = time.perf_counter() - start

    def prompts(self) -> list[str]:
        return list(rp.builtin_generic().instructions)[: self.n_prompts]

    def bench1(self) -> None:
        import bench_activations

        r = bench_activations.run(
            self.model, self.prompts(), self.args.batch_size, self.args.repeats
        )
        self.results["1"] = r
        self.rows += bench_activations.table_rows(r)

    def bench2(self) -> None:
        import bench_paper_means

        hf, tokenizer = fresh_hf(self.args.model, device=self.args.device)
        r = bench_paper_means.run(
            self.model, hf, tokenizer, self.prompts(), self.args.batch_size, self.args.repeats
        )
        del hf
        self.results["2"] = r
        tps = r["tokens_per_s"]
        self.rows.append(
            row(
                "2",
                "activation means ÷ paper's HF pre-hooks, batch 32 (tokens/s)",
                tps["collect_means"],
                tps["paper_hf_prehooks"],
                "tok/s",
                r["ratio_ours_over_paper"],
            )
        )

    def bench3(self) -> None:
        import bench_rss

        sizes = (64, 512) if self.args.quick else (128, 2048)
        r = bench_rss.run(self.args.model, self.args.device, sizes, self.args.batch_size)
        self.results["3"] = r
        small, large = (r["runs"][str(n)]["maxrss_mib"] for n in sizes)
        self.rows.append(
            row(
                "3",
                f"peak RSS of collect_means, {sizes[1]:,} ÷ {sizes[0]} prompts",
                large,
                small,
                "MiB",
                r["ratio_large_over_small"],
                bench_rss.GOAL,
            )
        )

    def bench4(self) -> None:
        import bench_evaluation

        bench = bench_evaluation.first_n(
            rp.load_benchmark("builtin"), 16 if self.args.quick else 48
        )
        r = bench_evaluation.run(self.model, bench, 16, self.args.repeats)
        self.results["4"] = r
        self.rows += bench_evaluation.table_rows(r)

    def bench5(self) -> None:
        import bench_sweep

        r = bench_sweep.run(self.model, self.args.role, self.args.repeats)
        self.results["5"] = r
        self.rows += bench_sweep.table_rows(r)

    def bench6(self) -> None:
        import bench_demo

        if self.args.skip_demo:
            self.skipped["6"] = "--skip-demo"
            return
        r = bench_demo.run(device=self.args.device)
        self.results["6"] = r
        self.rows.append(
            row(
                "6",
                "`roleprobe run --preset demo` wall time (s)",
                r["seconds_best"],
                None,
                "s",
                None,
            )
        )

    def bench7(self) -> None:
        import bench_plan

        r = bench_plan.run(self.model, self.args.repeats)
        self.results["7"] = r
        self.rows += bench_plan.table_rows(r)

    def bench8(self) -> None:
        import bench_items

        r = bench_items.means_vs_plain(
            self.model, self.plain, self.prompts(), self.args.batch_size, self.args.repeats
        )
        self.results["8"] = r
        self.rows += bench_items.table_rows({"8": r}, only=("8",))

    def bench9(self) -> None:
        import bench_items

        quick = self.args.quick
        r = bench_items.run(
            self.model,
            self.plain,
            self.prompts(),
            self.args.repeats,
            self.args.batch_size,
            means=False,
            roles=(self.args.role,),
            n_positions=2 if quick else 4,
            controls=False,
            scope="domain",
            batch_size=4 if quick else 16,
        )
        self.results["9"] = r
        self.rows += bench_items.table_rows(r, only=("9", "9b", "syncs"))

    @property
    def plain(self) -> Any:
        """A plain Hugging Face copy of the model (benchmarks 8 and 9's reference)."""
        if self._plain is None:
            self._plain = fresh_hf(self.args.model, device=self.args.device)[0]
        return self._plain

    def bench_gpu(self) -> None:
        args = self.args
        if torch.device(args.gpu_device).type == "cuda" and not torch.cuda.is_available():
            self.skipped["gpu"] = "CUDA is not available on this machine"
            print("[bench] gpu: skipped, CUDA is not available", file=sys.stderr)
            return
        r = bench_gpu.run(
            args.gpu_layers,
            args.repeats,
            args.quick,
            device=args.gpu_device,
            shape=args.gpu_shape,
            role=args.role,
            suite=True,
        )
        self.results["gpu"] = r
        self.rows += bench_gpu.table_rows(r, "-gpu", bench_gpu.label(r))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suite = Suite(args)
    steps = {
        "1": suite.bench1,
        "2": suite.bench2,
        "3": suite.bench3,
        "4": suite.bench4,
        "5": suite.bench5,
        "6": suite.bench6,
        "7": suite.bench7,
        "8": suite.bench8,
        "9": suite.bench9,
        "gpu": suite.bench_gpu,
    }
    if NEEDS_MODEL & set(args.chosen):
        suite.attempt("model", lambda: suite.model)
        if "model" in suite.errors:
            args.chosen = [b for b in args.chosen if b not in NEEDS_MODEL]
    for bench_id in args.chosen:
        suite.attempt(bench_id, steps[bench_id])
    table = markdown_table(suite.rows)
    print(table)
    notes = [f"{k}: skipped ({v})" for k, v in suite.skipped.items()]
    notes += [f"{k}: FAILED ({v})" for k, v in suite.errors.items()]
    if args.quick:
        notes.append("--quick: tiny sizes and 1 round; the goals are meant for the real run")
    for note in notes:
        print(f"- {note}")
    output = {
        "settings": {k: v for k, v in vars(args).items()},
        "machine": machine_info(args.device),
        "rows": suite.rows,
        "results": suite.results,
        "skipped": suite.skipped,
        "errors": suite.errors,
        "seconds": suite.seconds,
        "table": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(output, indent=1, default=str) + "\n")
    print(f"written: {out}")
    return 1 if suite.errors else 0


if __name__ == "__main__":
    sys.exit(main())
