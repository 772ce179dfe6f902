"""Attribution graphs: fidelity to the research app's fixtures, and the batched path vs brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from attribution_reference import reference_edges
from research_fixtures import RESEARCH_RUNS

from spdlab.common.spd_config import LayerwiseCiConfig
from spdlab.core.attribution import AttributionConfig, compute_attribution_graph
from spdlab.core.callbacks import Cancelled
from spdlab.core.component_model import ComponentModel
from spdlab.core.gradient_connectivity import sources_by_target_concrete
from spdlab.core.graph import AttributionGraph, InvalidNodesError
from spdlab.core.research_import import import_research_run
from spdlab.core.targets import LlamaSimpleMLP, LlamaSimpleMLPConfig
from spdlab.core.topology import TransformerTopology

FIXTURES = RESEARCH_RUNS
LM_RUNS = ["llama_mlp_vector", "gpt2_simple_global"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Run:
    def __init__(self, name: str):
        loaded = import_research_run(FIXTURES / name)
        self.name = name
        self.model: ComponentModel = loaded.component_model
        self.sampling = loaded.config.sampling
        self.topology = TransformerTopology(self.model.target_model, self.model.target_module_paths)
        self.sources_by_target = sources_by_target_concrete(self.model, self.topology)

    def expected(self, prompt: str) -> dict:
        return json.loads((FIXTURES / self.name / "expected" / f"{prompt}_fp32.json").read_text())

    def graph(self, tokens: torch.Tensor, **kwargs: object) -> AttributionGraph:
        config = kwargs.pop("config", None)
        return compute_attribution_graph(
            self.model, tokens, topology=self.topology, sources_by_target=self.sources_by_target,
            sampling=self.sampling, config=config, **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module", params=LM_RUNS)
def run(request: pytest.FixtureRequest) -> Run:
    return Run(request.param)


def assert_strengths_close(actual: dict, expected: dict) -> float:
    """Same keys; |a − e| ≤ 1e-5·|e| + 1e-7·max|e| (strengths near 0 are float noise). Returns max abs err."""
    assert set(actual) == set(expected)
    keys = list(expected)
    a = np.array([actual[k] for k in keys], dtype=np.float64)
    e = np.array([expected[k] for k in keys], dtype=np.float64)
    err = np.abs(a - e)
    bound = 1e-5 * np.abs(e) + 1e-7 * np.abs(e).max()
    worst = int(np.argmax(err - bound))
    assert (err <= bound).all(), f"{keys[worst]}: {a[worst]} vs {e[worst]}"
    return float(err.max())


# --- fixtures of the research code ----------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["p8", "p24"])
def test_reproduces_research_graph(run: Run, prompt: str) -> None:
    exp = run.expected(prompt)
    want = exp["compute_prompt_attributions"]
    graph = run.graph(torch.tensor(exp["token_ids"]))

    expected_edges = {(s, t): v for s, t, v, _ in want["edges"]}
    assert len(graph.edges) == want["n_edges"]
    assert_strengths_close(graph.edge_dict(), expected_edges)
    keys = graph.node_keys()
    cross = {(keys[s], keys[t]): c for s, t, c in zip(
        graph.edges.source.tolist(), graph.edges.target.tolist(), graph.edges.is_cross_seq.tolist(), strict=True)}
    assert cross == {(s, t): c for s, t, _, c in want["edges"]}

    assert graph.n_component_nodes == want["n_alive_component_nodes"]
    assert graph.count_nodes("output") == want["n_output_nodes"]
    assert graph.count_nodes("embed") == len(exp["token_ids"])
    component = {k: i for i, k in enumerate(keys) if not k.startswith(("embed:", "output:"))}
    assert set(component) == set(want["node_ci_vals_nonzero"])
    ci = graph.nodes.ci.tolist()
    act = graph.nodes.activation.tolist()
    for key, value in want["node_ci_vals_nonzero"].items():
        assert ci[component[key]] == pytest.approx(value, rel=1e-5, abs=1e-5)
    for key, value in want["node_subcomp_acts"].items():
        assert act[component[key]] == pytest.approx(value, rel=1e-4, abs=1e-5)

    out = graph.outputs
    for pos, top5 in enumerate(want["output_top5_by_ci_masked_prob"]):
        rows = (out.pos == pos) & (out.rank < 5)
        assert out.token_id[rows].tolist() == [r["token_id"] for r in top5]
        for name in ("ci_masked_prob", "ci_masked_logit", "target_prob", "target_logit"):
            want_vals = torch.tensor([r[name] for r in top5])
            torch.testing.assert_close(getattr(out, name)[rows], want_vals, rtol=1e-4, atol=1e-6)
    assert not graph.output_truncation.truncated  # the fixtures have ≤ 13 output nodes per position


# --- batched path vs brute force ------------------------------------------------------------------


def _alive_and_outputs(graph: AttributionGraph, model: ComponentModel, topology: TransformerTopology):
    layer_of = {topology.target_to_canon(p): p for p in model.target_module_paths}
    alive = {p: torch.zeros(graph.n_positions, c, dtype=torch.bool) for p, c in model.module_to_c.items()}
    outputs = []
    for layer, pos, idx in zip(graph.nodes.layer.tolist(), graph.nodes.pos.tolist(), graph.nodes.index.tolist(),
                               strict=True):
        name = graph.layer_names[layer]
        if name == "output":
            outputs.append((pos, idx))
        elif name != "embed":
            alive[layer_of[name]][pos, idx] = True
    return alive, outputs


def _check_against_reference(model, topology, sbt, tokens, graph: AttributionGraph) -> None:
    alive, outputs = _alive_and_outputs(graph, model, topology)
    ref = reference_edges(model, tokens, topology, sbt, alive, outputs, graph.n_positions)
    assert len(ref) == len(graph.edges)
    assert_strengths_close(graph.edge_dict(), ref)


def test_fast_path_matches_brute_force_on_fixture_runs(run: Run) -> None:
    tokens = torch.tensor(run.expected("p8")["token_ids"][:6])
    graph = run.graph(tokens, config=AttributionConfig(max_chunk_bytes=64 * 2**10))  # several chunks
    _check_against_reference(run.model, run.topology, run.sources_by_target, tokens, graph)


def random_llama_model(seed: int = 0) -> ComponentModel:
    torch.manual_seed(seed)
    cfg = LlamaSimpleMLPConfig(
        vocab_size=40, n_layer=2, n_head=2, n_embd=16, n_intermediate=24, block_size=12, n_ctx=12,
        n_key_value_heads=2, rotary_dim=8, rms_norm_eps=1e-5,
    )
    target = LlamaSimpleMLP(cfg)
    with torch.no_grad():
        for p in target.parameters():
            p.normal_(0, 0.4)
    target.requires_grad_(False)
    module_to_c = {}
    for i in range(cfg.n_layer):
        module_to_c |= {f"h.{i}.mlp.c_fc": 6, f"h.{i}.mlp.down_proj": 5}
        module_to_c |= {f"h.{i}.attn.{p}_proj": 4 for p in "qkvo"}
    ci_cfg = LayerwiseCiConfig(fn_type="vector_mlp", hidden_dims=[4])
    return ComponentModel(target, module_to_c, ci_cfg, "leaky_hard", "idx_0")


def test_fast_path_matches_brute_force_on_random_model() -> None:
    model = random_llama_model()
    topology = TransformerTopology(model.target_model, model.target_module_paths)
    sbt = sources_by_target_concrete(model, topology)
    tokens = torch.randint(0, 40, (9,), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    ci = {p: torch.rand(9, c, generator=gen) * (torch.rand(9, c, generator=gen) < 0.6) for p, c in
          model.module_to_c.items()}
    for loss_pos in (None, 5):
        graph = compute_attribution_graph(
            model, tokens, topology=topology, sources_by_target=sbt, sampling="continuous", ci_lower=ci,
            config=AttributionConfig(loss_seq_pos=loss_pos, output_prob_threshold=0.05, max_chunk_bytes=32 * 2**10),
        )
        assert graph.n_positions == (9 if loss_pos is None else loss_pos + 1)
        assert graph.n_component_nodes == sum(int((c[: graph.n_positions] > 0).sum()) for c in ci.values())
        assert graph.edges.is_cross_seq.any() and len(graph.edges) > 1000
        _check_against_reference(model, topology, sbt, tokens, graph)
        torch.testing.assert_close(
            graph.edges.strength_abs, graph.edges.strength * torch.sign(_target_values(graph, model, topology, tokens))
        )


def _target_values(graph: AttributionGraph, model, topology, tokens) -> torch.Tensor:
    """Value of each edge's target node in the all-ones + delta forward (= target model forward)."""
    from spdlab.core.attribution import gradient_forward

    fwd = gradient_forward(model, tokens.reshape(1, -1), topology)
    path_of = {topology.target_to_canon(p): p for p in [*model.target_module_paths, topology.unembed_path]}
    tgt = graph.edges.target
    layer, pos, idx = graph.nodes.layer[tgt], graph.nodes.pos[tgt], graph.nodes.index[tgt]
    values = torch.zeros(len(tgt))
    for li, name in enumerate(graph.layer_names):
        sel = layer == li
        if sel.any():
            values[sel] = fwd.targets[path_of[name]].detach()[0, pos[sel], idx[sel]]
    return values


# --- manual graphs, truncation, positions, cancel -------------------------------------------------


@pytest.fixture(scope="module")
def llama() -> Run:
    return Run("llama_mlp_vector")


def test_manual_graph_keeps_only_included_nodes(llama: Run) -> None:
    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    full = llama.graph(tokens)
    keys = full.node_keys()
    components = [k for k in keys if not k.startswith(("embed:", "output:"))]
    included = components[::3]
    manual = llama.graph(tokens, config=AttributionConfig(included_nodes=included))
    m_keys = manual.node_keys()
    assert sorted(k for k in m_keys if not k.startswith(("embed:", "output:"))) == sorted(included)
    # Gradients do not depend on CI, so every manual edge is the full graph's edge with the same value.
    full_edges, manual_edges = full.edge_dict(), manual.edge_dict()
    kept = set(included) | {k for k in keys if k.startswith("embed:")}
    shared_outputs = {k for k in m_keys if k.startswith("output:")} & set(keys)
    restricted = {e: v for e, v in full_edges.items() if e[0] in kept and (e[1] in kept or e[1] in shared_outputs)}
    assert {e: v for e, v in manual_edges.items() if e[1] in kept | shared_outputs} == restricted
    assert len(manual.edges) < len(full.edges)


def test_manual_graph_rejects_unknown_nodes(llama: Run) -> None:
    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    bad = ["0.mlp.up:99:0", "7.attn.q:0:0", "0.mlp.up:0:4000", "garbage"]
    with pytest.raises(InvalidNodesError) as info:
        llama.graph(tokens, config=AttributionConfig(included_nodes=["0.mlp.up:0:1", *bad[:3]]))
    assert sorted(info.value.nodes) == sorted(bad[:3])
    with pytest.raises(InvalidNodesError):
        llama.graph(tokens, config=AttributionConfig(included_nodes=["garbage"]))


def test_output_nodes_threshold_and_cap_are_reported(llama: Run) -> None:
    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    capped = llama.graph(tokens, config=AttributionConfig(output_prob_threshold=0.0, max_output_nodes_per_pos=2))
    assert capped.count_nodes("output") == 2 * len(tokens)
    trunc = capped.output_truncation
    assert trunc.truncated and trunc.n_kept == 2 * len(tokens)
    assert trunc.n_candidates == 256 * len(tokens)  # every softmax probability is > 0
    assert trunc.capped_positions == tuple(range(len(tokens)))
    high = llama.graph(tokens, config=AttributionConfig(output_prob_threshold=0.5))
    out_rows = high.nodes.layer == high.layer_names.index("output")
    assert (high.nodes.ci[out_rows] > 0.5).all() and not high.output_truncation.truncated
    assert high.count_nodes("output") < capped.count_nodes("output")


def test_loss_position_limits_positions(llama: Run) -> None:
    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    full = llama.graph(tokens)
    part = llama.graph(tokens, config=AttributionConfig(loss_seq_pos=4))
    assert part.n_positions == 5 and int(part.nodes.pos.max()) == 4
    # A causal model: the positions ≤ 4 of the full graph are exactly the partial graph.
    want = {e: v for e, v in full.edge_dict().items() if int(e[1].split(":")[1]) <= 4}
    assert_strengths_close(part.edge_dict(), want)
    with pytest.raises(ValueError):
        llama.graph(tokens, config=AttributionConfig(loss_seq_pos=8))


def test_progress_and_cancel(llama: Run) -> None:
    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    calls: list[tuple[int, int, str]] = []
    llama.graph(tokens, progress=lambda c, t, s: calls.append((c, t, s)))
    n = len(llama.sources_by_target)
    assert calls == [(i + 1, n, "graph") for i in range(n)]
    checks = iter(range(100))
    with pytest.raises(Cancelled):
        llama.graph(tokens, cancel=lambda: next(checks) >= 3)


def test_numpy_columns_round_trip(llama: Run) -> None:
    graph = llama.graph(torch.tensor(llama.expected("p8")["token_ids"]))
    cols = graph.to_numpy_columns()
    assert all(isinstance(v, np.ndarray) for v in cols.values())
    assert cols["edge_source"].dtype == np.int64 and cols["edge_strength"].dtype == np.float32
    back = AttributionGraph.from_numpy_columns(cols)
    assert back.node_keys() == graph.node_keys()
    assert back.edge_dict() == graph.edge_dict()
    assert back.edge_dict(absolute=True) == graph.edge_dict(absolute=True)
    assert back.output_truncation == graph.output_truncation


def test_optimized_graphs_use_optimized_ci(llama: Run) -> None:
    from spdlab.core.attribution import compute_optimized_graphs
    from spdlab.core.optimize_ci import OptimizeCIConfig, PGDSettings
    from spdlab.core.prompt_losses import CELoss

    tokens = torch.tensor(llama.expected("p8")["token_ids"])
    optim = OptimizeCIConfig(loss=CELoss(position=5, label_token=197), imp_min_coeffs=(1e-3, 0.3), steps=8,
                             pnorm=0.5, mask_type="ci", adv_pgd=PGDSettings(1, 0.5))
    stages: list[str] = []
    results = compute_optimized_graphs(
        llama.model, tokens, optim, topology=llama.topology, sources_by_target=llama.sources_by_target,
        sampling=llama.sampling, progress=lambda c, t, s: stages.append(s),
    )
    assert len(results) == 2 and stages[0] == "optimizing" and stages[-1] == "graph"
    for item in results:
        assert item.graph.n_positions == 6
        assert item.graph.n_component_nodes == item.metrics.l0_total  # one L0 definition
        assert item.graph.outputs.adv_pgd_prob is not None
    assert results[1].graph.n_component_nodes < results[0].graph.n_component_nodes
