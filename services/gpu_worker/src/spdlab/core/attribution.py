"""Prompt attribution graphs: standard, manual (node subset) and with given (e.g. optimized) CI.

Semantics follow the research app's `compute_prompt_attributions` (spec app_backend §2.2–2.4):

- nodes: one embed node per position; component nodes alive at CI (lower-leaky) > 0; output nodes =
  tokens whose CI-masked probability exceeds a threshold, at most `max_output_nodes_per_pos` per
  position (the cap is reported in `OutputTruncation`, not applied silently).
- edge strength = ∂ target pre-detach value / ∂ source post-detach activation × that activation,
  in one forward with every component mask 1 and the weight deltas on (numerically the target
  model); embed sources are summed over d_model. Cross-position edges only for k/v (fused qkv) → o of
  the same block, from source positions ≤ the target position; all other pairs are same-position.
- `strength_abs` = strength × sign(target value) (edges for |target|; free, no extra backward).

Unlike the research code (one `autograd.grad` and a Python loop of `.item()` calls per target node),
backward passes are batched with `is_grads_batched=True` over chunks of one-hot grad outputs whose
size comes from a byte budget, and edges are extracted with tensor ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel
from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.graph import (
    EMBED_LAYER,
    OUTPUT_LAYER,
    AttributionGraph,
    EdgeTable,
    InvalidNodesError,
    NodeRef,
    NodeTable,
    OutputTable,
    OutputTruncation,
    parse_node_keys,
)
from spdlab.core.masks import Sampling, make_mask_infos
from spdlab.core.optimize_ci import OptimizationMetrics, OptimizeCIConfig, SnapshotFn, optimize_ci
from spdlab.core.prompt_losses import loss_position
from spdlab.core.topology import TransformerTopology, is_cross_seq_pair

DEFAULT_CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class AttributionConfig:
    """Knobs of one graph computation.

    `loss_seq_pos`: only positions ≤ it are computed (default: all). `included_nodes`: a manual graph
    keeps only these component nodes (keys `layer:pos:c`, `NodeRef`s or tuples). `max_chunk_bytes`
    bounds the memory of one batched backward.
    """

    output_prob_threshold: float = 0.01
    max_output_nodes_per_pos: int = 15
    output_display_top_k: int = 15
    loss_seq_pos: int | None = None
    included_nodes: Sequence[str | NodeRef | tuple[str, int, int]] | None = None
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES


@dataclass(frozen=True)
class PromptCI:
    """The target forward's logits `[S, V]`, CI (lower-leaky) and component acts `x @ V`, `[S, C]` per path."""

    target_logits: Tensor
    ci: dict[str, Tensor]
    component_acts: dict[str, Tensor]


# --- public entry point ---------------------------------------------------------------------------


def compute_attribution_graph(
    model: ComponentModel,
    tokens: Tensor,
    *,
    topology: TransformerTopology,
    sources_by_target: Mapping[str, Sequence[str]],
    sampling: Sampling,
    config: AttributionConfig | None = None,
    ci_lower: Mapping[str, Tensor] | None = None,
    adv_pgd_logits: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AttributionGraph:
    """Attribution graph of one prompt (`tokens`: `[S]` or `[1, S]` token ids).

    `sources_by_target`: concrete target path (decomposed module or the unembed) → concrete source
    paths (the embedding or decomposed modules), as from gradient connectivity; its order is the
    order target layers are processed. `ci_lower` overrides the model's CI (`[S, C]` or `[1, S, C]`
    per path; optimized graphs). `adv_pgd_logits` (`[S, V]`) adds PGD columns to the output table.
    Progress is reported once per target layer (stage `"graph"`); `cancel` is checked between chunks.
    """
    config = config or AttributionConfig()
    if topology.embed_path in model.module_to_c:
        raise ValueError(f"attribution graphs need an undecomposed embedding; {topology.embed_path!r} is decomposed")
    tokens = _as_batch(tokens, model)
    n_pos = _n_positions(tokens.shape[1], config.loss_seq_pos)
    fwd = prompt_ci(model, tokens, sampling=sampling, ci_lower=ci_lower, generator=generator)
    ci = fwd.ci
    if config.included_nodes is not None:  # before the CI-masked forward, which picks output nodes
        ci = restrict_ci_to_nodes(ci, config.included_nodes, topology, model)
    ci_masked_logits = masked_logits(model, tokens, ci)
    canon = topology.canonical_names(model.target_module_paths)
    alive = {path: c[:n_pos] > 0 for path, c in ci.items()}
    ci_probs = ci_masked_logits[:n_pos].softmax(-1)
    out_pos, out_tok, truncation = select_output_nodes(
        ci_probs, config.output_prob_threshold, config.max_output_nodes_per_pos
    )
    builder = _NodeBuilder(n_pos, [canon[p] for p in model.target_module_paths])
    builder.add_embed(topology.embed_path)
    for path in model.target_module_paths:
        builder.add_components(path, alive[path], ci[path][:n_pos], fwd.component_acts[path][:n_pos])
    out_ids = builder.add_outputs(out_pos, out_tok, ci_probs, ci_masked_logits[:n_pos])
    edges = compute_edges(
        model, tokens, n_pos=n_pos, topology=topology, sources_by_target=sources_by_target, canon=canon,
        index_maps=builder.index_maps, alive=alive, output_targets=(out_pos, out_tok, out_ids),
        n_nodes=builder.n_nodes, max_chunk_bytes=config.max_chunk_bytes, progress=progress, cancel=cancel,
    )
    outputs = output_table(
        ci_masked_logits[:n_pos], fwd.target_logits[:n_pos], config.output_display_top_k,
        None if adv_pgd_logits is None else adv_pgd_logits.reshape(-1, adv_pgd_logits.shape[-1])[:n_pos],
    )
    return AttributionGraph(
        token_ids=tokens[0].detach().cpu(),
        n_positions=n_pos,
        layer_names=builder.layer_names,
        nodes=builder.table(),
        edges=edges,
        outputs=outputs,
        output_truncation=truncation,
    )


# --- forwards -------------------------------------------------------------------------------------


def _as_batch(tokens: Tensor, model: nn.Module) -> Tensor:
    device = next(model.parameters()).device
    tokens = tokens.reshape(1, -1) if tokens.dim() == 1 else tokens
    if tokens.shape[0] != 1:
        raise ValueError(f"expected one prompt, got token shape {tuple(tokens.shape)}")
    return tokens.to(device=device, dtype=torch.long)


def _n_positions(seq_len: int, loss_seq_pos: int | None) -> int:
    if loss_seq_pos is None:
        return seq_len
    if not 0 <= loss_seq_pos < seq_len:
        raise ValueError(f"loss_seq_pos {loss_seq_pos} outside the prompt (length {seq_len})")
    return loss_seq_pos + 1


@torch.no_grad()
def prompt_ci(
    model: ComponentModel,
    tokens: Tensor,
    *,
    sampling: Sampling,
    ci_lower: Mapping[str, Tensor] | None = None,
    generator: torch.Generator | None = None,
) -> PromptCI:
    """Target forward caching module inputs → CI (or the `ci_lower` override) and component acts."""
    tokens = _as_batch(tokens, model)
    out = model(tokens, cache_type="input")
    assert isinstance(out, OutputWithCache)
    if ci_lower is None:
        ci = model.calc_causal_importances(out.cache, sampling=sampling, generator=generator).lower_leaky
        ci = {p: c[0] for p, c in ci.items()}
    else:
        ci = {p: ci_lower[p].reshape(ci_lower[p].shape[-2:]).to(out.output) for p in model.target_module_paths}
    acts = {p: model.components[p].get_component_acts(out.cache[p])[0] for p in model.target_module_paths}
    return PromptCI(target_logits=out.output[0], ci=ci, component_acts=acts)


@torch.no_grad()
def masked_logits(model: ComponentModel, tokens: Tensor, ci: Mapping[str, Tensor]) -> Tensor:
    """Logits `[S, V]` of the forward with every component mask = its CI and no weight deltas."""
    tokens = _as_batch(tokens, model)
    out = model(tokens, mask_infos=make_mask_infos({p: c[None] for p, c in ci.items()}))
    assert isinstance(out, Tensor)
    return out[0]


def restrict_ci_to_nodes(
    ci: Mapping[str, Tensor],
    nodes: Sequence[str | NodeRef | tuple[str, int, int]],
    topology: TransformerTopology,
    model: ComponentModel,
) -> dict[str, Tensor]:
    """Zero the CI of every component node not in `nodes` (manual graphs); unknown nodes → error."""
    masks = node_masks(nodes, topology, model, seq_len=next(iter(ci.values())).shape[0])
    return {p: torch.where(masks[p].to(c.device), c, torch.zeros_like(c)) for p, c in ci.items()}


def node_masks(
    nodes: Sequence[str | NodeRef | tuple[str, int, int]],
    topology: TransformerTopology,
    model: ComponentModel,
    seq_len: int,
) -> dict[str, Tensor]:
    """Boolean `[S, C]` masks per concrete path marking `nodes`; raises `InvalidNodesError` listing
    every node whose layer is not a decomposed layer or whose position/index is out of range."""
    canon_to_path = {c: p for p, c in topology.canonical_names(model.target_module_paths).items()}
    refs = parse_node_keys(nodes)
    bad = [
        r.key for r in refs
        if r.layer not in canon_to_path
        or not (0 <= r.pos < seq_len and 0 <= r.index < model.module_to_c[canon_to_path[r.layer]])
    ]
    if bad:
        raise InvalidNodesError(bad, "not a component node of this model and prompt")
    masks = {p: torch.zeros(seq_len, c, dtype=torch.bool) for p, c in model.module_to_c.items()}
    for layer in {r.layer for r in refs}:
        pos = torch.tensor([r.pos for r in refs if r.layer == layer], dtype=torch.long)
        idx = torch.tensor([r.index for r in refs if r.layer == layer], dtype=torch.long)
        masks[canon_to_path[layer]][pos, idx] = True
    return masks


# --- nodes ----------------------------------------------------------------------------------------


def select_output_nodes(
    probs: Tensor, threshold: float, max_per_pos: int
) -> tuple[Tensor, Tensor, OutputTruncation]:
    """Tokens with probability > threshold, the `max_per_pos` most probable per position.

    Returns `(pos, token_id, truncation)`, ordered by position then descending probability.
    """
    k = min(max_per_pos, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)
    pos, rank = (top_p > threshold).nonzero(as_tuple=True)
    n_candidates = (probs > threshold).sum(-1)
    capped = (n_candidates > max_per_pos).nonzero().flatten()
    truncation = OutputTruncation(
        prob_threshold=threshold,
        max_per_pos=max_per_pos,
        n_candidates=int(n_candidates.sum()),
        n_kept=int(pos.shape[0]),
        capped_positions=tuple(capped.tolist()),
    )
    return pos, top_i[pos, rank], truncation


class _NodeBuilder:
    """Assembles the node table layer by layer and a `[P, width]` node-index map per source layer."""

    def __init__(self, n_pos: int, component_layers: list[str]):
        self.n_pos = n_pos
        self.layer_names = (EMBED_LAYER, *component_layers, OUTPUT_LAYER)
        self.index_maps: dict[str, Tensor] = {}
        self._parts: list[tuple[Tensor, ...]] = []
        self._count = 0

    def _append(self, layer: int, pos: Tensor, index: Tensor, ci: Tensor, act: Tensor) -> Tensor:
        n = pos.shape[0]
        ids = torch.arange(self._count, self._count + n, device=pos.device)
        self._parts.append((torch.full_like(pos, layer), pos, index, ci.float(), act.float()))
        self._count += n
        return ids

    def add_embed(self, embed_path: str) -> None:
        alive = torch.ones(self.n_pos, 1, dtype=torch.bool)
        pos = torch.arange(self.n_pos)
        ids = self._append(0, pos, torch.zeros_like(pos), torch.ones(self.n_pos), torch.zeros(self.n_pos))
        self.index_maps[embed_path] = _index_map(alive, ids)

    def add_components(self, path: str, alive: Tensor, ci: Tensor, acts: Tensor) -> None:
        layer = len(self.index_maps)  # embed is layer 0, components follow in model order
        alive = alive.cpu()
        pos, comp = alive.nonzero(as_tuple=True)
        ids = self._append(layer, pos, comp, ci.detach().cpu()[pos, comp], acts.detach().cpu()[pos, comp])
        self.index_maps[path] = _index_map(alive, ids)

    def add_outputs(self, pos: Tensor, token: Tensor, probs: Tensor, logits: Tensor) -> Tensor:
        pos, token = pos.cpu(), token.cpu()
        return self._append(
            len(self.layer_names) - 1, pos, token,
            probs.detach().cpu()[pos, token], logits.detach().cpu()[pos, token],
        )

    @property
    def n_nodes(self) -> int:
        return self._count

    def table(self) -> NodeTable:
        cols = [torch.cat(c) for c in zip(*self._parts, strict=True)]
        return NodeTable(layer=cols[0], pos=cols[1], index=cols[2], ci=cols[3], activation=cols[4])


def _index_map(alive: Tensor, ids: Tensor) -> Tensor:
    index_map = torch.full(alive.shape, -1, dtype=torch.long)
    index_map[alive] = ids  # boolean indexing enumerates in row-major order, as `nonzero` did
    return index_map


def output_table(
    ci_masked_logits: Tensor, target_logits: Tensor, top_k: int, adv_pgd_logits: Tensor | None = None
) -> OutputTable:
    """Top-k tokens per position by CI-masked probability with the target's (and PGD's) values."""
    probs = ci_masked_logits.softmax(-1)
    k = min(top_k, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)
    n_pos = probs.shape[0]
    pos = torch.arange(n_pos, device=probs.device).repeat_interleave(k)
    tok = top_i.flatten()

    def gather(x: Tensor) -> Tensor:
        return x[pos, tok].detach().float().cpu()

    pgd_probs = None if adv_pgd_logits is None else adv_pgd_logits.softmax(-1)
    return OutputTable(
        pos=pos.cpu(),
        rank=torch.arange(k).repeat(n_pos),
        token_id=tok.cpu(),
        ci_masked_prob=top_p.flatten().detach().float().cpu(),
        ci_masked_logit=gather(ci_masked_logits),
        target_prob=gather(target_logits.softmax(-1)),
        target_logit=gather(target_logits),
        adv_pgd_prob=None if pgd_probs is None else gather(pgd_probs),
        adv_pgd_logit=None if adv_pgd_logits is None else gather(adv_pgd_logits),
    )


# --- edges ----------------------------------------------------------------------------------------


@dataclass
class GradientForward:
    """The retained all-masks-one + deltas forward: target values and source leaves per concrete path."""

    targets: dict[str, Tensor]  # path → pre-detach value [1, S, C] (unembed: logits [1, S, V])
    sources: dict[str, Tensor]  # path → post-detach leaf [1, S, C] (embedding: output leaf [1, S, d])
    saved_bytes: int  # activation bytes autograd saved; scales the per-target backward memory


def gradient_forward(model: ComponentModel, tokens: Tensor, topology: TransformerTopology) -> GradientForward:
    """Forward with every component mask 1 and the weight deltas on (mask 1), caching component acts.

    The embedding output is replaced by a leaf that requires grad, so it can be an edge source.
    """
    with torch.no_grad():
        deltas = model.calc_weight_deltas()
    lead = tokens.shape
    ones = {p: torch.ones(*lead, c, device=tokens.device) for p, c in model.module_to_c.items()}
    delta_masks = {p: WeightDeltaAndMask(d, torch.ones(lead, device=tokens.device)) for p, d in deltas.items()}
    mask_infos = make_mask_infos(ones, "all", delta_masks)
    leaf: dict[str, Tensor] = {}

    def embed_leaf_hook(_module: nn.Module, _args: object, output: Tensor) -> Tensor:
        leaf["embed"] = output.detach().requires_grad_(True)
        return leaf["embed"]

    saved = [0]

    def pack(t: Tensor) -> Tensor:
        if t.requires_grad:  # frozen weights do not scale with the grad batch
            saved[0] += t.numel() * t.element_size()
        return t

    handle = topology.embedding_module.register_forward_hook(embed_leaf_hook)
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(tokens, mask_infos=mask_infos, cache_type="component_acts")
    finally:
        handle.remove()
    assert isinstance(out, OutputWithCache)
    targets = {p: out.cache[f"{p}_pre_detach"] for p in model.target_module_paths}
    targets[topology.unembed_path] = out.output
    sources = {p: out.cache[f"{p}_post_detach"] for p in model.target_module_paths}
    sources[topology.embed_path] = leaf["embed"]
    return GradientForward(targets=targets, sources=sources, saved_bytes=saved[0])


@dataclass(frozen=True)
class _SourceSpec:
    path: str
    leaf: Tensor  # [1, S, W]
    index_map: Tensor  # [P, W'] node ids (-1 = not a node); W' = 1 for embed
    is_embed: bool
    cross_seq: bool


def compute_edges(
    model: ComponentModel,
    tokens: Tensor,
    *,
    n_pos: int,
    topology: TransformerTopology,
    sources_by_target: Mapping[str, Sequence[str]],
    canon: Mapping[str, str],
    index_maps: Mapping[str, Tensor],
    alive: Mapping[str, Tensor],
    output_targets: tuple[Tensor, Tensor, Tensor],
    n_nodes: int,
    max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> EdgeTable:
    """All edges into alive targets at positions < `n_pos`, sorted by (target node, source node)."""
    fwd = gradient_forward(model, tokens, topology)
    all_canon = {**canon, topology.embed_path: EMBED_LAYER, topology.unembed_path: OUTPUT_LAYER}
    pieces: list[tuple[Tensor, ...]] = []
    n_targets = len(sources_by_target)
    for done, (t_path, s_paths) in enumerate(sources_by_target.items()):
        check_cancel(cancel)
        pos, idx, node_ids = _targets_of(t_path, topology, alive, index_maps, output_targets)
        if pos.numel() > 0:
            sources = [
                _SourceSpec(
                    s, fwd.sources[s], index_maps[s].to(tokens.device), s == topology.embed_path,
                    is_cross_seq_pair(all_canon[s], all_canon[t_path]),
                )
                for s in s_paths
            ]
            pieces += _edges_into_layer(
                fwd.targets[t_path], sources, pos.to(tokens.device), idx.to(tokens.device),
                node_ids.to(tokens.device), n_pos, fwd.saved_bytes, max_chunk_bytes, cancel,
            )
        if progress is not None:
            progress(done + 1, n_targets, "graph")
    return _edge_table(pieces, n_nodes=n_nodes)


def _targets_of(
    t_path: str,
    topology: TransformerTopology,
    alive: Mapping[str, Tensor],
    index_maps: Mapping[str, Tensor],
    output_targets: tuple[Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """(position, index into the target tensor's last dim, node id) of every target node of a layer."""
    if t_path == topology.unembed_path:
        return output_targets
    pos, comp = alive[t_path].cpu().nonzero(as_tuple=True)
    return pos, comp, index_maps[t_path][pos, comp]


def _chunk_size(target: Tensor, sources: Sequence[_SourceSpec], saved_bytes: int, budget: int, n: int) -> int:
    """Grad-batch size whose estimated backward memory fits `budget`.

    Per batch element the backward materialises roughly one gradient per saved activation plus the
    one-hot grad output and one gradient (and weighted copy) per source leaf.
    """
    itemsize = target.element_size()
    per_elem = saved_bytes + itemsize * (target.numel() + 2 * sum(s.leaf.numel() for s in sources))
    return max(1, min(n, budget // max(1, 2 * per_elem)))


def _edges_into_layer(
    target: Tensor,
    sources: Sequence[_SourceSpec],
    pos: Tensor,
    idx: Tensor,
    node_ids: Tensor,
    n_pos: int,
    saved_bytes: int,
    budget: int,
    cancel: CancelFn | None,
) -> list[tuple[Tensor, ...]]:
    chunk = _chunk_size(target, sources, saved_bytes, budget, pos.shape[0])
    target_vals = target.detach()[0, pos, idx]
    pieces = []
    for start in range(0, pos.shape[0], chunk):
        check_cancel(cancel)
        sl = slice(start, start + chunk)
        grads = _batched_grads(target, [s.leaf for s in sources], pos[sl], idx[sl])
        for spec, grad in zip(sources, grads, strict=True):
            pieces.append(_extract(spec, grad, pos[sl], node_ids[sl], target_vals[sl], n_pos))
    return pieces


def _batched_grads(target: Tensor, leaves: list[Tensor], pos: Tensor, idx: Tensor) -> list[Tensor]:
    """One batched backward: gradient of `target[0, pos[b], idx[b]]` w.r.t. every leaf, for each b."""
    b = pos.shape[0]
    one_hot = torch.zeros((b, *target.shape), device=target.device, dtype=target.dtype)
    one_hot[torch.arange(b, device=target.device), 0, pos, idx] = 1.0
    grads = torch.autograd.grad(
        target, leaves, grad_outputs=one_hot, retain_graph=True, is_grads_batched=True, allow_unused=True,
    )
    return [torch.zeros((b, *leaf.shape), device=leaf.device, dtype=leaf.dtype) if g is None else g
            for g, leaf in zip(grads, leaves, strict=True)]


def _extract(
    spec: _SourceSpec, grad: Tensor, t_pos: Tensor, t_ids: Tensor, t_vals: Tensor, n_pos: int
) -> tuple[Tensor, ...]:
    """Edges from one source layer into a chunk of targets: (source id, target id, strength, abs, cross)."""
    weighted = grad[:, 0, :n_pos] * spec.leaf.detach()[0, :n_pos]  # [B, P, W]
    if spec.is_embed:
        weighted = weighted.sum(-1, keepdim=True)
    node_map = spec.index_map
    if spec.cross_seq:
        s_positions = torch.arange(n_pos, device=grad.device)
        mask = (node_map >= 0)[None] & (s_positions[None, :, None] <= t_pos[:, None, None])
        b, s_in, c_in = mask.nonzero(as_tuple=True)
    else:
        mask = node_map[t_pos] >= 0  # [B, W]
        b, c_in = mask.nonzero(as_tuple=True)
        s_in = t_pos[b]
    strength = weighted[b, s_in, c_in]
    cross = torch.full_like(b, spec.cross_seq, dtype=torch.bool)
    return node_map[s_in, c_in], t_ids[b], strength, strength * torch.sign(t_vals[b]), cross


def _edge_table(pieces: list[tuple[Tensor, ...]], n_nodes: int) -> EdgeTable:
    if not pieces:
        empty = torch.zeros(0, dtype=torch.long)
        return EdgeTable(empty, empty, torch.zeros(0), torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    src, tgt, strength, strength_abs, cross = (torch.cat(c).cpu() for c in zip(*pieces, strict=True))
    order = torch.argsort(tgt * n_nodes + src)
    return EdgeTable(
        source=src[order], target=tgt[order], strength=strength[order].float(),
        strength_abs=strength_abs[order].float(), is_cross_seq=cross[order],
    )


# --- optimized graphs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizedGraph:
    graph: AttributionGraph
    metrics: OptimizationMetrics


def compute_optimized_graphs(
    model: ComponentModel,
    tokens: Tensor,
    optim: OptimizeCIConfig,
    *,
    topology: TransformerTopology,
    sources_by_target: Mapping[str, Sequence[str]],
    sampling: Sampling,
    config: AttributionConfig | None = None,
    progress: ProgressFn | None = None,
    on_snapshot: SnapshotFn | None = None,
    cancel: CancelFn | None = None,
) -> list[OptimizedGraph]:
    """Optimize the CI for every coefficient of `optim` (one batched run), then one graph per result.

    Graphs cover positions ≤ the loss position and carry PGD output columns when PGD is configured.
    Progress: `"optimizing"` (step, steps), then `"graph"` over all graphs' target layers.
    """
    config = config or AttributionConfig()
    names = list(topology.canonical_names(model.target_module_paths).values())
    result = optimize_ci(model, tokens, optim, sampling=sampling, layer_names=names, progress=progress,
                         on_snapshot=on_snapshot, cancel=cancel)
    position = loss_position(optim.loss)
    graph_config = replace(config, loss_seq_pos=position if position is not None else config.loss_seq_pos)
    n_graphs, n_layers = len(result.metrics), len(sources_by_target)
    graphs = []
    for i, metrics in enumerate(result.metrics):

        def graph_progress(current: int, _total: int, stage: str, offset: int = i * n_layers) -> None:
            if progress is not None:
                progress(offset + current, n_graphs * n_layers, stage)

        graph = compute_attribution_graph(
            model, tokens, topology=topology, sources_by_target=sources_by_target, sampling=sampling,
            config=graph_config, ci_lower=result.ci_lower_of(i),
            adv_pgd_logits=None if result.adv_pgd_logits is None else result.adv_pgd_logits[i],
            progress=graph_progress, cancel=cancel,
        )
        graphs.append(OptimizedGraph(graph=graph, metrics=metrics))
    return graphs
