"""`GlobalReverseResidualCiFn` (`global_reverse_residual`, spec §2.7).

The CI function keeps its own residual stream of width D. Blocks of decomposed modules (typically
deepest first) are processed in order: each block's raw module inputs are projected into the
stream, the stream is updated by a transition (optionally preceded by bidirectional attention),
and a reader turns it into that block's pre-sigmoid CI. Parameter names follow spec §4.6 so the
research code's checkpoints load strictly.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from spdlab.core.ci_functions.blocks import Linear, SelfAttention, gelu, mlp_stack


class BlockGroupLike(Protocol):
    name: str
    patterns: Sequence[str]


class AttnConfigLike(Protocol):
    n_heads: int
    max_len: int
    rope_base: float


@dataclass(frozen=True)
class ReverseResidualBlock:
    """One block: its module paths (in concat/split order), their input widths and Cs."""

    name: str
    modules: list[str]
    input_dims: list[int]
    cs: list[int]


class BlockGroupError(ValueError):
    """Block groups that do not partition the decomposed modules."""


def build_blocks(
    block_groups: Sequence[BlockGroupLike],
    module_to_c: Mapping[str, int],
    input_dims: Mapping[str, int],
) -> list[ReverseResidualBlock]:
    """Expand block-group patterns over the decomposed paths (in `module_to_c` order).

    Every pattern must match something, no module may be matched twice (within or across
    groups), and every decomposed module must be covered.
    """
    seen: set[str] = set()
    blocks = []
    for group in block_groups:
        modules: list[str] = []
        for pattern in group.patterns:
            matches = [path for path in module_to_c if fnmatch.fnmatch(path, pattern)]
            if not matches:
                raise BlockGroupError(
                    f"block {group.name!r}: pattern {pattern!r} matched no module of {list(module_to_c)}"
                )
            duplicates = [m for m in matches if m in seen or m in modules]
            if duplicates:
                raise BlockGroupError(f"block {group.name!r}: modules matched twice: {duplicates}")
            modules.extend(matches)
        seen.update(modules)
        blocks.append(
            ReverseResidualBlock(
                group.name, modules, [input_dims[m] for m in modules], [module_to_c[m] for m in modules]
            )
        )
    missing = [m for m in module_to_c if m not in seen]
    if missing:
        raise BlockGroupError(f"modules not in any block group: {missing}")
    if not blocks:
        raise BlockGroupError("at least one block group is required")
    return blocks


def _rms_norm(d: int) -> nn.RMSNorm:
    # eps=None: the input dtype's machine epsilon, as in the research code.
    return nn.RMSNorm(d)


def _transition(d: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return Linear(d, d, nonlinearity="relu")
    # Both layers use relu gain (the second one too), as in the research code.
    return nn.Sequential(Linear(d, hidden, nonlinearity="relu"), gelu(), Linear(hidden, d, nonlinearity="relu"))


class ReverseResidualConfigLike(Protocol):
    """The fields of a `global_reverse_residual` `ci_config` this function reads."""

    d_resid_ci_fn: int | None
    reader_hidden_dims: Sequence[int] | None
    transition_hidden_dim: int | None
    block_groups: Sequence[BlockGroupLike] | None
    transition_attn_config: AttnConfigLike | None


class GlobalReverseResidualCiFn(nn.Module):
    """`dict[path, (..., d_in)] -> dict[path, (..., C)]` pre-sigmoid CI values.

    `layer_configs` maps each decomposed path to `(input width, C)` in `module_to_c` order (the
    order block patterns are expanded in). With 2-D inputs and attention enabled the batch axis
    acts as the sequence axis (no axis is inserted), as in the research code.
    """

    def __init__(self, layer_configs: Mapping[str, tuple[int, int]], ci_config: ReverseResidualConfigLike) -> None:
        super().__init__()
        d = ci_config.d_resid_ci_fn
        if d is None or ci_config.block_groups is None or ci_config.reader_hidden_dims is None:
            raise ValueError("global_reverse_residual needs d_resid_ci_fn, block_groups and reader_hidden_dims")
        attn = ci_config.transition_attn_config
        if attn is not None:
            if d % attn.n_heads:
                raise ValueError(f"d_resid_ci_fn {d} not divisible by n_heads {attn.n_heads}")
            if (d // attn.n_heads) % 2:
                raise ValueError(f"head dim {d // attn.n_heads} must be even for RoPE")
        self.blocks = build_blocks(
            ci_config.block_groups,
            {path: c for path, (_, c) in layer_configs.items()},
            {path: width for path, (width, _) in layer_configs.items()},
        )
        self.d_resid_ci_fn = d
        self.has_attn = attn is not None
        self._inp_projectors = nn.ModuleDict()
        self._readers = nn.ModuleDict()
        self._reader_norms = nn.ModuleDict()
        self._transitions = nn.ModuleDict()
        self._transition_norms = nn.ModuleDict()
        self._attn_transitions = nn.ModuleDict()
        self._attn_norms = nn.ModuleDict()
        for i, block in enumerate(self.blocks):
            key = self._key(block)
            self._inp_projectors[key] = Linear(sum(block.input_dims), d, nonlinearity="relu")
            self._readers[key] = mlp_stack(d, list(ci_config.reader_hidden_dims), sum(block.cs))
            self._reader_norms[key] = _rms_norm(d)
            if i == len(self.blocks) - 1:
                continue  # the last block has no transition
            self._transitions[key] = _transition(d, ci_config.transition_hidden_dim)
            self._transition_norms[key] = _rms_norm(d)
            if attn is not None:
                self._attn_transitions[key] = SelfAttention(d, attn.n_heads, attn.max_len, attn.rope_base)
                self._attn_norms[key] = _rms_norm(d)

    @staticmethod
    def _key(block: ReverseResidualBlock) -> str:
        return block.name.replace(".", "-")

    def forward(self, input_acts: Mapping[str, Tensor]) -> dict[str, Tensor]:
        first = next(iter(input_acts.values()))
        residual = torch.zeros(*first.shape[:-1], self.d_resid_ci_fn, dtype=first.dtype, device=first.device)
        outputs: dict[str, Tensor] = {}
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            key = self._key(block)
            block_in = torch.cat([input_acts[m] for m in block.modules], dim=-1)
            residual = residual + self._inp_projectors[key](block_in)
            if i < last:
                if self.has_attn:
                    residual = residual + self._attn_transitions[key](self._attn_norms[key](residual))
                residual = residual + self._transitions[key](self._transition_norms[key](residual))
            # Quirk kept for checkpoint fidelity: the reader sees the stream AFTER this block's own
            # transition (the research code's docstring says before; its code does this).
            ci = self._readers[key](self._reader_norms[key](residual))
            outputs.update(zip(block.modules, torch.split(ci, block.cs, dim=-1), strict=True))
        return outputs
