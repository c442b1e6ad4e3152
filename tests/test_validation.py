import pytest
import torch

import roleprobe as rp
from roleprobe.vectors.validation import auroc, projections, separation_auroc, split_half_stability


def test_auroc_against_known_values():
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.5
    # 3 of the 4 pairs are ordered, none tied
    assert auroc(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 3.0])) == 0.75
    batched = auroc(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 5.0]]))
    assert batched.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.empty(0), torch.tensor([1.0]))


@pytest.fixture(scope="module")
def split_prompts():
    return rp.builtin_prompts(["lawyer", "nurse"]).split(0.25, seed=0)


def test_projections_match_a_manual_projection(tiny_model, split_prompts):
    train, held = split_prompts
    rd = rp.compute_directions(
        tiny_model, source=train, layers=[1], positions="last", progress=False
    )
    texts = list(held.roles["nurse"].instructions)[:3]
    got = projections(tiny_model, rd, texts, progress=False)
    assert got.shape == (3, 2, 1, 1)
    batch = rp.encode_chat(tiny_model.tokenizer, texts)
    _, cache = tiny_model.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask)
    resid = cache["blocks.1.hook_resid_pre"][:, -1].double()
    unit = rd.vectors[:, 0, 0].double()
    unit = unit / unit.norm(dim=-1, keepdim=True)
    assert torch.allclose(got[:, :, 0, 0], resid @ unit.T, rtol=1e-5, atol=1e-6)


def test_separation_and_stability_shapes(tiny_model, split_prompts):
    train, held = split_prompts
    rd = rp.compute_directions(tiny_model, source=train, progress=False)
    sep = separation_auroc(tiny_model, rd, held, progress=False)
    assert sep.shape == (2, 13, 4)
    assert torch.isnan(sep[:, :, 0]).all()  # zero directions at layer 0
    assert ((sep[:, :, 1] >= 0) & (sep[:, :, 1] <= 1)).all()
    stab = split_half_stability(tiny_model, train, seed=0, progress=False)
    assert stab.shape == (2, 13, 4) and torch.isnan(stab[:, :, 0]).all()
    assert (stab[:, :, 1].abs() <= 1 + 1e-9).all()
    with pytest.raises(ValueError, match="no held-out prompts for role 'nurse'"):
        separation_auroc(tiny_model, rd, held.subset(["lawyer"]), progress=False)


def test_a_real_signal_separates_held_out_prompts_and_is_stable(tiny_model):
    """Role prompts that all share a marker word differ from generic ones in a consistent
    direction: held-out separation must be perfect and the two halves must agree."""
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "paper",
        "music",
        "glass",
        "horse",
        "bread",
        "light",
        "chair",
        "green",
        "ocean",
        "tiger",
        "smile",
        "train",
    ]
    role = [f"zzzz zzzz {w} zzzz" for w in words]
    base = [f"Tell me about the {w} you saw today." for w in words]
    prompts = rp.custom_prompts({"marker": role}, base)
    train, held = prompts.split(0.25, seed=0)
    kwargs = dict(layers=[0, 1], positions="instruction_mean", progress=False)
    rd = rp.compute_directions(tiny_model, source=train, **kwargs)
    sep = separation_auroc(tiny_model, rd, held, progress=False)
    assert sep.shape == (1, 1, 2) and (sep == 1.0).all()
    stab = split_half_stability(tiny_model, prompts, seed=0, **kwargs)
    assert (stab > 0.9).all()


def test_labelled_frames_line_up_with_the_tensors(tiny_model, split_prompts):
    train, held = split_prompts
    kwargs = dict(layers=[1], positions=[-2, -1], progress=False)
    rd = rp.compute_directions(tiny_model, source=train, **kwargs)
    sep = separation_auroc(tiny_model, rd, held, progress=False)
    frame = separation_auroc(tiny_model, rd, held, progress=False, as_frame=True)
    assert list(frame.columns) == ["role", "position", "layer", "auroc"]
    for r, role in enumerate(rd.roles):
        for p, pos in enumerate(rd.positions):
            row = frame[(frame.role == role) & (frame.position == pos) & (frame.layer == 1)]
            assert row["auroc"].tolist() == [float(sep[r, p, 0])]
    stab = split_half_stability(tiny_model, train, seed=0, **kwargs)
    labelled = split_half_stability(tiny_model, train, seed=0, as_frame=True, **kwargs)
    assert list(labelled.columns) == ["role", "position", "layer", "stability"]
    assert labelled.set_index(["role", "position", "layer"]).loc[("nurse", -2, 1), "stability"] == (
        pytest.approx(float(stab[rd.role_index("nurse"), 0, 0]))
    )
    # the tensor form is unchanged for existing callers (pipeline: auc.flatten().tolist())
    assert isinstance(sep, torch.Tensor) and sep.flatten().tolist() == frame["auroc"].tolist()


def test_a_missing_held_out_role_fails_before_any_forward_pass(tiny_model, split_prompts):
    train, held = split_prompts
    rd = rp.compute_directions(tiny_model, source=train, layers=[1], progress=False)
    calls = []

    def count(act, hook):
        calls.append(1)
        return act

    hooks = [("blocks.0.hook_resid_pre", count)]
    with (
        tiny_model.hooks(fwd_hooks=hooks),
        pytest.raises(ValueError, match="no held-out prompts for role 'nurse'"),
    ):
        separation_auroc(tiny_model, rd, held.subset(["lawyer"]), progress=False)
    assert calls == []
