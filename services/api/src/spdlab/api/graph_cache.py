"""Decoded graph blobs kept in the API process (graphs are immutable), LRU within a byte budget.

The row's existence is still checked per request (cheap, no blob), so a graph deleted through
another replica is never served; only the blob fetch and decode are skipped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from spdlab.api.graph_view import EdgeIndex, build_index
from spdlab.common.graph_codec import GraphArrays


@dataclass
class CachedGraph:
    """A decoded graph, its sort index, and the immutable parts of its read response."""

    arrays: GraphArrays
    index: EdgeIndex
    static: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, arrays: GraphArrays, static: dict[str, Any]) -> CachedGraph:
        return cls(arrays, build_index(arrays), static)

    @property
    def nbytes(self) -> int:
        cols = sum(int(c.nbytes) for c in self.arrays.columns.values())
        return cols + int(self.index.order.nbytes + self.index.min_ci.nbytes)


class GraphCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._items: OrderedDict[int, tuple[CachedGraph, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def get(self, graph_id: int) -> CachedGraph | None:
        with self._lock:
            item = self._items.get(graph_id)
            if item is None:
                return None
            self._items.move_to_end(graph_id)
            return item[0]

    def put(self, graph_id: int, graph: CachedGraph) -> None:
        size = graph.nbytes
        if size > self.budget:
            return
        with self._lock:
            old = self._items.pop(graph_id, None)
            if old is not None:
                self._used -= old[1]
            while self._items and self._used + size > self.budget:
                _, (_, freed) = self._items.popitem(last=False)
                self._used -= freed
            self._items[graph_id] = (graph, size)
            self._used += size

    def drop(self, graph_id: int) -> None:
        with self._lock:
            old = self._items.pop(graph_id, None)
            if old is not None:
                self._used -= old[1]
