"""Train the demo's tiny LlamaSimpleMLP with next-token cross-entropy on packed story windows."""

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel, no_progress
from spdlab.core.schedules import get_scheduled_value
from spdlab.core.targets.llama_simple_mlp import LlamaSimpleMLP, LlamaSimpleMLPConfig


class TargetTrainConfig(BaseModel):
    """Architecture and optimisation of the demo target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_intermediate: int = 256
    n_ctx: int = 128  # long enough for the attribution benchmark at prompt length 128
    steps: int = 1200
    batch_size: int = 8
    lr: float = 1e-2
    warmup_pct: float = 0.05
    final_lr_frac: float = 0.1
    weight_decay: float = 0.0
    eval_windows: int = 256
    seed: int = 0


@dataclass(frozen=True)
class _Schedule:
    start_val: float
    warmup_pct: float
    final_val_frac: float
    fn_type: Literal["constant", "linear", "cosine"] = "cosine"


@dataclass
class TrainedTarget:
    model: LlamaSimpleMLP
    eval_loss: float
    final_train_loss: float


def llama_config(cfg: TargetTrainConfig, vocab_size: int) -> LlamaSimpleMLPConfig:
    """The research-code model config for `cfg` (all heads are KV heads; RoPE over adjacent pairs)."""
    return LlamaSimpleMLPConfig(
        model_type="LlamaSimpleMLP",
        block_size=cfg.n_ctx,
        vocab_size=vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        n_intermediate=cfg.n_intermediate,
        mlp_bias=False,
        attn_bias=False,
        rotary_adjacent_pairs=True,
        rotary_dim=cfg.n_embd // cfg.n_head,
        rotary_base=10000,
        n_ctx=cfg.n_ctx,
        n_key_value_heads=cfg.n_head,
        use_grouped_query_attention=True,
        flash_attention=True,
        rms_norm_eps=1e-5,
    )


def pack_windows(tokens: torch.Tensor, n_ctx: int) -> torch.Tensor:
    """Cut a 1-D token stream into non-overlapping rows of exactly `n_ctx` tokens (tail dropped)."""
    n = tokens.numel() // n_ctx
    return tokens[: n * n_ctx].view(n, n_ctx)


def next_token_loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting `windows[:, 1:]` from `windows[:, :-1]` and before."""
    logits = model(windows)[0]
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), windows[:, 1:].flatten())


@torch.no_grad()
def eval_loss(model: torch.nn.Module, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Token-weighted mean next-token cross-entropy over all `windows`."""
    model.eval()
    total = sum(float(next_token_loss(model, w)) * w.shape[0] for w in windows.split(batch_size))
    return total / windows.shape[0]


def train_target(
    cfg: TargetTrainConfig,
    train_windows: torch.Tensor,
    eval_windows: torch.Tensor,
    vocab_size: int,
    *,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
) -> TrainedTarget:
    """Train a fresh LlamaSimpleMLP on random batches of `train_windows` `(N, n_ctx)`."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = LlamaSimpleMLP(llama_config(cfg, vocab_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    schedule = _Schedule(cfg.lr, cfg.warmup_pct, cfg.final_lr_frac)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(cfg.steps):
        check_cancel(should_cancel)
        for group in opt.param_groups:
            group["lr"] = get_scheduled_value(step, cfg.steps, schedule)
        idx = torch.randint(train_windows.shape[0], (cfg.batch_size,), generator=gen)
        loss = next_token_loss(model, train_windows[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            progress(step, cfg.steps, f"target loss {loss.item():.3f}")
    progress(cfg.steps, cfg.steps, f"target loss {loss.item():.3f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return TrainedTarget(model=model, eval_loss=eval_loss(model, eval_windows), final_train_loss=loss.item())
