"""`global_shared_transformer`: a small bidirectional transformer over all modules' inputs (spec §2.6)."""

import torch
from torch import Tensor, nn

from spdlab.core.ci_functions.blocks import Linear, TransformerBlock, rms_norm


class GlobalSharedTransformerCiFn(nn.Module):
    """RMS-norm each input, concat (sorted path order), project, blocks, output head, split.

    Quirks kept from the research code: concat/split order is **sorted** module paths; attention is
    **bidirectional**; no final norm before the head; a 2-D input gets a length-1 sequence axis.
    """

    def __init__(
        self,
        layer_configs: dict[str, tuple[int, int]],
        d_model: int,
        n_blocks: int,
        n_heads: int,
        mlp_hidden_dims: list[int],
        max_len: int = 2048,
        rope_base: float = 10000.0,
    ):
        super().__init__()
        self.layer_order = sorted(layer_configs)
        self.split_sizes = [layer_configs[name][1] for name in self.layer_order]
        total_in = sum(layer_configs[name][0] for name in self.layer_order)
        self._input_projector = Linear(total_in, d_model, nonlinearity="relu")
        self._blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, mlp_hidden_dims, max_len, rope_base) for _ in range(n_blocks)
        )
        self._output_head = Linear(d_model, sum(self.split_sizes), nonlinearity="linear")

    def forward(self, input_acts: dict[str, Tensor]) -> dict[str, Tensor]:
        x = torch.cat([rms_norm(input_acts[name]) for name in self.layer_order], dim=-1)
        x = self._input_projector(x)
        added_seq_axis = x.ndim < 3
        if added_seq_axis:
            x = x.unsqueeze(-2)
        for block in self._blocks:
            x = block(x)
        out = self._output_head(x)
        if added_seq_axis:
            out = out.squeeze(-2)
        return dict(zip(self.layer_order, out.split(self.split_sizes, dim=-1), strict=True))
