from contextlib import contextmanager

import pytest
import torch

import roleprobe as rp
from roleprobe.model.chat import encode_chat
from roleprobe.steering.interventions import Ablation, Addition, Clamp, steer
from roleprobe.steering.operators import unit
from roleprobe.vectors.activations import residual_norms

PROMPTS = ["Hi", "Describe the water cycle briefly.", "What is two plus two?"]


@pytest.fixture(scope="module")
def batch(tiny_model):
    return encode_chat(tiny_model.tokenizer, PROMPTS)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch.input_ids, attention_mask=batch.attention_mask)


def _record(model, batch, name, *interventions, **kwargs):
    """The activation at ``name`` as the model sees it after every steering hook."""
    seen = {}

    def keep(act, hook):
        seen["act"] = act.clone()
        return act

    with steer(model, *interventions, **kwargs), model.hooks(fwd_hooks=[(name, keep)]):
        _logits(model, batch)
    return seen["act"]


def test_model_is_exactly_restored_after_steer_and_after_errors(tiny_model, batch):
    before = _logits(tiny_model, batch)
    d = torch.randn(64)
    with steer(tiny_model, Addition(d, layer=1, alpha=3.0), Ablation(d)):
        assert not torch.equal(_logits(tiny_model, batch), before)
    assert torch.equal(_logits(tiny_model, batch), before)
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_model, Addition(d, 0, 5.0)):
        raise RuntimeError("boom")
    assert torch.equal(_logits(tiny_model, batch), before)


def test_alpha_zero_is_the_baseline_bitwise(tiny_model, batch):
    before = _logits(tiny_model, batch)
    with steer(tiny_model, Addition(torch.randn(64), layer=1, alpha=0.0)):
        assert torch.equal(_logits(tiny_model, batch), before)


def test_addition_adds_alpha_d_at_its_layer(tiny_model, batch):
    d = torch.randn(64)
    clean = _record(tiny_model, batch, "blocks.1.hook_resid_pre")
    steered = _record(tiny_model, batch, "blocks.1.hook_resid_pre", Addition(d, 1, alpha=2.5))
    assert torch.allclose(steered - clean, (2.5 * d).expand_as(clean), atol=1e-5)
    unaffected = _record(tiny_model, batch, "blocks.0.hook_resid_pre", Addition(d, 1, 2.5))
    assert torch.equal(unaffected, _record(tiny_model, batch, "blocks.0.hook_resid_pre"))


def test_padding_and_position_masks(tiny_model, batch):
    d = torch.randn(64)
    name = "blocks.1.hook_resid_pre"
    clean = _record(tiny_model, batch, name)
    mask = batch.attention_mask.bool()
    padded = _record(
        tiny_model, batch, name, Addition(d, 1, 1.0), attention_mask=batch.attention_mask
    )
    assert torch.equal(padded[~mask], clean[~mask])  # padding untouched
    assert torch.allclose((padded - clean)[mask], d.expand(int(mask.sum()), 64), atol=1e-5)
    last = _record(
        tiny_model,
        batch,
        name,
        Addition(d, 1, 1.0, positions=[-1]),
        attention_mask=batch.attention_mask,
    )
    assert torch.equal(last[:, :-1], clean[:, :-1])
    assert torch.allclose(last[:, -1] - clean[:, -1], d.expand(3, 64), atol=1e-5)
    generated = _record(tiny_model, batch, name, Addition(d, 1, 1.0, positions="generated"))
    assert torch.equal(generated, clean)  # a plain forward pass has no generated positions
    prompt = _record(tiny_model, batch, name, Addition(d, 1, 1.0, positions="prompt"))
    assert torch.allclose(prompt - clean, d.expand_as(clean), atol=1e-5)


def test_ablation_zeroes_the_direction_everywhere(tiny_model, batch):
    d = torch.randn(64)
    d_hat = unit(d)
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(2)] + ["ln_final.hook_in"]
    for name in names:
        act = _record(tiny_model, batch, name, Ablation(d))
        assert (act @ d_hat).abs().max() < 1e-4, name
    clean = _record(tiny_model, batch, "ln_final.hook_in")
    assert (clean @ d_hat).abs().max() > 1e-2  # the direction was there before


def test_ablating_a_planted_direction_removes_its_effect(tiny_model, batch):
    planted = torch.randn(64) * 3
    with steer(tiny_model, Ablation(planted)):
        ablated = _logits(tiny_model, batch)
    with steer(tiny_model, Addition(planted, 0, 1.0)):
        assert not torch.allclose(_logits(tiny_model, batch), ablated, atol=1e-3)
    real = batch.attention_mask.bool()
    with steer(tiny_model, Addition(planted, 0, 1.0), Ablation(planted)):
        assert torch.allclose(_logits(tiny_model, batch)[real], ablated[real], atol=1e-4)


def test_clamp_sets_the_projection_in_the_model(tiny_model, batch):
    d = torch.randn(64)
    act = _record(tiny_model, batch, "blocks.1.hook_resid_pre", Clamp(d, 1, value=4.0))
    assert torch.allclose(act @ unit(d), torch.full(act.shape[:2], 4.0), atol=1e-4)


def test_unit_norm_scaling(tiny_model):
    norms = residual_norms(tiny_model)
    assert norms.shape == (4,) and (norms > 0).all()
    d = torch.randn(64)
    spec = Addition(d, 1, alpha=2.0, reference_norm=float(norms[1]))
    assert torch.isclose(spec.vector.norm(), 2 * norms[1].float(), rtol=1e-5)


def test_nested_steer_on_the_same_hook_is_refused(tiny_model):
    d = torch.randn(64)
    with steer(tiny_model, Addition(d, 1, 1.0)):
        with (
            pytest.raises(ValueError, match=r"nested steer on \['blocks\.1\.hook_resid_pre'\]"),
            steer(tiny_model, Addition(d, 1, 1.0)),
        ):
            pass
        with steer(tiny_model, Addition(d, 0, 1.0)):  # another hook point is fine
            pass
    with steer(tiny_model, Addition(d, 1, 1.0)):  # released after exit
        pass


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Addition(torch.randn(64), layer=4), r"layers \[4\] are out of range"),
        (lambda: Addition(torch.randn(32), layer=1), "32 dimensions; the model has d_model=64"),
        (lambda: Addition(torch.full((64,), float("nan")), 1), "NaN"),
        (lambda: Addition(torch.randn(64), 1, alpha=float("inf")), "alpha must be finite"),
        (lambda: Addition(torch.randn(64), 1, reference_norm=-1.0), "reference_norm"),
        (lambda: Addition(torch.randn(64), 1, hook="hook_nowhere"), "unknown hook point"),
        (lambda: Addition(torch.randn(64), 1, positions="middle"), "unknown positions"),
        (lambda: Ablation(torch.zeros(64)), "zero norm"),
        (lambda: Ablation(torch.randn(64), hooks_at=("hook_q",)), "unknown hook points"),
        (lambda: Clamp(torch.randn(64), 1, value=float("nan")), "finite"),
    ],
)
def test_bad_specs_are_clear_errors(tiny_model, make, message):
    with pytest.raises(ValueError, match=message), steer(tiny_model, make()):
        pass


def test_steered_generation(tiny_model):
    d = torch.randn(64) * 5
    plain = rp.generate(tiny_model, PROMPTS, max_new_tokens=6)
    assert rp.generate(tiny_model, PROMPTS, [Addition(d, 1, 0.0)], max_new_tokens=6) == plain
    steered = rp.generate(tiny_model, PROMPTS, [Addition(d, 1, 3.0)], max_new_tokens=6)
    assert steered != plain
    one_by_one = [
        rp.generate(tiny_model, p, [Addition(d, 1, 3.0)], max_new_tokens=6)[0] for p in PROMPTS
    ]
    assert steered == one_by_one
    # steering only generated positions leaves the first token (read off the prompt) alone
    late = rp.generate(
        tiny_model, PROMPTS, [Addition(d, 1, 3.0, positions="generated")], max_new_tokens=1
    )
    assert late == rp.generate(tiny_model, PROMPTS, max_new_tokens=1)


def test_generation_matches_transformerlens_greedy(tiny_model):
    batch = encode_chat(tiny_model.tokenizer, ["Hi"])
    out = tiny_model.generate(
        batch.input_ids, max_new_tokens=8, do_sample=False, verbose=False, stop_at_eos=False
    )
    tl_text = tiny_model.tokenizer.decode(
        out[0, batch.input_ids.shape[1] :], skip_special_tokens=True
    )
    assert rp.generate(tiny_model, "Hi", max_new_tokens=8)[0] == tl_text.strip()


def test_sampling_is_reproducible_with_a_seed(tiny_model):
    a = rp.generate(tiny_model, PROMPTS, max_new_tokens=6, do_sample=True, seed=3, top_p=0.9)
    b = rp.generate(tiny_model, PROMPTS, max_new_tokens=6, do_sample=True, seed=3, top_p=0.9)
    assert a == b


@pytest.mark.slow
@pytest.mark.embedded
def test_mathematician_direction_moves_a_maths_prompt(embedded_model):
    """Done-when check of issue 4: the role direction changes the next-token distribution
    (KL from the unsteered one), more than a random direction of the same norm."""
    rd = rp.compute_directions(embedded_model, roles=["mathematician"], layers=[15], progress=False)
    d = rd.vector("mathematician", 15)
    random_d = torch.randn(576, generator=torch.Generator().manual_seed(0))
    random_d *= d.norm() / random_d.norm()
    batch = encode_chat(
        embedded_model.tokenizer, ["Solve for x: 3x + 5 = 20. Give the value of x."]
    )

    def log_probs(*specs):
        with torch.no_grad(), steer(embedded_model, *specs):
            logits = embedded_model(batch.input_ids, attention_mask=batch.attention_mask)
        return torch.log_softmax(logits[0, -1].double(), -1)

    base = log_probs()

    def kl(p):
        return float((base.exp() * (base - p)).sum())

    assert kl(log_probs(Addition(d, 15, 0.0))) == 0.0
    assert kl(log_probs(Addition(d, 15, 1.0))) > 0.05
    assert kl(log_probs(Addition(d, 15, 1.0))) > kl(log_probs(Addition(random_d, 15, 1.0)))
    assert kl(log_probs(Ablation(d))) > kl(log_probs(Ablation(random_d)))


# --- Ablation placement: "stream" (after post-norms) vs "paper" (before them) -------------


def test_ablation_placements_coincide_without_post_norms(tiny_model, batch):
    d = torch.randn(64)
    stream, paper = Ablation(d), Ablation(d, at="paper")
    assert stream.hook_names(tiny_model) != paper.hook_names(tiny_model)  # other names...
    with steer(tiny_model, stream):
        a = _logits(tiny_model, batch)
    with steer(tiny_model, paper):
        b = _logits(tiny_model, batch)
    assert torch.equal(a, b)  # ...for the same tensors


def _project(x, d_hat):
    return x - (x @ d_hat)[..., None] * d_hat


@contextmanager
def _hf_ablation(hf, d, writers):
    """The authors' hooks (utils/hook_utils.py): a forward pre-hook projecting each decoder
    layer's input, and forward hooks projecting the outputs of ``writers(layer)``."""
    d_hat = unit(d)

    def pre(module, args):
        return (_project(args[0], d_hat), *args[1:])

    def post(module, args, output):
        if isinstance(output, tuple):
            return (_project(output[0], d_hat), *output[1:])
        return _project(output, d_hat)

    handles = []
    try:
        for layer in hf.model.layers:
            handles.append(layer.register_forward_pre_hook(pre))
            handles += [module.register_forward_hook(post) for module in writers(layer)]
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module")
def gemma_pair():
    from _gemma import tiny_gemma2, tiny_gemma2_hf

    model = tiny_gemma2()
    return model, tiny_gemma2_hf(), encode_chat(model.tokenizer, PROMPTS)


@pytest.mark.parametrize(
    ("at", "writers"),
    [
        ("paper", lambda layer: (layer.self_attn, layer.mlp)),
        (
            "stream",
            lambda layer: (layer.post_attention_layernorm, layer.post_feedforward_layernorm),
        ),
    ],
)
def test_gemma2_ablation_placements_equal_hf_hooks(gemma_pair, at, writers):
    model, hf, batch = gemma_pair
    d = torch.randn(64)
    real = batch.attention_mask.bool()
    with torch.no_grad():
        with steer(model, Ablation(d, at=at)):
            ours = model(batch.input_ids, attention_mask=batch.attention_mask)
        with _hf_ablation(hf, d, writers):
            reference = hf(batch.input_ids, attention_mask=batch.attention_mask).logits
        plain = hf(batch.input_ids, attention_mask=batch.attention_mask).logits
    assert (ours - reference)[real].abs().max() < 1e-5
    assert (reference - plain)[real].abs().max() > 1e-2


def test_gemma2_placements_differ_and_only_stream_leaves_nothing_along_d(gemma_pair):
    model, _, batch = gemma_pair
    d = torch.randn(64)
    d_hat = unit(d)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(2)]
    left = {}
    for at in ("stream", "paper"):
        acts = [_record(model, batch, name, Ablation(d, at=at)) for name in names]
        left[at] = max(float((act @ d_hat).abs().max()) for act in acts)
    assert left["stream"] < 1e-4
    assert left["paper"] > 1e-1  # the post-norms write along d_hat again
    with steer(model, Ablation(d)):
        stream = _logits(model, batch)
    with steer(model, Ablation(d, at="paper")):
        paper = _logits(model, batch)
    assert (stream - paper).abs().max() > 1e-3


def test_ablation_placement_is_validated(tiny_model):
    with pytest.raises(ValueError, match=r"at='before'.*\('stream', 'paper'\)"):
        Ablation(torch.randn(64), at="before")


class ScaledAddition:
    """A user's own intervention (no base class): the built-in maths through position_hook."""

    def __init__(self, direction, layer, alpha):
        self.direction, self.layer, self.alpha = direction, layer, alpha

    def hooks(self, model, state):
        fn = rp.steering.interventions.position_hook(
            lambda x: x + self.alpha * self.direction, "all", state
        )
        return [(f"blocks.{self.layer}.hook_resid_pre", fn)]


def test_a_user_defined_intervention_steers_and_generates_like_the_builtin(tiny_model, batch):
    d = torch.randn(64) * 5
    mine, builtin = ScaledAddition(d, 1, 3.0), Addition(d, 1, 3.0)
    with steer(tiny_model, mine, attention_mask=batch.attention_mask):
        ours = _logits(tiny_model, batch)
    with steer(tiny_model, builtin, attention_mask=batch.attention_mask):
        theirs = _logits(tiny_model, batch)
    assert torch.allclose(ours, theirs, atol=1e-5)
    text = rp.generate(tiny_model, PROMPTS, [mine], max_new_tokens=6)
    assert text == rp.generate(tiny_model, PROMPTS, [builtin], max_new_tokens=6)
    assert text == rp.generate(tiny_model, PROMPTS, mine, max_new_tokens=6)  # one, unlisted
    assert rp.steering.interventions.describe(mine) == {"condition": "ScaledAddition"}
    assert rp.steering.interventions.describe(builtin)["condition"] == "addition"


def test_non_interventions_are_refused_by_name(tiny_model):
    class Impostor:
        hooks = None  # an attribute, not a method

    calls = []

    def count(act, hook):
        calls.append(1)
        return act

    with tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", count)]):
        with pytest.raises(TypeError, match="Impostor"), steer(tiny_model, Impostor()):
            pass
        with pytest.raises(TypeError, match="Impostor"):
            rp.generate(tiny_model, PROMPTS, [Impostor()], max_new_tokens=2)
    assert calls == []
    with pytest.raises(TypeError, match="got int"):
        rp.steering.interventions.check_intervention(3)


def test_persona_in_generate_is_the_system_prompt(tiny_model):
    persona = rp.generate(tiny_model, PROMPTS, [rp.Persona("lawyer")], max_new_tokens=6)
    system = rp.generate(tiny_model, PROMPTS, system="You are a lawyer.", max_new_tokens=6)
    assert persona == system
    prefixed = rp.generate(
        tiny_model, PROMPTS, [rp.Persona("lawyer", mode="prefix")], max_new_tokens=6
    )
    assert prefixed == rp.generate(
        tiny_model, [f"You are a lawyer.\n{p}" for p in PROMPTS], max_new_tokens=6
    )


def test_specs_print_short_without_tensor_dumps():
    d = torch.full((64,), 0.5)  # norm 4
    assert (
        repr(Addition(d, layer=3, alpha=2.0)) == "Addition(layer=3, alpha=2, direction=[64] |d|=4)"
    )
    assert repr(Addition(d, 3, 1.5, positions=[-1], reference_norm=12.5)) == (
        "Addition(layer=3, alpha=1.5, reference_norm=12.5, direction=[64] |d|=4, positions=(-1,))"
    )
    assert repr(Ablation(d)) == "Ablation(layers=all, at='stream', direction=[64] |d|=4)"
    assert repr(Ablation(d, layers=range(24), at="paper")) == (
        "Ablation(layers=[0..23], at='paper', direction=[64] |d|=4)"
    )
    assert "hooks_at=('hook_resid_pre',)" in repr(Ablation(d, [2], hooks_at=("hook_resid_pre",)))
    assert repr(Clamp(d, 4, -1.0, positions="generated")) == (
        "Clamp(layer=4, value=-1, direction=[64] |d|=4, positions='generated')"
    )
    big = Addition(torch.randn(4096), layer=1, hook="hook_resid_post")
    assert "tensor" not in repr(big) and len(repr(big)) < 100 and "hook_resid_post" in repr(big)


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", [-2, -1]])
def test_no_hook_reads_a_value_back_to_the_host(tiny_model, batch, positions):
    """Every hook call of an addition, an ablation and a clamp on a left-padded batch
    (and on an unpadded one): zero host read-backs, so none synchronises a GPU."""
    from _syncs import counting_syncs

    d = torch.randn(64)
    specs = [
        Addition(d, 1, 3.0, positions=positions),
        Ablation(d, positions=positions),
        Clamp(d, 0, 1.5, positions=positions),
    ]
    unpadded = encode_chat(tiny_model.tokenizer, PROMPTS[1:2])
    for b in (batch, unpadded):
        with (
            counting_syncs(tiny_model) as count,
            torch.no_grad(),
            steer(tiny_model, *specs, attention_mask=b.attention_mask) as state,
        ):
            state.prompt_length = b.input_ids.shape[1]
            tiny_model(b.input_ids, attention_mask=b.attention_mask)
        n_layers = tiny_model.cfg.n_layers
        assert count.hook_calls == 1 + 3 * n_layers + 1
        assert count.syncs == {}, dict(count.syncs)


def test_the_sync_counter_can_fail(tiny_model, batch):
    """The counter sees a hook that does read back (so a zero above means something)."""
    from _syncs import counting_syncs

    def reads_back(act, hook):
        assert bool(torch.isfinite(act).all())
        return act

    with (
        counting_syncs(tiny_model) as count,
        torch.no_grad(),
        tiny_model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", reads_back)]),
    ):
        tiny_model(batch.input_ids, attention_mask=batch.attention_mask)
    assert count.hook_calls == 1 and count.syncs["__bool__"] == 1
