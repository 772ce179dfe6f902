"""Sigmoid-like maps from pre-sigmoid CI values to CI values (research code: `spd/models/sigmoids.py`)."""

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

SigmoidType = Literal["normal", "hard", "leaky_hard", "upper_leaky_hard", "swish_hard"]
SigmoidFn = Callable[[Tensor], Tensor]

ALPHA = 0.01


class _LowerLeakyHard(torch.autograd.Function):
    """Forward `clamp(x, 0, 1)`; backward passes `alpha*grad` below 0 only for negative grads.

    A negative incoming gradient means gradient descent wants to *raise* the value, so a dead
    (x <= 0) CI can recover; positive gradients there are dropped. Above 1 the gradient is zero.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        below = (x <= 0) & (grad_output < 0)
        inside = (x > 0) & (x <= 1)
        zero = torch.zeros_like(grad_output)
        return torch.where(inside, grad_output, torch.where(below, ALPHA * grad_output, zero))


def lower_leaky_hard(x: Tensor) -> Tensor:
    return _LowerLeakyHard.apply(x)


def upper_leaky_hard(x: Tensor) -> Tensor:
    """0 (zero grad) below 0, identity on (0, 1], slope alpha above 1."""
    return torch.where(x > 1, 1 + ALPHA * (x - 1), x.clamp(0.0, 1.0))


def hard_sigmoid(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def swish_hard(
    x: Tensor, beta: float = 10.0, scale: float = 0.5, xshift: float = 0.5, yshift: float = 0.5
) -> Tensor:
    """Smooth hard sigmoid built from four swish terms (≈ clamp(x, 0, 1) for large beta)."""
    z = x - xshift
    sig = torch.sigmoid
    return (
        yshift
        + (z - scale) * sig(-beta * (z - scale))
        - z * sig(beta * z)
        + (z + scale) * sig(beta * (z + scale))
        - z * sig(-beta * z)
    )


_SINGLE: dict[str, SigmoidFn] = {
    "normal": torch.sigmoid,
    "hard": hard_sigmoid,
    "upper_leaky_hard": upper_leaky_hard,
    "swish_hard": swish_hard,
}


def get_sigmoid_pair(sigmoid_type: SigmoidType) -> tuple[SigmoidFn, SigmoidFn]:
    """(lower, upper) maps for a config's `sigmoid_type`; only `leaky_hard` uses two functions."""
    if sigmoid_type == "leaky_hard":
        return lower_leaky_hard, upper_leaky_hard
    if sigmoid_type not in _SINGLE:
        raise ValueError(f"unknown sigmoid_type {sigmoid_type!r}; expected one of {sorted(_SINGLE) + ['leaky_hard']}")
    fn = _SINGLE[sigmoid_type]
    return fn, fn
