"""`sources_by_target` (spec_core §6, app_backend §2.3), against the research code's own output."""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from spdlab.core.component_model import ComponentModel
from spdlab.core.gradient_connectivity import sources_by_target, sources_by_target_concrete
from spdlab.core.module_patterns import expand_module_patterns
from spdlab.core.research_import import import_research_run
from spdlab.core.targets import build_target
from spdlab.core.targets.hf import HF_OUTPUT_ATTR
from spdlab.core.topology import LayerAddress, TransformerTopology, parse_canonical

RUNS = Path(__file__).parents[2] / "fixtures" / "research_runs"


@dataclass
class LayerwiseCi:
    mode: str = "layerwise"
    fn_type: str = "mlp"
    hidden_dims: list[int] = field(default_factory=lambda: [2])


def _frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def _component_model(target: nn.Module, patterns: list[str], output_attr: str | None) -> ComponentModel:
    module_to_c = expand_module_patterns(_frozen(target), [(p, 3) for p in patterns])
    return ComponentModel(target, module_to_c, LayerwiseCi(), pretrained_model_output_attr=output_attr)


@pytest.mark.parametrize("run", ["llama_mlp_vector", "gpt2_simple_global"])
def test_matches_research_code_including_order(run: str) -> None:
    model = import_research_run(RUNS / run).component_model
    topology = TransformerTopology(model.target_model, model.module_to_c)
    meta = json.loads((RUNS / run / "expected" / "meta.json").read_text())
    assert list(model.module_to_c) == meta["target_module_paths_order"]

    concrete = sources_by_target_concrete(model, topology)
    assert list(concrete.items()) == list(meta["sources_by_target_concrete"].items())
    canonical = sources_by_target(model, topology)
    assert list(canonical.items()) == list(meta["sources_by_target_canonical"].items())


def _stage(name: str) -> tuple[float, int]:
    """Position in the forward: (block, 0 attention | 1 feed-forward); embed first, output last."""
    parsed = parse_canonical(name)
    if not isinstance(parsed, LayerAddress):
        return (-1, 1) if name == "embed" else (float("inf"), 0)
    return parsed.block, int(parsed.sublayer not in ("attn", "attn_fused"))


def _is_writer(name: str) -> bool:
    return name == "embed" or name.endswith((".o", ".down"))


def _expected(module_order: list[str]) -> dict[str, list[str]]:
    """Direct wiring of a fully decomposed pre-norm transformer, in research emission order.

    Residual writers (embed, o, down) feed every later residual reader; readers feed the writer
    of their own sub-layer.
    """
    found: dict[str, list[str]] = {}
    for source in ["embed", *module_order]:
        for target in [*module_order, "output"]:
            if _is_writer(source) and not _is_writer(target):
                connected = _stage(source) < _stage(target)
            else:
                connected = not _is_writer(source) and _is_writer(target) and _stage(source) == _stage(target)
            if connected and source != target:
                found.setdefault(target, []).append(source)
    return found


HF_CASES = {
    "gpt2_fused_conv1d": (
        lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=20, n_positions=8)),
        ["transformer.h.*.mlp.c_proj", "transformer.h.*.attn.c_attn", "transformer.h.*.mlp.c_fc",
         "transformer.h.*.attn.c_proj"],
    ),
    "llama_glu": (
        lambda: LlamaForCausalLM(LlamaConfig(
            num_hidden_layers=2, hidden_size=16, intermediate_size=24, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=20, max_position_embeddings=8,
        )),
        ["model.layers.*.mlp.*_proj", "model.layers.*.self_attn.?_proj"],
    ),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_hf_wiring_follows_the_residual_structure(case: str) -> None:
    factory, patterns = HF_CASES[case]
    model = _component_model(factory(), patterns, HF_OUTPUT_ATTR)
    topology = TransformerTopology(model.target_model, model.module_to_c)
    order = list(topology.canonical_names(model.module_to_c).values())
    got = sources_by_target(model, topology)
    assert list(got.items()) == list(_expected(order).items())
    if case == "gpt2_fused_conv1d":
        assert got["0.attn_fused.o"] == ["0.attn_fused.qkv"]
    else:
        assert got["1.glu.down"] == ["1.glu.gate", "1.glu.up"]


def test_undecomposed_layers_are_transparent_and_decomposed_embedding_is_one_source() -> None:
    cfg = {"model_type": "LlamaSimpleMLP", "vocab_size": 20, "n_layer": 2, "n_head": 2, "n_embd": 16,
           "n_intermediate": 24, "n_key_value_heads": 2, "block_size": 8, "n_ctx": 8, "rotary_dim": 8}
    model = _component_model(build_target("LlamaSimpleMLP", cfg), ["h.*.mlp.c_fc", "h.*.mlp.down_proj", "wte"], "idx_0")
    topology = TransformerTopology(model.target_model, model.module_to_c)
    assert sources_by_target(model, topology) == {
        "0.mlp.down": ["0.mlp.up"],
        "1.mlp.down": ["1.mlp.up"],
        "0.mlp.up": ["embed"],  # through the undecomposed attention too
        "1.mlp.up": ["embed", "0.mlp.down"],
        "output": ["embed", "0.mlp.down", "1.mlp.down"],
    }
