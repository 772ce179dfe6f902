"""`global_shared_mlp`: one MLP over all modules' inputs concatenated (spec §2.5)."""

import torch
from torch import Tensor, nn

from spdlab.core.ci_functions.blocks import mlp_stack


class GlobalSharedMLPCiFn(nn.Module):
    """`cat(inputs in sorted path order) -> MLP -> split by C in the same order`.

    Quirk kept: the order is sorted module paths, not `module_to_c` order; inputs are not normalized.
    """

    def __init__(self, layer_configs: dict[str, tuple[int, int]], hidden_dims: list[int]):
        """`layer_configs`: path -> (input width, C)."""
        super().__init__()
        self.layer_order = sorted(layer_configs)
        self.split_sizes = [layer_configs[name][1] for name in self.layer_order]
        total_in = sum(layer_configs[name][0] for name in self.layer_order)
        self.layers = mlp_stack(total_in, hidden_dims, sum(self.split_sizes))

    def forward(self, input_acts: dict[str, Tensor]) -> dict[str, Tensor]:
        x = torch.cat([input_acts[name] for name in self.layer_order], dim=-1)
        out = self.layers(x).split(self.split_sizes, dim=-1)
        return dict(zip(self.layer_order, out, strict=True))
