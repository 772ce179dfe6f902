"""Dataset attributions on the fixture model: batched sums equal a per-example, per-target recount."""

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from spdlab.core.harvest.dataset_attributions import (
    AttributionState,
    DatasetAttributionConfig,
    get_attribution,
    load_attribution_state,
    merge_attribution_states,
    run_attribution_shard,
    save_attribution_state,
    top_sources,
    top_targets,
)
from spdlab.core.harvest.harvest import ShardSpec
from spdlab.core.masks import make_mask_infos
from spdlab.core.research_import import import_research_run
from spdlab.core.topology import TransformerTopology

RUN = Path(__file__).parents[3] / "fixtures" / "research_runs" / "llama_mlp_vector"
N_WIN, SEQ, N_ALIVE = 3, 12, 3
CI_THRESHOLD = 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return import_research_run(RUN).component_model


@pytest.fixture(scope="module")
def windows() -> Tensor:
    return torch.randint(0, 40, (N_WIN, SEQ), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def alive(model) -> dict[str, Tensor]:
    """A few alive targets per layer (keyed by concrete path, as a harvest provides them)."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for path, c in model.module_to_c.items():
        mask = torch.zeros(c, dtype=torch.bool)
        mask[torch.randperm(c, generator=g)[:N_ALIVE]] = True
        out[path] = mask
    return out


@pytest.fixture(scope="module")
def config() -> DatasetAttributionConfig:
    # A tiny chunk budget forces several batched backward chunks per target layer.
    return DatasetAttributionConfig(batch_size=2, ci_threshold=CI_THRESHOLD, max_chunk_bytes=200_000)


@pytest.fixture(scope="module")
def single(model, windows, alive, config) -> AttributionState:
    return run_attribution_shard(model, windows, ShardSpec(index=0, count=1), config, alive=alive)


def _brute_force(model, windows: Tensor, alive: dict[str, Tensor], sbt: dict[str, list[str]]) -> dict:
    """One window at a time, one scalar target at a time, plain autograd."""
    topo = TransformerTopology(model.target_model)
    canon = topo.canonical_names(model.target_module_paths)
    concrete = {c: p for p, c in canon.items()}
    vocab = topo.embedding_module.num_embeddings
    sums: dict = {}
    grabbed: dict[str, Tensor] = {}

    def add(key: tuple, value: Tensor) -> None:
        sums[key] = sums.get(key, 0) + value.double()

    for w in range(windows.shape[0]):
        tokens = windows[w : w + 1]
        with torch.no_grad():
            cached = model(tokens, cache_type="input")
            ci = model.calc_causal_importances(cached.cache, "continuous", detach_inputs=True).lower_leaky
        grabbed.clear()

        def leaf(_m: nn.Module, _a: object, out: Tensor) -> Tensor:
            grabbed["embed"] = out.detach().requires_grad_(True)
            return grabbed["embed"]

        def resid(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            grabbed["resid"] = args[0]

        h1 = topo.embedding_module.register_forward_hook(leaf)
        h2 = topo.unembed_module.register_forward_pre_hook(resid)
        with torch.enable_grad():
            out = model(tokens, mask_infos=make_mask_infos({p: torch.ones_like(v) for p, v in ci.items()}),
                        cache_type="component_acts")
        h1.remove()
        h2.remove()
        add(("logit_sq",), out.output.detach().pow(2).sum(dim=(0, 1)))
        for tgt, srcs in sbt.items():
            if tgt == "output":
                scalars = [(d, grabbed["resid"][..., d].sum(), "attr") for d in range(grabbed["resid"].shape[-1])]
            else:
                pre = out.cache[f"{concrete[tgt]}_pre_detach"]
                idx = torch.nonzero(alive[concrete[tgt]]).squeeze(1).tolist()
                scalars = [(t, pre[..., t].sum(), "attr") for t in idx]
                scalars += [(t, pre[..., t].abs().sum(), "attr_abs") for t in idx]
            for t, scalar, metric in scalars:
                leaves = [grabbed["embed"] if s == "embed" else out.cache[f"{concrete[s]}_post_detach"] for s in srcs]
                grads = torch.autograd.grad(scalar, leaves, retain_graph=True, allow_unused=True)
                for s, g, lf in zip(srcs, grads, leaves, strict=True):
                    if g is None:
                        continue
                    if s == "embed":
                        per_tok = torch.zeros(vocab, dtype=torch.float64)
                        for p in range(SEQ):
                            per_tok[int(tokens[0, p])] += float((g[0, p] * lf[0, p].detach()).sum())
                        add((metric, tgt, t, s), per_tok)
                    else:
                        c = ci[concrete[s]]
                        weight = torch.where(c > CI_THRESHOLD, c, torch.zeros_like(c))
                        add((metric, tgt, t, s), (g * lf.detach() * weight).sum(dim=(0, 1)))
    return sums


def test_sums_equal_brute_force(model, windows, alive, single: AttributionState) -> None:
    bf = _brute_force(model, windows, alive, single.sources_by_target)
    n_checked = 0
    for key, want in bf.items():
        if key[0] == "logit_sq":
            torch.testing.assert_close(single.logit_sq_sum, want, rtol=1e-5, atol=1e-6)
            continue
        metric, tgt, t, s = key
        if tgt == "output":
            got = (single.embed_unembed if s == "embed" else single.unembed[s])[t]
        elif s == "embed":
            got = (single.embed_abs if metric == "attr_abs" else single.embed)[tgt][t]
        else:
            got = (single.regular_abs if metric == "attr_abs" else single.regular)[(tgt, s)][t]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
        n_checked += 1
    assert n_checked > 200
    # Dead targets got no backward passes; token counts are exact.
    dead = ~single.alive["1.mlp.down"]
    assert float(single.regular[("1.mlp.down", "1.mlp.up")][dead].abs().sum()) == 0.0
    assert float(single.regular[("1.mlp.down", "1.mlp.up")][~dead].abs().sum()) > 0.0
    assert torch.equal(single.embed_token_count, torch.bincount(windows.reshape(-1), minlength=256))
    assert single.n_tokens == N_WIN * SEQ


def test_shard_merge_is_exact_and_states_roundtrip(model, windows, alive, config, single, tmp_path) -> None:
    shards = [run_attribution_shard(model, windows, ShardSpec(index=i, count=2), config, alive=alive,
                                    sources_by_target=single.sources_by_target) for i in range(2)]
    save_attribution_state(shards[1], tmp_path / "s1.safetensors")
    merged = merge_attribution_states([shards[0], load_attribution_state(tmp_path / "s1.safetensors")])
    assert merged.windows_done == [(0, N_WIN)] and merged.n_tokens == single.n_tokens
    assert torch.equal(merged.embed_token_count, single.embed_token_count)
    for (t, s), v in single.regular.items():
        torch.testing.assert_close(merged.regular[(t, s)], v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(merged.regular_abs[(t, s)], single.regular_abs[(t, s)], rtol=1e-10, atol=1e-12)
    for s, v in single.unembed.items():
        torch.testing.assert_close(merged.unembed[s], v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(merged.embed_unembed, single.embed_unembed, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="overlap"):
        merge_attribution_states([shards[0], shards[0]])


def _normalised(state: AttributionState, layer: str, raw: Tensor, idx: int, as_source: bool) -> Tensor:
    """Brute-force normalisation of a raw column/row for the query tests."""
    n = state.n_tokens
    if as_source:  # raw over sources of one target (layer = source layer)
        return raw / (state.embed_token_count.double() if layer == "embed" else state.ci_sum[layer]).clamp_min(1e-10)
    sq = state.logit_sq_sum if layer == "output" else state.act_sq_sum[layer]
    return raw / (sq / n).sqrt().clamp_min(1e-10)


def test_top_sources_and_targets_rank_normalised_values(single: AttributionState) -> None:
    st = single
    t_layer, t_idx = "1.mlp.up", int(torch.nonzero(st.alive["1.mlp.up"])[0])
    for metric in ("attr", "attr_abs"):
        reg = st.regular_abs if metric == "attr_abs" else st.regular
        emb = st.embed_abs if metric == "attr_abs" else st.embed
        rms = math.sqrt(float(st.act_sq_sum[t_layer][t_idx]) / st.n_tokens)
        cands = []
        for s in st.sources_by_target[t_layer]:
            raw = emb[t_layer][t_idx] if s == "embed" else reg[(t_layer, s)][t_idx]
            vals = _normalised(st, s, raw, t_idx, as_source=True) / rms
            cands += [(f"{s}:{i}", float(v)) for i, v in enumerate(vals.tolist())]
        for sign in ("positive", "negative"):
            got = top_sources(st, f"{t_layer}:{t_idx}", k=7, sign=sign, metric=metric)
            pool = [c for c in cands if (c[1] > 0 if sign == "positive" else c[1] < 0)]
            want = sorted(pool, key=lambda c: -c[1] if sign == "positive" else c[1])[:7]
            assert [e.key for e in got] == [k for k, _ in want]
            assert [e.value for e in got] == pytest.approx([v for _, v in want], rel=1e-9)
            assert get_attribution(st, got[0].key, f"{t_layer}:{t_idx}", metric) != 0.0

    # Source → targets, including output tokens through W_unembed (attr only).
    s_layer, s_idx = "0.mlp.down", 5
    denom = float(st.ci_sum[s_layer][s_idx])
    cands = []
    for (t, s), m in st.regular.items():
        if s == s_layer:
            vals = _normalised(st, t, m[:, s_idx], s_idx, as_source=False) / denom
            cands += [(f"{t}:{i}", float(v)) for i, v in enumerate(vals.tolist()) if bool(st.alive[t][i])]
    out_raw = st.w_unembed.T @ st.unembed[s_layer][:, s_idx]
    cands += [(f"output:{i}", float(v)) for i, v in enumerate((_normalised(st, "output", out_raw, 0, False) / denom).tolist())]
    got = top_targets(st, f"{s_layer}:{s_idx}", k=6, sign="positive", metric="attr")
    want = sorted([c for c in cands if c[1] > 0], key=lambda c: -c[1])[:6]
    assert [e.key for e in got] == [k for k, _ in want]
    assert not any(e.layer == "output" for e in top_targets(st, f"{s_layer}:{s_idx}", k=50, metric="attr_abs"))
    assert top_sources(st, "output:3", metric="attr_abs") == [] and top_sources(st, "embed:3") == []
    tok = int(torch.nonzero(st.embed_token_count)[0])
    assert top_targets(st, f"embed:{tok}", k=5)  # embed sources reach components and outputs
