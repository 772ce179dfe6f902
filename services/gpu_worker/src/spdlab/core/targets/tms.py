"""TMS (toy model of superposition): `relu(linear2(hidden_layers(linear1(x))))` (spec §5.1)."""

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class TMSModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_features: int
    n_hidden: int
    n_hidden_layers: int = 0
    tied_weights: bool = False
    init_bias_to_zero: bool = False
    device: str = "cpu"  # kept for config compatibility; placement is the caller's choice


class TMSModel(nn.Module):
    def __init__(self, config: TMSModelConfig):
        super().__init__()
        self.config = config
        self.linear1 = nn.Linear(config.n_features, config.n_hidden, bias=False)
        self.hidden_layers = nn.ModuleList(
            nn.Linear(config.n_hidden, config.n_hidden, bias=False) for _ in range(config.n_hidden_layers)
        )
        self.linear2 = nn.Linear(config.n_hidden, config.n_features, bias=True)
        if config.init_bias_to_zero:
            with torch.no_grad():
                self.linear2.bias.zero_()
        self.tie_weights_()

    def tie_weights_(self) -> None:
        """With `tied_weights`, `linear2.weight := linear1.weight^T` (call again after loading)."""
        if self.config.tied_weights:
            with torch.no_grad():
                self.linear2.weight.copy_(self.linear1.weight.T)

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.linear1(x)
        for layer in self.hidden_layers:
            hidden = layer(hidden)
        return F.relu(self.linear2(hidden))
