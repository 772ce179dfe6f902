"""Interventions: the `ci` regime reproduces the research app's masked forward; regimes and validation."""

from __future__ import annotations

import json

import pytest
import torch
from research_fixtures import RESEARCH_RUNS

from spdlab.core.graph import InvalidNodesError
from spdlab.core.intervention import InterventionResult, compute_intervention
from spdlab.core.optimize_ci import PGDSettings
from spdlab.core.prompt_losses import CELoss
from spdlab.core.research_import import import_research_run
from spdlab.core.topology import TransformerTopology

FIXTURES = RESEARCH_RUNS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Run:
    def __init__(self, name: str):
        loaded = import_research_run(FIXTURES / name)
        self.model = loaded.component_model
        self.tokenizer = loaded.tokenizer
        self.sampling = loaded.config.sampling
        self.topology = TransformerTopology(self.model.target_model, self.model.target_module_paths)
        self.expected = json.loads((FIXTURES / name / "expected" / "intervention_p24_fp32.json").read_text())
        node_set = self.expected["node_sets"]["ci_gt_0.1"]
        self.selected = [(self.topology.target_to_canon(p), s, c) for p, s, c in node_set["active_nodes"]]
        self.tokens = torch.tensor(self.expected["token_ids"])

    def intervene(self, nodes, **kwargs) -> InterventionResult:
        return compute_intervention(
            self.model, self.tokens, nodes, topology=self.topology, sampling=self.sampling, **kwargs
        )


@pytest.fixture(scope="module", params=["llama_mlp_vector", "gpt2_simple_global"])
def run(request: pytest.FixtureRequest) -> Run:
    return Run(request.param)


def test_ci_regime_reproduces_research_intervention(run: Run) -> None:
    result = run.intervene(run.selected, top_k=run.expected["top_k"], decode=run.tokenizer.id_to_token)
    want = run.expected["node_sets"]["ci_gt_0.1"]["result"]["predictions_per_position"]
    assert len(result.ci.predictions) == len(want)
    for got_pos, want_pos in zip(result.ci.predictions, want, strict=True):
        assert [p.token_id for p in got_pos] == [w["token_id"] for w in want_pos]
        assert [p.token for p in got_pos] == [w["token"] for w in want_pos]
        for got, w in zip(got_pos, want_pos, strict=True):
            assert got.prob == pytest.approx(w["spd_prob"], rel=1e-4, abs=1e-6)
            assert got.logit == pytest.approx(w["logit"], rel=1e-5, abs=1e-5)
            assert got.target_prob == pytest.approx(w["target_prob"], rel=1e-4, abs=1e-6)
            assert got.target_logit == pytest.approx(w["target_logit"], rel=1e-5, abs=1e-5)


@pytest.fixture(scope="module")
def llama() -> Run:
    return Run("llama_mlp_vector")


def test_invalid_nodes_are_listed(llama: Run) -> None:
    with pytest.raises(InvalidNodesError) as info:
        llama.intervene(["0.mlp.up:0:999", "9.attn.q:0:0", "0.mlp.up:40:0", *llama.selected[:3]])
    assert sorted(info.value.nodes) == sorted(["0.mlp.up:0:999", "9.attn.q:0:0", "0.mlp.up:40:0"])
    lower = json.loads((FIXTURES / "llama_mlp_vector/expected/p24_fp32.json").read_text())[
        "calc_causal_importances"]["h.0.attn.q_proj"]["lower_leaky"]
    dead = next(("0.attn.q", 0, c) for c, v in enumerate(lower[0]) if v == 0)
    with pytest.raises(InvalidNodesError, match="1 not alive") as info:
        llama.intervene([*llama.selected[:3], dead, "0.mlp.up:0:999"])
    # Missing and dead nodes are reported together.
    assert info.value.nodes == ["0.mlp.up:0:999", f"{dead[0]}:0:{dead[2]}"]


def test_regimes_behave_as_specified(llama: Run) -> None:
    selected = llama.selected[::2]
    label = int(llama.tokens[10])
    loss = CELoss(position=9, label_token=label)
    everything = llama.selected
    result = llama.intervene(selected, loss=loss, nodes_to_ablate=[], top_k=5, pgd=PGDSettings(3, 0.5), seed=1)
    again = llama.intervene(selected, loss=loss, nodes_to_ablate=[], top_k=5, pgd=PGDSettings(3, 0.5), seed=1)
    assert result == again  # seeded

    # Ablating nothing = the target model (all masks 1 plus deltas).
    assert result.ablated is not None
    for preds in result.ablated.predictions:
        for p in preds:
            assert p.prob == pytest.approx(p.target_prob, rel=1e-4, abs=1e-6)
    assert result.label_position == 9 and result.label_token == label
    for regime in (result.ci, result.stochastic, result.adversarial, result.ablated):
        assert regime.label_prob is not None
        assert regime.loss == pytest.approx(-torch.log(torch.tensor(regime.label_prob)).item(), rel=1e-4)
    # PGD ascends the loss from its random start (0 steps = the same start, as the draws are seeded).
    start = llama.intervene(selected, loss=loss, top_k=5, pgd=PGDSettings(0, 0.5), seed=1)
    assert start.stochastic == result.stochastic
    assert result.adversarial.loss > start.adversarial.loss
    # Ablating nodes changes the outputs and differs from keeping only the selection.
    ablated = llama.intervene(selected, loss=loss, nodes_to_ablate=everything, top_k=5)
    assert ablated.ablated is not None
    assert ablated.ablated.loss != pytest.approx(result.ablated.loss)
    assert ablated.ablated.predictions != ablated.ci.predictions
    # Default loss: mean KL over positions, no label.
    plain = llama.intervene(selected, top_k=3)
    assert plain.ablated is None and plain.label_position is None and plain.ci.label_prob is None
    assert plain.ci.loss > 0 and len(plain.ci.predictions[0]) == 3
