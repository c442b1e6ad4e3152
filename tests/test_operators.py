import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from roleprobe.steering.operators import (
    add,
    check_direction,
    clamp_projection,
    orthogonalize_output,
    orthogonalize_rows,
    project_out,
    unit,
)

seeds = st.integers(min_value=0, max_value=10_000)


def _draw(seed, shape=(3, 5, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape[-1], generator=g) * 3


@settings(max_examples=40, deadline=None)
@given(seeds)
def test_project_out_removes_the_component_and_keeps_the_rest(seed):
    x, d = _draw(seed)
    d_hat = unit(d)
    y = project_out(x, d)
    assert (y @ d_hat).abs().max() < 1e-5
    other = torch.randn(16)
    other -= (other @ d_hat) * d_hat  # orthogonal to d
    assert torch.allclose(y @ other, x @ other, atol=1e-4)
    assert torch.allclose(project_out(y, d), y, atol=1e-5)  # idempotent


@settings(max_examples=40, deadline=None)
@given(seeds, st.floats(-5, 5), st.floats(-5, 5))
def test_addition_is_linear_in_alpha(seed, a, b):
    x, d = _draw(seed)
    assert torch.allclose(add(x, d, a + b) - x, (add(x, d, a) - x) + (add(x, d, b) - x), atol=1e-4)
    assert torch.equal(add(x, d, 0.0), x)


@settings(max_examples=40, deadline=None)
@given(seeds, st.floats(-10, 10))
def test_clamp_sets_the_projection(seed, value):
    x, d = _draw(seed)
    y = clamp_projection(x, d, value)
    assert torch.allclose(y @ unit(d), torch.full(x.shape[:-1], value), atol=1e-4)
    assert torch.allclose(clamp_projection(x, d, 0.0), project_out(x, d), atol=1e-5)


def test_weight_orthogonalisation_matches_projecting_outputs():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(8, generator=g)
    w_out = torch.randn(8, 5, generator=g)  # nn.Linear(5 -> 8) weight
    x = torch.randn(4, 5, generator=g)
    assert torch.allclose(
        x @ orthogonalize_output(w_out, d).T, project_out(x @ w_out.T, d), atol=1e-5
    )
    emb = torch.randn(10, 8, generator=g)
    assert torch.allclose(orthogonalize_rows(emb, d), project_out(emb, d))


def test_half_precision_is_computed_in_float32():
    x, d = _draw(1)
    y = project_out(x.bfloat16(), d)
    assert y.dtype == torch.bfloat16
    assert (y.float() @ unit(d)).abs().max() < 0.1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: unit(torch.zeros(4)), "zero norm"),
        (lambda: project_out(torch.randn(2, 4), torch.zeros(4)), "zero norm"),
        # (shape and dtype errors are checked directly: the test suite's jaxtyping checks
        # catch them at the operators' signatures first)
        (
            lambda: check_direction(torch.randn(5), 4),
            "5 dimensions; the model has d_model=4",
        ),
        (lambda: add(torch.randn(2, 4), torch.tensor([1.0, float("nan"), 0, 0]), 1.0), "NaN"),
        (lambda: add(torch.randn(2, 4), torch.randn(4), float("inf")), "alpha must be finite"),
        (lambda: check_direction(torch.ones(4, dtype=torch.long)), "floating-point"),
        (lambda: check_direction(torch.randn(2, 4)), "one vector"),
        (lambda: clamp_projection(torch.randn(2, 4), torch.randn(4), float("nan")), "finite"),
    ],
)
def test_bad_directions_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
