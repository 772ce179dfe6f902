"""A small deterministic decomposition adapter for harvest tests (no model files needed)."""

from collections.abc import Sequence

import torch
from torch import Tensor

from spdlab.core.harvest.adapter import AdapterBatch, ComponentLayer


class WordEncoder:
    """Tokens `t0..t{V-1}` separated by spaces; optional EOS id."""

    def __init__(self, vocab_size: int, eos: int | None = None) -> None:
        self.vocab_size = vocab_size
        self._eos = eos

    @property
    def eos_token_id(self) -> int | None:
        return self._eos

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [[int(w[1:]) for w in t.split()] for t in texts]

    def decode_token(self, token_id: int) -> str:
        return f"t{token_id}"


class FakeAdapter:
    """Firing values depend on the token, the previous token and the position (so windows matter).

    CI-like values are `relu(x)` with many exact zeros; activations are a second linear read-out.
    """

    decomposition_method = "fake"

    def __init__(self, vocab_size: int = 11, sizes: Sequence[int] = (4, 3), seed: int = 0,
                 context_length: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self._layers = [ComponentLayer(name=f"l{i}", n_components=c, canonical=f"{i}.mlp.up")
                        for i, c in enumerate(sizes)]
        d = 6
        self.emb = torch.randn(vocab_size, d, generator=g)
        self.pos = torch.randn(context_length, d, generator=g) * 0.5
        self.w_ci = {la.name: torch.randn(d, la.n_components, generator=g) for la in self._layers}
        self.w_act = {la.name: torch.randn(d, la.n_components, generator=g) for la in self._layers}
        self.w_out = torch.randn(d, vocab_size, generator=g)
        self._vocab = vocab_size
        self._ctx = context_length
        self._tok = WordEncoder(vocab_size)

    @property
    def layers(self) -> list[ComponentLayer]:
        return self._layers

    @property
    def activation_types(self) -> list[str]:
        return ["causal_importance", "component_activation"]

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def context_length(self) -> int:
        return self._ctx

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def tokenizer(self) -> WordEncoder:
        return self._tok

    def run_batch(self, tokens: Tensor) -> AdapterBatch:
        x = self.emb[tokens]
        prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        h = x + 0.7 * prev + self.pos[: tokens.shape[1]]
        ci = {n: torch.relu(h @ w - 0.8).clamp(max=1.0) for n, w in self.w_ci.items()}
        acts = {n: h @ w for n, w in self.w_act.items()}
        probs = torch.softmax(h @ self.w_out, dim=-1)
        return AdapterBatch(
            firing_values=ci,
            activations={n: {"causal_importance": ci[n], "component_activation": acts[n]} for n in ci},
            output_probs=probs,
        )
