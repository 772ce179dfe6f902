"""The presorted edge index gives exactly the generic view; the decoded-graph cache respects its budget."""

from __future__ import annotations

import pytest
from graph_factory import random_graph

from spdlab.api.graph_cache import CachedGraph, GraphCache
from spdlab.api.graph_view import ViewParams, build_index, view


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.95, 1.0])
@pytest.mark.parametrize("value", ["signed", "abs"])
@pytest.mark.parametrize("limit", [1, 200, 10_000])
def test_indexed_view_equals_generic_view(threshold, value, limit):
    g = random_graph(4000, n_pos=6, per_layer_pos=7, seed=5)
    params = ViewParams(ci_threshold=threshold, value=value, edge_limit=limit)
    assert view(g, params, build_index(g)) == view(g, params)


def test_normalised_views_ignore_the_index():
    g = random_graph(2000, seed=6)
    params = ViewParams(ci_threshold=0.2, normalize="layer", edge_limit=100)
    assert view(g, params, build_index(g)) == view(g, params)


def test_graph_cache_evicts_least_recently_used_within_budget():
    graphs = [CachedGraph.build(random_graph(5000, seed=i), {}) for i in range(3)]
    cache = GraphCache(budget_bytes=int(graphs[0].nbytes * 2.5))
    cache.put(1, graphs[0])
    cache.put(2, graphs[1])
    assert cache.get(1) is graphs[0]  # 1 is now the most recent
    cache.put(3, graphs[2])
    assert cache.get(2) is None and cache.get(1) is graphs[0] and cache.get(3) is graphs[2]
    cache.drop(1)
    assert cache.get(1) is None
    GraphCache(budget_bytes=10).put(9, graphs[0])  # larger than the budget: not kept, no error
