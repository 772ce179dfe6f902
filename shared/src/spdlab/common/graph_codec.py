"""Columnar binary encoding of attribution graphs.

A stored graph is a handful of flat numpy columns (a node table, an edge table and the top-k
output table), written back to back after a small JSON header. Decoding is zero-copy
(`np.frombuffer`), so reading a million-edge graph costs one memcpy out of the database driver,
not a JSON parse per edge. Workers encode, the API decodes; neither side needs torch.

Layout: b"SPDG" | u16 version | u32 header length | header JSON | padding to 8 | columns.
The header lists each column's name, dtype, length and byte offset (from the data start), plus
free-form `meta` (layer names, prompt tokens, truncation info, ...).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"SPDG"
VERSION = 1
_PREFIX = struct.Struct("<4sHI")

# Node kinds in the node table.
NODE_EMBED, NODE_COMPONENT, NODE_OUTPUT = 0, 1, 2

# name -> dtype of every column, grouped by table. Fixed so a decoder can check what it got.
NODE_COLUMNS: dict[str, str] = {
    "node_kind": "u1",  # NODE_EMBED | NODE_COMPONENT | NODE_OUTPUT
    "node_layer": "<i2",  # index into meta["layers"]
    "node_pos": "<i4",
    "node_index": "<i4",  # component index; token id for output nodes; 0 for embed
    "node_ci": "<f4",  # CI (lower leaky) for components, 1 for embed, CI-masked prob for outputs
    "node_act": "<f4",  # component activation x @ V; 0 where undefined
}
EDGE_COLUMNS: dict[str, str] = {
    "edge_src": "<i4",  # row in the node table
    "edge_tgt": "<i4",
    "edge_val": "<f4",  # gradient x activation
    "edge_val_abs": "<f4",  # the same against |target| (sign of the target value folded in)
    "edge_cross_seq": "u1",
}
OUTPUT_COLUMNS: dict[str, str] = {
    "out_pos": "<i4",
    "out_token": "<i4",
    "out_ci_masked_prob": "<f4",
    "out_ci_masked_logit": "<f4",
    "out_target_prob": "<f4",
    "out_target_logit": "<f4",
}
ALL_COLUMNS: dict[str, str] = {**NODE_COLUMNS, **EDGE_COLUMNS, **OUTPUT_COLUMNS}


class GraphCodecError(ValueError):
    """The bytes are not a graph this version can read."""


@dataclass
class GraphArrays:
    """A graph as columns. `columns` holds every name of ALL_COLUMNS with its dtype."""

    columns: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = sorted(set(ALL_COLUMNS) - set(self.columns))
        if missing:
            raise GraphCodecError(f"graph is missing columns: {', '.join(missing)}")
        for table in (NODE_COLUMNS, EDGE_COLUMNS, OUTPUT_COLUMNS):
            lengths = {name: len(self.columns[name]) for name in table}
            if len(set(lengths.values())) > 1:
                raise GraphCodecError(f"columns of one table differ in length: {lengths}")

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def n_nodes(self) -> int:
        return len(self.columns["node_kind"])

    @property
    def n_edges(self) -> int:
        return len(self.columns["edge_src"])


def _pad(n: int) -> int:
    return (-n) % 8


def encode(graph: GraphArrays) -> bytes:
    specs, chunks, offset = [], [], 0
    for name, dtype in ALL_COLUMNS.items():
        col = np.ascontiguousarray(graph.columns[name], dtype=np.dtype(dtype))
        raw = col.tobytes()
        specs.append({"name": name, "dtype": dtype, "length": int(col.shape[0]), "offset": offset})
        chunks.append(raw + b"\0" * _pad(len(raw)))
        offset += len(raw) + _pad(len(raw))
    header = json.dumps({"columns": specs, "meta": graph.meta}, separators=(",", ":")).encode()
    prefix = _PREFIX.pack(MAGIC, VERSION, len(header))
    head = prefix + header
    return b"".join([head, b"\0" * _pad(len(head)), *chunks])


def decode(blob: bytes | memoryview) -> GraphArrays:
    buf = memoryview(blob)
    if len(buf) < _PREFIX.size:
        raise GraphCodecError("graph blob is truncated")
    magic, version, header_len = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise GraphCodecError("not a graph blob (bad magic)")
    if version != VERSION:
        raise GraphCodecError(f"graph blob version {version} is not supported (expected {VERSION})")
    head_end = _PREFIX.size + header_len
    header = json.loads(bytes(buf[_PREFIX.size : head_end]))
    data_start = head_end + _pad(head_end)
    columns = {}
    for spec in header["columns"]:
        dtype = np.dtype(spec["dtype"])
        start = data_start + spec["offset"]
        end = start + spec["length"] * dtype.itemsize
        if end > len(buf):
            raise GraphCodecError(f"graph blob is truncated in column {spec['name']}")
        columns[spec["name"]] = np.frombuffer(buf[start:end], dtype=dtype)
    return GraphArrays(columns=columns, meta=header["meta"])
