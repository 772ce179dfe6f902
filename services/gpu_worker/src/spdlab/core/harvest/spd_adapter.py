"""The SPD decomposition adapter: CI (lower-leaky) as firing value, component acts as activations.

Per batch: one target forward caching every decomposed layer's input, the CI function on those
inputs (the run's sampling; `generator` makes binomial-sampling runs reproducible), component
activations `x @ V` from the same inputs, and the softmax of the target logits. As in the research
harvest, `component_activation` is `x @ V` scaled by the norm of the component's `U` row (its write
direction), so activations are comparable across components; `scale_by_u_norm=False` gives raw
`x @ V`.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from spdlab.core.component_model import ComponentModel, OutputWithCache
from spdlab.core.harvest.adapter import AdapterBatch, ComponentLayer, HFTokenEncoder, TokenEncoder
from spdlab.core.masks import Sampling
from spdlab.core.topology import TopologyError, TransformerTopology

CI_TYPE = "causal_importance"
ACT_TYPE = "component_activation"


def _vocab_size(model: ComponentModel) -> int:
    try:
        emb = TransformerTopology(model.target_model).embedding_module
    except TopologyError:
        emb = next((m for m in model.target_model.modules() if isinstance(m, nn.Embedding)), None)
    if not isinstance(emb, nn.Embedding):
        raise ValueError("cannot find the target model's token embedding (vocab size)")
    return int(emb.num_embeddings)


def _canonical_names(model: ComponentModel) -> dict[str, str]:
    try:
        return TransformerTopology(model.target_model).canonical_names(model.target_module_paths)
    except TopologyError:
        return {}


class SPDAdapter:
    """`DecompositionAdapter` over a `ComponentModel`."""

    decomposition_method = "spd"

    def __init__(
        self,
        model: ComponentModel,
        tokenizer: TokenEncoder | None,
        *,
        context_length: int,
        sampling: Sampling = "continuous",
        scale_by_u_norm: bool = True,
        generator: torch.Generator | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self._context_length = context_length
        self.sampling = sampling
        self.generator = generator
        self.autocast_dtype = autocast_dtype
        canon = _canonical_names(model)
        self._layers = [ComponentLayer(name=p, n_components=c, canonical=canon.get(p))
                        for p, c in model.module_to_c.items()]
        self._vocab = _vocab_size(model)
        with torch.no_grad():
            self._u_norm = {
                p: (comp.U.norm(dim=1) if scale_by_u_norm else torch.ones_like(comp.U[:, 0])).detach()
                for p, comp in model.components.items()
            }

    @classmethod
    def from_loaded(cls, loaded: object, **kwargs: object) -> "SPDAdapter":
        """From `research_import.LoadedDecomposition` (its config gives context length and sampling)."""
        config = loaded.config  # type: ignore[attr-defined]
        tok = loaded.tokenizer  # type: ignore[attr-defined]
        ctx = getattr(config.task_config, "max_seq_len", None)
        if ctx is None:
            raise ValueError("decomposition has no language-model task config (max_seq_len)")
        kwargs.setdefault("sampling", config.sampling)
        return cls(loaded.component_model, None if tok is None else HFTokenEncoder(tok),  # type: ignore[attr-defined]
                   context_length=int(ctx), **kwargs)  # type: ignore[arg-type]

    @property
    def layers(self) -> Sequence[ComponentLayer]:
        return self._layers

    @property
    def activation_types(self) -> Sequence[str]:
        return (CI_TYPE, ACT_TYPE)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.components.values())).V.device

    @property
    def tokenizer(self) -> TokenEncoder:
        if self._tokenizer is None:
            raise ValueError("this decomposition has no tokenizer")
        return self._tokenizer

    def run_batch(self, tokens: Tensor) -> AdapterBatch:
        dev = self.device
        enabled = self.autocast_dtype is not None
        with torch.no_grad(), torch.autocast(dev.type, dtype=self.autocast_dtype, enabled=enabled):
            out = self.model(tokens, cache_type="input")
            assert isinstance(out, OutputWithCache)
            ci = self.model.calc_causal_importances(
                out.cache, self.sampling, detach_inputs=True, generator=self.generator
            ).lower_leaky
            acts = {
                p: comp.get_component_acts(out.cache[p]) * self._u_norm[p]
                for p, comp in self.model.components.items()
            }
        probs = torch.softmax(out.output.float(), dim=-1)
        return AdapterBatch(
            firing_values={p: v.float() for p, v in ci.items()},
            activations={p: {CI_TYPE: ci[p].float(), ACT_TYPE: acts[p].float()} for p in ci},
            output_probs=probs,
        )
