"""Component masks, delta masks and routing (spec §1.4, §1.6–1.7).

Research code: `spd/utils/component_utils.py`, `spd/routing.py`, `ComponentsMaskInfo` in
`spd/models/components.py`. Every sampler takes an optional `torch.Generator` so callers can make
draws reproducible; shapes and devices always follow the CI tensors.
"""

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

from spdlab.core.components import WeightDeltaAndMask

Sampling = Literal["continuous", "binomial"]
RoutingMasks = dict[str, Tensor] | Literal["all"]


@dataclass
class ComponentsMaskInfo:
    """What the forward hook of one decomposed module needs.

    `routing_mask` False at a position keeps the module's target output there.
    """

    component_mask: Tensor
    routing_mask: Tensor | Literal["all"] = "all"
    weight_delta_and_mask: WeightDeltaAndMask | None = None


def make_mask_infos(
    component_masks: dict[str, Tensor],
    routing_masks: RoutingMasks = "all",
    weight_deltas_and_masks: dict[str, WeightDeltaAndMask] | None = None,
) -> dict[str, ComponentsMaskInfo]:
    """Zip per-module dicts into mask infos; the key sets must agree."""
    if routing_masks != "all" and set(routing_masks) != set(component_masks):
        raise ValueError(f"routing mask keys {sorted(routing_masks)} != {sorted(component_masks)}")
    if weight_deltas_and_masks is not None and set(weight_deltas_and_masks) != set(component_masks):
        raise ValueError(
            f"weight delta keys {sorted(weight_deltas_and_masks)} != {sorted(component_masks)}"
        )
    return {
        path: ComponentsMaskInfo(
            component_mask=mask,
            routing_mask="all" if routing_masks == "all" else routing_masks[path],
            weight_delta_and_mask=None if weight_deltas_and_masks is None else weight_deltas_and_masks[path],
        )
        for path, mask in component_masks.items()
    }


def _uniform(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def perturb_pre_sigmoid(pre_sigmoid: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> Tensor:
    """The lower branch's input: `g` (continuous) or `1.05·g − 0.05·u`, u ~ U(0,1) (binomial)."""
    if sampling == "continuous":
        return pre_sigmoid
    if sampling == "binomial":
        return 1.05 * pre_sigmoid - 0.05 * _uniform(pre_sigmoid.shape, pre_sigmoid, generator)
    raise ValueError(f"unknown sampling {sampling!r}")


def sample_stochastic_mask(ci: Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> Tensor:
    """`ci + (1 − ci)·s` with s ~ U(0,1) (continuous) or s ∈ {0,1} (binomial); lies in [ci, 1]."""
    if sampling == "continuous":
        source = _uniform(ci.shape, ci, generator)
    elif sampling == "binomial":
        source = torch.randint(0, 2, ci.shape, device=ci.device, generator=generator).to(ci.dtype)
    else:
        raise ValueError(f"unknown sampling {sampling!r}")
    return ci + (1 - ci) * source


def sample_delta_masks(
    weight_deltas: dict[str, Tensor], leading_shape: torch.Size, like: Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, WeightDeltaAndMask]:
    """Delta masks are U(0,1) of the leading shape — always continuous, even in binomial mode."""
    return {
        path: WeightDeltaAndMask(delta=delta, mask=_uniform(leading_shape, like, generator))
        for path, delta in weight_deltas.items()
    }


# --- routers -------------------------------------------------------------------------------------


class Router(Protocol):
    def get_masks(
        self, module_names: list[str], mask_shape: tuple[int, ...], device: torch.device | str,
        generator: torch.Generator | None = None,
    ) -> RoutingMasks: ...


class AllLayersRouter:
    """Route every module at every position."""

    def get_masks(self, module_names: list[str], mask_shape: tuple[int, ...], device: torch.device | str,
                  generator: torch.Generator | None = None) -> RoutingMasks:
        return "all"


def sample_uniform_k_subset_routing_masks(
    mask_shape: tuple[int, ...], module_names: list[str], device: torch.device | str,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Per position: k ~ UniformInt{1..n}; route the k modules of lowest random rank (≥ 1 module)."""
    n = len(module_names)
    k = torch.randint(1, n + 1, mask_shape, device=device, generator=generator)
    noise = torch.rand((*mask_shape, n), device=device, generator=generator)
    rank = noise.argsort(dim=-1).argsort(dim=-1)  # a uniformly random permutation rank per position
    routed = rank < k[..., None]
    return {name: routed[..., i] for i, name in enumerate(module_names)}


class UniformKSubsetRouter:
    def get_masks(self, module_names: list[str], mask_shape: tuple[int, ...], device: torch.device | str,
                  generator: torch.Generator | None = None) -> RoutingMasks:
        return sample_uniform_k_subset_routing_masks(mask_shape, module_names, device, generator)


@dataclass
class StaticProbabilityRouter:
    """Independent Bernoulli(p) per module and position."""

    p: float

    def get_masks(self, module_names: list[str], mask_shape: tuple[int, ...], device: torch.device | str,
                  generator: torch.Generator | None = None) -> RoutingMasks:
        return {
            name: torch.rand(mask_shape, device=device, generator=generator) < self.p for name in module_names
        }


@dataclass
class LayerRouter:
    """Route only `layer`, everywhere; all other modules keep their target outputs."""

    layer: str

    def get_masks(self, module_names: list[str], mask_shape: tuple[int, ...], device: torch.device | str,
                  generator: torch.Generator | None = None) -> RoutingMasks:
        if self.layer not in module_names:
            raise ValueError(f"LayerRouter layer {self.layer!r} not among {module_names}")
        return {
            name: torch.full(mask_shape, name == self.layer, dtype=torch.bool, device=device)
            for name in module_names
        }


def router_from_config(routing: object | None) -> Router:
    """Router for a routing config (`type: uniform_k_subset | static_probability | all`), None = all."""
    kind = getattr(routing, "type", None)
    if routing is None or kind == "all":
        return AllLayersRouter()
    if kind == "uniform_k_subset":
        return UniformKSubsetRouter()
    if kind == "static_probability":
        return StaticProbabilityRouter(p=float(routing.p))  # type: ignore[attr-defined]
    raise ValueError(f"unknown routing type {kind!r}")


def calc_stochastic_component_mask_info(
    causal_importances: dict[str, Tensor],
    component_mask_sampling: Sampling,
    weight_deltas: dict[str, Tensor] | None,
    router: Router | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, ComponentsMaskInfo]:
    """Fresh stochastic masks for every module (`ci` = lower_leaky), plus delta masks and routing."""
    first = next(iter(causal_importances.values()))
    leading_shape = first.shape[:-1]
    component_masks = {
        path: sample_stochastic_mask(ci, component_mask_sampling, generator)
        for path, ci in causal_importances.items()
    }
    deltas_and_masks = None
    if weight_deltas is not None:
        deltas = {path: weight_deltas[path] for path in causal_importances}
        deltas_and_masks = sample_delta_masks(deltas, leading_shape, first, generator)
    routing = (router or AllLayersRouter()).get_masks(
        list(causal_importances), tuple(leading_shape), first.device, generator
    )
    return make_mask_infos(component_masks, routing, deltas_and_masks)
