"""``roleprobe plan`` and :mod:`roleprobe.experiments.cost`: a run's cost before any compute.

Oracles: the sweep's own plan (``_Plan``) and the forward passes a real tiny sweep runs
(counted by a hook on the last decoder layer, which every pass runs once); FLOPs per token
computed by hand from the public configs; the issue's counts for the paper preset on
gemma-2-9b-it (3,402 work items, 294,420 passes with one ablation per pass).
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import roleprobe as rp
from roleprobe.app.cli import main
from roleprobe.app.run import STAGES
from roleprobe.app.run_config import load_config
from roleprobe.data.benchmarks import MultipleChoice
from roleprobe.experiments import cost, gpus
from roleprobe.experiments.sweep_cost import count_sweep
from roleprobe.experiments.sweeps import SweepConfig, _Plan
from roleprobe.model.plan_model import Architecture, PlanModel, load_plan_model
from roleprobe.steering.prefix import letter_only_supported

CONFIGS = Path(__file__).parent / "data" / "configs"
GEMMA = CONFIGS / "gemma-2-9b-it.json"
LLAMA = CONFIGS / "Llama-3.2-3B-Instruct.json"


def _bench() -> MultipleChoice:
    """Ten short questions (short in byte tokens: the tiny model's passes stay fast), of
    varied length so that length batching matters: six law, four medicine."""
    rows = []
    for i in range(10):
        law = i < 6
        rows.append(
            {
                "id": f"q{i}",
                "subject": "professional_law" if law else "clinical_knowledge",
                "question": "Is it so?" + " Why?" * (i % 4),
                "A": "yes",
                "B": "no",
                "C": "maybe",
                "D": "never",
                "answer": "ABCD"[i % 4],
            }
        )
    return MultipleChoice(pd.DataFrame(rows), "short")


Setup = tuple[Any, rp.RoleDirections, PlanModel]


@pytest.fixture(scope="module")
def tiny_setup() -> Setup:
    model = rp.load_model("tiny-random", device="cpu")
    prompts = rp.custom_prompts(
        {
            "lawyer": ["How do I appeal?", "Draft a clause.", "What is tort law?"],
            "bailiff": ["Keep order in court.", "Escort a defendant.", "What do bailiffs do?"],
            "nurse": ["Dress a wound.", "Check a pulse.", "What is triage?"],
        },
        base=["Explain inflation.", "Write a haiku.", "Name a prime number."],
    )
    rd = rp.compute_directions(model, source=prompts, positions=[-1], progress=False)
    return model, rd, load_plan_model("tiny-random", system=rd.system)


def _passes(model: Any, run: Callable[[], object]) -> int:
    """Forward passes ``run()`` makes: calls of the wrapped decoder (every pass enters it,
    also one that starts from a saved residual or stops early)."""
    letter_only_supported(model)  # its one-off probe pass is not the sweep's
    calls = []
    decoder = model.original_model.model
    handle = decoder.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(1), with_kwargs=True
    )
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize(
    ("roles", "layers", "options", "items"),
    [
        # 3 baseline items; layer 0 is zero, so layer 1's items: 2 law batches, 1 medicine
        (("lawyer", "nurse"), (0, 1), {"stack": 4}, 3 + 3),
        # one role, with its specific part; layers 1 and 2 saved in separate prefix passes
        (("lawyer",), (0, 1, 2), {"stack": 8, "specific": True, "prefix_memory": 1}, 2 + 4),
    ],
    ids=["stacked", "specific-chunked"],
)
def test_counts_equal_the_sweeps_plan_and_the_passes_it_runs(
    tiny_setup: Setup,
    roles: tuple[str, ...],
    layers: tuple[int, ...],
    options: dict[str, Any],
    items: int,
) -> None:
    model, rd, plan_model = tiny_setup
    bench = _bench()
    cfg = SweepConfig(
        roles=roles,
        layers=layers,
        positions=(-1,),
        alphas=(1.0, 3.0),
        batch_size=4,
        stack=options["stack"],
        system=rd.system,
        specific=bool(options.get("specific", False)),
    )
    budget = options.get("prefix_memory", 2**30)
    counted = count_sweep(
        plan_model, bench, cfg, dtype_bytes=4, prefix_budget=budget, directions=rd
    )
    assumed = count_sweep(
        plan_model, bench, cfg, dtype_bytes=4, prefix_budget=budget, direction_roles=rd.roles
    )
    plan = _Plan(model, rd, bench, cfg)
    assert counted.work_items == assumed.work_items == len(plan.work) == items
    assert counted.batches == {g: len(b) for g, b in plan.batches.items()}
    assert counted.passes == assumed.passes  # layer 0 is the only zero layer here
    if "prefix_memory" in options:
        assert counted.passes["prefix"] == 2 * 2  # one layer per chunk: two passes a batch

    def run() -> None:
        rp.sweep(
            model,
            rd,
            bench,
            roles=roles,
            layers=layers,
            positions=cfg.positions,
            alphas=cfg.alphas,
            batch_size=cfg.batch_size,
            progress=False,
            stack_ablations=True,  # the plan counts a GPU sweep (a CPU one runs one per pass)
            **options,
        )

    assert _passes(model, run) == counted.total_passes
    assert counted.passes_unstacked > counted.total_passes  # ablations one per pass


def test_unstacked_ablations_count_one_pass_each(tiny_setup: Setup) -> None:
    _, rd, plan_model = tiny_setup
    cfg = SweepConfig(roles=rd.roles, layers=(0, 1, 2), positions=(-1,), batch_size=4, stack=4)
    stacked = count_sweep(plan_model, _bench(), cfg)
    before = count_sweep(plan_model, _bench(), cfg, stack_ablations=False)
    # law: 2 roles x 3 variants = 6 ablations -> 2 passes stacked; medicine: 3 -> 1
    assert before.passes["ablation"] == 2 * (2 * 6 + 1 * 3)
    assert stacked.passes["ablation"] == 2 * (2 * 2 + 1 * 1)
    probe = before.passes["probe"]  # the overflow probe: one pass, not in the earlier count
    assert probe == 1
    assert before.total_passes - probe == stacked.passes_unstacked == before.passes_unstacked


def test_the_stored_configs_give_the_models_shapes_and_flops() -> None:
    gemma = Architecture.from_config(json.loads(GEMMA.read_text()))
    assert (gemma.n_layers, gemma.d_model, gemma.d_head, gemma.d_vocab) == (42, 3584, 256, 256000)
    assert (gemma.n_heads, gemma.n_kv_heads, gemma.d_mlp, gemma.gated_mlp) == (16, 8, 14336, True)
    # by hand: q 3584x4096, k and v 3584x2048 each, o 4096x3584, gate/up/down 3x3584x14336
    params = 3584 * 4096 + 2 * 3584 * 2048 + 4096 * 3584 + 3 * 3584 * 14336
    assert params == gemma.block_params == 198_180_864
    # 2 FLOPs per parameter, plus QK^T and AV over 100 positions: 2 x 2 x 100 x 16 x 256
    assert gemma.flops_per_token(seq=100) == 42 * (396_361_728 + 1_638_400) == 16_716_005_376
    assert gemma.head_flops() == 2 * 3584 * 256000
    llama = Architecture.from_config(json.loads(LLAMA.read_text()))
    assert (llama.n_layers, llama.d_model, llama.n_heads, llama.n_kv_heads) == (28, 3072, 24, 8)
    params = 3072 * 3072 + 2 * 3072 * 1024 + 3072 * 3072 + 3 * 3072 * 8192
    assert params == llama.block_params == 100_663_296
    assert llama.flops_per_token(seq=100) == 28 * (201_326_592 + 1_228_800) == 5_671_550_976
    assert llama.flops_per_token(seq=100, blocks=7) * 4 == llama.flops_per_token(seq=100)


def test_the_paper_preset_on_gemma_gives_the_issues_counts(paper_dir: Path) -> None:
    config = load_config("paper", None, {"model": str(GEMMA), "data": str(paper_dir)})
    from roleprobe.app.inputs import run_benchmark, run_roles

    model = load_plan_model(str(GEMMA), system=config.system)
    assert model.n_post == 5  # <end_of_turn> \n <start_of_turn> model \n
    roles = run_roles(config)
    cfg = cost.sweep_config(config, model, roles)
    assert (len(roles), len(cfg.layers), cfg.batch_size, cfg.stack) == (29, 42, 32, 4)
    budget = gpus.GPUS["h100"].prefix_budget  # 10 GiB: an eighth of an 80 GB card
    counted = count_sweep(model, run_benchmark(config), cfg, prefix_budget=budget)
    assert counted.work_items == 3402  # (41 live layers + the baseline) x 81 batches
    assert counted.passes_unstacked == 294_420  # 81 baseline/prefix passes included
    assert counted.total_passes <= 150_000
    assert counted.prefix_layers_at_once == 41  # no batch needs a second prefix pass


def _plan(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["plan", "--quiet", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_plan_prints_the_table_and_writes_json_without_loading_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("plan loaded a model")

    monkeypatch.setattr("roleprobe.model.models.load_model", refuse)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", refuse)
    folder = tmp_path / "Llama-3.2-3B-Instruct"
    folder.mkdir()
    shutil.copy(LLAMA, folder / "config.json")
    out_json = tmp_path / "plan.json"
    status, out, err = _plan(
        "--preset", "demo", "--model", str(folder), "--json", str(out_json), capsys=capsys
    )
    assert status == 0, err
    assert "04_sweep" in out and "GPU-h@40%" in out and "GPU-h@60%" in out
    assert "(proxy)" in out  # the folder has no tokenizer
    data = json.loads(out_json.read_text())
    assert data["architecture"]["n_layers"] == 28 and data["tokenizer_is_proxy"]
    # demo: 2 roles in 2 domains, layers 8 and 16, position -1, 13 built-in questions a domain
    assert data["sweep"]["work_items"] == 2 + 2 * 2
    assert {row["stage"] for row in data["rows"]} <= {s.key for s in STAGES}
    assert data["total_gpu_hours"]["0.5"] > 0


def test_plan_demo_on_the_embedded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rp.embedded_gguf_path()
    except rp.EmbeddedModelMissingError:
        pytest.skip("the embedded model is not installed")
    out_json = tmp_path / "demo.json"
    status, out, err = _plan("--preset", "demo", "--json", str(out_json), capsys=capsys)
    assert status == 0, err
    assert "(proxy)" not in out and "total" in out
    assert json.loads(out_json.read_text())["architecture"]["n_layers"] == 30


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["--model", "nobody/no-such-model"], 1, "cannot read the config of model"),
        (["--utilisation", "0"], 2, "--utilisation"),
        (["--utilisation", "1.5"], 2, "--utilisation"),
        (["--gpu", "abacus"], 2, "unknown GPU"),
        (["--model", "{bad}"], 1, "num_hidden_layers"),
    ],
)
def test_bad_inputs_give_one_error_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 64, "vocab_size": 10}))
    argv = [str(folder) if a == "{bad}" else a for a in argv]
    got, out, err = _plan("--preset", "demo", *argv, capsys=capsys)
    assert got == status
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("roleprobe: error: ") and message in err
