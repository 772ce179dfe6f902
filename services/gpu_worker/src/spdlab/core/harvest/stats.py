"""Harvest accumulators: exact counts per component, mergeable across shards, saved as safetensors.

One flat component axis (layers concatenated in adapter order). Integer counts are int64 and exact:
co-occurrence `FᵀF` is a float32 matmul of 0/1 values in row chunks of < 2^24 (every partial sum
is an exactly representable integer) with autocast off, then rounded to int64 — never bf16, which
rounded per-batch counts above 256 in the research code. Input-token counts scatter only the
firings (no `[C, N]` index). Float sums (activations, output probability mass) accumulate in float64,
so shard splits agree to float64 rounding (stored statistics are compared across splits at 1e-9).
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from spdlab.core.harvest.adapter import ComponentLayer
from spdlab.core.harvest.config import HarvestConfig
from spdlab.core.harvest.reservoir import (
    Reservoir,
    empty_reservoir,
    merge_reservoir_into,
    offer_firings,
    reservoir_from_tensors,
    reservoir_tensors,
)

STATE_FORMAT_VERSION = 2  # 2: splitmix64 reservoir keys (version-1 keys would not merge with these)
_EXACT_ROWS = 1 << 23  # rows per fp32 count-matmul chunk: sums stay below 2^24, hence exact


@dataclass
class HarvestState:
    """Everything a harvest accumulates; `windows_done` lists the `[start, stop)` ranges covered."""

    config: HarvestConfig
    layers: list[ComponentLayer]
    activation_types: list[str]
    vocab_size: int
    n_tokens: int
    windows_done: list[tuple[int, int]]
    firing_counts: Tensor  # [C] int64
    activation_sums: dict[str, Tensor]  # type -> [C] float64 (over all positions)
    cooccurrence: Tensor  # [C, C] int64
    input_counts: Tensor  # [C, V] int64: firings whose input token is v
    input_totals: Tensor  # [V] int64
    output_mass: Tensor | None  # [C, V] float64: next-token probability mass at firings
    output_totals: Tensor | None  # [V] float64
    reservoir: Reservoir
    extra_meta: dict[str, str] = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.firing_counts.shape[0])

    @property
    def component_keys(self) -> list[str]:
        return component_keys(self.layers)


def component_keys(layers: Sequence[ComponentLayer]) -> list[str]:
    """`layer:idx` keys on the flat component axis (concrete layer names, as the research harvest)."""
    return [f"{layer.name}:{i}" for layer in layers for i in range(layer.n_components)]


def new_state(
    config: HarvestConfig,
    layers: Sequence[ComponentLayer],
    activation_types: Sequence[str],
    vocab_size: int,
    device: torch.device | str = "cpu",
) -> HarvestState:
    n = sum(layer.n_components for layer in layers)
    i64, f64 = torch.int64, torch.float64
    out = config.output_token_stats
    return HarvestState(
        config=config,
        layers=list(layers),
        activation_types=list(activation_types),
        vocab_size=vocab_size,
        n_tokens=0,
        windows_done=[],
        firing_counts=torch.zeros(n, dtype=i64, device=device),
        activation_sums={t: torch.zeros(n, dtype=f64, device=device) for t in activation_types},
        cooccurrence=torch.zeros(n, n, dtype=i64, device=device),
        input_counts=torch.zeros(n, vocab_size, dtype=i64, device=device),
        input_totals=torch.zeros(vocab_size, dtype=i64, device=device),
        output_mass=torch.zeros(n, vocab_size, dtype=f64, device=device) if out else None,
        output_totals=torch.zeros(vocab_size, dtype=f64, device=device) if out else None,
        reservoir=empty_reservoir(
            n, config.examples_per_component, config.context_tokens_per_side, activation_types, config.seed, device
        ),
    )


# --- update -------------------------------------------------------------------------------------


def _firing_products(fire: Tensor, probs: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """`(FᵀF int64 exact, FᵀP float64 or None)` for 0/1 `fire` `[N, C]` and `probs` `[N, V]`.

    Counts: float32 matmuls over chunks of < 2^24 rows (so they are exact); mass: float64; autocast
    off. `FᵀF` is symmetric: only the upper block row `F₁ᵀF` and the lower-right block `F₂ᵀF₂` are
    multiplied (¾ of the work).
    """
    n, c = fire.shape
    h = c // 2
    gram = torch.zeros(c, c, dtype=torch.int64, device=fire.device)
    mass = None if probs is None else torch.zeros(c, probs.shape[1], dtype=torch.float64, device=fire.device)
    with torch.autocast(fire.device.type, enabled=False):
        for start in range(0, n, _EXACT_ROWS):
            f = fire[start : start + _EXACT_ROWS].to(torch.float32)
            top = (f[:, :h].T @ f).round().to(torch.int64)
            gram[:h] += top
            gram[h:, :h] += top[:, h:].T
            gram[h:, h:] += (f[:, h:].T @ f[:, h:]).round().to(torch.int64)
            if mass is not None and probs is not None:
                mass += f.T.to(torch.float64) @ probs[start : start + _EXACT_ROWS].to(torch.float64)
    return gram, mass


def exact_gram(fire: Tensor) -> Tensor:
    """`FᵀF` as int64 for a 0/1 matrix `[N, C]`, exact (fp32 chunks of < 2^24 rows, autocast off)."""
    return _firing_products(fire, None)[0]


def _add_window_range(ranges: list[tuple[int, int]], start: int, stop: int) -> list[tuple[int, int]]:
    """Add `[start, stop)`, refusing overlaps, coalescing touching ranges."""
    for a, b in ranges:
        if start < b and a < stop:
            raise ValueError(f"windows [{start}, {stop}) overlap already counted windows [{a}, {b})")
    merged: list[tuple[int, int]] = []
    for a, b in sorted([*ranges, (start, stop)]):
        if merged and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def update(
    state: HarvestState,
    batch_tokens: Tensor,
    firing_values: Tensor,
    acts: Mapping[str, Tensor],
    output_probs: Tensor | None = None,
    *,
    window_start: int,
) -> None:
    """Add one batch in place. `batch_tokens` `[B,S]`, `firing_values` `[B,S,C]`, `acts[t]` `[B,S,C]`,
    `output_probs` `[B,S,V]` (needed iff the config keeps output token stats).

    A component fires where its firing value is strictly above `config.activation_threshold`.
    Batch row `b` is global window `window_start + b`.
    """
    bsz, seq = batch_tokens.shape
    state.windows_done = _add_window_range(state.windows_done, window_start, window_start + bsz)
    firing = firing_values > state.config.activation_threshold
    flat = firing.reshape(bsz * seq, -1)
    tokens = batch_tokens.reshape(-1).to(torch.int64)

    probs = None
    if state.output_mass is not None:
        if output_probs is None:
            raise ValueError("config keeps output token stats but the batch has no output_probs")
        probs = output_probs.reshape(bsz * seq, -1)

    state.n_tokens += bsz * seq
    gram, mass = _firing_products(flat, probs)
    state.cooccurrence += gram
    state.firing_counts += gram.diagonal()  # n_ii = firings of i
    for t in state.activation_types:
        state.activation_sums[t] += acts[t].reshape(bsz * seq, -1).sum(dim=0, dtype=torch.float64)

    n_pos, c = torch.nonzero(flat, as_tuple=True)  # shared by input counts and the reservoir
    state.input_counts.view(-1).index_add_(0, c * state.vocab_size + tokens[n_pos], torch.ones_like(c))
    state.input_totals += torch.bincount(tokens, minlength=state.vocab_size)

    if mass is not None and probs is not None:
        assert state.output_mass is not None and state.output_totals is not None
        state.output_mass += mass
        state.output_totals += probs.sum(dim=0, dtype=torch.float64)

    offer_firings(state.reservoir, batch_tokens, firing, acts, window_start, n_pos // seq, n_pos % seq, c)


# --- merge --------------------------------------------------------------------------------------


def _check_mergeable(a: HarvestState, b: HarvestState) -> None:
    if a.config != b.config:
        raise ValueError(f"harvest configs differ: {a.config} vs {b.config}")
    if a.layers != b.layers or a.activation_types != b.activation_types or a.vocab_size != b.vocab_size:
        raise ValueError("harvest states come from different decompositions (layers, activation types or vocab)")


def merge_into(acc: HarvestState, other: HarvestState) -> None:
    """Add `other` to `acc` in place (exact for all counts; reservoirs merge by smallest keys)."""
    _check_mergeable(acc, other)
    ranges = acc.windows_done
    for start, stop in other.windows_done:
        ranges = _add_window_range(ranges, start, stop)
    acc.windows_done = ranges
    dev = acc.firing_counts.device
    acc.n_tokens += other.n_tokens
    acc.firing_counts += other.firing_counts.to(dev)
    for t in acc.activation_types:
        acc.activation_sums[t] += other.activation_sums[t].to(dev)
    acc.cooccurrence += other.cooccurrence.to(dev)
    acc.input_counts += other.input_counts.to(dev)
    acc.input_totals += other.input_totals.to(dev)
    if acc.output_mass is not None:
        assert acc.output_totals is not None and other.output_mass is not None and other.output_totals is not None
        acc.output_mass += other.output_mass.to(dev)
        acc.output_totals += other.output_totals.to(dev)
    merge_reservoir_into(acc.reservoir, other.reservoir)


def merge(states: Sequence[HarvestState]) -> HarvestState:
    """Merge into a copy of the first state (inputs are left untouched)."""
    if not states:
        raise ValueError("nothing to merge")
    acc = clone_state(states[0])
    for s in states[1:]:
        merge_into(acc, s)
    return acc


# --- save / load --------------------------------------------------------------------------------


def state_tensors(state: HarvestState) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {
        "firing_counts": state.firing_counts,
        "cooccurrence": state.cooccurrence,
        "input_counts": state.input_counts,
        "input_totals": state.input_totals,
    }
    out.update({f"activation_sums.{t}": s for t, s in state.activation_sums.items()})
    if state.output_mass is not None and state.output_totals is not None:
        out["output_mass"] = state.output_mass
        out["output_totals"] = state.output_totals
    out.update(reservoir_tensors(state.reservoir))
    return out


def state_meta(state: HarvestState) -> dict[str, object]:
    return {
        "format_version": STATE_FORMAT_VERSION,
        "config": state.config.model_dump(),
        "layers": [[la.name, la.n_components, la.canonical] for la in state.layers],
        "activation_types": state.activation_types,
        "vocab_size": state.vocab_size,
        "n_tokens": state.n_tokens,
        "windows_done": state.windows_done,
        "extra": state.extra_meta,
    }


def _state_from(meta: Mapping[str, object], tensors: Mapping[str, Tensor]) -> HarvestState:
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported harvest state format {meta.get('format_version')}")
    config = HarvestConfig.model_validate(meta["config"])
    types = list(meta["activation_types"])  # type: ignore[call-overload]
    return HarvestState(
        config=config,
        layers=[ComponentLayer(name=n, n_components=int(c), canonical=k) for n, c, k in meta["layers"]],  # type: ignore[attr-defined]
        activation_types=types,
        vocab_size=int(meta["vocab_size"]),  # type: ignore[call-overload]
        n_tokens=int(meta["n_tokens"]),  # type: ignore[call-overload]
        windows_done=[(int(a), int(b)) for a, b in meta["windows_done"]],  # type: ignore[attr-defined]
        firing_counts=tensors["firing_counts"],
        activation_sums={t: tensors[f"activation_sums.{t}"] for t in types},
        cooccurrence=tensors["cooccurrence"],
        input_counts=tensors["input_counts"],
        input_totals=tensors["input_totals"],
        output_mass=tensors.get("output_mass"),
        output_totals=tensors.get("output_totals"),
        reservoir=reservoir_from_tensors(tensors, types, config.context_tokens_per_side, config.seed),
        extra_meta=dict(meta.get("extra", {})),  # type: ignore[call-overload]
    )


def clone_state(state: HarvestState, device: torch.device | str | None = None) -> HarvestState:
    tensors = {k: v.to(device or v.device, copy=True) for k, v in state_tensors(state).items()}
    return _state_from(json.loads(json.dumps(state_meta(state))), tensors)


def save_state(state: HarvestState, path: str | Path) -> None:
    """Write tensors + JSON metadata to one safetensors file (atomic rename: a crash keeps the old file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_tensors(state).items()}
    save_file(tensors, str(tmp), metadata={"spdlab_harvest_state": json.dumps(state_meta(state))})
    tmp.replace(path)


def load_state(path: str | Path, device: torch.device | str = "cpu") -> HarvestState:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["spdlab_harvest_state"])
    tensors = load_file(str(path), device=str(device))
    return _state_from(meta, tensors)


# --- derived statistics -------------------------------------------------------------------------


@dataclass
class TopLists:
    """Per-row ranked lists: `ids` `[C, k]` (−1 = padding), `values` `[C, k]` float64 (NaN = padding)."""

    ids: Tensor
    values: Tensor

    def row(self, i: int) -> list[tuple[int, float]]:
        keep = self.ids[i] >= 0
        return list(zip(self.ids[i][keep].tolist(), self.values[i][keep].tolist(), strict=True))


@dataclass
class TokenStats:
    """Token lists of one side (input: hard counts; output: next-token probability mass)."""

    precision_top: TopLists
    recall_top: TopLists
    pmi_top: TopLists
    pmi_bottom: TopLists


CORRELATION_METRICS = ("precision", "recall", "jaccard", "pmi")


@dataclass
class HarvestResult:
    """Finalized statistics over the flat component axis (all components; `alive` marks firing ones)."""

    component_keys: list[str]
    layers: list[ComponentLayer]
    n_tokens: int
    firing_counts: Tensor  # [C] int64
    firing_density: Tensor  # [C] float64
    mean_activations: dict[str, Tensor]  # type -> [C] float64, mean over all tokens
    alive: Tensor  # [C] bool
    input_stats: TokenStats
    output_stats: TokenStats | None
    correlations: dict[str, TopLists]  # metric -> top correlated components
    cooccurrence: Tensor  # [C, C] int64
    reservoir: Reservoir


def _ranked(scores: Tensor, valid: Tensor, k: int, largest: bool) -> TopLists:
    """Top-k valid entries per row; ties broken by smaller column index."""
    fill = -math.inf if largest else math.inf
    masked = torch.where(valid, scores, torch.full_like(scores, fill))
    vals, idx = torch.sort(masked, dim=1, descending=largest, stable=True)
    vals, idx = vals[:, :k], idx[:, :k]
    ok = torch.gather(valid, 1, idx)
    return TopLists(
        ids=torch.where(ok, idx, -1), values=torch.where(ok, vals, torch.full_like(vals, math.nan))
    )


def _cat_lists(parts: list[TopLists]) -> TopLists:
    return TopLists(ids=torch.cat([p.ids for p in parts]), values=torch.cat([p.values for p in parts]))


def token_stats(
    co: Tensor, totals: Tensor, firing_counts: Tensor, n_tokens: int, k: int, pmi_min_count: float = 0.0,
    chunk: int = 1024,
) -> TokenStats:
    """Precision `co/total`, recall `co/n_fire`, PMI `log(co·N/(n_fire·total))` per (component, token).

    Only tokens with `co > 0` are ranked (PMI is undefined elsewhere); bottom PMI masks invalid
    entries with +∞ (the research code masked them with −∞ and so kept nearly empty bottom lists).
    Rows are processed in chunks so memory is `O(chunk · V)`.
    """
    tot = totals.to(torch.float64)
    parts: dict[str, list[TopLists]] = {"p": [], "r": [], "top": [], "bot": []}
    for start in range(0, co.shape[0], chunk):
        c = co[start : start + chunk].to(torch.float64)
        nf = firing_counts[start : start + chunk].to(torch.float64)[:, None]
        valid = (c > 0) & (tot > 0)[None, :]
        precision = c / tot.clamp_min(1e-300)[None, :]
        recall = c / nf.clamp_min(1.0)
        pmi = torch.log((c * n_tokens) / (nf * tot[None, :]).clamp_min(1e-300))
        pmi_valid = valid & (c >= pmi_min_count)
        parts["p"].append(_ranked(precision, valid, k, largest=True))
        parts["r"].append(_ranked(recall, valid, k, largest=True))
        parts["top"].append(_ranked(pmi, pmi_valid, k, largest=True))
        parts["bot"].append(_ranked(pmi, pmi_valid, k, largest=False))
    return TokenStats(
        precision_top=_cat_lists(parts["p"]),
        recall_top=_cat_lists(parts["r"]),
        pmi_top=_cat_lists(parts["top"]),
        pmi_bottom=_cat_lists(parts["bot"]),
    )


def correlation_rows(
    cooccurrence: Tensor, firing_counts: Tensor, n_tokens: int, rows: Tensor, metric: str
) -> tuple[Tensor, Tensor]:
    """`(scores [R, C] float64, valid [R, C] bool)` of `metric` between components `rows` and all j.

    precision `n_ij/n_i`, recall `n_ij/n_j`, Jaccard `n_ij/(n_i+n_j−n_ij)`, PMI `log(n_ij·N/(n_i·n_j))`;
    valid excludes self, dead components and zero co-occurrence.
    """
    n_ij = cooccurrence[rows].to(torch.float64)
    n_i = firing_counts[rows].to(torch.float64)[:, None]
    n_j = firing_counts.to(torch.float64)[None, :]
    valid = (n_ij > 0) & (n_i > 0) & (n_j > 0)
    valid[torch.arange(rows.numel(), device=rows.device), rows] = False
    if metric == "precision":
        scores = n_ij / n_i.clamp_min(1)
    elif metric == "recall":
        scores = n_ij / n_j.clamp_min(1)
    elif metric == "jaccard":
        scores = n_ij / (n_i + n_j - n_ij).clamp_min(1)
    elif metric == "pmi":
        scores = torch.log((n_ij * n_tokens) / (n_i * n_j).clamp_min(1))
    else:
        raise ValueError(f"unknown correlation metric {metric!r} (one of {CORRELATION_METRICS})")
    return scores, valid


def top_correlated(
    cooccurrence: Tensor, firing_counts: Tensor, n_tokens: int, component: int, metric: str,
    k: int = 20, largest: bool = True,
) -> list[tuple[int, float]]:
    """Query-time: the `k` components most (or least) correlated with `component` by `metric`."""
    rows = torch.tensor([component], device=cooccurrence.device)
    scores, valid = correlation_rows(cooccurrence, firing_counts, n_tokens, rows, metric)
    return _ranked(scores, valid, k, largest).row(0)


def _all_correlations(state: HarvestState, k: int, chunk: int = 1024) -> dict[str, TopLists]:
    out: dict[str, list[TopLists]] = {m: [] for m in CORRELATION_METRICS}
    n = state.n_components
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(n, start + chunk), device=state.cooccurrence.device)
        for m in CORRELATION_METRICS:
            scores, valid = correlation_rows(state.cooccurrence, state.firing_counts, state.n_tokens, rows, m)
            out[m].append(_ranked(scores, valid, k, largest=True))
    return {m: _cat_lists(parts) for m, parts in out.items()}


def finalize(state: HarvestState) -> HarvestResult:
    """Derive densities, means, token lists and correlation lists from the raw counts."""
    cfg = state.config
    n = max(state.n_tokens, 1)
    fc = state.firing_counts
    out_stats = None
    if state.output_mass is not None and state.output_totals is not None:
        out_stats = token_stats(state.output_mass, state.output_totals, fc, state.n_tokens, cfg.top_k_tokens,
                                cfg.pmi_min_count)
    return HarvestResult(
        component_keys=state.component_keys,
        layers=state.layers,
        n_tokens=state.n_tokens,
        firing_counts=fc,
        firing_density=fc.to(torch.float64) / n,
        mean_activations={t: s / n for t, s in state.activation_sums.items()},
        alive=fc > 0,
        input_stats=token_stats(state.input_counts, state.input_totals, fc, state.n_tokens, cfg.top_k_tokens,
                                cfg.pmi_min_count),
        output_stats=out_stats,
        correlations=_all_correlations(state, cfg.top_k_correlations),
        cooccurrence=state.cooccurrence,
        reservoir=state.reservoir,
    )
