import pytest
import torch

from roleprobe.model.chat import encode_chat
from roleprobe.steering.interventions import Addition, SteerState, steer
from roleprobe.steering.rows import RowAdditions, add_per_row

PROMPTS = ["Hi", "Describe the water cycle briefly.", "What is two plus two?"]
LAYERS = [1, 3, 1]  # rows 0 and 2 share a layer, row 1 has its own


@pytest.fixture(scope="module")
def batch(tiny_model):
    return encode_chat(tiny_model.tokenizer, PROMPTS)  # left-padded: rows differ in length


def _logits(model, ids, mask, *interventions):
    with torch.no_grad(), steer(model, *interventions, attention_mask=mask):
        return model(ids, attention_mask=mask)


def test_add_per_row_adds_each_rows_vector_everywhere():
    x = torch.randn(2, 3, 4)
    v = torch.randn(2, 4)
    assert torch.equal(add_per_row(x, v), torch.stack([x[0] + v[0], x[1] + v[1]]))
    half = add_per_row(x.bfloat16(), v)  # summed in float32, then rounded once
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, (x.bfloat16().float() + v[:, None]).bfloat16())


@pytest.mark.parametrize("positions", ["all", [-3, -1]])
def test_row_additions_equal_one_addition_per_row(tiny_model, batch, positions):
    vectors = 4 * torch.randn(3, 64)
    spec = RowAdditions(vectors, LAYERS, alpha=2.0, positions=positions)
    ids, mask = batch.input_ids, batch.attention_mask
    together = _logits(tiny_model, ids, mask, spec)
    baseline = _logits(tiny_model, ids, mask)
    real = mask.bool()
    for i, layer in enumerate(LAYERS):
        alone = _logits(
            tiny_model,
            ids[i : i + 1],
            mask[i : i + 1],
            Addition(vectors[i], layer, 2.0, positions=positions),
        )
        assert torch.allclose(together[i][real[i]], alone[0][real[i]], atol=1e-4)
        assert not torch.allclose(together[i][real[i]], baseline[i][real[i]], atol=1e-2)
    assert torch.equal(_logits(tiny_model, ids, mask), baseline)  # restored after steer


def test_rows_equal_the_builtin_addition_bitwise(tiny_model, batch):
    """Every row with the same vector at the same layer is exactly one batched Addition."""
    d = torch.randn(64)
    ids, mask = batch.input_ids, batch.attention_mask
    rows = RowAdditions(d.expand(3, 64).clone(), [2, 2, 2], alpha=3.0)
    assert torch.equal(
        _logits(tiny_model, ids, mask, rows), _logits(tiny_model, ids, mask, Addition(d, 2, 3.0))
    )
    zero = RowAdditions(torch.randn(3, 64), LAYERS, alpha=0.0)
    assert torch.equal(_logits(tiny_model, ids, mask, zero), _logits(tiny_model, ids, mask))


def test_a_batch_of_the_wrong_size_is_one_clear_error(tiny_model, batch):
    spec = RowAdditions(torch.randn(2, 64), [1, 2])
    with pytest.raises(ValueError, match=r"RowAdditions has 2 rows .* has 3: run one row per"):
        _logits(tiny_model, batch.input_ids, batch.attention_mask, spec)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RowAdditions(torch.randn(2, 64), [1]), "2 vectors but 1 layers"),
        (lambda: RowAdditions(torch.randn(64), [1]), r"float \[rows, d_model\]"),
        (lambda: RowAdditions(torch.full((1, 64), torch.nan), [1]), "NaN"),
        (lambda: RowAdditions(torch.randn(1, 64), [1], alpha=float("inf")), "alpha"),
        (lambda: RowAdditions(torch.randn(1, 64), [1], positions="middle"), "unknown positions"),
    ],
)
def test_bad_row_additions_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_layers_and_widths_are_refused_before_a_forward_pass(tiny_model):
    with pytest.raises(ValueError, match="out of range"):
        RowAdditions(torch.randn(2, 64), [1, 9]).hooks(tiny_model, SteerState())
    with pytest.raises(ValueError, match="d_model=64"):
        RowAdditions(torch.randn(2, 32), [1, 2]).hooks(tiny_model, SteerState())


def test_one_hook_per_distinct_layer_and_a_short_repr(tiny_model):
    spec = RowAdditions(torch.randn(3, 64), LAYERS, alpha=3.0, positions=[-1])
    names = [name for name, _ in spec.hooks(tiny_model, SteerState())]
    assert names == ["blocks.1.hook_resid_pre", "blocks.3.hook_resid_pre"]
    assert repr(spec) == "RowAdditions(rows=3, layers=[1, 3, 1], alpha=3, positions=(-1,))"
    assert spec.columns()["layers"] == "1,3,1"


@pytest.mark.parametrize("positions", ["all", "generated", [-2]])
def test_the_hook_never_synchronises_with_the_host(tiny_model, monkeypatch, positions):
    """No bool(tensor), .item(), .tolist(), .cpu() or .numpy() inside the hook."""
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[0, :2] = 0
    state = SteerState(attention_mask=mask, prompt_length=5)
    spec = RowAdditions(torch.randn(3, 64), LAYERS, positions=positions)
    hooks = spec.hooks(tiny_model, state)

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronisation in a hook")

    act = torch.randn(3, 1, 64)  # a decoding step: the last of 6 columns, generated
    expected = [fn(act, hook=None) for _, fn in hooks]
    for name in ("__bool__", "item", "tolist", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    for _ in range(2):
        outs = [fn(act, hook=None) for _, fn in hooks]
    monkeypatch.undo()
    for out, want in zip(outs, expected, strict=True):
        assert torch.equal(out, want)
    changed = [bool((out != act).any(dim=-1).any()) for out in outs]
    assert changed == [positions != [-2]] * 2
