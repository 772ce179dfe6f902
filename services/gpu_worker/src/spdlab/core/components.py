"""Rank-one subcomponents of one decomposed weight matrix (spec §1.2–1.3).

`V (v_dim, C)` and `U (C, u_dim)`; subcomponent c is `V[:, c] ⊗ U[c, :]`. Linear-like modules
(nn.Linear, HF Conv1D, inserted Identity) use `LinearComponents` whose summed weight `(V@U)^T`
has nn.Linear layout `(d_out, d_in)`; embeddings use `EmbeddingComponents` (weight `V@U`).
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Nonlinearity = Literal["linear", "relu"]

_GAINS: dict[str, float] = {"linear": 1.0, "relu": math.sqrt(2.0)}


def init_param_(param: Tensor, fan_val: int, nonlinearity: Nonlinearity = "linear") -> None:
    """In-place normal init with std = gain / sqrt(fan), as the research code's `init_param_`."""
    with torch.no_grad():
        param.normal_(0.0, _GAINS[nonlinearity] / math.sqrt(fan_val))


@dataclass
class WeightDeltaAndMask:
    """The delta component `Δ = W_target − W_components` (target-weight layout) and its mask `(...)`."""

    delta: Tensor
    mask: Tensor


class Components(nn.Module):
    """Shared parameters and bookkeeping of linear and embedding components."""

    def __init__(self, C: int, v_dim: int, u_dim: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.C = C
        self.V = nn.Parameter(torch.empty(v_dim, C, device=device, dtype=dtype))
        self.U = nn.Parameter(torch.empty(C, u_dim, device=device, dtype=dtype))
        init_param_(self.V, fan_val=v_dim)
        init_param_(self.U, fan_val=C)

    @property
    def weight(self) -> Tensor:
        raise NotImplementedError

    def get_component_acts(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _delta_term(self, x: Tensor, delta: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        weight_delta_and_mask: WeightDeltaAndMask | None = None,
        component_acts_cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """`(a ⊙ m) @ U [+ m_Δ · delta term] [+ bias]`, in that order (spec §1.2)."""
        acts = self.get_component_acts(x)
        if component_acts_cache is not None:
            # Gradient attributions differentiate w.r.t. a detached leaf standing in for `a`.
            component_acts_cache["pre_detach"] = acts
            acts = acts.detach().requires_grad_(True)
            component_acts_cache["post_detach"] = acts
        if mask is not None:
            acts = acts * mask
        out = acts @ self.U
        if weight_delta_and_mask is not None:
            delta, delta_mask = weight_delta_and_mask.delta, weight_delta_and_mask.mask
            assert delta_mask.shape == out.shape[:-1], (
                f"delta mask shape {tuple(delta_mask.shape)} != leading shape {tuple(out.shape[:-1])}"
            )
            out = out + delta_mask[..., None] * self._delta_term(x, delta)
        bias = getattr(self, "bias", None)
        if bias is not None:
            out = out + bias
        return out


class LinearComponents(Components):
    """Components of an nn.Linear / Conv1D / inserted Identity; `bias` is a frozen buffer copy."""

    def __init__(self, C: int, d_in: int, d_out: int, bias: Tensor | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(C, v_dim=d_in, u_dim=d_out, device=device, dtype=dtype)
        self.d_in = d_in
        self.d_out = d_out
        # A buffer, not a parameter: never trained, but persisted in the state dict when present.
        self.register_buffer("bias", None if bias is None else bias.detach().clone().to(self.V.device))

    @property
    def weight(self) -> Tensor:
        """`(V @ U)^T`, shape `(d_out, d_in)` like nn.Linear."""
        return (self.V @ self.U).T

    def get_component_acts(self, x: Tensor) -> Tensor:
        return x.to(self.V.dtype) @ self.V

    def _delta_term(self, x: Tensor, delta: Tensor) -> Tensor:
        return x.to(delta.dtype) @ delta.T


class EmbeddingComponents(Components):
    """Components of an nn.Embedding; acts are a row gather `V[ids]` (no one-hot)."""

    def __init__(self, C: int, vocab_size: int, embedding_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(C, v_dim=vocab_size, u_dim=embedding_dim, device=device, dtype=dtype)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim

    @property
    def weight(self) -> Tensor:
        """`V @ U`, shape `(vocab, d_emb)`."""
        return self.V @ self.U

    def get_component_acts(self, x: Tensor) -> Tensor:
        assert not torch.is_floating_point(x), "embedding components take integer token ids"
        return self.V[x]

    def _delta_term(self, x: Tensor, delta: Tensor) -> Tensor:
        return delta[x]
