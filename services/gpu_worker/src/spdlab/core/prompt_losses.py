"""Losses of one prompt's masked forward, used by CI optimization and interventions (app_backend §3.2).

Each loss maps masked logits `[N, S, V]` (a batch of N mask settings over the same prompt) and the
target model's logits `[S, V]` to one value per batch element, so batched optimizations stay
independent per element. `coeff` is carried for the caller; the functions here never apply it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CELoss:
    """Cross-entropy of the logits at `position` against `label_token`."""

    position: int
    label_token: int
    coeff: float = 1.0
    kind: Literal["ce"] = "ce"


@dataclass(frozen=True)
class KLLoss:
    """KL(target ‖ masked) at `position`, summed over the vocabulary."""

    position: int
    coeff: float = 1.0
    kind: Literal["kl"] = "kl"


@dataclass(frozen=True)
class LogitLoss:
    """Minus the logit of `label_token` at `position`."""

    position: int
    label_token: int
    coeff: float = 1.0
    kind: Literal["logit"] = "logit"


@dataclass(frozen=True)
class MeanKLLoss:
    """KL(target ‖ masked) per position, averaged over positions (interventions without a graph loss)."""

    coeff: float = 1.0
    kind: Literal["mean_kl"] = "mean_kl"


PromptLoss = CELoss | KLLoss | LogitLoss | MeanKLLoss


def loss_position(loss: PromptLoss) -> int | None:
    return None if isinstance(loss, MeanKLLoss) else loss.position


def label_token(loss: PromptLoss) -> int | None:
    return loss.label_token if isinstance(loss, CELoss | LogitLoss) else None


def validate_loss(loss: PromptLoss, seq_len: int, vocab_size: int) -> None:
    """Raise `ValueError` naming the field when the loss does not fit the prompt or vocabulary."""
    pos = loss_position(loss)
    if pos is not None and not 0 <= pos < seq_len:
        raise ValueError(f"loss.position {pos} is outside the prompt (length {seq_len})")
    label = label_token(loss)
    if label is not None and not 0 <= label < vocab_size:
        raise ValueError(f"loss.label_token {label} is outside the vocabulary (size {vocab_size})")


def _kl_per_position(logits: Tensor, target_logits: Tensor) -> Tensor:
    """KL(softmax(target) ‖ softmax(logits)) over the last axis; broadcasts target over the batch."""
    log_q = F.log_softmax(logits, dim=-1)
    log_p = F.log_softmax(target_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def prompt_loss(loss: PromptLoss, logits: Tensor, target_logits: Tensor) -> Tensor:
    """Per-element loss `[N]` for masked logits `[N, S, V]` and target logits `[S, V]`."""
    match loss:
        case CELoss(position=pos, label_token=label):
            return -F.log_softmax(logits[:, pos], dim=-1)[:, label]
        case KLLoss(position=pos):
            return _kl_per_position(logits[:, pos], target_logits[pos])
        case LogitLoss(position=pos, label_token=label):
            return -logits[:, pos, label]
        case MeanKLLoss():
            return _kl_per_position(logits, target_logits).mean(-1)
    raise ValueError(f"unknown loss {loss!r}")


def label_probability(loss: PromptLoss, logits: Tensor) -> Tensor | None:
    """Probability `[N]` of the label token at the loss position (CE and logit losses only)."""
    label = label_token(loss)
    if label is None:
        return None
    pos = loss_position(loss)
    return logits[:, pos].softmax(-1)[:, label]
