"""An attribution graph as tensors: a node table, columnar edges and an output-probability table.

In the spirit of circuit-tracer's `Graph`, but sparse: SPD graphs keep only alive nodes, so edges are
parallel index/value tensors rather than a dense adjacency. Node keys follow the app's convention
(`embed:{pos}:0`, `{layer}:{pos}:{c}`, `output:{pos}:{token_id}`, canonical layer names), but keys are
only materialised on demand; storage gets plain numpy columns from `to_numpy_columns`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

EMBED_LAYER = "embed"
OUTPUT_LAYER = "output"


# --- node references ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class NodeRef:
    """One node named by canonical layer, position and component index (token id for outputs)."""

    layer: str
    pos: int
    index: int

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.pos}:{self.index}"

    @classmethod
    def parse(cls, key: str) -> NodeRef:
        """Parse `"{layer}:{pos}:{index}"`; raises `InvalidNodesError` on malformed keys."""
        parts = key.rsplit(":", 2)
        try:
            layer, pos, index = parts
            return cls(layer, int(pos), int(index))
        except ValueError:
            raise InvalidNodesError([key], "malformed node key (expected 'layer:pos:index')") from None


def parse_node_keys(keys: Iterable[str | NodeRef | tuple[str, int, int]]) -> list[NodeRef]:
    """Accept node keys, `NodeRef`s or `(layer, pos, index)` tuples; report every malformed key at once."""
    refs: list[NodeRef] = []
    bad: list[str] = []
    for item in keys:
        if isinstance(item, NodeRef):
            refs.append(item)
        elif isinstance(item, str):
            try:
                refs.append(NodeRef.parse(item))
            except InvalidNodesError:
                bad.append(item)
        else:
            layer, pos, index = item
            refs.append(NodeRef(str(layer), int(pos), int(index)))
    if bad:
        raise InvalidNodesError(bad, "malformed node key (expected 'layer:pos:index')")
    return refs


class InvalidNodesError(ValueError):
    """Selected nodes that do not exist in the model/prompt or are not alive; lists all of them."""

    def __init__(self, nodes: Sequence[str], reason: str):
        self.nodes = list(nodes)
        self.reason = reason
        shown = ", ".join(self.nodes[:20]) + (f" … (+{len(self.nodes) - 20} more)" if len(self.nodes) > 20 else "")
        super().__init__(f"{len(self.nodes)} invalid node(s): {reason}: {shown}")


# --- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTable:
    """Parallel 1-D tensors, one entry per node.

    `layer` indexes `AttributionGraph.layer_names`; `index` is the component index, the token id for
    output nodes and 0 for embed nodes. `ci`: component CI (lower-leaky), 1.0 for embed, the CI-masked
    probability for outputs. `activation`: the component activation `x @ V`, the CI-masked logit for
    outputs and 0.0 for embed nodes (an embedding vector has no scalar activation).
    """

    layer: Tensor  # int64
    pos: Tensor  # int64
    index: Tensor  # int64
    ci: Tensor  # float32
    activation: Tensor  # float32

    def __len__(self) -> int:
        return int(self.layer.shape[0])


@dataclass(frozen=True)
class EdgeTable:
    """Parallel 1-D tensors, one entry per edge; `source`/`target` index the node table.

    `strength` = gradient × activation; `strength_abs` = strength × sign(target value), the edge
    for the target's absolute value (∂|y|/∂x · x).
    """

    source: Tensor  # int64
    target: Tensor  # int64
    strength: Tensor  # float32
    strength_abs: Tensor  # float32
    is_cross_seq: Tensor  # bool

    def __len__(self) -> int:
        return int(self.source.shape[0])


@dataclass(frozen=True)
class OutputTable:
    """Top-k tokens per position by CI-masked probability, with the target model's values for them."""

    pos: Tensor  # int64
    rank: Tensor  # int64, 0 = most probable under the CI-masked model
    token_id: Tensor  # int64
    ci_masked_prob: Tensor
    ci_masked_logit: Tensor
    target_prob: Tensor
    target_logit: Tensor
    adv_pgd_prob: Tensor | None = None
    adv_pgd_logit: Tensor | None = None

    def __len__(self) -> int:
        return int(self.pos.shape[0])


@dataclass(frozen=True)
class OutputTruncation:
    """How output nodes were chosen and what the per-position cap dropped (reported, never silent)."""

    prob_threshold: float
    max_per_pos: int
    n_candidates: int  # tokens above the threshold, before the cap
    n_kept: int
    capped_positions: tuple[int, ...] = field(default_factory=tuple)

    @property
    def truncated(self) -> bool:
        return self.n_kept < self.n_candidates


@dataclass(frozen=True)
class AttributionGraph:
    """A prompt attribution graph. Positions `0..n_positions-1` of `token_ids` were computed."""

    token_ids: Tensor  # int64 [S], the full prompt
    n_positions: int
    layer_names: tuple[str, ...]
    nodes: NodeTable
    edges: EdgeTable
    outputs: OutputTable
    output_truncation: OutputTruncation

    # --- keys (for tests, display and JSON; not used in the hot path) ----------------------------

    def node_keys(self) -> list[str]:
        names = self.layer_names
        layer, pos, index = (t.tolist() for t in (self.nodes.layer, self.nodes.pos, self.nodes.index))
        return [f"{names[lay]}:{p}:{i}" for lay, p, i in zip(layer, pos, index, strict=True)]

    def edge_dict(self, absolute: bool = False) -> dict[tuple[str, str], float]:
        """`{(source_key, target_key): strength}`; `absolute` picks `strength_abs`."""
        keys = self.node_keys()
        values = (self.edges.strength_abs if absolute else self.edges.strength).tolist()
        src, tgt = self.edges.source.tolist(), self.edges.target.tolist()
        return {(keys[s], keys[t]): v for s, t, v in zip(src, tgt, values, strict=True)}

    def count_nodes(self, layer: str) -> int:
        if layer not in self.layer_names:
            return 0
        return int((self.nodes.layer == self.layer_names.index(layer)).sum())

    @property
    def n_component_nodes(self) -> int:
        return len(self.nodes) - self.count_nodes(EMBED_LAYER) - self.count_nodes(OUTPUT_LAYER)

    # --- columnar export -------------------------------------------------------------------------

    def to_numpy_columns(self) -> dict[str, np.ndarray]:
        """Flat numpy columns (`node_*`, `edge_*`, `output_*`, `layer_names`, `token_ids`, `meta_*`).

        Everything a torch-free storage layer needs to encode the graph columnar; `from_numpy_columns`
        inverts it.
        """
        cols: dict[str, np.ndarray] = {
            "layer_names": np.array(self.layer_names, dtype=np.str_),
            "token_ids": _np(self.token_ids),
            "meta_n_positions": np.array(self.n_positions, dtype=np.int64),
            "meta_output_prob_threshold": np.array(self.output_truncation.prob_threshold, dtype=np.float64),
            "meta_output_max_per_pos": np.array(self.output_truncation.max_per_pos, dtype=np.int64),
            "meta_output_n_candidates": np.array(self.output_truncation.n_candidates, dtype=np.int64),
            "meta_output_n_kept": np.array(self.output_truncation.n_kept, dtype=np.int64),
            "meta_output_capped_positions": np.array(self.output_truncation.capped_positions, dtype=np.int64),
        }
        for prefix, table in (("node", self.nodes), ("edge", self.edges), ("output", self.outputs)):
            for f in fields(table):
                value = getattr(table, f.name)
                if value is not None:
                    cols[f"{prefix}_{f.name}"] = _np(value)
        return cols

    @classmethod
    def from_numpy_columns(cls, cols: dict[str, np.ndarray]) -> AttributionGraph:
        def table(prefix: str, kind: type) -> object:
            values = {f.name: cols.get(f"{prefix}_{f.name}") for f in fields(kind)}
            return kind(**{k: None if v is None else torch.from_numpy(np.asarray(v)) for k, v in values.items()})

        truncation = OutputTruncation(
            prob_threshold=float(cols["meta_output_prob_threshold"]),
            max_per_pos=int(cols["meta_output_max_per_pos"]),
            n_candidates=int(cols["meta_output_n_candidates"]),
            n_kept=int(cols["meta_output_n_kept"]),
            capped_positions=tuple(int(p) for p in cols["meta_output_capped_positions"]),
        )
        return cls(
            token_ids=torch.from_numpy(np.asarray(cols["token_ids"])),
            n_positions=int(cols["meta_n_positions"]),
            layer_names=tuple(str(n) for n in cols["layer_names"]),
            nodes=table("node", NodeTable),  # type: ignore[arg-type]
            edges=table("edge", EdgeTable),  # type: ignore[arg-type]
            outputs=table("output", OutputTable),  # type: ignore[arg-type]
            output_truncation=truncation,
        )


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()
