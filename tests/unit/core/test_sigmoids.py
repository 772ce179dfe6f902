import pytest
import torch

from spdlab.core.sigmoids import (
    ALPHA,
    get_sigmoid_pair,
    lower_leaky_hard,
    swish_hard,
    upper_leaky_hard,
)


def _grad(fn, x: torch.Tensor, upstream: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    fn(x).backward(upstream)
    return x.grad


def test_lower_leaky_forward_is_clamp():
    x = torch.linspace(-3, 3, 61)
    assert torch.equal(lower_leaky_hard(x), x.clamp(0, 1))


def test_lower_leaky_backward_is_asymmetric():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5])
    neg = _grad(lower_leaky_hard, x, -torch.ones_like(x))
    pos = _grad(lower_leaky_hard, x, torch.ones_like(x))
    # x <= 0: only negative upstream grads pass, scaled by alpha
    assert torch.allclose(neg[:3], torch.full((3,), -ALPHA))
    assert torch.equal(pos[:3], torch.zeros(3))
    # (0, 1]: identity; > 1: zero
    assert torch.equal(neg[3:5], -torch.ones(2)) and torch.equal(pos[3:5], torch.ones(2))
    assert neg[5] == 0 and pos[5] == 0


def test_upper_leaky_values_and_grads():
    x = torch.tensor([-1.0, 0.5, 1.0, 3.0])
    y = upper_leaky_hard(x)
    assert torch.allclose(y, torch.tensor([0.0, 0.5, 1.0, 1 + ALPHA * 2.0]))
    assert (upper_leaky_hard(torch.randn(1000) * 5) >= 0).all()
    g = _grad(upper_leaky_hard, x, torch.ones_like(x))
    assert torch.allclose(g, torch.tensor([0.0, 1.0, 1.0, ALPHA]))


def test_swish_hard_approaches_hard_sigmoid_far_from_kinks():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.allclose(swish_hard(x), x.clamp(0, 1), atol=1e-3)


def test_sigmoid_pairs():
    lo, up = get_sigmoid_pair("leaky_hard")
    assert lo is lower_leaky_hard and up is upper_leaky_hard
    lo, up = get_sigmoid_pair("normal")
    assert lo is up and torch.allclose(lo(torch.zeros(1)), torch.tensor([0.5]))
    with pytest.raises(ValueError, match="unknown sigmoid_type"):
        get_sigmoid_pair("bogus")  # type: ignore[arg-type]
