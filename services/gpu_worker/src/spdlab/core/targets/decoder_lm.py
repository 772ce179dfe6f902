"""What the research code's two pretrained decoders (GPT2Simple, LlamaSimpleMLP) share: the GELU
MLP, the weight init, and the tied-embedding language-model head. Attribute names are the research
checkpoints' parameter names (`c_fc`, `down_proj`, `h`, `ln_f`, `lm_head`), so they must not change."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_SEED = 42


def new_gelu(x: Tensor) -> Tensor:
    """Tanh-approximation GELU, written out as the research code does."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class NewGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return new_gelu(x)


class MLP(nn.Module):
    def __init__(self, n_embd: int, n_intermediate: int, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, n_intermediate, bias=bias)
        self.gelu = NewGELU()
        self.down_proj = nn.Linear(n_intermediate, n_embd, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(self.gelu(self.c_fc(x)))


class DecoderLM(nn.Module):
    """Base of a decoder whose subclass sets `h` (blocks), `ln_f` and a tied `lm_head`."""

    h: nn.ModuleList
    ln_f: nn.Module
    lm_head: nn.Linear

    @torch.no_grad()
    def init_weights(self, n_layer: int, seed: int = INIT_SEED) -> None:
        """Normal(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layer), zero biases."""
        rng = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and name != "lm_head":
                std = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
                module.weight.copy_(torch.randn(module.weight.shape, generator=rng) * std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(torch.randn(module.weight.shape, generator=rng) * 0.02)

    def decode(self, x: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Blocks, final norm and head over the embedded input: `(logits, loss)`."""
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, -2), targets.long().flatten(), ignore_index=-1)
        return logits, loss
