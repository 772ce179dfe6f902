"""Brute-force attribution edges: one `autograd.grad` per target node, written the obvious way.

The reference the batched fast path in `spdlab.core.attribution` is checked against. It mirrors the
research app's `compute_edges_from_ci` loop structure (per target layer, position, component; per
source layer, position, component) and reads every strength with `.item()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from spdlab.core.component_model import ComponentModel
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.masks import make_mask_infos
from spdlab.core.topology import TransformerTopology, is_cross_seq_pair


def reference_edges(
    model: ComponentModel,
    tokens: Tensor,
    topology: TransformerTopology,
    sources_by_target: Mapping[str, Sequence[str]],
    alive: Mapping[str, Tensor],
    output_nodes: Sequence[tuple[int, int]],
    n_pos: int,
) -> dict[tuple[str, str], float]:
    """`{(source_key, target_key): strength}` with canonical node keys.

    `alive[path]` is a bool `[n_pos, C]` mask of component nodes; `output_nodes` lists
    `(pos, token_id)` output targets.
    """
    tokens = tokens.reshape(1, -1)
    canon = {p: topology.target_to_canon(p) for p in model.target_module_paths}
    canon[topology.embed_path] = "embed"
    canon[topology.unembed_path] = "output"

    with torch.no_grad():
        deltas = model.calc_weight_deltas()
    seq = tokens.shape[1]
    masks = {p: torch.ones(1, seq, c) for p, c in model.module_to_c.items()}
    delta_masks = {p: WeightDeltaAndMask(d, torch.ones(1, seq)) for p, d in deltas.items()}
    holder: dict[str, Tensor] = {}

    def hook(_m: torch.nn.Module, _a: object, out: Tensor) -> Tensor:
        holder["embed"] = out.detach().requires_grad_(True)
        return holder["embed"]

    handle = topology.embedding_module.register_forward_hook(hook)
    with torch.enable_grad():
        out = model(tokens, mask_infos=make_mask_infos(masks, "all", delta_masks), cache_type="component_acts")
    handle.remove()
    logits, cache = out
    values = {p: cache[f"{p}_pre_detach"] for p in model.target_module_paths}
    values[topology.unembed_path] = logits
    leaves = {p: cache[f"{p}_post_detach"] for p in model.target_module_paths}
    leaves[topology.embed_path] = holder["embed"]

    edges: dict[tuple[str, str], float] = {}
    for t_path, s_paths in sources_by_target.items():
        if t_path == topology.unembed_path:
            targets = list(output_nodes)
        else:
            targets = [(int(s), int(c)) for s, c in alive[t_path].nonzero().tolist()]
        for s_out, c_out in targets:
            grads = torch.autograd.grad(
                values[t_path][0, s_out, c_out], [leaves[s] for s in s_paths], retain_graph=True, allow_unused=True
            )
            t_key = f"{canon[t_path]}:{s_out}:{c_out}"
            for s_path, grad in zip(s_paths, grads, strict=True):
                if grad is None:
                    grad = torch.zeros_like(leaves[s_path])
                weighted = grad[0] * leaves[s_path].detach()[0]
                is_embed = s_path == topology.embed_path
                if is_embed:
                    weighted = weighted.sum(-1, keepdim=True)
                cross = is_cross_seq_pair(canon[s_path], canon[t_path])
                for s_in in range(s_out + 1) if cross else [s_out]:
                    for c_in in range(weighted.shape[-1]):
                        if is_embed or bool(alive[s_path][s_in, c_in]):
                            key = f"{canon[s_path]}:{s_in}:{c_in}"
                            edges[(key, t_key)] = weighted[s_in, c_in].item()
    return edges
