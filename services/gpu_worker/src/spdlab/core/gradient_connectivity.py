"""Which decomposed layers feed which directly (`sources_by_target`, app_backend §2.3).

One forward of a dummy `(2, 3)` token batch with every component mask 1, no delta, and the
component-activation cache: each decomposed layer's `pre_detach` acts hang off the graph, while
its `post_detach` acts are fresh leaves, so a gradient from a target's `pre_detach` to a source's
`post_detach` exists only along paths that cross no other decomposed layer. The embedding output
(a leaf) is an extra source and the logits an extra target.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from spdlab.core.component_model import ComponentModel
from spdlab.core.masks import make_mask_infos
from spdlab.core.topology import TransformerTopology

DUMMY_BATCH_SHAPE = (2, 3)


def _component_act_graph(model: ComponentModel, topology: TransformerTopology) -> dict[str, Tensor]:
    """`{path}_pre_detach` for every target and `{path}_post_detach` for every source."""
    param = next(iter(model.components.values())).V
    tokens = torch.zeros(DUMMY_BATCH_SHAPE, dtype=torch.long, device=param.device)
    masks = {
        path: torch.ones(*DUMMY_BATCH_SHAPE, c, dtype=param.dtype, device=param.device)
        for path, c in model.module_to_c.items()
    }
    embed_path = topology.embed_path
    embed_out: dict[str, Tensor] = {}

    def make_embed_leaf(_module: nn.Module, _args: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        embed_out["leaf"] = leaf
        return leaf

    # A decomposed embedding already yields a post_detach leaf of its component acts.
    handle = None
    if embed_path not in model.module_to_c:
        handle = topology.embedding_module.register_forward_hook(make_embed_leaf)
    try:
        with torch.enable_grad():
            result = model(tokens, mask_infos=make_mask_infos(masks), cache_type="component_acts")
    finally:
        if handle is not None:
            handle.remove()
    cache = dict(result.cache)
    if handle is not None:
        cache[f"{embed_path}_post_detach"] = embed_out["leaf"]
    cache[f"{topology.unembed_path}_pre_detach"] = result.output
    return cache


def sources_by_target_concrete(model: ComponentModel, topology: TransformerTopology) -> dict[str, list[str]]:
    """Target module path → the source module paths with a direct gradient path into it.

    Dict order is the research code's emission order: keys appear as the (source-major, then
    target) scan first finds them, with sources = embedding + decomposed modules and targets =
    decomposed modules + unembedding, both in `module_to_c` order.
    """
    cache = _component_act_graph(model, topology)
    sources = list(dict.fromkeys([topology.embed_path, *model.target_module_paths]))
    targets = list(dict.fromkeys([*model.target_module_paths, topology.unembed_path]))
    reaches: dict[tuple[str, str], bool] = {}
    for target in targets:
        candidates = [s for s in sources if s != target]
        # One backward per target answers for every source at once (allow_unused → None).
        grads = torch.autograd.grad(
            cache[f"{target}_pre_detach"][0, 0, 0],
            [cache[f"{s}_post_detach"] for s in candidates],
            retain_graph=True,
            allow_unused=True,
        )
        reaches |= {(s, target): g is not None for s, g in zip(candidates, grads, strict=True)}
    found: dict[str, list[str]] = {}
    for source in sources:
        for target in targets:
            if reaches.get((source, target), False):
                found.setdefault(target, []).append(source)
    return found


def sources_by_target(model: ComponentModel, topology: TransformerTopology) -> dict[str, list[str]]:
    """`sources_by_target_concrete` in canonical layer names (`embed`, `0.attn.q`, `output`, ...)."""
    concrete = sources_by_target_concrete(model, topology)
    name = topology.target_to_canon
    return {name(t): [name(s) for s in srcs] for t, srcs in concrete.items()}
