"""ResidMLP: embed, residual MLP layers, unembed (spec §5.2)."""

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class ResidMLPModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int
    d_embed: int
    d_mlp: int
    n_layers: int
    act_fn_name: Literal["gelu", "relu"] = "relu"
    in_bias: bool = False
    out_bias: bool = False


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int, act_fn_name: str, in_bias: bool, out_bias: bool):
        super().__init__()
        self.mlp_in = nn.Linear(d_model, d_mlp, bias=in_bias)
        self.mlp_out = nn.Linear(d_mlp, d_model, bias=out_bias)
        self.act = F.relu if act_fn_name == "relu" else F.gelu

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp_out(self.act(self.mlp_in(x)))


class ResidMLP(nn.Module):
    """`r = x W_E; r += mlp_out(act(mlp_in(r))) per layer; out = r W_U` (W_E, W_U not decomposed)."""

    def __init__(self, config: ResidMLPModelConfig):
        super().__init__()
        self.config = config
        self.W_E = nn.Parameter(torch.empty(config.n_features, config.d_embed))
        self.W_U = nn.Parameter(torch.empty(config.d_embed, config.n_features))
        nn.init.kaiming_normal_(self.W_E)
        nn.init.kaiming_normal_(self.W_U)
        self.layers = nn.ModuleList(
            MLP(config.d_embed, config.d_mlp, config.act_fn_name, config.in_bias, config.out_bias)
            for _ in range(config.n_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        residual = x @ self.W_E
        for layer in self.layers:
            residual = residual + layer(residual)
        return residual @ self.W_U
