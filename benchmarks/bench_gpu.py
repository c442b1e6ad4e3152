"""Benchmarks 1, 4 and 5 on a GPU, on a random-weight model of Llama-3-8B's shape.

The model is built from a config (hidden 4096, MLP 14336, 32 layers, 32 heads, 8 KV heads,
vocabulary 128,256) directly on the GPU in bfloat16 and wrapped with ``rp.wrap_hf_model``;
the tokenizer is roleprobe's tiny byte-level one (one token per byte: long prompts, fine for
timing). Weights are random: only the timings mean anything. ``n_layers`` (``--gpu-layers``)
makes a shallower model for quick checks. ``run_all.py`` runs it when CUDA is available.
"""

from typing import Any

import bench_activations
import bench_evaluation
import bench_sweep
import torch

import roleprobe as rp

LLAMA3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
# The same code on a toy shape, to check this module on a machine without a GPU.
TOY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
}


def build(
    device: str = "cuda", dtype: str = "bfloat16", n_layers: int | None = None, shape: str = "8b"
) -> Any:
    """The random model of the chosen shape, built on ``device`` and wrapped as a bridge."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = rp.tiny_tokenizer()
    sizes = dict(LLAMA3_8B if shape == "8b" else TOY)
    if n_layers is not None:
        sizes["num_hidden_layers"] = n_layers
    config = LlamaConfig(
        vocab_size=sizes["vocab_size"],
        hidden_size=sizes["hidden_size"],
        intermediate_size=sizes["intermediate_size"],
        num_hidden_layers=sizes["num_hidden_layers"],
        num_attention_heads=sizes["num_attention_heads"],
        num_key_value_heads=sizes["num_key_value_heads"],
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.device(device), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        hf = LlamaForCausalLM._from_config(config, dtype=rp.resolve_dtype(dtype))
    name = "llama3-8b-shape" if shape == "8b" else "toy-shape"
    return rp.wrap_hf_model(hf.eval(), tokenizer, name, device=device, dtype=dtype)


def run(
    n_layers: int = 32,
    repeats: int = 3,
    quick: bool = False,
    device: str = "cuda",
    dtype: str = "bfloat16",
    shape: str = "8b",
    role: str = "lawyer",
) -> dict[str, Any]:
    """Benchmarks 1, 4 and 5 on the GPU model; each result as its CPU version returns it."""
    model = build(device, dtype, n_layers, shape)
    prompts = list(rp.builtin_generic().instructions)[: 32 if quick else 128]
    bench = rp.load_benchmark("builtin")
    out: dict[str, Any] = {
        "model": {"shape": shape, "n_layers": n_layers, "dtype": dtype, "device": device},
    }
    if torch.device(device).type == "cuda":
        out["model"]["gpu"] = torch.cuda.get_device_name(torch.device(device))
    out["1"] = bench_activations.run(model, prompts, 16, repeats)
    out["4"] = bench_evaluation.run(
        model, bench_evaluation.first_n(bench, 16 if quick else 48), 16, repeats
    )
    out["5"] = bench_sweep.run(model, role, repeats, bench)
    if torch.device(device).type == "cuda":
        out["model"]["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out
