"""Transformer topology: canonical layer addresses and their concrete module paths.

Canonical addresses name a weight independently of the model family: `embed`, `output` (the
unembedding), and per block `L`: `L.attn.{q,k,v,o}`, `L.attn_fused.{qkv,o}`, `L.mlp.{up,down}`,
`L.glu.{gate,up,down}`. A `PathSchema` (pure data) says where each one lives in a model family;
the schema is chosen by the model's class name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import Tensor, nn

EMBED = "embed"
OUTPUT = "output"

SUBLAYER_PROJECTIONS: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v", "o"),
    "attn_fused": ("qkv", "o"),
    "mlp": ("up", "down"),
    "glu": ("gate", "up", "down"),
}
_CANONICAL_RE = re.compile(r"^(\d+)\.(attn|attn_fused|glu|mlp)\.([a-z]+)$")
# Projections whose source position may differ from the target's (attention mixes positions).
_CROSS_SEQ_SOURCES = {"attn": ("k", "v"), "attn_fused": ("qkv",)}


class TopologyError(ValueError):
    """A model, path or canonical address that the topology cannot place."""


@dataclass(frozen=True)
class LayerAddress:
    """A parsed per-block canonical address such as `3.attn.q`."""

    block: int
    sublayer: str
    projection: str

    def __str__(self) -> str:
        return f"{self.block}.{self.sublayer}.{self.projection}"


def parse_canonical(name: str) -> LayerAddress | str:
    """Parse and validate a canonical address (`embed`/`output` are returned as they are)."""
    if name in (EMBED, OUTPUT):
        return name
    match = _CANONICAL_RE.match(name)
    if match is None:
        raise TopologyError(f"not a canonical layer address: {name!r}")
    block, sublayer, projection = int(match.group(1)), match.group(2), match.group(3)
    if projection not in SUBLAYER_PROJECTIONS[sublayer]:
        raise TopologyError(
            f"{name!r}: projection {projection!r} is not one of {SUBLAYER_PROJECTIONS[sublayer]} "
            f"for sub-layer {sublayer!r}"
        )
    return LayerAddress(block, sublayer, projection)


def is_cross_seq_pair(source: str, target: str) -> bool:
    """True iff `source` feeds `target` across positions: k/v (or fused qkv) → o of the same block."""
    src, tgt = parse_canonical(source), parse_canonical(target)
    if not (isinstance(src, LayerAddress) and isinstance(tgt, LayerAddress)):
        return False
    return (
        src.block == tgt.block
        and src.sublayer == tgt.sublayer
        and tgt.projection == "o"
        and src.projection in _CROSS_SEQ_SOURCES.get(src.sublayer, ())
    )


@dataclass(frozen=True)
class SubLayerSchema:
    """Where one sub-layer lives inside a block: `<block>.<base>.<concrete projection name>`."""

    kind: str  # a key of SUBLAYER_PROJECTIONS
    base: str
    projections: dict[str, str]  # canonical projection -> concrete child name


@dataclass(frozen=True)
class PathSchema:
    embed: str
    blocks: str
    attn: SubLayerSchema
    ffn: SubLayerSchema
    unembed: str


def _separate_attn(base: str = "attn") -> SubLayerSchema:
    return SubLayerSchema("attn", base, {p: f"{p}_proj" for p in ("q", "k", "v", "o")})


_FUSED_ATTN = SubLayerSchema("attn_fused", "attn", {"qkv": "c_attn", "o": "c_proj"})
_SIMPLE_MLP = SubLayerSchema("mlp", "mlp", {"up": "c_fc", "down": "down_proj"})
_GLU = SubLayerSchema("glu", "mlp", {p: f"{p}_proj" for p in ("gate", "up", "down")})

PATH_SCHEMAS: dict[str, PathSchema] = {
    "LlamaSimple": PathSchema("wte", "h", _separate_attn(), _GLU, "lm_head"),
    "LlamaSimpleMLP": PathSchema("wte", "h", _separate_attn(), _SIMPLE_MLP, "lm_head"),
    "GPT2Simple": PathSchema("wte", "h", _separate_attn(), _SIMPLE_MLP, "lm_head"),
    "GPT2LMHeadModel": PathSchema(
        "transformer.wte",
        "transformer.h",
        _FUSED_ATTN,
        SubLayerSchema("mlp", "mlp", {"up": "c_fc", "down": "c_proj"}),
        "lm_head",
    ),
    "LlamaForCausalLM": PathSchema(
        "model.embed_tokens", "model.layers", _separate_attn("self_attn"), _GLU, "lm_head"
    ),
}


def schema_for(model: nn.Module) -> PathSchema | None:
    """The schema of the first class in the model's MRO with a known name (subclasses inherit)."""
    return next((PATH_SCHEMAS[c.__name__] for c in type(model).__mro__ if c.__name__ in PATH_SCHEMAS), None)


def _decomposable_paths(model: nn.Module) -> list[str]:
    kinds = (nn.Linear, nn.Embedding)
    return [n for n, m in model.named_modules() if isinstance(m, kinds) or type(m).__name__ == "Conv1D"]


class TransformerTopology:
    """Canonical ↔ concrete module paths of one target transformer."""

    def __init__(self, target_model: nn.Module, decomposed_paths: Iterable[str] | None = None) -> None:
        schema = schema_for(target_model)
        if schema is None:
            unplaced = list(decomposed_paths) if decomposed_paths is not None else _decomposable_paths(target_model)
            raise TopologyError(
                f"unsupported architecture {type(target_model).__name__} (known: {sorted(PATH_SCHEMAS)}); "
                f"cannot place modules: {unplaced}"
            )
        self.model = target_model
        self.schema = schema
        blocks = target_model.get_submodule(schema.blocks)
        if not isinstance(blocks, nn.ModuleList):
            raise TopologyError(f"{schema.blocks!r} is {type(blocks).__name__}, expected a ModuleList")
        self.n_blocks = len(blocks)
        self._target_to_canon = self._enumerate()
        self._canon_to_target = {c: p for p, c in self._target_to_canon.items()}
        if decomposed_paths is not None:
            self.canonical_names(decomposed_paths)

    def _enumerate(self) -> dict[str, str]:
        """Every concrete path of the schema that exists in the model → its canonical name."""
        s = self.schema
        pairs = {s.embed: EMBED, s.unembed: OUTPUT}
        for i in range(self.n_blocks):
            for sub in (s.attn, s.ffn):
                for proj, child in sub.projections.items():
                    pairs[f"{s.blocks}.{i}.{sub.base}.{child}"] = f"{i}.{sub.kind}.{proj}"
        present = {name for name, _ in self.model.named_modules()}
        return {p: c for p, c in pairs.items() if p in present}

    @property
    def embed_path(self) -> str:
        return self.schema.embed

    @property
    def unembed_path(self) -> str:
        return self.schema.unembed

    @property
    def embedding_module(self) -> nn.Module:
        return self.model.get_submodule(self.schema.embed)

    @property
    def unembed_module(self) -> nn.Module:
        return self.model.get_submodule(self.schema.unembed)

    def target_to_canon(self, path: str) -> str:
        if path not in self._target_to_canon:
            raise TopologyError(f"cannot place module {path!r} in {type(self.model).__name__}")
        return self._target_to_canon[path]

    def canon_to_target(self, name: str) -> str:
        parse_canonical(name)
        if name not in self._canon_to_target:
            raise TopologyError(
                f"{name!r} does not exist in {type(self.model).__name__} ({self.n_blocks} blocks)"
            )
        return self._canon_to_target[name]

    def canonical_names(self, paths: Iterable[str]) -> dict[str, str]:
        """Concrete path → canonical name for each path; names every path that cannot be placed."""
        paths = list(paths)
        unplaced = [p for p in paths if p not in self._target_to_canon]
        if unplaced:
            raise TopologyError(f"cannot place modules in {type(self.model).__name__}: {unplaced}")
        return {p: self._target_to_canon[p] for p in paths}

    def get_unembed_weight(self) -> Tensor:
        """The unembedding as `(d_model, vocab)`."""
        weight = self.unembed_module.weight
        assert isinstance(weight, Tensor)
        return weight.T
