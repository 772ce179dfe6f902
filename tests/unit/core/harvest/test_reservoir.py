"""Reservoir sampling: uniform over firings (chi-square over many seeds), exact merges, clipped windows."""


import pytest
import torch

from spdlab.core.harvest.reservoir import (
    EMPTY_KEY,
    empty_reservoir,
    examples_of,
    firing_keys,
    merge_reservoir_into,
    update_reservoir,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# chi-square critical value, 11 degrees of freedom, p = 0.001
CHI2_11_P001 = 31.26


def _chi_square(counts: torch.Tensor, expected: float) -> float:
    return float(((counts.double() - expected) ** 2 / expected).sum())


def _inclusions(pattern: torch.Tensor, split: int | None, n_trials: int, k: int) -> torch.Tensor:
    """Inclusion counts per firing position of `pattern` `[W, S]` over `n_trials` independent trials.

    Trials are components with the same firing pattern: keys hash the component index, so each
    component's reservoir is an independent draw (one batched update instead of a loop over seeds).
    """
    firing = pattern[..., None].expand(*pattern.shape, n_trials).contiguous()
    tokens = torch.arange(pattern.numel()).reshape(pattern.shape) % 50
    acts = {"a": firing.float()}
    res = empty_reservoir(n_trials, k, 1, ["a"], seed=5)
    if split is None:
        update_reservoir(res, tokens, firing, acts, window_start=0)
    else:  # two shards, each its own reservoir, then merged
        other = empty_reservoir(n_trials, k, 1, ["a"], seed=5)
        update_reservoir(res, tokens[:split], firing[:split], {"a": acts["a"][:split]}, window_start=0)
        update_reservoir(other, tokens[split:], firing[split:], {"a": acts["a"][split:]}, window_start=split)
        merge_reservoir_into(res, other)
    assert bool((res.keys != EMPTY_KEY).all())
    counts = torch.zeros(pattern.shape, dtype=torch.int64)
    counts.index_put_((res.window_index.reshape(-1), res.position.reshape(-1)),
                      torch.ones(res.keys.numel(), dtype=torch.int64), accumulate=True)
    return counts


def test_uniform_over_firings_in_one_batch() -> None:
    pattern = torch.zeros(1, 16, dtype=torch.bool)
    pattern[0, 2:14] = True
    n_trials, k = 3000, 4
    counts = _inclusions(pattern, None, n_trials, k)
    assert int(counts[~pattern].sum()) == 0
    assert _chi_square(counts[pattern], n_trials * k / 12) < CHI2_11_P001


def test_uniform_over_firings_across_uneven_shards() -> None:
    # 10 firings in window 0 and 2 in window 1: the research code's per-batch cap (5) would
    # over-sample window 1; here every firing has the same inclusion probability k/12.
    pattern = torch.zeros(2, 10, dtype=torch.bool)
    pattern[0, :] = True
    pattern[1, 3] = pattern[1, 7] = True
    n_trials, k = 3000, 3
    counts = _inclusions(pattern, 1, n_trials, k)[pattern]
    assert counts.numel() == 12 and int(counts.sum()) == n_trials * k
    assert _chi_square(counts, n_trials * k / 12) < CHI2_11_P001


def test_uniformity_check_detects_a_biased_sampler() -> None:
    # The same statistic rejects the per-batch-capped sampling of the research code (≤5 per batch).
    n_trials, k = 3000, 3
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(12, dtype=torch.int64)
    for _ in range(n_trials):
        capped = torch.cat([torch.randperm(10, generator=g)[:5], torch.tensor([10, 11])])
        counts[capped[torch.randperm(7, generator=g)[:k]]] += 1
    assert _chi_square(counts, n_trials * k / 12) > CHI2_11_P001


def test_merge_equals_single_stream_and_is_batching_independent() -> None:
    g = torch.Generator().manual_seed(3)
    firing = torch.rand(9, 16, 5, generator=g) < 0.4
    tokens = torch.randint(0, 40, (9, 16), generator=g)
    acts = {"a": torch.randn(9, 16, 5, generator=g)}
    whole = empty_reservoir(5, 6, 2, ["a"], seed=11)
    update_reservoir(whole, tokens, firing, acts, window_start=0)
    pieces = []
    for lo, hi in ((0, 2), (2, 3), (3, 9)):
        r = empty_reservoir(5, 6, 2, ["a"], seed=11)
        update_reservoir(r, tokens[lo:hi], firing[lo:hi], {"a": acts["a"][lo:hi]}, window_start=lo)
        pieces.append(r)
    merge_reservoir_into(pieces[2], pieces[0])
    merge_reservoir_into(pieces[2], pieces[1])
    for c in range(5):
        assert examples_of(pieces[2], c) == examples_of(whole, c)
    # Kept keys are the k smallest of all firings' keys.
    b, s, c = torch.nonzero(firing, as_tuple=True)
    keys = firing_keys(11, b, s, c)
    for comp in range(5):
        want = torch.sort(keys[c == comp]).values[:6]
        assert torch.equal(torch.sort(whole.keys[comp]).values[: want.numel()], want)


def _reference_key(seed: int, window: int, position: int, component: int) -> int:
    """splitmix64 key in plain Python integers (mod 2^64), independent of torch's int64 wrapping."""
    m, phi = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix(x: int) -> int:
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    window_state = mix((mix((seed * phi + phi) & m) + window * phi) & m)
    return mix((window_state + ((position << 32) | component) * phi) & m) >> 2


def test_keys_match_the_reference_hash() -> None:
    # Pins the wrapping int64 arithmetic (products overflow on almost every element) and the key layout.
    g = torch.Generator().manual_seed(4)
    w = torch.cat([torch.randint(0, 1 << 40, (200,), generator=g), torch.tensor([0, 1, (1 << 62) + 5])])
    s = torch.randint(0, 1 << 20, (w.numel(),), generator=g)
    c = torch.randint(0, 1 << 31, (w.numel(),), generator=g)
    for seed in (0, 7, -3, 1 << 40):
        got = firing_keys(seed, w, s, c).tolist()
        want = [_reference_key(seed, a, b, d) for a, b, d in zip(w.tolist(), s.tolist(), c.tolist(), strict=True)]
        assert got == want
        assert all(0 <= k < EMPTY_KEY for k in got)
    assert len(set(firing_keys(0, w, s, c).tolist())) == w.numel()


def test_windows_clipped_at_sequence_edges_record_the_offset() -> None:
    seq, h = 10, 3
    tokens = torch.arange(100, 100 + seq)[None, :]
    firing = torch.zeros(1, seq, 3, dtype=torch.bool)
    firing[0, 0, 0] = True  # clipped on the left
    firing[0, 1, 1] = True
    firing[0, 9, 2] = True  # clipped on the right
    firing[0, 8, 2] = True
    acts = {"ci": firing.float() * 0.5}
    res = empty_reservoir(3, 4, h, ["ci"], seed=0)
    update_reservoir(res, tokens, firing, acts, window_start=5)
    (e0,) = examples_of(res, 0)
    assert e0.token_ids == [100, 101, 102, 103] and e0.firing_offset == 0
    assert e0.firings == [True, False, False, False] and e0.activations["ci"] == [0.5, 0, 0, 0]
    assert (e0.window_index, e0.position) == (5, 0)
    (e1,) = examples_of(res, 1)
    assert e1.token_ids == [100, 101, 102, 103, 104] and e1.firing_offset == 1
    by_pos = {e.position: e for e in examples_of(res, 2)}
    assert by_pos[9].token_ids == [106, 107, 108, 109] and by_pos[9].firing_offset == 3
    assert by_pos[9].firings == [False, False, True, True]  # other firings of the component stay visible
    assert by_pos[8].token_ids == [105, 106, 107, 108, 109] and by_pos[8].firing_offset == 3
    assert all(e.token_ids[e.firing_offset] == 100 + e.position for c in range(3) for e in examples_of(res, c))


def test_zero_capacity_and_no_firings_are_noops() -> None:
    res = empty_reservoir(2, 0, 1, ["a"], seed=0)
    update_reservoir(res, torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, 2, dtype=torch.bool),
                     {"a": torch.ones(1, 4, 2)}, window_start=0)
    assert res.keys.numel() == 0
    res = empty_reservoir(2, 3, 1, ["a"], seed=0)
    update_reservoir(res, torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, 2, dtype=torch.bool),
                     {"a": torch.ones(1, 4, 2)}, window_start=0)
    assert examples_of(res, 0) == [] and int(res.n_items.sum()) == 0
