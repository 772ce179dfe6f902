"""Layerwise CI functions: one independent CI network per decomposed module (spec §2.1–2.4)."""

from typing import Literal

from torch import Tensor, nn

from spdlab.core.ci_functions.blocks import mlp_stack, parallel_mlp_stack
from spdlab.core.components import Components

LayerwiseFnType = Literal["mlp", "vector_mlp", "shared_mlp"]


class MLPCiFn(nn.Module):
    """Per component a scalar MLP `1 -> hidden... -> 1` on its own component activation."""

    def __init__(self, C: int, hidden_dims: list[int]):
        super().__init__()
        if not hidden_dims:
            raise ValueError("mlp CI function needs non-empty hidden_dims")
        self.layers = parallel_mlp_stack(C, 1, hidden_dims)

    def forward(self, component_acts: Tensor) -> Tensor:
        return self.layers(component_acts[..., None])[..., 0]


class VectorMLPCiFn(nn.Module):
    """Per component an MLP `d_in -> hidden... -> 1` on the whole module input."""

    def __init__(self, C: int, input_dim: int, hidden_dims: list[int]):
        super().__init__()
        if not hidden_dims:
            raise ValueError("vector_mlp CI function needs non-empty hidden_dims")
        self.layers = parallel_mlp_stack(C, input_dim, hidden_dims)

    def forward(self, x: Tensor) -> Tensor:
        # The singleton C axis broadcasts against the C parallel weights.
        return self.layers(x[..., None, :])[..., 0]


class VectorSharedMLPCiFn(nn.Module):
    """One ordinary MLP `d_in -> hidden... -> C` shared by all components."""

    def __init__(self, C: int, input_dim: int, hidden_dims: list[int]):
        super().__init__()
        self.layers = mlp_stack(input_dim, hidden_dims, C)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def make_layerwise_ci_fn(
    fn_type: LayerwiseFnType, C: int, input_dim: int, hidden_dims: list[int], is_embedding: bool
) -> nn.Module:
    if fn_type == "mlp":
        return MLPCiFn(C, hidden_dims)
    if is_embedding:
        raise ValueError(f"layerwise fn_type {fn_type!r} is not allowed for embedding modules; use 'mlp'")
    if fn_type == "vector_mlp":
        return VectorMLPCiFn(C, input_dim, hidden_dims)
    if fn_type == "shared_mlp":
        return VectorSharedMLPCiFn(C, input_dim, hidden_dims)
    raise ValueError(f"unknown layerwise fn_type {fn_type!r}")


class LayerwiseCiFnWrapper(nn.Module):
    """Dict-in/dict-out over per-module CI fns stored in `_ci_fns` (keys: path with `.`→`-`).

    Quirk kept: modules are iterated in **sorted path order**, so the output dict is sorted too.
    For `mlp` the raw input is first turned into component acts (`x@V` or `V[ids]`), so
    gradients from the CI loss reach `V`.
    """

    def __init__(self, ci_fns: dict[str, nn.Module], components: dict[str, Components], fn_type: LayerwiseFnType):
        super().__init__()
        self.layer_names = sorted(ci_fns)
        self.fn_type = fn_type
        self.components = components  # plain dict: not registered here (owned by ComponentModel)
        self._ci_fns = nn.ModuleDict({name.replace(".", "-"): ci_fns[name] for name in self.layer_names})

    def forward(self, layer_acts: dict[str, Tensor]) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        for name in self.layer_names:
            x = layer_acts[name]
            if self.fn_type == "mlp":
                x = self.components[name].get_component_acts(x)
            outputs[name] = self._ci_fns[name.replace(".", "-")](x)
        return outputs
