"""Interventions on a stored graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spdlab.client.models.graphs import Intervention, InterventionSubmission
from spdlab.client.resources._base import API, _Resource


class InterventionsResource(_Resource):
    def run(self, graph_id: str | int, selected_nodes: Sequence[str], **params: Any) -> InterventionSubmission:
        """Nodes are `layer:pos:idx` keys; `regimes`, `nodes_to_ablate`, `top_k`, `loss`, `pgd`, `seed`."""
        body = {"graph_id": int(graph_id), "selected_nodes": list(selected_nodes), **params}
        return self._post(f"{API}/interventions", InterventionSubmission, body)

    def get(self, intervention_id: str | int) -> Intervention:
        return self._get(f"{API}/interventions/{intervention_id}", Intervention)

    def for_graph(self, graph_id: str | int) -> list[Intervention]:
        return [Intervention.model_validate(i) for i in self._t.request("GET", f"{API}/graphs/{graph_id}/interventions")]
