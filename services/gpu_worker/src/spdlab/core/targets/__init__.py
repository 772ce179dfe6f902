"""Target model architectures and a registry from `model_type` / class name to (config, model).

Keys are the research code's class names (`LlamaSimpleMLP`, `GPT2Simple`, `TMSModel`, `ResidMLP`),
which are also the last component of `pretrained_model_class`. Other modules (e.g. `targets.hf` for
Hugging Face models) add entries with `register_target`; `get_target_spec` imports `targets.hf`
lazily the first time a name is not found.
"""

import importlib
from dataclasses import dataclass

from pydantic import BaseModel
from torch import nn

from spdlab.core.targets.gpt2_simple import GPT2Simple, GPT2SimpleConfig
from spdlab.core.targets.llama_simple_mlp import LlamaSimpleMLP, LlamaSimpleMLPConfig
from spdlab.core.targets.resid_mlp import ResidMLP, ResidMLPModelConfig
from spdlab.core.targets.tms import TMSModel, TMSModelConfig


@dataclass(frozen=True)
class TargetSpec:
    name: str
    config_cls: type[BaseModel]
    model_cls: type[nn.Module]


TARGET_REGISTRY: dict[str, TargetSpec] = {}
_LAZY_PROVIDERS = ["spdlab.core.targets.hf"]


def register_target(name: str, config_cls: type[BaseModel], model_cls: type[nn.Module]) -> None:
    TARGET_REGISTRY[name] = TargetSpec(name, config_cls, model_cls)


for _name, _cfg, _model in [
    ("LlamaSimpleMLP", LlamaSimpleMLPConfig, LlamaSimpleMLP),
    ("GPT2Simple", GPT2SimpleConfig, GPT2Simple),
    ("TMSModel", TMSModelConfig, TMSModel),
    ("ResidMLP", ResidMLPModelConfig, ResidMLP),
]:
    register_target(_name, _cfg, _model)


def get_target_spec(name: str) -> TargetSpec:
    """Look up by model type, class name or dotted class path (`spd.pretrain.models.x.LlamaSimpleMLP`)."""
    key = name.rsplit(".", 1)[-1]
    if key not in TARGET_REGISTRY:
        for provider in _LAZY_PROVIDERS:
            try:
                importlib.import_module(provider)
            except ModuleNotFoundError as e:
                if e.name != provider:
                    raise
    if key not in TARGET_REGISTRY:
        raise KeyError(f"unknown target model type {name!r}; known: {sorted(TARGET_REGISTRY)}")
    return TARGET_REGISTRY[key]


def build_target(name: str, config: dict | BaseModel) -> nn.Module:
    spec = get_target_spec(name)
    cfg = config if isinstance(config, spec.config_cls) else spec.config_cls.model_validate(
        config if isinstance(config, dict) else config.model_dump()
    )
    return spec.model_cls(cfg)


__all__ = [
    "GPT2Simple", "GPT2SimpleConfig", "LlamaSimpleMLP", "LlamaSimpleMLPConfig", "ResidMLP",
    "ResidMLPModelConfig", "TARGET_REGISTRY", "TMSModel", "TMSModelConfig", "TargetSpec",
    "build_target", "get_target_spec", "register_target",
]
