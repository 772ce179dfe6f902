"""Hugging Face causal-LM targets (GPT-2, Llama) loaded from a local directory only.

The hub is never contacted (`local_files_only=True`, and the path must be an existing directory).
The model's forward returns a `CausalLMOutput`; its logits are the attribute `logits`, so a
component model wrapping it uses `pretrained_model_output_attr = "logits"`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from spdlab.core.targets import register_target

HF_OUTPUT_ATTR = "logits"
# config.json `model_type` -> transformers class name.
HF_CAUSAL_LM_CLASSES: dict[str, str] = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


class HFTargetError(ValueError):
    """The directory is not a loadable local GPT-2/Llama checkpoint."""


@dataclass
class HFTarget:
    model: nn.Module
    tokenizer: Any | None
    output_attr: str = HF_OUTPUT_ATTR


def _model_type(directory: Path) -> str:
    config_path = directory / "config.json"
    if not directory.is_dir() or not config_path.is_file():
        raise HFTargetError(f"{directory} is not a local Hugging Face model directory (no config.json)")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type not in HF_CAUSAL_LM_CLASSES:
        raise HFTargetError(
            f"{directory}: model_type {model_type!r} is not supported (supported: {sorted(HF_CAUSAL_LM_CLASSES)})"
        )
    return model_type


def load_hf_target(path: str | Path, dtype: torch.dtype = torch.float32, expected_class: str | None = None) -> nn.Module:
    """Load a local GPT-2/Llama causal LM, in eval mode with every parameter frozen."""
    import transformers

    directory = Path(path)
    class_name = HF_CAUSAL_LM_CLASSES[_model_type(directory)]
    if expected_class is not None and class_name != expected_class:
        raise HFTargetError(f"{directory} holds a {class_name}, not a {expected_class}")
    cls = getattr(transformers, class_name)
    model = cls.from_pretrained(directory, local_files_only=True, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def load_hf_tokenizer(path: str | Path) -> Any | None:
    """The directory's tokenizer, or None when it holds no tokenizer files."""
    directory = Path(path)
    if not any((directory / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def load_hf_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> HFTarget:
    """Model and (optional) tokenizer of a local Hugging Face checkpoint directory."""
    return HFTarget(load_hf_target(path, dtype), load_hf_tokenizer(path))


class HFTargetConfig(BaseModel):
    """Registry config of a Hugging Face target: where its local checkpoint directory is."""

    model_config = ConfigDict(extra="forbid")
    path: str
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"


def _registry_loader(class_name: str) -> Callable[[HFTargetConfig], nn.Module]:
    def load(config: HFTargetConfig) -> nn.Module:
        return load_hf_target(config.path, getattr(torch, config.dtype), expected_class=class_name)

    return load


for _class_name in HF_CAUSAL_LM_CLASSES.values():
    # The registry calls `model_cls(config)`; for HF targets that is a loader, not a class.
    register_target(_class_name, HFTargetConfig, _registry_loader(_class_name))  # type: ignore[arg-type]
