"""Building blocks of the CI functions (research code: `spd/models/components.py`).

State-dict compatibility matters here: `Linear` and `ParallelLinear` store their weight as
`W` of shape `(in, out)` / `(C, in, out)` — the transpose of `nn.Linear` — plus a bias `b`;
`SelfAttention` uses plain `nn.Linear`s (`(out, in)`) and a persistent `rope.inv_freq` buffer.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spdlab.core.components import Nonlinearity, init_param_


def gelu() -> nn.Module:
    """The CI functions' only nonlinearity: exact (erf) GELU."""
    return nn.GELU()


def rms_norm(x: Tensor) -> Tensor:
    """Parameter-free RMS norm over the last axis; eps=None means the dtype's machine epsilon."""
    return F.rms_norm(x, (x.shape[-1],))


class Linear(nn.Module):
    """`x @ W + b` with `W` stored `(in, out)`; `b` zero-initialised."""

    def __init__(self, input_dim: int, output_dim: int, nonlinearity: Nonlinearity = "linear"):
        super().__init__()
        self.W = nn.Parameter(torch.empty(input_dim, output_dim))
        self.b = nn.Parameter(torch.zeros(output_dim))
        init_param_(self.W, fan_val=input_dim, nonlinearity=nonlinearity)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.W + self.b


class ParallelLinear(nn.Module):
    """C independent linear maps over a `(..., C, in)` tensor (a size-1 C axis broadcasts)."""

    def __init__(self, C: int, input_dim: int, output_dim: int, nonlinearity: Nonlinearity = "linear"):
        super().__init__()
        self.W = nn.Parameter(torch.empty(C, input_dim, output_dim))
        self.b = nn.Parameter(torch.zeros(C, output_dim))
        init_param_(self.W, fan_val=input_dim, nonlinearity=nonlinearity)

    def forward(self, x: Tensor) -> Tensor:
        C, d_in, d_out = self.W.shape
        if d_in == 1:
            # Width-1 input: an outer product. A broadcast multiply is exact (like the K=1 matmul)
            # and avoids a batched matmul over tiny matrices, the CPU hot spot of `mlp` CI fns.
            return x * self.W[:, 0, :] + self.b
        if x.shape[-2] == 1 and C > 1:
            # One input shared by all C maps (`vector_mlp`): a single matmul against the C
            # weight matrices side by side instead of C copies of the input.
            stacked = self.W.transpose(0, 1).reshape(d_in, C * d_out)
            return (x[..., 0, :] @ stacked).unflatten(-1, (C, d_out)) + self.b
        if d_out == 1:
            # Width-1 output: a per-component dot product.
            return (x * self.W[..., 0]).sum(dim=-1, keepdim=True) + self.b
        return torch.einsum("...ci,cio->...co", x, self.W) + self.b


def mlp_stack(input_dim: int, hidden_dims: list[int], output_dim: int) -> nn.Sequential:
    """`Linear(relu gain) + GELU` per hidden dim, then `Linear(linear gain)`.

    Parameter names are `{0,2,4,...}.W/b` (odd indices are the parameter-free GELUs); an empty
    `hidden_dims` gives a single Linear.
    """
    layers = nn.Sequential()
    in_dim = input_dim
    for h in hidden_dims:
        layers.append(Linear(in_dim, h, nonlinearity="relu"))
        layers.append(gelu())
        in_dim = h
    layers.append(Linear(in_dim, output_dim, nonlinearity="linear"))
    return layers


def parallel_mlp_stack(C: int, input_dim: int, hidden_dims: list[int]) -> nn.Sequential:
    """Per-component MLPs `input_dim -> hidden... -> 1` made of `ParallelLinear`s."""
    layers = nn.Sequential()
    in_dim = input_dim
    for h in hidden_dims:
        layers.append(ParallelLinear(C, in_dim, h, nonlinearity="relu"))
        layers.append(gelu())
        in_dim = h
    layers.append(ParallelLinear(C, in_dim, 1, nonlinearity="linear"))
    return layers


class RotaryEmbedding(nn.Module):
    """Half-split RoPE: `x*cos + rotate_half(x)*sin` with `rotate_half([x1, x2]) = [-x2, x1]`."""

    def __init__(self, d_head: int, base: float = 10000.0):
        super().__init__()
        assert d_head % 2 == 0, f"RoPE needs an even head dim, got {d_head}"
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head))
        # Persistent: the research checkpoints carry `rope.inv_freq`.
        self.register_buffer("inv_freq", inv_freq, persistent=True)

    def forward(self, x: Tensor) -> Tensor:
        """Rotate `x` of shape `(..., S, d_head)` by positions `0..S-1`."""
        positions = torch.arange(x.shape[-2], device=x.device, dtype=self.inv_freq.dtype)
        angles = torch.outer(positions, self.inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with RoPE over the second-to-last axis.

    Quirk kept from the research code: attention is **bidirectional** (non-causal SDPA), so the
    CI at position t depends on later tokens too. `max_len` is only an assertion bound.
    Accepts `(..., S, d_model)`; for a 2-D input the first axis acts as the sequence axis.
    """

    def __init__(self, d_model: int, n_heads: int, max_len: int = 2048, rope_base: float = 10000.0):
        super().__init__()
        assert d_model % n_heads == 0, f"d_model {d_model} not divisible by n_heads {n_heads}"
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.max_len = max_len
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.rope = RotaryEmbedding(self.d_head, rope_base)

    def _split_heads(self, x: Tensor) -> Tensor:
        # (..., S, D) -> (..., H, S, d_head)
        return x.unflatten(-1, (self.n_heads, self.d_head)).transpose(-2, -3)

    def forward(self, x: Tensor) -> Tensor:
        seq_len = x.shape[-2]
        assert seq_len <= self.max_len, f"sequence length {seq_len} exceeds max_len {self.max_len}"
        q = self.rope(self._split_heads(self.q_proj(x)))
        k = self.rope(self._split_heads(self.k_proj(x)))
        v = self._split_heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.out_proj(y.transpose(-2, -3).flatten(-2))


class TransformerBlock(nn.Module):
    """Pre-norm block with parameter-free norms: `x += attn(rms(x)); x += mlp(rms(x))`."""

    def __init__(
        self, d_model: int, n_heads: int, mlp_hidden_dims: list[int], max_len: int, rope_base: float
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, max_len=max_len, rope_base=rope_base)
        self.mlp = mlp_stack(d_model, mlp_hidden_dims, d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(rms_norm(x))
        return x + self.mlp(rms_norm(x))
