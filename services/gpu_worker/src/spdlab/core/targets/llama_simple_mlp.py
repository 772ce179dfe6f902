"""LlamaSimpleMLP: a Llama-style decoder with a plain GELU MLP (spec §5.3).

Parameter names match the research code's `spd/pretrain/models/llama_simple_mlp.py`, so its
checkpoints load strictly. Returns `(logits, loss)`; SPD reads element 0 (`idx_0`).
"""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from spdlab.core.targets.decoder_lm import MLP, DecoderLM


class LlamaSimpleMLPConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_type: Literal["LlamaSimpleMLP"] = "LlamaSimpleMLP"
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_intermediate: int = 768 * 4
    mlp_bias: bool = False
    attn_bias: bool = False
    rotary_adjacent_pairs: bool = False
    rotary_dim: int = 768 // 12  # ignored: the rotary dim is always d_head (as in the research code)
    rotary_base: int = 10000
    n_ctx: int = 1024
    n_key_value_heads: int = 12 // 4
    use_grouped_query_attention: bool = True
    flash_attention: bool = True
    rms_norm_eps: float = 1e-6


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        in_dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(in_dtype)


def rotary_tables(d_head: int, n_ctx: int, base: float, adjacent_pairs: bool) -> tuple[Tensor, Tensor]:
    """sin, cos of shape `(n_ctx, d_head)`; frequencies repeated pairwise or by halves."""
    pos = torch.arange(n_ctx, dtype=torch.float32)
    dim = torch.arange(d_head // 2, dtype=torch.float32)
    freq = base ** (dim / (d_head / 2))
    freq = freq.repeat_interleave(2) if adjacent_pairs else freq.repeat(2)
    angles = pos[:, None] / freq[None, :]
    return torch.sin(angles), torch.cos(angles)


def rotate(x: Tensor, adjacent_pairs: bool) -> Tensor:
    """Adjacent pairs: `(x0, x1) -> (-x1, x0)`; else half split: `[x1, x2] -> [-x2, x1]`."""
    if adjacent_pairs:
        return torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LlamaSimpleMLPConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.n_embd // config.n_head
        self.use_gqa = config.use_grouped_query_attention
        self.n_kv_heads = config.n_key_value_heads if self.use_gqa else config.n_head
        self.adjacent_pairs = config.rotary_adjacent_pairs
        self.n_ctx = config.n_ctx
        self.flash_attention = config.flash_attention
        if self.use_gqa:
            kv_dim = self.n_kv_heads * self.head_dim
            self.q_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.attn_bias)
            self.k_proj = nn.Linear(config.n_embd, kv_dim, bias=config.attn_bias)
            self.v_proj = nn.Linear(config.n_embd, kv_dim, bias=config.attn_bias)
        else:
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.attn_bias)
        self.o_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.attn_bias)
        sin, cos = rotary_tables(self.head_dim, config.n_ctx, config.rotary_base, self.adjacent_pairs)
        self.register_buffer("rotary_sin", sin, persistent=False)
        self.register_buffer("rotary_cos", cos, persistent=False)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.use_gqa:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return self.c_attn(x).split(self.n_embd, dim=-1)  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)

        positions = torch.arange(T, device=x.device).clamp(max=self.n_ctx - 1)
        cos = self.rotary_cos[positions].to(q.dtype)
        sin = self.rotary_sin[positions].to(q.dtype)
        q = q * cos + rotate(q, self.adjacent_pairs) * sin
        k = k * cos + rotate(k, self.adjacent_pairs) * sin

        repeat = self.n_head // self.n_kv_heads
        if repeat > 1:
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, config: LlamaSimpleMLPConfig):
        super().__init__()
        self.rms_1 = LlamaRMSNorm(config.n_embd, eps=config.rms_norm_eps)
        self.attn = CausalSelfAttention(config)
        self.rms_2 = LlamaRMSNorm(config.n_embd, eps=config.rms_norm_eps)
        self.mlp = MLP(config.n_embd, config.n_intermediate, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.rms_1(x))
        return x + self.mlp(self.rms_2(x))


class LlamaSimpleMLP(DecoderLM):
    def __init__(self, config: LlamaSimpleMLPConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = LlamaRMSNorm(config.n_embd, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # tied
        self.init_weights(config.n_layer)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        assert idx.shape[-1] <= self.config.block_size, "sequence longer than block_size"
        return self.decode(self.wte(idx), targets)
