"""Dataset attributions (spec §5): gradient × activation sums between component-graph nodes.

`attr[src → tgt] = Σ_windows Σ_positions (∂ T / ∂ src_act[pos]) · src_act[pos] · w_src[pos]` where
`T` is the target's activation summed over the batch and positions (one backward per target, not
per position: a documented approximation that includes cross-position effects), and `w_src` is the
source's CI where it exceeds `ci_threshold`, else 0 (the research code stored the threshold but
never applied it). Embed sources (the embedding output, summed over d_model) are scatter-added per
input token and not CI-weighted. `attr_abs` uses `Σ|act|` as the target (output targets: `attr`
only). Output targets are the d_model dimensions of the pre-unembed residual; token-level values
are recovered at query time through `W_unembed`.

Backward passes are batched with `is_grads_batched` over chunks of targets (signed and abs targets
share a chunk). Raw sums are stored (float64) and normalised at query time; shard states merge by
element-wise sums. Node keys: `embed:<tok>`, `<canonical layer>:<idx>`, `output:<tok>`.
"""

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel, no_progress
from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.gradient_connectivity import sources_by_target as compute_sources_by_target
from spdlab.core.harvest.harvest import ShardSpec, shard_range
from spdlab.core.masks import Sampling, make_mask_infos
from spdlab.core.topology import EMBED, OUTPUT, TransformerTopology

Metric = Literal["attr", "attr_abs"]
Sign = Literal["positive", "negative"]
STATE_FORMAT_VERSION = 1


class DatasetAttributionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(default=32, ge=1)
    ci_threshold: float = Field(default=0.0, description="source components count where CI > this")
    use_delta: bool = Field(default=False, description="add weight deltas (mask 1) in the gradient forward")
    max_chunk_bytes: int = Field(default=256 * 2**20, ge=1, description="memory budget of one batched backward")


@dataclass
class AttributionState:
    """Raw sums keyed by canonical layer names. `regular[(tgt, src)]` `[C_tgt, C_src]`,
    `embed[tgt]` `[C_tgt, V]`, `unembed[src]` `[d_model, C_src]`, `embed_unembed` `[d_model, V]`."""

    config: DatasetAttributionConfig
    layers: dict[str, int]  # canonical component layer -> C (model order)
    sources_by_target: dict[str, list[str]]
    alive: dict[str, Tensor]  # layer -> [C] bool: targets that were computed
    n_tokens: int
    windows_done: list[tuple[int, int]]
    regular: dict[tuple[str, str], Tensor]
    regular_abs: dict[tuple[str, str], Tensor]
    embed: dict[str, Tensor]
    embed_abs: dict[str, Tensor]
    unembed: dict[str, Tensor]
    embed_unembed: Tensor
    w_unembed: Tensor  # [d_model, V]
    ci_sum: dict[str, Tensor]
    act_sq_sum: dict[str, Tensor]
    logit_sq_sum: Tensor  # [V]
    embed_token_count: Tensor  # [V] int64
    extra_meta: dict[str, str] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self.w_unembed.shape[1])


# --- model plumbing -----------------------------------------------------------------------------


@dataclass
class _Graph:
    """One grad-enabled forward: leaves per source layer, targets per layer, weights, CI."""

    leaves: dict[str, Tensor]  # canonical source -> leaf ([B,S,C] post_detach or [B,S,d] embed out)
    targets: dict[str, Tensor]  # canonical target -> [B,S,C] pre_detach, or OUTPUT -> [B,S,d] residual
    ci: dict[str, Tensor]
    logits: Tensor


def _forward_graph(
    model: ComponentModel, topo: TransformerTopology, canon: Mapping[str, str], tokens: Tensor,
    sampling: Sampling, use_delta: bool,
) -> _Graph:
    with torch.no_grad():
        cached = model(tokens, cache_type="input")
        assert isinstance(cached, OutputWithCache)
        ci = model.calc_causal_importances(cached.cache, sampling, detach_inputs=True).lower_leaky
    masks = {p: torch.ones_like(ci[p]) for p in model.target_module_paths}
    deltas = None
    if use_delta:
        deltas = {p: WeightDeltaAndMask(d.detach(), torch.ones(tokens.shape, device=tokens.device, dtype=d.dtype))
                  for p, d in model.calc_weight_deltas().items()}
    captured: dict[str, Tensor] = {}

    def embed_leaf(_m: nn.Module, _a: Any, output: Tensor) -> Tensor:
        captured["embed"] = output.detach().requires_grad_(True)
        return captured["embed"]

    def pre_unembed(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
        captured["resid"] = args[0]

    handles = [topo.unembed_module.register_forward_pre_hook(pre_unembed)]
    if topo.embed_path not in model.module_to_c:
        handles.append(topo.embedding_module.register_forward_hook(embed_leaf))
    try:
        with torch.enable_grad():
            out = model(tokens, mask_infos=make_mask_infos(masks, weight_deltas_and_masks=deltas),
                        cache_type="component_acts")
    finally:
        for h in handles:
            h.remove()
    assert isinstance(out, OutputWithCache)
    leaves = {canon[p]: out.cache[f"{p}_post_detach"] for p in model.target_module_paths}
    targets = {canon[p]: out.cache[f"{p}_pre_detach"] for p in model.target_module_paths}
    if "embed" in captured:
        leaves[EMBED] = captured["embed"]
    targets[OUTPUT] = captured["resid"]
    return _Graph(leaves=leaves, targets=targets, ci={canon[p]: v for p, v in ci.items()}, logits=out.output)


def _batched_grads(target: Tensor, leaves: list[Tensor], grad_outputs: Tensor) -> list[Tensor]:
    """Gradients of `⟨grad_outputs[n], target⟩` w.r.t. each leaf, `[n, *leaf.shape]` (zeros if unused)."""
    grads = torch.autograd.grad(target, leaves, grad_outputs=grad_outputs, retain_graph=True,
                                is_grads_batched=True, allow_unused=True)
    return [torch.zeros((grad_outputs.shape[0], *leaf.shape), device=leaf.device, dtype=leaf.dtype)
            if g is None else g for g, leaf in zip(grads, leaves, strict=True)]


def _chunks(n: int, per_item_bytes: int, budget: int) -> Iterable[tuple[int, int]]:
    step = max(1, budget // max(per_item_bytes, 1))
    for start in range(0, n, step):
        yield start, min(n, start + step)


# --- state --------------------------------------------------------------------------------------


def _canon_map(model: ComponentModel, topo: TransformerTopology) -> dict[str, str]:
    return topo.canonical_names(model.target_module_paths)


def new_attribution_state(
    model: ComponentModel,
    config: DatasetAttributionConfig,
    *,
    topology: TransformerTopology | None = None,
    sources_by_target: Mapping[str, list[str]] | None = None,
    alive: Mapping[str, Tensor] | None = None,
) -> AttributionState:
    """Zeroed sums. `alive` (by canonical or concrete layer name; e.g. harvest firing density > 0)
    restricts which component targets get backward passes; default all."""
    topo = topology or TransformerTopology(model.target_model)
    canon = _canon_map(model, topo)
    sbt = dict(sources_by_target) if sources_by_target is not None else compute_sources_by_target(model, topo)
    layers = {canon[p]: c for p, c in model.module_to_c.items()}
    dev = next(iter(model.components.values())).V.device
    w_unembed = topo.get_unembed_weight().detach().to(dev, torch.float64)
    d_model, vocab = w_unembed.shape
    alive_by_canon = {canon.get(k, k): v.to(dev, torch.bool) for k, v in (alive or {}).items()}
    alive_full = {la: alive_by_canon.get(la, torch.ones(c, dtype=torch.bool, device=dev)) for la, c in layers.items()}
    sources_by_target = {t: [s for s in srcs if s == EMBED or s in layers] for t, srcs in sbt.items()
                         if t == OUTPUT or t in layers}
    f64 = torch.float64

    def z(*shape: int) -> Tensor:
        return torch.zeros(*shape, dtype=f64, device=dev)

    comp_pairs = [(t, s) for t, srcs in sources_by_target.items() if t != OUTPUT for s in srcs if s != EMBED]
    embed_targets = [t for t, srcs in sources_by_target.items() if t != OUTPUT and EMBED in srcs]
    out_sources = [s for s in sources_by_target.get(OUTPUT, []) if s != EMBED]
    return AttributionState(
        config=config,
        layers=layers,
        sources_by_target=sources_by_target,
        alive=alive_full,
        n_tokens=0,
        windows_done=[],
        regular={(t, s): z(layers[t], layers[s]) for t, s in comp_pairs},
        regular_abs={(t, s): z(layers[t], layers[s]) for t, s in comp_pairs},
        embed={t: z(layers[t], vocab) for t in embed_targets},
        embed_abs={t: z(layers[t], vocab) for t in embed_targets},
        unembed={s: z(d_model, layers[s]) for s in out_sources},
        embed_unembed=z(d_model, vocab),
        w_unembed=w_unembed,
        ci_sum={la: z(c) for la, c in layers.items()},
        act_sq_sum={la: z(c) for la, c in layers.items()},
        logit_sq_sum=z(vocab),
        embed_token_count=torch.zeros(vocab, dtype=torch.int64, device=dev),
    )


def _accumulate_target(
    state: AttributionState, graph: _Graph, tokens: Tensor, target: str, out_rows: Tensor, out_signs: Tensor | None,
    weights: Mapping[str, Tensor],
) -> None:
    """Backward passes for the targets `out_rows` (component idx, or d_model dim for OUTPUT)."""
    tgt = graph.targets[target]
    sources = [s for s in state.sources_by_target[target] if s in graph.leaves]
    if not sources or out_rows.numel() == 0:
        return
    leaves = [graph.leaves[s] for s in sources]
    per_item = 4 * (tgt.numel() + sum(leaf.numel() for leaf in leaves)) * 2
    n_rows = out_rows.numel()
    abs_too = out_signs is not None
    vocab = state.vocab_size
    for start, stop in _chunks(n_rows, per_item * (2 if abs_too else 1), state.config.max_chunk_bytes):
        rows = out_rows[start:stop]
        n = rows.numel()
        one_hot = torch.zeros((n, *tgt.shape), dtype=tgt.dtype, device=tgt.device)
        one_hot[torch.arange(n, device=tgt.device), ..., rows] = 1.0
        if abs_too:
            assert out_signs is not None
            signed_abs = one_hot * out_signs[start:stop]  # ∂Σ|a|/∂a = sign(a)
            one_hot = torch.cat([one_hot, signed_abs])
        grads = _batched_grads(tgt, leaves, one_hot)
        for s, g, leaf in zip(sources, grads, leaves, strict=True):
            if s == EMBED:
                per_pos = (g * leaf.detach()).sum(-1).to(torch.float64)  # [m, B, S]
                vals = torch.zeros(per_pos.shape[0], vocab, dtype=torch.float64, device=g.device)
                vals.index_add_(1, tokens.reshape(-1), per_pos.reshape(per_pos.shape[0], -1))
            else:
                vals = (g * (leaf.detach() * weights[s])).sum(dim=(1, 2)).to(torch.float64)  # [m, C_src]
            if target == OUTPUT:
                (state.embed_unembed if s == EMBED else state.unembed[s])[rows] += vals
                continue
            dest, dest_abs = ((state.embed[target], state.embed_abs[target]) if s == EMBED
                              else (state.regular[(target, s)], state.regular_abs[(target, s)]))
            dest[rows] += vals[:n]
            dest_abs[rows] += vals[n:]


def update_attributions(state: AttributionState, model: ComponentModel, tokens: Tensor, topology: TransformerTopology,
                        sampling: Sampling, window_start: int) -> None:
    """Add one batch of windows `[B, S]` to the raw sums."""
    from spdlab.core.harvest.stats import _add_window_range

    bsz, seq = tokens.shape
    state.windows_done = _add_window_range(state.windows_done, window_start, window_start + bsz)
    canon = _canon_map(model, topology)
    graph = _forward_graph(model, topology, canon, tokens, sampling, state.config.use_delta)
    state.n_tokens += bsz * seq
    state.embed_token_count += torch.bincount(tokens.reshape(-1), minlength=state.vocab_size)
    with torch.no_grad():
        for la in state.layers:
            state.ci_sum[la] += graph.ci[la].sum(dim=(0, 1), dtype=torch.float64)
            state.act_sq_sum[la] += graph.targets[la].detach().double().pow(2).sum(dim=(0, 1))
        state.logit_sq_sum += graph.logits.detach().double().pow(2).sum(dim=(0, 1))
        thr = state.config.ci_threshold
        weights = {la: torch.where(c > thr, c, torch.zeros_like(c)) for la, c in graph.ci.items()}
    for target in state.sources_by_target:
        if target == OUTPUT:
            d_model = graph.targets[OUTPUT].shape[-1]
            _accumulate_target(state, graph, tokens, OUTPUT, torch.arange(d_model, device=tokens.device), None,
                               weights)
            continue
        rows = torch.nonzero(state.alive[target]).squeeze(1)
        signs = torch.sign(graph.targets[target].detach()[..., rows]).movedim(-1, 0)[..., None]  # [n, B, S, 1]
        _accumulate_target(state, graph, tokens, target, rows, signs, weights)


# --- shards -------------------------------------------------------------------------------------


def run_attribution_shard(
    model: ComponentModel,
    windows: Tensor,
    shard: ShardSpec,
    config: DatasetAttributionConfig,
    *,
    sampling: Sampling = "continuous",
    topology: TransformerTopology | None = None,
    sources_by_target: Mapping[str, list[str]] | None = None,
    alive: Mapping[str, Tensor] | None = None,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
    resume_state: AttributionState | None = None,
    checkpoint: Any = None,
    checkpoint_every: int = 10,
) -> AttributionState:
    """Accumulate one shard of `windows` (`[N, S]`, the whole dataset) batch by batch.

    Progress `(windows done, windows in shard, "attributions")`; `checkpoint(state)` every
    `checkpoint_every` batches and at the end; resume by passing the checkpointed state.
    """
    topo = topology or TransformerTopology(model.target_model)
    start, stop = shard_range(int(windows.shape[0]), shard)
    state = resume_state or new_attribution_state(
        model, config, topology=topo, sources_by_target=sources_by_target, alive=alive
    )
    if state.config != config:
        raise ValueError("resume state was produced with a different attribution config")
    pos = start
    if state.windows_done:
        if len(state.windows_done) != 1 or state.windows_done[0][0] != start or state.windows_done[0][1] > stop:
            raise ValueError(f"resume state covers {state.windows_done}, not a prefix of [{start}, {stop})")
        pos = state.windows_done[0][1]
    dev = next(iter(model.components.values())).V.device
    progress(pos - start, stop - start, "attributions")
    n_batches = 0
    while pos < stop:
        check_cancel(should_cancel)
        end = min(stop, pos + config.batch_size)
        update_attributions(state, model, windows[pos:end].to(dev, torch.int64), topo, sampling, pos)
        pos, n_batches = end, n_batches + 1
        progress(pos - start, stop - start, "attributions")
        if checkpoint is not None and n_batches % checkpoint_every == 0 and pos < stop:
            checkpoint(state)
    if checkpoint is not None:
        checkpoint(state)
    return state


def _sum_fields(state: AttributionState) -> dict[str, Tensor]:
    """Every raw sum by a flat name (also the safetensors layout)."""
    out: dict[str, Tensor] = {"embed_unembed": state.embed_unembed, "logit_sq_sum": state.logit_sq_sum,
                              "embed_token_count": state.embed_token_count}
    out.update({f"regular|{t}|{s}": v for (t, s), v in state.regular.items()})
    out.update({f"regular_abs|{t}|{s}": v for (t, s), v in state.regular_abs.items()})
    out.update({f"embed|{t}": v for t, v in state.embed.items()})
    out.update({f"embed_abs|{t}": v for t, v in state.embed_abs.items()})
    out.update({f"unembed|{s}": v for s, v in state.unembed.items()})
    out.update({f"ci_sum|{la}": v for la, v in state.ci_sum.items()})
    out.update({f"act_sq_sum|{la}": v for la, v in state.act_sq_sum.items()})
    return out


def merge_attribution_states(states: Iterable[AttributionState]) -> AttributionState:
    """Element-wise sum of every raw field (exact for counts; float64 sums); streamed."""
    from spdlab.core.harvest.stats import _add_window_range

    acc: AttributionState | None = None
    for st in states:
        if acc is None:
            acc = load_attribution_tensors(attribution_meta(st), {k: v.clone() for k, v in _all_tensors(st).items()})
            continue
        if st.config != acc.config or st.layers != acc.layers or st.sources_by_target != acc.sources_by_target:
            raise ValueError("attribution states come from different configs or decompositions")
        if any(not torch.equal(acc.alive[la], st.alive[la].to(acc.alive[la].device)) for la in acc.layers):
            raise ValueError("attribution states computed different alive target sets")
        for a, b in st.windows_done:
            acc.windows_done = _add_window_range(acc.windows_done, a, b)
        theirs = _sum_fields(st)
        for name, mine in _sum_fields(acc).items():
            mine += theirs[name].to(mine.device)
        acc.n_tokens += st.n_tokens
    if acc is None:
        raise ValueError("no attribution states to merge")
    return acc


def attribution_meta(state: AttributionState) -> dict[str, Any]:
    return {
        "format_version": STATE_FORMAT_VERSION,
        "config": state.config.model_dump(),
        "layers": list(state.layers.items()),
        "sources_by_target": state.sources_by_target,
        "n_tokens": state.n_tokens,
        "windows_done": state.windows_done,
        "extra": state.extra_meta,
    }


def _all_tensors(state: AttributionState) -> dict[str, Tensor]:
    out = _sum_fields(state)
    out["w_unembed"] = state.w_unembed
    out.update({f"alive|{la}": v for la, v in state.alive.items()})
    return out


def load_attribution_tensors(meta: Mapping[str, Any], t: Mapping[str, Tensor]) -> AttributionState:
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported attribution state format {meta.get('format_version')}")
    layers = {la: int(c) for la, c in meta["layers"]}

    def pick(prefix: str) -> dict[str, Tensor]:
        return {k.split("|", 1)[1]: v for k, v in t.items() if k.startswith(prefix + "|")}

    def pairs(prefix: str) -> dict[tuple[str, str], Tensor]:
        return {tuple(k.split("|")[1:3]): v for k, v in t.items() if k.startswith(prefix + "|")}  # type: ignore[misc]

    return AttributionState(
        config=DatasetAttributionConfig.model_validate(meta["config"]),
        layers=layers,
        sources_by_target={k: list(v) for k, v in meta["sources_by_target"].items()},
        alive=pick("alive"),
        n_tokens=int(meta["n_tokens"]),
        windows_done=[(int(a), int(b)) for a, b in meta["windows_done"]],
        regular=pairs("regular"),
        regular_abs=pairs("regular_abs"),
        embed=pick("embed"),
        embed_abs=pick("embed_abs"),
        unembed=pick("unembed"),
        embed_unembed=t["embed_unembed"],
        w_unembed=t["w_unembed"],
        ci_sum=pick("ci_sum"),
        act_sq_sum=pick("act_sq_sum"),
        logit_sq_sum=t["logit_sq_sum"],
        embed_token_count=t["embed_token_count"],
        extra_meta=dict(meta.get("extra", {})),
    )


def save_attribution_state(state: AttributionState, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in _all_tensors(state).items()}
    save_file(tensors, str(tmp), metadata={"spdlab_attributions": json.dumps(attribution_meta(state))})
    tmp.replace(path)


def load_attribution_state(path: str | Path, device: torch.device | str = "cpu") -> AttributionState:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["spdlab_attributions"])
    return load_attribution_tensors(meta, load_file(str(path), device=str(device)))


# --- queries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionEntry:
    key: str
    layer: str
    index: int
    value: float


def _parse_key(key: str) -> tuple[str, int]:
    layer, _, idx = key.rpartition(":")
    if not layer or not idx.isdigit():
        raise ValueError(f"bad node key {key!r} (expected '<layer>:<idx>')")
    return layer, int(idx)


def _target_rms(state: AttributionState, layer: str) -> Tensor:
    n = max(state.n_tokens, 1)
    sq = state.logit_sq_sum if layer == OUTPUT else state.act_sq_sum[layer]
    return (sq / n).sqrt().clamp_min(1e-10)


def _source_denom(state: AttributionState, layer: str) -> Tensor:
    d = state.embed_token_count.double() if layer == EMBED else state.ci_sum[layer]
    return d.clamp_min(1e-10)


def _raw_from_sources(state: AttributionState, target: str, idx: int, metric: Metric) -> dict[str, Tensor]:
    """Raw attribution of every source into one target, per source layer."""
    if target == OUTPUT:
        if metric == "attr_abs":
            return {}
        w = state.w_unembed[:, idx]
        out = {s: w @ m for s, m in state.unembed.items()}
        if EMBED in state.sources_by_target.get(OUTPUT, []):
            out[EMBED] = w @ state.embed_unembed
        return out
    if target not in state.layers:
        return {}
    reg = state.regular_abs if metric == "attr_abs" else state.regular
    emb = state.embed_abs if metric == "attr_abs" else state.embed
    out = {s: m[idx] for (t, s), m in reg.items() if t == target}
    if target in emb:
        out[EMBED] = emb[target][idx]
    return out


def _raw_to_targets(state: AttributionState, source: str, idx: int, metric: Metric,
                    include_outputs: bool) -> dict[str, Tensor]:
    """Raw attribution of one source into every target, per target layer."""
    if source == OUTPUT:
        return {}
    reg = state.regular_abs if metric == "attr_abs" else state.regular
    emb = state.embed_abs if metric == "attr_abs" else state.embed
    if source == EMBED:
        out = {t: m[:, idx] for t, m in emb.items()}
    else:
        out = {t: m[:, idx] for (t, s), m in reg.items() if s == source}
    if include_outputs and metric == "attr":
        if source == EMBED and EMBED in state.sources_by_target.get(OUTPUT, []):
            out[OUTPUT] = state.w_unembed.T @ state.embed_unembed[:, idx]
        elif source in state.unembed:
            out[OUTPUT] = state.w_unembed.T @ state.unembed[source][:, idx]
    return out


def _top(segments: dict[str, Tensor], k: int, sign: Sign) -> list[AttributionEntry]:
    if not segments:
        return []
    names = list(segments)
    values = torch.cat([segments[n] for n in names])
    layer_of = torch.cat([torch.full((segments[n].numel(),), i, dtype=torch.int64) for i, n in enumerate(names)])
    index_of = torch.cat([torch.arange(segments[n].numel()) for n in names])
    keep = values > 0 if sign == "positive" else values < 0
    values, layer_of, index_of = values[keep], layer_of[keep.cpu()], index_of[keep.cpu()]
    top = torch.topk(values, min(k, values.numel()), largest=sign == "positive")
    return [
        AttributionEntry(key=f"{names[li]}:{ix}", layer=names[li], index=ix, value=v)
        for v, li, ix in zip(top.values.tolist(), layer_of[top.indices.cpu()].tolist(),
                             index_of[top.indices.cpu()].tolist(), strict=True)
    ]


def top_sources(state: AttributionState, target_key: str, k: int = 10, sign: Sign = "positive",
                metric: Metric = "attr") -> list[AttributionEntry]:
    """The `k` sources with the largest (positive) or most negative normalised attribution into a target.

    Normalised: `raw / source_denom / target_rms` (source denom: CI sum for components, token count
    for embed; target RMS over tokens). Empty for impossible directions (embed as target,
    `attr_abs` into outputs).
    """
    layer, idx = _parse_key(target_key)
    raw = _raw_from_sources(state, layer, idx, metric)
    rms = _target_rms(state, layer)[idx] if layer == OUTPUT or layer in state.layers else None
    if rms is None:
        return []
    return _top({s: v / _source_denom(state, s) / rms for s, v in raw.items()}, k, sign)


def top_targets(state: AttributionState, source_key: str, k: int = 10, sign: Sign = "positive",
                metric: Metric = "attr", include_outputs: bool = True) -> list[AttributionEntry]:
    """The `k` targets a source attributes to most (normalised as in `top_sources`); dead targets excluded."""
    layer, idx = _parse_key(source_key)
    if layer != EMBED and layer not in state.layers:
        return []
    denom = _source_denom(state, layer)[idx]
    segs = {}
    for t, v in _raw_to_targets(state, layer, idx, metric, include_outputs).items():
        normed = v / denom / _target_rms(state, t)
        if t != OUTPUT:
            normed = torch.where(state.alive[t], normed, torch.zeros_like(normed))
        segs[t] = normed
    return _top(segs, k, sign)


def get_attribution(state: AttributionState, source_key: str, target_key: str, metric: Metric = "attr") -> float:
    """The raw (un-normalised) sum for one edge; 0.0 where no edge exists."""
    s_layer, s_idx = _parse_key(source_key)
    t_layer, t_idx = _parse_key(target_key)
    raw = _raw_from_sources(state, t_layer, t_idx, metric)
    return float(raw[s_layer][s_idx]) if s_layer in raw else 0.0


def normalised_value(state: AttributionState, source_key: str, target_key: str, metric: Metric = "attr") -> float:
    """One normalised edge value (as ranked by the top-k queries)."""
    s_layer, s_idx = _parse_key(source_key)
    t_layer, t_idx = _parse_key(target_key)
    raw = get_attribution(state, source_key, target_key, metric)
    value = raw / float(_source_denom(state, s_layer)[s_idx]) / float(_target_rms(state, t_layer)[t_idx])
    return value if math.isfinite(value) else 0.0
