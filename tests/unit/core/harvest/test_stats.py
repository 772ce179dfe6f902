"""Every harvest statistic against a brute-force Python recount; exact shard merges; save/resume."""

import math
from pathlib import Path

import pytest
import torch
from harvest_fakes import FakeAdapter

from spdlab.core.callbacks import Cancelled
from spdlab.core.harvest.adapter import flatten_batch
from spdlab.core.harvest.harvest import (
    HarvestConfig,
    ShardSpec,
    merge_shards,
    missing_windows,
    plan_shards,
    run_harvest_shard,
    shard_range,
)
from spdlab.core.harvest.reservoir import EMPTY_KEY, firing_keys
from spdlab.core.harvest.stats import (
    HarvestState,
    exact_gram,
    finalize,
    load_state,
    save_state,
    top_correlated,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


V, N_WIN, SEQ = 11, 14, 8
THRESHOLD = 0.05


@pytest.fixture(scope="module")
def setup() -> tuple[FakeAdapter, torch.Tensor, HarvestConfig]:
    adapter = FakeAdapter(vocab_size=V, sizes=(4, 3), context_length=SEQ)
    windows = torch.randint(0, V, (N_WIN, SEQ), generator=torch.Generator().manual_seed(1))
    cfg = HarvestConfig(activation_threshold=THRESHOLD, examples_per_component=3, context_tokens_per_side=2,
                        batch_size=4, top_k_tokens=4, top_k_correlations=3, seed=7)
    return adapter, windows, cfg


@pytest.fixture(scope="module")
def single(setup) -> HarvestState:
    adapter, windows, cfg = setup
    return run_harvest_shard(adapter, windows, ShardSpec(index=0, count=1), cfg)


@pytest.fixture(scope="module")
def bf(setup) -> dict:
    adapter, windows, _ = setup
    return _brute_force(adapter, windows)


def _brute_force(adapter: FakeAdapter, windows: torch.Tensor) -> dict:
    """Recount everything position by position from one full-dataset adapter call."""
    out = adapter.run_batch(windows)
    firing_vals, acts = flatten_batch(out, adapter.layers, adapter.activation_types)
    fv, probs = firing_vals.tolist(), out.output_probs.double().tolist()
    act_l = {t: a.double().tolist() for t, a in acts.items()}
    n_comp = firing_vals.shape[-1]
    r = {"n": 0, "fire": [0] * n_comp, "co": [[0] * n_comp for _ in range(n_comp)],
         "inp": [[0] * V for _ in range(n_comp)], "inp_tot": [0] * V,
         "out": [[0.0] * V for _ in range(n_comp)], "out_tot": [0.0] * V,
         "acts": {t: [0.0] * n_comp for t in acts}, "firings": []}
    for w in range(N_WIN):
        for s in range(SEQ):
            tok = int(windows[w, s])
            r["n"] += 1
            r["inp_tot"][tok] += 1
            for v in range(V):
                r["out_tot"][v] += probs[w][s][v]
            fired = [c for c in range(n_comp) if fv[w][s][c] > THRESHOLD]
            for t in acts:
                for c in range(n_comp):
                    r["acts"][t][c] += act_l[t][w][s][c]
            for c in fired:
                r["fire"][c] += 1
                r["inp"][c][tok] += 1
                r["firings"].append((w, s, c))
                for v in range(V):
                    r["out"][c][v] += probs[w][s][v]
                for c2 in fired:
                    r["co"][c][c2] += 1
    return r


def _ranked(pairs: list[tuple[int, float]], k: int, largest: bool) -> list[tuple[int, float]]:
    return sorted(pairs, key=lambda p: (-p[1] if largest else p[1], p[0]))[:k]


def _assert_lists(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9, abs=1e-12)


def test_counts_equal_brute_force(setup, single: HarvestState, bf: dict) -> None:
    adapter, windows, _ = setup
    assert single.n_tokens == bf["n"] == N_WIN * SEQ
    assert single.firing_counts.tolist() == bf["fire"]
    assert 0 < sum(bf["fire"]) < single.n_components * single.n_tokens  # neither empty nor saturated
    assert single.cooccurrence.dtype == torch.int64 and single.cooccurrence.tolist() == bf["co"]
    assert single.input_counts.dtype == torch.int64 and single.input_counts.tolist() == bf["inp"]
    assert single.input_totals.tolist() == bf["inp_tot"]
    torch.testing.assert_close(single.output_mass, torch.tensor(bf["out"], dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    assert single.output_totals.tolist() == pytest.approx(bf["out_tot"], rel=1e-9)
    for t, sums in bf["acts"].items():
        assert single.activation_sums[t].tolist() == pytest.approx(sums, rel=1e-5, abs=1e-6)
    assert single.windows_done == [(0, N_WIN)]


def _token_lists(co: list[list[float]], tot: list[float], fire: list[int], n: int, k: int, c: int) -> dict:
    valid = [v for v in range(V) if co[c][v] > 0 and tot[v] > 0]
    prec = [(v, co[c][v] / tot[v]) for v in valid]
    rec = [(v, co[c][v] / fire[c]) for v in valid]
    pmi = [(v, math.log(co[c][v] * n / (fire[c] * tot[v]))) for v in valid]
    return {"precision_top": _ranked(prec, k, True), "recall_top": _ranked(rec, k, True),
            "pmi_top": _ranked(pmi, k, True), "pmi_bottom": _ranked(pmi, k, False)}


def test_finalized_statistics_equal_brute_force(setup, single: HarvestState, bf: dict) -> None:
    adapter, windows, cfg = setup
    res = finalize(single)
    n, k = bf["n"], cfg.top_k_tokens
    assert res.firing_density.tolist() == pytest.approx([f / n for f in bf["fire"]], rel=1e-12)
    for t, sums in bf["acts"].items():
        assert res.mean_activations[t].tolist() == pytest.approx([s / n for s in sums], rel=1e-5, abs=1e-7)
    assert res.alive.tolist() == [f > 0 for f in bf["fire"]]
    for c in range(single.n_components):
        if bf["fire"][c] == 0:
            continue
        want_in = _token_lists(bf["inp"], bf["inp_tot"], bf["fire"], n, k, c)
        want_out = _token_lists(bf["out"], bf["out_tot"], bf["fire"], n, k, c)
        for name in want_in:
            _assert_lists(getattr(res.input_stats, name).row(c), want_in[name])
            got_out = getattr(res.output_stats, name).row(c)
            assert [v for _, v in got_out] == pytest.approx([v for _, v in want_out[name]], rel=1e-5)
        # The research code's bottom-PMI lists were nearly always empty; ours are full when possible.
        assert len(res.input_stats.pmi_bottom.row(c)) == min(k, sum(1 for x in bf["inp"][c] if x > 0))


def test_component_correlations_equal_brute_force(setup, single: HarvestState, bf: dict) -> None:
    adapter, windows, cfg = setup
    res = finalize(single)
    co, fire, n = bf["co"], bf["fire"], bf["n"]
    formulas = {
        "precision": lambda i, j: co[i][j] / fire[i],
        "recall": lambda i, j: co[i][j] / fire[j],
        "jaccard": lambda i, j: co[i][j] / (fire[i] + fire[j] - co[i][j]),
        "pmi": lambda i, j: math.log(co[i][j] * n / (fire[i] * fire[j])),
    }
    for i in range(single.n_components):
        others = [j for j in range(single.n_components) if j != i and co[i][j] > 0]
        for metric, f in formulas.items():
            pairs = [(j, f(i, j)) for j in others]
            _assert_lists(res.correlations[metric].row(i), _ranked(pairs, cfg.top_k_correlations, True))
            bottom = top_correlated(single.cooccurrence, single.firing_counts, n, i, metric, k=2, largest=False)
            _assert_lists(bottom, _ranked(pairs, 2, False))


def test_reservoir_holds_smallest_keyed_firings_with_windows(setup, single: HarvestState, bf: dict) -> None:
    adapter, windows, cfg = setup
    out = adapter.run_batch(windows)
    fv, acts = flatten_batch(out, adapter.layers, adapter.activation_types)
    res, h = single.reservoir, cfg.context_tokens_per_side
    for c in range(single.n_components):
        mine = [(w, s) for w, s, cc in bf["firings"] if cc == c]
        keys = firing_keys(cfg.seed, torch.tensor([w for w, _ in mine]), torch.tensor([s for _, s in mine]),
                           torch.full((len(mine),), c)).tolist() if mine else []
        want = sorted(zip(keys, mine, strict=True))[: cfg.examples_per_component]
        slots = [j for j in range(res.capacity) if int(res.keys[c, j]) != EMPTY_KEY]
        got = sorted((int(res.keys[c, j]), j) for j in slots)
        assert [k for k, _ in got] == [k for k, _ in want]
        for (_, j), (_, (w, s)) in zip(got, want, strict=True):
            assert (int(res.window_index[c, j]), int(res.position[c, j])) == (w, s)
            for o in range(-h, h + 1):
                p = s + o
                inside = 0 <= p < SEQ
                assert int(res.tokens[c, j, o + h]) == (int(windows[w, p]) if inside else -1)
                assert bool(res.firings[c, j, o + h]) == (inside and float(fv[w, p, c]) > THRESHOLD)
                want_act = float(acts["component_activation"][w, p, c]) if inside else 0.0
                assert float(res.acts["component_activation"][c, j, o + h]) == pytest.approx(want_act)


def test_exact_gram_beyond_bf16_range() -> None:
    fire = torch.rand(3000, 5, generator=torch.Generator().manual_seed(0)) < 0.9
    got = exact_gram(fire)
    want = fire.long().T @ fire.long()
    assert torch.equal(got, want) and int(got.max()) > 2000  # bf16 would round counts above 256


def _assert_states_equal(a: HarvestState, b: HarvestState) -> None:
    assert a.n_tokens == b.n_tokens and a.windows_done == b.windows_done
    for name in ("firing_counts", "cooccurrence", "input_counts", "input_totals"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    torch.testing.assert_close(a.output_mass, b.output_mass, rtol=1e-12, atol=1e-12)
    for t in a.activation_sums:
        torch.testing.assert_close(a.activation_sums[t], b.activation_sums[t], rtol=1e-12, atol=1e-9)
    ra, rb = a.reservoir, b.reservoir
    oa, ob = torch.sort(ra.keys, dim=1), torch.sort(rb.keys, dim=1)
    assert torch.equal(oa.values, ob.values)
    ia, ib = oa.indices[..., None].expand_as(ra.tokens), ob.indices[..., None].expand_as(rb.tokens)
    assert torch.equal(ra.tokens.gather(1, ia), rb.tokens.gather(1, ib))
    assert torch.equal(ra.firings.gather(1, ia), rb.firings.gather(1, ib))
    assert torch.equal(ra.window_index.gather(1, oa.indices), rb.window_index.gather(1, ob.indices))
    for t in ra.acts:
        assert torch.equal(ra.acts[t].gather(1, ia), rb.acts[t].gather(1, ib))


def test_three_shard_merge_equals_single_run(setup, single: HarvestState) -> None:
    adapter, windows, cfg = setup
    shards = plan_shards(N_WIN, 3)
    assert [shard_range(N_WIN, s) for s in shards] == [(0, 5), (5, 10), (10, 14)]
    states = [run_harvest_shard(adapter, windows, s, cfg) for s in shards]
    merged = merge_shards(reversed(states))  # order must not matter
    _assert_states_equal(merged, single)
    assert missing_windows(merged, N_WIN) == []
    with pytest.raises(ValueError, match="overlap"):
        merge_shards([states[0], states[0]])
    assert missing_windows(merge_shards(states[:2]), N_WIN) == [(10, 14)]


def test_cancel_checkpoint_and_resume(setup, single: HarvestState, tmp_path: Path) -> None:
    adapter, windows, cfg = setup
    path = tmp_path / "shard.safetensors"
    calls = {"n": 0}

    def cancel_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(Cancelled):
        run_harvest_shard(adapter, windows, ShardSpec(index=0, count=1), cfg, should_cancel=cancel_after_two,
                          checkpoint=lambda s: save_state(s, path), checkpoint_every=1)
    partial = load_state(path)
    assert partial.windows_done == [(0, 2 * cfg.batch_size)]
    seen: list[tuple[int, int, str]] = []
    resumed = run_harvest_shard(adapter, windows, ShardSpec(index=0, count=1), cfg, resume_state=partial,
                                progress=lambda c, t, s: seen.append((c, t, s)))
    assert seen[0] == (2 * cfg.batch_size, N_WIN, "harvest") and seen[-1] == (N_WIN, N_WIN, "harvest")
    _assert_states_equal(resumed, single)


def test_save_load_roundtrip_and_config_mismatch(setup, single: HarvestState, tmp_path: Path) -> None:
    adapter, windows, cfg = setup
    save_state(single, tmp_path / "s.safetensors")
    loaded = load_state(tmp_path / "s.safetensors")
    _assert_states_equal(loaded, single)
    assert loaded.config == single.config and loaded.layers == single.layers
    other = run_harvest_shard(adapter, windows[:4], ShardSpec(index=0, count=1),
                              cfg.model_copy(update={"activation_threshold": 0.5}))
    with pytest.raises(ValueError, match="configs differ"):
        merge_shards([single, other])


def test_spd_adapter_on_fixture_model() -> None:
    from spdlab.core.harvest.adapter import DecompositionAdapter
    from spdlab.core.harvest.spd_adapter import SPDAdapter
    from spdlab.core.research_import import import_research_run

    run = Path(__file__).parents[3] / "fixtures" / "research_runs" / "llama_mlp_vector"
    loaded = import_research_run(run)
    adapter = SPDAdapter.from_loaded(loaded)
    assert isinstance(adapter, DecompositionAdapter)
    assert (adapter.vocab_size, adapter.context_length, len(adapter.layers)) == (256, 32, 12)
    assert adapter.layers[0].canonical == "0.mlp.up" and sum(la.n_components for la in adapter.layers) == 304
    tokens = torch.randint(0, 256, (6, 32), generator=torch.Generator().manual_seed(2))
    out = adapter.run_batch(tokens)
    model = loaded.component_model
    with torch.no_grad():
        cache = model(tokens, cache_type="input").cache
        ci = model.calc_causal_importances(cache, "continuous").lower_leaky
    path = "h.1.mlp.down_proj"
    comp = model.components[path]
    torch.testing.assert_close(out.firing_values[path], ci[path])
    torch.testing.assert_close(out.activations[path]["component_activation"],
                               (cache[path] @ comp.V) * comp.U.norm(dim=1).detach())
    torch.testing.assert_close(out.output_probs.sum(-1), torch.ones(6, 32))
    cfg = HarvestConfig(batch_size=2, examples_per_component=4, context_tokens_per_side=3)
    single = run_harvest_shard(adapter, tokens, ShardSpec(index=0, count=1), cfg)
    merged = merge_shards([run_harvest_shard(adapter, tokens, s, cfg) for s in plan_shards(6, 2)])
    _assert_states_equal(merged, single)
    assert int(single.firing_counts.sum()) == sum(int((v > 0).sum()) for v in ci.values())
