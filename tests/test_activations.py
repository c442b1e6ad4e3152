import pytest
import torch

import _chat_templates as T
import roleprobe as rp
from reference import reference_means
from roleprobe.model.chat import ChatTemplate, chat_ids, encode_chat
from roleprobe.vectors.activations import collect_means, resolve_positions, token_batch

PROMPTS = [
    "Explain how a bill becomes law.",
    "Hi",
    "Describe the smell of rain on hot asphalt in summer.",
    "What is two plus two?",
    "Plan a picnic for six friends.",
]


def test_means_equal_a_one_by_one_reference(tiny_model, tiny_reference):
    hf_model, tokenizer = tiny_reference
    got = collect_means(tiny_model, PROMPTS, batch_size=2, progress=False)
    ref = reference_means(hf_model, tokenizer, PROMPTS, layers=list(range(4)))
    assert got.mean.dtype == torch.float64 and got.count == len(PROMPTS)
    # float32 forwards, batched vs one by one: rounding differences reach ~3e-7
    assert torch.allclose(got.mean, ref, rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_means_and_runs_repeat_bitwise(tiny_model):
    one = collect_means(tiny_model, PROMPTS, batch_size=1, progress=False).mean
    many = collect_means(tiny_model, PROMPTS, batch_size=16, progress=False).mean
    again = collect_means(tiny_model, PROMPTS, batch_size=16, progress=False).mean
    assert torch.allclose(one, many, rtol=1e-5, atol=1e-7)
    assert torch.equal(many, again)


def test_position_selectors(tiny_model):
    post = collect_means(tiny_model, PROMPTS, progress=False)
    last = collect_means(tiny_model, PROMPTS, positions="last", progress=False)
    pair = collect_means(tiny_model, PROMPTS, positions=[-2, -1], progress=False)
    assert post.positions == tuple(range(-13, 0)) and last.positions == (-1,)
    assert torch.equal(last.mean[0], post.mean[-1]) and torch.equal(pair.mean, post.mean[-2:])
    inst = collect_means(tiny_model, PROMPTS, positions="instruction_mean", progress=False)
    batch = encode_chat(tiny_model.tokenizer, PROMPTS)
    _, cache = tiny_model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    resid = cache["blocks.1.hook_resid_pre"].double()
    mask = batch.instruction_mask.double()
    per_prompt = (resid * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(inst.mean[0, 1], per_prompt.mean(0), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("middle", "unknown positions 'middle'"),
        ([-14], r"not post-instruction positions.*-13\.\.-1"),
        ([0], "not post-instruction positions"),
        ([], "empty"),
        ([-1, -1], "repeat"),
    ],
)
def test_bad_positions(spec, message):
    with pytest.raises(ValueError, match=message):
        resolve_positions(spec, n_post=13)


def test_selectors_never_read_bos_or_padding():
    batch = token_batch([[1, 5, 6, 7, 8], [1, 9, 8]], n_post=1)
    with pytest.raises(ValueError, match="padding or its first token"):
        resolve_positions([-3, -1], n_post=3).picker(batch)
    ok = resolve_positions([-1], n_post=1).picker(batch)
    act = torch.arange(2 * 5 * 2, dtype=torch.float32).reshape(2, 5, 2)
    assert ok(act).shape == (2, 1, 2)


@pytest.mark.parametrize("system", ["default", "none", "You are a lawyer."])
def test_the_system_policy_reaches_the_streamed_prompts(tiny_model, monkeypatch, system):
    """String prompts are formatted under ``system``: their means equal those of the same
    prompts passed as token ids formatted by ``chat_ids(..., system)``."""
    monkeypatch.setattr(tiny_model.tokenizer, "chat_template", T.QWEN25_TEMPLATE)
    tok = tiny_model.tokenizer
    n_post = ChatTemplate.from_tokenizer(tok, system).n_post
    got = collect_means(tiny_model, PROMPTS, layers=[1], system=system, progress=False)
    ids = [chat_ids(tok, p, system) for p in PROMPTS]
    ref = collect_means(tiny_model, ids, layers=[1], n_post=n_post, progress=False)
    assert got.system == system and got.positions == ref.positions
    assert torch.equal(got.mean, ref.mean)
    default = collect_means(tiny_model, PROMPTS, layers=[1], progress=False)
    assert default.system == "default"
    assert torch.equal(got.mean, default.mean) == (system == "default")


def test_token_input_needs_no_tokenizer(tiny_model):
    tokens = [[257, 5, 6, 7, 258, 10], [257, 9, 258, 10]]
    means = collect_means(tiny_model, tokens, n_post=2, progress=False)
    assert means.positions == (-2, -1) and means.count == 2
    as_tensor = collect_means(
        tiny_model, torch.tensor([[257, 5, 6, 7, 258, 10]]), n_post=2, progress=False
    )
    assert as_tensor.mean.shape == (2, 4, 64)
    with pytest.raises(ValueError, match="at least n_post"):
        collect_means(tiny_model, [[257, 258]], n_post=2, progress=False)


def test_forward_stops_before_the_unembedding(tiny_model):
    def never(act, hook):
        raise AssertionError(f"{hook.name} ran")

    with tiny_model.hooks(fwd_hooks=[("unembed.hook_in", never), ("ln_final.hook_in", never)]):
        collect_means(tiny_model, PROMPTS, progress=False)
        collect_means(tiny_model, PROMPTS, layers=[0], progress=False)


def test_other_hook_points_and_layer_subsets(tiny_model):
    mlp = collect_means(tiny_model, PROMPTS, hook="mlp_out", layers=[1], progress=False)
    assert mlp.hook == "hook_mlp_out" and mlp.layers == (1,) and mlp.mean.shape == (13, 1, 64)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": [4]}, ValueError, r"layers \[4\] are out of range.*0\.\.3"),
        ({"layers": []}, ValueError, "layer list is empty"),
        ({"hook": "hook_nowhere"}, ValueError, "unknown hook point"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments(tiny_model, kwargs, error, message):
    with pytest.raises(error, match=message):
        collect_means(tiny_model, PROMPTS, progress=False, **kwargs)


def test_empty_and_overlong_prompts_are_named(tiny_model):
    with pytest.raises(ValueError, match="empty"):
        collect_means(tiny_model, [], progress=False)
    with pytest.raises(ValueError, match=r"prompt 1 .* tokens long"):
        collect_means(tiny_model, ["fine", "word " * 200], progress=False)


def test_nan_activations_are_reported_with_the_prompt(tiny_model):
    def poison(act, hook):
        act[:, -1] = float("nan")
        return act

    with (
        tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", poison)]),
        pytest.raises(FloatingPointError, match=r"blocks\.1\.hook_resid_pre.*prompt"),
    ):
        collect_means(tiny_model, PROMPTS, progress=False)


def test_planted_direction_is_recovered(tiny_model):
    """Role prompts get a planted vector in the residual entering block 0; the direction
    computed from role vs generic prompts (different texts) must point along it."""
    planted = torch.randn(64)
    planted *= 5 / planted.norm()

    def plant(act, hook):
        return act + planted

    role_texts = ["Draft a motion to dismiss.", "Cite precedent on fair use.", "Explain tort law."]
    base_texts = ["Bake bread.", "Describe a sunset over the sea.", "Name a fruit."]
    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", plant)]):
        role = collect_means(tiny_model, role_texts, positions="instruction_mean", progress=False)
    base = collect_means(tiny_model, base_texts, positions="instruction_mean", progress=False)
    direction = (role.mean - base.mean)[0, 0].float()
    assert torch.cosine_similarity(direction, planted, dim=0) > 0.99


@pytest.mark.embedded
def test_means_equal_reference_on_the_embedded_model(embedded_model, embedded_reference):
    hf_model, tokenizer = embedded_reference
    prompts = rp.builtin_prompts(["lawyer", "nurse"])
    layers = [0, 7, 15, 29]
    sets = (
        ("lawyer", prompts.roles["lawyer"]),
        ("nurse", prompts.roles["nurse"]),
        ("base", prompts.base),
    )
    for name, texts in sets:
        texts = list(texts.instructions)[:6]
        got = collect_means(embedded_model, texts, layers=layers, batch_size=4, progress=False)
        ref = reference_means(hf_model, tokenizer, texts, layers)
        assert torch.allclose(got.mean, ref, rtol=1e-5, atol=1e-4), name


def test_the_means_pass_reads_nothing_back_inside_hooks(tiny_model):
    """Per-layer callbacks of the means pass keep their finiteness check on the device (one
    read-back per batch, after the pass)."""
    from _syncs import counting_syncs

    prompts = ["Describe a river.", "Hi", "What is a prime number?"]
    with counting_syncs(tiny_model) as count:
        collect_means(tiny_model, prompts, batch_size=2, progress=False)
    assert count.hook_calls == 2 * tiny_model.cfg.n_layers
    assert count.syncs == {}, dict(count.syncs)


def test_a_non_finite_activation_names_its_layer_and_prompt(tiny_model):
    def poison(act, hook):
        act = act.clone()
        act[1, -1, 0] = float("nan")
        return act

    with (
        tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", poison)]),
        pytest.raises(
            FloatingPointError,
            match=r"non-finite activation at blocks\.1\.hook_resid_pre for prompt "
            r"(0 \('Describe a river\.'\)|1 \('Hi'\))",
        ),
    ):
        collect_means(tiny_model, ["Describe a river.", "Hi"], batch_size=2, progress=False)
