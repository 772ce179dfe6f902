"""`GlobalCiFnWrapper`: the dict-in/dict-out face of a global CI function (spec §2.8)."""

from torch import Tensor, nn

from spdlab.core.components import Components, EmbeddingComponents


class GlobalCiFnWrapper(nn.Module):
    """Turns embedding token ids into component acts `V[ids]`; passes other inputs unchanged.

    The wrapped function sits at `_global_ci_fn` (state-dict prefix `ci_fn._global_ci_fn.`).
    """

    def __init__(self, global_ci_fn: nn.Module, components: dict[str, Components]):
        super().__init__()
        self._global_ci_fn = global_ci_fn
        self.components = components  # plain dict: owned by ComponentModel

    def forward(self, layer_acts: dict[str, Tensor]) -> dict[str, Tensor]:
        transformed = {
            name: self.components[name].get_component_acts(acts)
            if isinstance(self.components[name], EmbeddingComponents)
            else acts
            for name, acts in layer_acts.items()
        }
        return self._global_ci_fn(transformed)
