"""Which target modules get decomposed (spec §1.9–1.10).

`expand_module_patterns` turns `module_info` fnmatch patterns into the ordered `module_to_c`;
`insert_identity_operations_` adds `pre_identity` modules in front of chosen Linear/Conv1D layers.
"""

from collections.abc import Iterable, Sequence
from fnmatch import fnmatch
from typing import Any

import torch
from torch import Tensor, nn

PRE_IDENTITY = "pre_identity"


class Identity(nn.Module):
    """Parameter-free `x -> x` of width `d`; its decomposition's target weight is `eye(d)`."""

    def __init__(self, d: int):
        super().__init__()
        self.d = d

    def forward(self, x: Tensor) -> Tensor:
        return x


def is_conv1d(module: nn.Module) -> bool:
    """HF `transformers.pytorch_utils.Conv1D` (weight stored `(d_in, d_out)`), without importing HF."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "weight")


def get_module_input_dim(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    if is_conv1d(module):
        return int(module.weight.shape[0])
    if isinstance(module, Identity):
        return module.d
    if isinstance(module, nn.Embedding):
        return module.num_embeddings
    raise ValueError(f"cannot decompose module of type {type(module).__name__}")


def _pattern_c_pairs(module_info: Iterable[Any]) -> list[tuple[str, int]]:
    """Accept `ModulePatternInfo`-like objects, dicts or `(pattern, C)` tuples."""
    pairs = []
    for item in module_info:
        if isinstance(item, tuple):
            pairs.append((str(item[0]), int(item[1])))
        elif isinstance(item, dict):
            pairs.append((str(item["module_pattern"]), int(item["C"])))
        else:
            pairs.append((str(item.module_pattern), int(item.C)))
    return pairs


def expand_module_patterns(target_model: nn.Module, module_info: Sequence[Any]) -> dict[str, int]:
    """Ordered `path -> C`: patterns in config order, matches in `named_modules()` order.

    Raises ValueError if a pattern matches nothing or a module matches two patterns.
    """
    names = [name for name, _ in target_model.named_modules() if name]
    module_to_c: dict[str, int] = {}
    matched_by: dict[str, str] = {}
    for pattern, C in _pattern_c_pairs(module_info):
        matches = [name for name in names if fnmatch(name, pattern)]
        if not matches:
            raise ValueError(f"module pattern {pattern!r} matches no module of the target model")
        for name in matches:
            if name in matched_by:
                raise ValueError(
                    f"module {name!r} matches both pattern {matched_by[name]!r} and {pattern!r}"
                )
            matched_by[name] = pattern
            module_to_c[name] = C
    return module_to_c


def identity_module_info_to_decomposed(identity_module_info: Sequence[Any] | None) -> list[tuple[str, int]]:
    """The decomposed patterns of identity insertion: each pattern gets a `.pre_identity` suffix."""
    return [(f"{p}.{PRE_IDENTITY}", C) for p, C in _pattern_c_pairs(identity_module_info or [])]


def insert_identity_operations_(target_model: nn.Module, identity_module_info: Sequence[Any] | None) -> list[str]:
    """Give every matched Linear/Conv1D a `pre_identity` child run (by a pre-hook) on its input.

    Idempotent. Returns the module paths that got one. Embeddings and other types are rejected.
    """
    patterns = [p for p, _ in _pattern_c_pairs(identity_module_info or [])]
    inserted: list[str] = []
    for name, module in list(target_model.named_modules()):
        if not name or not any(fnmatch(name, p) for p in patterns):
            continue
        if not (isinstance(module, nn.Linear) or is_conv1d(module)):
            raise ValueError(
                f"identity insertion supports Linear/Conv1D only; {name!r} is {type(module).__name__}"
            )
        if not isinstance(getattr(module, PRE_IDENTITY, None), Identity):
            module.add_module(PRE_IDENTITY, Identity(get_module_input_dim(module)))
            module.register_forward_pre_hook(_pre_identity_hook)
        inserted.append(name)
    for p in patterns:
        if not any(fnmatch(n, p) for n in inserted):
            raise ValueError(f"identity module pattern {p!r} matches no module of the target model")
    return inserted


def _pre_identity_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # Calling the child module (not just x -> x) lets hooks on `<path>.pre_identity` fire.
    identity: nn.Module = getattr(module, PRE_IDENTITY)
    return (identity(args[0]), *args[1:])


def freeze_(model: nn.Module) -> nn.Module:
    """Eval mode and `requires_grad=False` everywhere (the target must be frozen)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def target_weight_of(
    module: nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """The target weight in `(rows, cols)` layout of spec §1.1 (device/dtype only used for Identity)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        return module.weight
    if is_conv1d(module):
        return module.weight.T
    if isinstance(module, Identity):
        return torch.eye(module.d, device=device, dtype=dtype)
    raise ValueError(f"cannot decompose module of type {type(module).__name__}")
