"""One-command GPU benchmark on a random-weight model of Gemma-2-9B's (or Llama-3-8B's) shape.

    python benchmarks/bench_gpu.py --out benchmarks/results/gpu.json
    python benchmarks/bench_gpu.py --shape llama3-8b --out benchmarks/results/gpu-llama.json
    python benchmarks/bench_gpu.py --device cpu --shape toy --out /tmp/gpu-toy.json  # seconds

The model is built from its config directly on the device, in bfloat16 (gemma-2-9b-it:
42 layers, hidden 3,584, MLP 14,336, 16 heads, 8 KV heads, head_dim 256, vocabulary
256,000, soft-caps 50/30, sliding window 4,096, query_pre_attn_scalar 256; Llama-3-8B: 32
layers, hidden 4,096, MLP 14,336, 32 heads, 8 KV heads, vocabulary 128,256), wrapped with
``rp.wrap_hf_model``; a plain ``transformers`` copy shares its weights (:mod:`_plain`), so
the weights are in memory once (~18 GB for the 9B). The tokenizer is roleprobe's
byte-level one with the family's chat template (one token per byte: ids stay far below the
vocabulary; questions are ~270 tokens). Weights are random: only the timings mean anything.

One run reports (alternating variants, best of ``--repeats`` after a warm-up):

* 7: a sweep's set-up at the paper's size (plan + directions hash + one item's variants,
  on the device), seconds — goal ≤ 1;
* 8: activation means ÷ plain HF forward through the same blocks (tokens/s) — goal ≥ 0.98;
* 9: one ablation work item ÷ plain HF forwards of the same rows — goal ≥ 0.9;
* 9b: one addition work item ÷ plain HF blocks l..L-1 on the same rows (no goal);
* host syncs (``torch.cuda.set_sync_debug_mode("warn")``, warnings recorded) during one
  means pass, one addition item and one ablation item, next to the plain references';
* peak GPU memory per stage (weights, means, items).

The work item is one of a paper-like plan: one role (``--roles``), the last 5
post-instruction positions with random and shuffled controls (15 variants), stack 4, a
batch of 32 of the built-in questions (scope "all"), the middle layer. ``--suite`` also
runs benchmarks 1, 4 and 5 on the model (``run_all.py --only gpu`` does); sized for an H100
in about 3 minutes without it. ``--device cpu`` (with ``--shape toy``) runs the same code
on the CPU in seconds; syncs are then counted by a stand-in (:mod:`_host_syncs`).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _plain import shared_copy
from _report import machine_info, markdown_table, row

import roleprobe as rp

GEMMA2_9B = {
    "hidden_size": 3584,
    "intermediate_size": 14336,
    "num_hidden_layers": 42,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 256,
    "vocab_size": 256000,
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "sliding_window": 4096,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 8192,
}
LLAMA3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    "tie_word_embeddings": False,
}
_TOY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 2048,
}
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "gemma2-9b": ("gemma2", GEMMA2_9B),
    "llama3-8b": ("llama", LLAMA3_8B),
    "toy": (
        "gemma2",
        {**_TOY, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 4096},
    ),
    "toy-llama": ("llama", {**_TOY, "tie_word_embeddings": False}),
}
"""Model shapes by name: (family, config fields). ``toy`` checks the code, not speed."""
ALIASES = {"8b": "llama3-8b"}


def shape_name(shape: str) -> str:
    """The canonical name of ``shape`` (``8b`` is ``llama3-8b``)."""
    name = ALIASES.get(shape, shape)
    if name not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; use one of {[*SHAPES, *ALIASES]}")
    return name


def build(
    device: str = "cuda",
    dtype: str = "bfloat16",
    n_layers: int | None = None,
    shape: str = "gemma2-9b",
) -> tuple[Any, Any]:
    """The random model of ``shape`` built on ``device``: (bridge, plain HF copy sharing its
    weights)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    name = shape_name(shape)
    family, sizes = SHAPES[name]
    tokenizer = rp.family_tokenizer(family)
    fields = dict(sizes)
    if n_layers is not None:
        fields["num_hidden_layers"] = n_layers
    if len(tokenizer) > fields["vocab_size"]:
        raise ValueError(f"the tokenizer's {len(tokenizer)} ids exceed the vocabulary")
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config_class, model_class = {
        "gemma2": (Gemma2Config, Gemma2ForCausalLM),
        "llama": (LlamaConfig, LlamaForCausalLM),
    }[family]
    config = config_class(**fields, **ids)
    config.architectures = [model_class.__name__]
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = model_class._from_config(config, dtype=rp.resolve_dtype(dtype)).eval()
    plain = shared_copy(hf)
    model = rp.wrap_hf_model(hf, tokenizer, f"{name}-shape", device=device, dtype=dtype)
    return model, plain


class _Memory:
    """Peak memory per stage: CUDA's allocator peak (reset per stage), else the process's
    peak RSS (never reset: a running maximum)."""

    def __init__(self, device: str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.stages: dict[str, float] = {}

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def stop(self, stage: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.stages[stage] = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.stages[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def to_dict(self) -> dict[str, Any]:
        kind = "cuda max_memory_allocated" if self.cuda else "process peak RSS (running max)"
        return {
            "kind": kind,
            "unit": "GiB",
            "stages": self.stages,
            "peak": max(self.stages.values()),
        }


def run(
    n_layers: int | None = None,
    repeats: int = 3,
    quick: bool = False,
    device: str = "cuda",
    dtype: str = "bfloat16",
    shape: str = "gemma2-9b",
    role: str = "lawyer",
    n_prompts: int = 64,
    suite: bool = False,
    syncs: bool = True,
) -> dict[str, Any]:
    """Build the model, then benchmarks 7, 8, 9, 9b, the sync counts and the memory peaks
    (and with ``suite`` 1, 4 and 5), each result as its module's ``run`` returns it.

    ``quick`` (always off CUDA): tiny sizes, a check of the code (the goals are meant for
    the real sizes).
    """
    import bench_items
    import bench_plan

    quick = quick or torch.device(device).type != "cuda"
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    memory = _Memory(device)
    memory.start()
    model, plain = build(device, dtype, n_layers, shape)
    memory.stop("weights")
    seconds["build"] = time.perf_counter() - started
    name = shape_name(shape)
    out: dict[str, Any] = {
        "model": {
            "shape": name,
            "n_layers": int(model.cfg.n_layers),
            "d_model": int(model.cfg.d_model),
            "dtype": dtype,
            "device": device,
            "parameters": sum(p.numel() for p in plain.parameters()),
        },
    }
    if torch.device(device).type == "cuda":
        out["model"]["gpu"] = torch.cuda.get_device_name(torch.device(device))
        out["model"]["weights_gib"] = torch.cuda.memory_allocated() / 2**30
    prompts = list(rp.builtin_generic().instructions)[: 16 if quick else n_prompts]
    item = {
        "roles": (role,),
        "n_positions": 2 if quick else 5,
        "controls": not quick,
        "scope": "domain" if quick else "all",
        "batch_size": 4 if quick else 32,
        "stack": 4,
    }

    def stage(key: str, fn: Any) -> Any:
        begin = time.perf_counter()
        memory.start()
        result = fn()
        memory.stop(key)
        seconds[key] = time.perf_counter() - begin
        print(f"[bench_gpu] {key}: {seconds[key]:.1f} s", file=sys.stderr, flush=True)
        return result

    out["7"] = stage("plan", lambda: bench_plan.run(model, repeats))
    out["items"] = stage(
        "items",
        lambda: bench_items.run(model, plain, prompts, repeats, 32, syncs, **item),
    )
    if suite:
        import bench_activations
        import bench_evaluation
        import bench_sweep

        bench = rp.load_benchmark("builtin")
        out["1"] = stage("1", lambda: bench_activations.run(model, prompts, 16, repeats))
        questions = bench_evaluation.first_n(bench, 16 if quick else 48)
        out["4"] = stage("4", lambda: bench_evaluation.run(model, questions, 16, repeats))
        out["5"] = stage("5", lambda: bench_sweep.run(model, role, repeats, bench))
    items = out["items"]
    out["ratios"] = {
        "means_over_plain": items["8"]["ratio_ours_over_plain"],
        "ablation_item_plain_over_item": items["9"]["ratio_plain_over_item"],
        "addition_item_plain_over_item": items["9b"]["ratio_plain_over_item"],
    }
    if syncs:
        out["syncs"] = {k: v["count"] for k, v in items["syncs"].items()}
        out["syncs"]["method"] = items["syncs"]["means"]["method"]
    out["memory"] = memory.to_dict()
    seconds["total"] = time.perf_counter() - started
    out["seconds"] = seconds
    return out


def table_rows(r: dict[str, Any], suffix: str = "", label: str = "") -> list[dict[str, Any]]:
    """Every row of a :func:`run` result (ids with ``suffix``, e.g. ``-gpu``)."""
    import bench_activations
    import bench_evaluation
    import bench_items
    import bench_plan
    import bench_sweep

    rows = bench_plan.table_rows(r["7"], suffix, label)
    rows += bench_items.table_rows(r["items"], suffix, label)
    for key, module in (("1", bench_activations), ("4", bench_evaluation), ("5", bench_sweep)):
        if key in r:
            rows += module.table_rows(r[key], suffix, label)
    mem = r["memory"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in mem["stages"].items())
    rows.append(
        row(
            "M" + suffix,
            f"peak memory, {mem['kind']} ({stages})" + label,
            mem["peak"],
            None,
            "GiB",
            None,
        )
    )
    return rows


def label(r: dict[str, Any]) -> str:
    """`` (where, shape, layers, dtype)`` for the table."""
    m = r["model"]
    where = m.get("gpu", m["device"])
    return f" ({where}, {m['shape']}, {m['n_layers']} layers, {m['dtype']})"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", default="gemma2-9b", choices=[*SHAPES, *ALIASES])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--layers", type=int, default=None, help="fewer layers than the shape's")
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds (3; --quick or off CUDA: 1)"
    )
    parser.add_argument("--prompts", type=int, default=64, help="prompts of the means pass")
    parser.add_argument("--role", default="lawyer", help="the role of the work items")
    parser.add_argument("--suite", action="store_true", help="also benchmarks 1, 4 and 5")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, for smoke tests (always off CUDA)"
    )
    parser.add_argument("--no-syncs", action="store_true", help="do not count host syncs")
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if torch.device(args.device).type == "cuda" and not args.quick else 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(
            "CUDA is not available; use --device cpu --shape toy to check the code", file=sys.stderr
        )
        return 2
    result = run(
        args.layers,
        args.repeats,
        args.quick,
        args.device,
        args.dtype,
        args.shape,
        args.role,
        args.prompts,
        args.suite,
        not args.no_syncs,
    )
    rows = table_rows(result, label="")
    table = markdown_table(rows)
    print(f"model:{label(result)}")
    print(table)
    output = {
        "settings": vars(args),
        "machine": machine_info(args.device),
        **result,
        "rows": rows,
        "table": table,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(output, indent=1, default=str) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
