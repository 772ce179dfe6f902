"""Activation-example reservoirs: a uniform sample of each component's firings, with context windows.

Every firing `(window, position, component)` gets a pseudo-random 62-bit key from a counter-based
hash of those coordinates and the seed (splitmix64 in wrapping int64 arithmetic, two mixes per key); a component's reservoir keeps the `k` firings with the
smallest keys seen so far ("bottom-k" sampling). With i.i.d. uniform keys this is a uniform random
k-subset of all firings, the same distribution as Algorithm R, but:
- no per-batch cap (the research code kept ≤5 firings per component per batch, so dense components
  were sampled uniformly over batches, not firings);
- the whole update is batched tensor work (no CPU bookkeeping per firing);
- keys do not depend on batch size or sharding, so merging shard reservoirs (keep the `k` smallest
  keys of the union) gives exactly the reservoir of a single-worker run, which is also the
  seen-count-weighted merge in distribution.

Each example stores a window of `2·h+1` positions centred on the firing; positions outside the
sequence hold token `-1`. Read-out strips them and reports `firing_offset`, the firing token's
index in the stripped window (≠ h when the window was clipped at the sequence start).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

EMPTY_KEY = 1 << 62  # larger than every key (keys are < 2**62)


@dataclass
class Reservoir:
    """Dense per-component reservoirs. `keys` is `EMPTY_KEY` where a slot is empty."""

    keys: Tensor  # [C, k] int64
    tokens: Tensor  # [C, k, w] int64, -1 outside the sequence
    firings: Tensor  # [C, k, w] bool: this component fires at each window position
    acts: dict[str, Tensor]  # type -> [C, k, w] float32
    window_index: Tensor  # [C, k] int64: global index of the source window, -1 if empty
    position: Tensor  # [C, k] int64: firing position inside the source window
    context_per_side: int
    seed: int

    @property
    def n_components(self) -> int:
        return int(self.keys.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.keys.shape[1])

    @property
    def n_items(self) -> Tensor:
        """`[C]` filled slots per component."""
        return (self.keys != EMPTY_KEY).sum(dim=1)


def empty_reservoir(
    n_components: int,
    capacity: int,
    context_per_side: int,
    activation_types: Sequence[str],
    seed: int,
    device: torch.device | str = "cpu",
) -> Reservoir:
    w = 2 * context_per_side + 1
    shape = (n_components, capacity, w)
    return Reservoir(
        keys=torch.full((n_components, capacity), EMPTY_KEY, dtype=torch.int64, device=device),
        tokens=torch.full(shape, -1, dtype=torch.int64, device=device),
        firings=torch.zeros(shape, dtype=torch.bool, device=device),
        acts={t: torch.zeros(shape, dtype=torch.float32, device=device) for t in activation_types},
        window_index=torch.full((n_components, capacity), -1, dtype=torch.int64, device=device),
        position=torch.full((n_components, capacity), -1, dtype=torch.int64, device=device),
        context_per_side=context_per_side,
        seed=seed,
    )


# --- keys ---------------------------------------------------------------------------------------

_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64 increment (odd)


def _i64(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_MIX1, _MIX2, _STEP = _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB), _i64(_GOLDEN)


def _srl(x: Tensor, r: int) -> Tensor:
    """Logical right shift of int64 bits (torch's `>>` is arithmetic on negative values)."""
    return (x >> r) & ((1 << (64 - r)) - 1)


def _mix64(x: Tensor) -> Tensor:
    """The splitmix64 finaliser, a bijection on 64-bit words with full avalanche.

    int64 multiplication wraps modulo 2^64 (two's complement) on CPU and CUDA, which is exactly the
    unsigned product's low 64 bits; `test_keys_match_the_reference_hash` pins this against Python ints.
    """
    x = (x ^ _srl(x, 30)) * _MIX1
    x = (x ^ _srl(x, 27)) * _MIX2
    return x ^ _srl(x, 31)


def _seed_word(seed: int) -> int:
    """splitmix64 of the seed, as an int64 constant (Python ints, so no tensor round trip)."""
    x = (seed * _GOLDEN + _GOLDEN) % (1 << 64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return _i64(x ^ (x >> 31))


def window_hashes(seed: int, window_index: Tensor) -> Tensor:
    """Per-window stream state: `mix64(seed_word + window·φ)` (one per window, shared by its firings)."""
    return _mix64(window_index.to(torch.int64) * _STEP + _seed_word(seed))


def keys_in_windows(window_hash: Tensor, position: Tensor, component: Tensor) -> Tensor:
    """62-bit keys `mix64(window_hash + (position·2^32 + component)·φ) >> 2`.

    `(position, component)` packs injectively (position < 2^31, component < 2^32), so within a
    window keys are distinct before truncation; across windows they are independent streams.
    """
    packed = (position.to(torch.int64) << 32) | component.to(torch.int64)
    return _srl(_mix64(window_hash + packed * _STEP), 2)


def firing_keys(seed: int, window_index: Tensor, position: Tensor, component: Tensor) -> Tensor:
    """62-bit keys, a deterministic function of (seed, window, position, component)."""
    return keys_in_windows(window_hashes(seed, window_index), position, component)


# --- insertion ----------------------------------------------------------------------------------


def _group_ranks(sorted_groups: Tensor) -> Tensor:
    """Rank of each element within its run of equal values in a sorted 1-D tensor."""
    starts = torch.searchsorted(sorted_groups, sorted_groups, right=False)
    return torch.arange(sorted_groups.numel(), device=sorted_groups.device) - starts


def _insert(
    res: Reservoir,
    comp: Tensor,
    keys: Tensor,
    write: Callable[[Tensor, Tensor, Tensor], None],
) -> None:
    """Offer candidates `(comp[i], keys[i])`; `write(cand_idx, comp, slot)` stores the kept ones.

    Kept = the `k` smallest keys of old slots ∪ candidates, per component. Old slots are never moved:
    a kept candidate overwrites an evicted old slot (empty slots are evicted first).
    """
    k = res.capacity
    if k == 0 or comp.numel() == 0:
        return
    # Only candidates below the component's current worst key can enter.
    worst = res.keys.max(dim=1).values
    cand = torch.nonzero(keys < worst[comp]).squeeze(1)
    if cand.numel() == 0:
        return
    c, kk = comp[cand], keys[cand]
    # Sort by (component, key) with two stable sorts; keep at most k per component.
    o1 = torch.argsort(kk, stable=True)
    o2 = torch.argsort(c[o1], stable=True)
    order = o1[o2]
    cand, c, kk = cand[order], c[order], kk[order]
    rank = _group_ranks(c)
    first_k = rank < k
    cand, c, kk, rank = cand[first_k], c[first_k], kk[first_k], rank[first_k]

    touched, t_idx = torch.unique_consecutive(c, return_inverse=True)
    m = int(rank.max()) + 1
    new_keys = torch.full((touched.numel(), m), EMPTY_KEY, dtype=torch.int64, device=keys.device)
    new_keys[t_idx, rank] = kk
    old_sorted, old_slot = torch.sort(res.keys[touched], dim=1)
    # Final rank of candidate r among old ∪ new (old first on ties, which never happen for real keys).
    final = torch.arange(m, device=keys.device) + torch.searchsorted(old_sorted, new_keys, right=True)
    n_keep = ((final < k) & (new_keys != EMPTY_KEY)).sum(dim=1)  # kept candidates form a prefix in r
    keep = rank < n_keep[t_idx]
    cand, t_idx, rank = cand[keep], t_idx[keep], rank[keep]
    # Candidate r replaces the old slot at sorted position k − n_keep + r (the evicted suffix).
    slot = old_slot[t_idx, k - n_keep[t_idx] + rank]
    comp_kept = touched[t_idx]
    res.keys[comp_kept, slot] = kk[keep]
    write(cand, comp_kept, slot)


def update_reservoir(
    res: Reservoir,
    tokens: Tensor,
    firing: Tensor,
    acts: Mapping[str, Tensor],
    window_start: int,
) -> None:
    """Offer every firing of a batch. `tokens` `[B,S]`, `firing` `[B,S,C]` bool, `acts[t]` `[B,S,C]`.

    Batch row `b` is global window `window_start + b` (the key depends on it, not on the batching).
    """
    b, s, c = torch.nonzero(firing, as_tuple=True)
    offer_firings(res, tokens, firing, acts, window_start, b, s, c)


def offer_firings(
    res: Reservoir,
    tokens: Tensor,
    firing: Tensor,
    acts: Mapping[str, Tensor],
    window_start: int,
    b: Tensor,
    s: Tensor,
    c: Tensor,
) -> None:
    """`update_reservoir` with the firings `(b, s, c)` = `nonzero(firing)` already found by the caller."""
    if res.capacity == 0 or c.numel() == 0:
        return
    rows = torch.arange(window_start, window_start + tokens.shape[0], device=tokens.device)
    keys = keys_in_windows(window_hashes(res.seed, rows)[b], s, c)
    h, seq = res.context_per_side, tokens.shape[1]

    n_comp = firing.shape[2]

    def write(cand: Tensor, comp: Tensor, slot: Tensor) -> None:
        bb, ss = b[cand], s[cand]
        pos = ss[:, None] + torch.arange(-h, h + 1, device=tokens.device)
        valid = (pos >= 0) & (pos < seq)
        tok_idx = bb[:, None] * seq + pos.clamp(0, seq - 1)  # flat [B·S] index: one gather, not three
        val_idx = tok_idx * n_comp + comp[:, None]
        dst = comp * res.capacity + slot  # flat [C·k] slot index
        width = 2 * h + 1
        res.tokens.view(-1, width)[dst] = torch.where(valid, tokens.reshape(-1)[tok_idx], -1)
        res.firings.view(-1, width)[dst] = firing.reshape(-1)[val_idx] & valid
        for t, a in acts.items():
            res.acts[t].view(-1, width)[dst] = torch.where(valid, a.reshape(-1)[val_idx].float(), 0.0)
        res.window_index.view(-1)[dst] = bb + window_start
        res.position.view(-1)[dst] = ss

    _insert(res, c, keys, write)


def _check_compatible(a: Reservoir, b: Reservoir) -> None:
    if a.keys.shape != b.keys.shape or a.tokens.shape != b.tokens.shape:
        raise ValueError(f"reservoir shapes differ: {tuple(a.tokens.shape)} vs {tuple(b.tokens.shape)}")
    if a.seed != b.seed or a.context_per_side != b.context_per_side or set(a.acts) != set(b.acts):
        raise ValueError("reservoirs come from different configs (seed, window or activation types)")


def merge_reservoir_into(acc: Reservoir, other: Reservoir) -> None:
    """Merge `other` into `acc` in place: keep the `k` smallest keys of the union per component.

    Equal to the single-stream reservoir when the two saw disjoint firings of the same seed.
    """
    _check_compatible(acc, other)
    comp, slot_o = torch.nonzero(other.keys != EMPTY_KEY, as_tuple=True)
    keys = other.keys[comp, slot_o].to(acc.keys.device)
    comp, slot_o = comp.to(acc.keys.device), slot_o.to(acc.keys.device)

    def write(cand: Tensor, c: Tensor, slot: Tensor) -> None:
        src_c, src_s = comp[cand], slot_o[cand]
        dev = acc.keys.device
        acc.tokens[c, slot] = other.tokens[src_c, src_s].to(dev)
        acc.firings[c, slot] = other.firings[src_c, src_s].to(dev)
        for t in acc.acts:
            acc.acts[t][c, slot] = other.acts[t][src_c, src_s].to(dev)
        acc.window_index[c, slot] = other.window_index[src_c, src_s].to(dev)
        acc.position[c, slot] = other.position[src_c, src_s].to(dev)

    _insert(acc, comp, keys, write)


# --- read-out -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActivationExample:
    """One sampled firing with its context window (sequence-edge positions stripped)."""

    token_ids: list[int]
    firings: list[bool]
    activations: dict[str, list[float]]
    firing_offset: int  # index of the sampled firing token in `token_ids`
    window_index: int
    position: int


def examples_of(res: Reservoir, component: int) -> list[ActivationExample]:
    """Filled slots of one component, in key order (a random but reproducible order)."""
    keys = res.keys[component]
    order = torch.argsort(keys)
    order = order[keys[order] != EMPTY_KEY].cpu()
    tokens = res.tokens[component].cpu()
    fire = res.firings[component].cpu()
    acts = {t: a[component].cpu() for t, a in res.acts.items()}
    h = res.context_per_side
    out = []
    for j in order.tolist():
        valid = tokens[j] >= 0
        left_pad = int((~valid[: h + 1]).sum())
        out.append(
            ActivationExample(
                token_ids=tokens[j][valid].tolist(),
                firings=fire[j][valid].tolist(),
                activations={t: a[j][valid].tolist() for t, a in acts.items()},
                firing_offset=h - left_pad,
                window_index=int(res.window_index[component, j]),
                position=int(res.position[component, j]),
            )
        )
    return out


def reservoir_tensors(res: Reservoir, prefix: str = "reservoir.") -> dict[str, Tensor]:
    """Flat name → tensor view for saving."""
    out = {
        f"{prefix}keys": res.keys,
        f"{prefix}tokens": res.tokens,
        f"{prefix}firings": res.firings,
        f"{prefix}window_index": res.window_index,
        f"{prefix}position": res.position,
    }
    out.update({f"{prefix}acts.{t}": a for t, a in res.acts.items()})
    return out


def reservoir_from_tensors(
    tensors: Mapping[str, Tensor], activation_types: Sequence[str], context_per_side: int, seed: int,
    prefix: str = "reservoir.",
) -> Reservoir:
    return Reservoir(
        keys=tensors[f"{prefix}keys"],
        tokens=tensors[f"{prefix}tokens"],
        firings=tensors[f"{prefix}firings"],
        acts={t: tensors[f"{prefix}acts.{t}"] for t in activation_types},
        window_index=tensors[f"{prefix}window_index"],
        position=tensors[f"{prefix}position"],
        context_per_side=context_per_side,
        seed=seed,
    )
