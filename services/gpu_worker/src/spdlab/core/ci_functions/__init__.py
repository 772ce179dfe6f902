"""CI functions: map `{path: module input}` to `{path: (..., C) pre-sigmoid CI}` (spec §2).

`make_ci_fn` builds the wrapper chosen by a config's `ci_config` (`mode` layerwise or global).
"""

from typing import Any

from torch import nn

from spdlab.core.ci_functions.global_mlp import GlobalSharedMLPCiFn
from spdlab.core.ci_functions.global_transformer import GlobalSharedTransformerCiFn
from spdlab.core.ci_functions.layerwise import LayerwiseCiFnWrapper, make_layerwise_ci_fn
from spdlab.core.ci_functions.wrapper import GlobalCiFnWrapper
from spdlab.core.components import Components, EmbeddingComponents
from spdlab.core.module_patterns import get_module_input_dim

__all__ = ["GlobalCiFnWrapper", "LayerwiseCiFnWrapper", "make_ci_fn"]


def _global_input_dims(
    target_model: nn.Module, module_to_c: dict[str, int], components: dict[str, Components]
) -> dict[str, tuple[int, int]]:
    """path -> (input width, C) in `module_to_c` order; embeddings contribute their C (acts `V[ids]`)."""
    dims = {}
    for path, C in module_to_c.items():
        comp = components[path]
        width = comp.C if isinstance(comp, EmbeddingComponents) else get_module_input_dim(target_model.get_submodule(path))
        dims[path] = (width, C)
    return dims


def _make_global_fn(layer_configs: dict[str, tuple[int, int]], ci_config: Any) -> nn.Module:
    fn_type = ci_config.fn_type
    if fn_type == "global_shared_mlp":
        if ci_config.hidden_dims is None:
            raise ValueError("global_shared_mlp needs ci_config.hidden_dims")
        return GlobalSharedMLPCiFn(layer_configs, list(ci_config.hidden_dims))
    if fn_type == "global_shared_transformer":
        cfg = ci_config.simple_transformer_ci_cfg
        if cfg is None:
            raise ValueError("global_shared_transformer needs ci_config.simple_transformer_ci_cfg")
        hidden = cfg.mlp_hidden_dim if cfg.mlp_hidden_dim is not None else [4 * cfg.d_model]
        return GlobalSharedTransformerCiFn(
            layer_configs,
            d_model=cfg.d_model,
            n_blocks=cfg.n_blocks,
            n_heads=cfg.attn_config.n_heads,
            mlp_hidden_dims=list(hidden),
            max_len=cfg.attn_config.max_len,
            rope_base=cfg.attn_config.rope_base,
        )
    if fn_type == "global_reverse_residual":
        from spdlab.core.ci_functions.reverse_residual import GlobalReverseResidualCiFn

        return GlobalReverseResidualCiFn(layer_configs, ci_config)
    raise ValueError(f"unknown global CI fn_type {fn_type!r}")


def make_ci_fn(
    target_model: nn.Module, module_to_c: dict[str, int], components: dict[str, Components], ci_config: Any
) -> nn.Module:
    """`LayerwiseCiFnWrapper` (mode layerwise) or `GlobalCiFnWrapper` (mode global)."""
    if ci_config.mode == "layerwise":
        fns = {
            path: make_layerwise_ci_fn(
                ci_config.fn_type,
                C,
                get_module_input_dim(target_model.get_submodule(path)),
                list(ci_config.hidden_dims),
                isinstance(components[path], EmbeddingComponents),
            )
            for path, C in module_to_c.items()
        }
        return LayerwiseCiFnWrapper(fns, components, ci_config.fn_type)
    if ci_config.mode == "global":
        layer_configs = _global_input_dims(target_model, module_to_c, components)
        return GlobalCiFnWrapper(_make_global_fn(layer_configs, ci_config), components)
    raise ValueError(f"unknown ci_config mode {ci_config.mode!r}")
