"""Hugging Face GPT-2 / Llama targets: local loading and decomposition (spec_core §1.1, §8 items 1–2)."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from spdlab.core.component_model import ComponentModel
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.masks import make_mask_infos
from spdlab.core.module_patterns import expand_module_patterns
from spdlab.core.targets import build_target
from spdlab.core.targets.hf import HF_OUTPUT_ATTR, HFTargetError, load_hf_causal_lm, load_hf_target
from spdlab.core.topology import TransformerTopology

VOCAB = 40


def _gpt2() -> nn.Module:
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=16))


def _llama() -> nn.Module:
    cfg = LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=16,
    )
    return LlamaForCausalLM(cfg)


# Decomposed modules per family (Conv1D c_attn/c_fc for GPT-2; SwiGLU projections + attention for Llama).
PATTERNS = {
    "gpt2": ["transformer.h.*.attn.c_attn", "transformer.h.*.mlp.c_fc", "transformer.h.*.mlp.c_proj"],
    "llama": ["model.layers.*.mlp.gate_proj", "model.layers.*.mlp.up_proj", "model.layers.*.mlp.down_proj",
              "model.layers.*.self_attn.v_proj"],
}
FACTORIES = {"gpt2": _gpt2, "llama": _llama}


@dataclass
class LayerwiseCi:
    mode: str = "layerwise"
    fn_type: str = "vector_mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [4])


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, nn.Module]:
    torch.manual_seed(0)
    model = FACTORIES[request.param]().eval()
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return request.param, directory, model


def _tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))


def test_round_trip_is_frozen_eval_and_identical(saved: tuple[str, Path, nn.Module]) -> None:
    _, directory, original = saved
    loaded = load_hf_target(directory)
    assert type(loaded) is type(original) and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    with torch.no_grad():
        out = getattr(loaded(_tokens()), HF_OUTPUT_ATTR)
        torch.testing.assert_close(out, original(_tokens()).logits, rtol=0, atol=0)
    assert out.shape == (2, 7, VOCAB)
    target = load_hf_causal_lm(directory)
    assert target.tokenizer is None and target.output_attr == "logits"


def test_rejects_non_local_or_unsupported(tmp_path: Path) -> None:
    with pytest.raises(HFTargetError, match="no config.json"):
        load_hf_target(tmp_path / "openai-community-gpt2")  # never treated as a hub id
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(HFTargetError, match="bert"):
        load_hf_target(tmp_path)


def test_tokenizer_is_loaded_when_present(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(VOCAB)} | {"[UNK]": VOCAB}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    _gpt2().save_pretrained(tmp_path)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path)
    target = load_hf_causal_lm(tmp_path)
    assert target.tokenizer is not None
    assert target.tokenizer("t3 t7")["input_ids"] == [3, 7]


def _component_model(family: str, directory: Path) -> ComponentModel:
    target = load_hf_target(directory)
    module_to_c = expand_module_patterns(target, [(p, 6) for p in PATTERNS[family]])
    return ComponentModel(target, module_to_c, LayerwiseCi(), pretrained_model_output_attr=HF_OUTPUT_ATTR)


def test_decomposition_invariants(saved: tuple[str, Path, nn.Module]) -> None:
    family, directory, _ = saved
    torch.manual_seed(0)
    cm = _component_model(family, directory)
    assert len(cm.module_to_c) == 2 * len(PATTERNS[family])
    TransformerTopology(cm.target_model, cm.module_to_c)  # every decomposed module has a canonical name
    deltas = cm.calc_weight_deltas()
    for path, comp in cm.components.items():
        module = cm.target_model.get_submodule(path)
        # Invariant 2: target weight = component weight + delta; Conv1D stores (in, out).
        weight = module.weight.T if isinstance(module, Conv1D) else module.weight
        torch.testing.assert_close(comp.weight + deltas[path], weight)
        assert not torch.allclose(comp.weight, weight)
    tokens = _tokens()
    with torch.no_grad():
        target_logits = cm(tokens)
        lead = tokens.shape
        masks = {p: torch.ones(*lead, c) for p, c in cm.module_to_c.items()}
        full = make_mask_infos(masks, weight_deltas_and_masks={p: WeightDeltaAndMask(d, torch.ones(lead)) for p, d in deltas.items()})
        no_delta = make_mask_infos(masks)
        # Invariant 1: all masks 1 + delta 1 reproduce the target logits; without delta they do not.
        torch.testing.assert_close(cm(tokens, mask_infos=full), target_logits, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(cm(tokens, mask_infos=no_delta), target_logits, atol=1e-3)


def test_registry_builds_hf_targets_from_a_local_path(saved: tuple[str, Path, nn.Module]) -> None:
    family, directory, original = saved
    class_name = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[family]
    model = build_target(f"transformers.{class_name}", {"path": str(directory)})
    assert type(model) is type(original) and all(not p.requires_grad for p in model.parameters())
    other = {"gpt2": "LlamaForCausalLM", "llama": "GPT2LMHeadModel"}[family]
    with pytest.raises(HFTargetError, match="holds a"):
        build_target(other, {"path": str(directory)})
