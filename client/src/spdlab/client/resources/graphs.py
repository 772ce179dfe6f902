"""Attribution graphs: get-or-compute, filtered reads, Neuronpedia export, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from spdlab.client.models.graphs import GraphSubmission, GraphView
from spdlab.client.resources._base import API, _Resource

GraphKind = Literal["standard", "manual", "optimized"]


class GraphsResource(_Resource):
    def compute(self, kind: GraphKind, prompt_id: str | int, **params: Any) -> GraphSubmission:
        """`kind` standard | manual (`included_nodes=[...]`) | optimized (`loss={...}`,
        `imp_min_coeffs=[...]`, ...). Stored graphs come back at once; otherwise follow `.job`."""
        body = {"kind": f"graph.{kind}", "params": {"prompt_id": int(prompt_id), **params}}
        return self._post(f"{API}/graphs", GraphSubmission, body)

    def get(self, graph_id: str | int, *, ci_threshold: float | None = None,
            normalize: Literal["none", "target", "layer"] | None = None, edge_limit: int | None = None,
            value: Literal["signed", "abs"] | None = None) -> GraphView:
        params = {"ci_threshold": ci_threshold, "normalize": normalize, "edge_limit": edge_limit, "value": value}
        return self._get(f"{API}/graphs/{graph_id}", GraphView, params)

    def neuronpedia(self, graph_id: str | int, **view: Any) -> Mapping[str, Any]:
        """The circuit-tracer / Neuronpedia graph JSON of the filtered view."""
        return self._t.request("GET", f"{API}/graphs/{graph_id}", params={**view, "format": "neuronpedia"})

    def delete(self, graph_id: str | int) -> None:
        self._delete(f"{API}/graphs/{graph_id}")
