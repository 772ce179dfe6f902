"""`ComponentModel`: a frozen target model plus components and a CI function (spec §1.8).

The target is never modified: decomposed modules are swapped in at call time by forward hooks
that replace a module's output with its (masked) component forward. API names follow the research
code's `spd/models/component_model.py` so code written against it reads the same here.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from spdlab.core.ci_functions import make_ci_fn
from spdlab.core.components import Components, EmbeddingComponents, LinearComponents
from spdlab.core.masks import ComponentsMaskInfo, Sampling, perturb_pre_sigmoid
from spdlab.core.module_patterns import (
    Identity,
    expand_module_patterns,
    identity_module_info_to_decomposed,
    insert_identity_operations_,
    is_conv1d,
    target_weight_of,
)
from spdlab.core.sigmoids import SigmoidType, get_sigmoid_pair

__all__ = [
    "CIOutputs",
    "CacheType",
    "ComponentModel",
    "OutputWithCache",
    "build_component_model",
    "expand_module_patterns",
    "insert_identity_operations_",
]

CacheType = Literal["none", "input", "output", "component_acts"]


class OutputWithCache(NamedTuple):
    output: Tensor
    cache: dict[str, Tensor]


@dataclass
class CIOutputs:
    """Per-module `(..., C)` CI values: masks use `lower_leaky`, importance minimality `upper_leaky`."""

    lower_leaky: dict[str, Tensor]
    upper_leaky: dict[str, Tensor]
    pre_sigmoid: dict[str, Tensor]


def _make_components(module: nn.Module, C: int, fallback: Tensor | None) -> Components:
    """Components matching a target module, on the module's (else the target's) device/dtype."""
    params = list(module.parameters(recurse=False)) or ([] if fallback is None else [fallback])
    device = params[0].device if params else None
    dtype = params[0].dtype if params else None
    if isinstance(module, nn.Embedding):
        return EmbeddingComponents(C, module.num_embeddings, module.embedding_dim, device=device, dtype=dtype)
    if isinstance(module, nn.Linear):
        return LinearComponents(C, module.in_features, module.out_features, bias=module.bias,
                                device=device, dtype=dtype)
    if is_conv1d(module):
        d_in, d_out = module.weight.shape
        return LinearComponents(C, int(d_in), int(d_out), bias=module.bias, device=device, dtype=dtype)
    if isinstance(module, Identity):
        return LinearComponents(C, module.d, module.d, bias=None, device=device, dtype=dtype)
    raise ValueError(f"cannot decompose module of type {type(module).__name__}")


def extract_output(raw: Any, output_attr: str | None) -> Tensor:
    """`None` → raw; `"idx_N"` → raw[N]; other string → attribute lookup."""
    if output_attr is None:
        return raw
    if output_attr.startswith("idx_"):
        return raw[int(output_attr.removeprefix("idx_"))]
    return getattr(raw, output_attr)


class ComponentModel(nn.Module):
    """Frozen `target_model` + `components` per decomposed path + `ci_fn`.

    State-dict layout (spec §4.6): `target_model.*`, `_components.<path with ->.{V,U,bias}`,
    `ci_fn.*`.
    """

    def __init__(
        self,
        target_model: nn.Module,
        module_to_c: Mapping[str, int],
        ci_config: Any,
        sigmoid_type: SigmoidType = "leaky_hard",
        pretrained_model_output_attr: str | None = None,
    ):
        super().__init__()
        for name, param in target_model.named_parameters():
            if param.requires_grad:
                raise ValueError(f"target model parameter {name!r} requires grad; freeze the target first")
        target_model.eval()
        self.target_model = target_model
        self.module_to_c: dict[str, int] = dict(module_to_c)
        self.target_module_paths: list[str] = list(self.module_to_c)
        self.pretrained_model_output_attr = pretrained_model_output_attr
        self.ci_config = ci_config
        self.sigmoid_type = sigmoid_type

        fallback = next(iter(target_model.parameters()), None)
        components = {
            path: _make_components(target_model.get_submodule(path), C, fallback)
            for path, C in self.module_to_c.items()
        }
        self._components = nn.ModuleDict({p.replace(".", "-"): components[p] for p in sorted(components)})
        # Plain dict view (not registered twice), keyed by the real module path.
        self.components: dict[str, Components] = components
        self.ci_fn = make_ci_fn(target_model, self.module_to_c, components, ci_config)
        self.lower_leaky_fn, self.upper_leaky_fn = get_sigmoid_pair(sigmoid_type)

    # --- weights -------------------------------------------------------------------------------

    def target_weight(self, path: str) -> Tensor:
        comp = self.components[path]
        return target_weight_of(self.target_model.get_submodule(path), device=comp.V.device, dtype=comp.V.dtype)

    def calc_weight_deltas(self) -> dict[str, Tensor]:
        """`Δ = W_target − W_components` per module; differentiable w.r.t. U and V."""
        return {path: self.target_weight(path) - comp.weight for path, comp in self.components.items()}

    # --- CI ------------------------------------------------------------------------------------

    def calc_causal_importances(
        self,
        pre_weight_acts: dict[str, Tensor],
        sampling: Sampling,
        detach_inputs: bool = False,
        generator: torch.Generator | None = None,
    ) -> CIOutputs:
        acts = {path: pre_weight_acts[path] for path in self.target_module_paths}
        if detach_inputs:
            acts = {path: a.detach() for path, a in acts.items()}
        pre_sigmoid: dict[str, Tensor] = self.ci_fn(acts)
        lower, upper = {}, {}
        for path, g in pre_sigmoid.items():
            lower[path] = self.lower_leaky_fn(perturb_pre_sigmoid(g, sampling, generator))
            upper[path] = self.upper_leaky_fn(g)
        return CIOutputs(lower_leaky=lower, upper_leaky=upper, pre_sigmoid=pre_sigmoid)

    # --- forward -------------------------------------------------------------------------------

    def forward(
        self,
        *args: Any,
        mask_infos: dict[str, ComponentsMaskInfo] | None = None,
        cache_type: CacheType = "none",
        **kwargs: Any,
    ) -> Tensor | OutputWithCache:
        if mask_infos is None and cache_type == "none":
            return extract_output(self.target_model(*args, **kwargs), self.pretrained_model_output_attr)
        if mask_infos is not None:
            unknown = set(mask_infos) - set(self.components)
            if unknown:
                raise ValueError(f"mask_infos for modules that are not decomposed: {sorted(unknown)}")
        paths = list(mask_infos) if mask_infos is not None else self.target_module_paths
        cache: dict[str, Tensor] = {}
        handles = []
        try:
            for path in paths:
                hook = partial(self._components_and_cache_hook, path=path,
                               mask_info=None if mask_infos is None else mask_infos[path],
                               cache_type=cache_type, cache=cache)
                handles.append(self.target_model.get_submodule(path).register_forward_hook(hook, with_kwargs=True))
            raw = self.target_model(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()
        output = extract_output(raw, self.pretrained_model_output_attr)
        return output if cache_type == "none" else OutputWithCache(output, cache)

    def _components_and_cache_hook(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        output: Tensor,
        *,
        path: str,
        mask_info: ComponentsMaskInfo | None,
        cache_type: CacheType,
        cache: dict[str, Tensor],
    ) -> Tensor | None:
        assert len(args) == 1 and not kwargs, f"{path}: expected exactly one positional input, no kwargs"
        x = args[0]
        if cache_type == "input":
            cache[path] = x
        if mask_info is None:
            if cache_type == "output":
                cache[path] = output
            return None
        acts_cache: dict[str, Tensor] | None = {} if cache_type == "component_acts" else None
        comp_out = self.components[path](
            x,
            mask=mask_info.component_mask,
            weight_delta_and_mask=mask_info.weight_delta_and_mask,
            component_acts_cache=acts_cache,
        )
        routing = mask_info.routing_mask
        final = comp_out if isinstance(routing, str) else torch.where(routing[..., None], comp_out, output)
        if cache_type == "output":
            cache[path] = final
        if acts_cache is not None:
            cache[f"{path}_pre_detach"] = acts_cache["pre_detach"]
            cache[f"{path}_post_detach"] = acts_cache["post_detach"]
        return final


def all_module_info(config: Any) -> list[tuple[str, int]]:
    """`module_info` plus `<pattern>.pre_identity` entries for identity patterns (config order)."""
    pairs = [(m.module_pattern, m.C) for m in config.module_info]
    return pairs + identity_module_info_to_decomposed(config.identity_module_info)


def build_component_model(target_model: nn.Module, config: Any) -> ComponentModel:
    """Identity insertion, pattern expansion and construction from an SPD `Config`."""
    if config.identity_module_info:
        insert_identity_operations_(target_model, config.identity_module_info)
    module_to_c = expand_module_patterns(target_model, all_module_info(config))
    return ComponentModel(
        target_model,
        module_to_c,
        config.ci_config,
        sigmoid_type=config.sigmoid_type,
        pretrained_model_output_attr=config.pretrained_model_output_attr,
    )
