"""The decomposition-adapter interface: what the harvest needs from any decomposition method.

A method (SPD, transcoder, cross-layer transcoder) plugs into the same harvest by describing its
component layers and turning a batch of token windows into per-layer firing values and activations
(spec §2). Everything method-specific (hooks, CI functions, encoders) stays behind `run_batch`.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True)
class ComponentLayer:
    """One decomposed layer: concrete module path, canonical address (if known), component count."""

    name: str
    n_components: int
    canonical: str | None = None


@dataclass
class AdapterBatch:
    """A method's view of one batch of windows (all on the adapter's device).

    `firing_values[layer]` `[B,S,C]`: compared with the harvest threshold (CI for SPD).
    `activations[layer][act_type]` `[B,S,C]`: every activation type the method records.
    `output_probs` `[B,S,V]`: next-token probabilities of the model (for output token statistics).
    """

    firing_values: Mapping[str, Tensor]
    activations: Mapping[str, Mapping[str, Tensor]]
    output_probs: Tensor | None


@runtime_checkable
class TokenEncoder(Protocol):
    """The minimal tokenizer surface the harvest uses."""

    @property
    def eos_token_id(self) -> int | None: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode_token(self, token_id: int) -> str: ...


@runtime_checkable
class DecompositionAdapter(Protocol):
    """Everything except the per-batch math is data; `run_batch` is the method's harvest function."""

    @property
    def decomposition_method(self) -> str: ...

    @property
    def layers(self) -> Sequence[ComponentLayer]: ...

    @property
    def activation_types(self) -> Sequence[str]: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def context_length(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def tokenizer(self) -> TokenEncoder: ...

    def run_batch(self, tokens: Tensor) -> AdapterBatch:
        """`tokens` `[B,S]` int64 on the adapter's device → firing values, activations, output probs."""
        ...


def layer_offsets(layers: Sequence[ComponentLayer]) -> list[int]:
    """Start of each layer on the flat component axis (running sum of sizes, layer order)."""
    offsets, total = [], 0
    for layer in layers:
        offsets.append(total)
        total += layer.n_components
    return offsets


def flatten_batch(
    batch: AdapterBatch, layers: Sequence[ComponentLayer], activation_types: Sequence[str]
) -> tuple[Tensor, dict[str, Tensor]]:
    """Concatenate per-layer tensors along the component axis: firing values and each act type."""
    names = [layer.name for layer in layers]
    missing = [n for n in names if n not in batch.firing_values or n not in batch.activations]
    if missing:
        raise ValueError(f"adapter batch lacks layers {missing}")
    firing = torch.cat([batch.firing_values[n] for n in names], dim=-1)
    acts = {t: torch.cat([batch.activations[n][t] for n in names], dim=-1) for t in activation_types}
    return firing, acts


class HFTokenEncoder:
    """`TokenEncoder` over a Hugging Face `tokenizers.Tokenizer` or a `transformers` tokenizer."""

    def __init__(self, tokenizer: object, eos_token: str | None = None) -> None:
        self._tok = tokenizer
        self._eos = self._find_eos(eos_token)

    def _find_eos(self, eos_token: str | None) -> int | None:
        tok = self._tok
        if eos_token is None and getattr(tok, "eos_token_id", None) is not None:
            return int(tok.eos_token_id)  # type: ignore[attr-defined]
        candidates = [eos_token] if eos_token is not None else ["<|endoftext|>", "</s>", "<eos>", "[SEP]"]
        for name in candidates:
            idx = tok.token_to_id(name) if hasattr(tok, "token_to_id") else None  # type: ignore[attr-defined]
            if idx is None and hasattr(tok, "convert_tokens_to_ids"):
                idx = tok.convert_tokens_to_ids(name)  # type: ignore[attr-defined]
                idx = None if idx == getattr(tok, "unk_token_id", None) else idx
            if idx is not None:
                return int(idx)
        return None

    @property
    def eos_token_id(self) -> int | None:
        return self._eos

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        tok = self._tok
        if hasattr(tok, "encode_batch"):  # tokenizers.Tokenizer: Rust batch encode, no special tokens
            return [list(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]
        return [list(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]  # type: ignore[operator]

    def decode_token(self, token_id: int) -> str:
        tok = self._tok
        if hasattr(tok, "id_to_token"):
            return str(tok.id_to_token(token_id))
        return str(tok.convert_ids_to_tokens(token_id))  # type: ignore[attr-defined]
