"""Decoded graph blobs kept in the API process (graphs are immutable), LRU within a byte budget.

The row's existence is still checked per request (cheap, no blob), so a graph deleted through
another replica is never served; only the blob fetch and decode are skipped.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from spdlab.common.graph_codec import GraphArrays


def arrays_nbytes(arrays: GraphArrays) -> int:
    return sum(int(c.nbytes) for c in arrays.columns.values())


class GraphCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._items: OrderedDict[int, tuple[GraphArrays, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def get(self, graph_id: int) -> GraphArrays | None:
        with self._lock:
            item = self._items.get(graph_id)
            if item is None:
                return None
            self._items.move_to_end(graph_id)
            return item[0]

    def put(self, graph_id: int, arrays: GraphArrays) -> None:
        size = arrays_nbytes(arrays)
        if size > self.budget:
            return
        with self._lock:
            old = self._items.pop(graph_id, None)
            if old is not None:
                self._used -= old[1]
            while self._items and self._used + size > self.budget:
                _, (_, freed) = self._items.popitem(last=False)
                self._used -= freed
            self._items[graph_id] = (arrays, size)
            self._used += size

    def drop(self, graph_id: int) -> None:
        with self._lock:
            old = self._items.pop(graph_id, None)
            if old is not None:
                self._used -= old[1]
