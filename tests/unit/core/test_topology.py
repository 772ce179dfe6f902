"""Canonical addresses, path schemas and cross-sequence pairs (spec_core §6)."""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from spdlab.core.topology import (
    PATH_SCHEMAS,
    LayerAddress,
    TopologyError,
    TransformerTopology,
    is_cross_seq_pair,
    parse_canonical,
)

N_BLOCKS, D, VOCAB = 2, 8, 11


def _attn(names: tuple[str, ...]) -> nn.Module:
    return nn.ModuleDict({n: nn.Linear(D, D) for n in names})


def _simple_block(ffn: dict[str, tuple[int, int]]) -> nn.Module:
    block = nn.Module()
    block.attn = _attn(("q_proj", "k_proj", "v_proj", "o_proj"))
    block.mlp = nn.ModuleDict({n: nn.Linear(i, o) for n, (i, o) in ffn.items()})
    return block


def _simple_lm(cls_name: str, ffn: dict[str, tuple[int, int]]) -> nn.Module:
    """A module tree shaped like the research code's simple LMs, with the given class name."""

    def init(self: nn.Module) -> None:
        nn.Module.__init__(self)
        self.wte = nn.Embedding(VOCAB, D)
        self.h = nn.ModuleList([_simple_block(ffn) for _ in range(N_BLOCKS)])
        self.lm_head = nn.Linear(D, VOCAB, bias=False)

    return type(cls_name, (nn.Module,), {"__init__": init})()


MLP_FFN = {"c_fc": (D, 4 * D), "down_proj": (4 * D, D)}
GLU_FFN = {"gate_proj": (D, 4 * D), "up_proj": (D, 4 * D), "down_proj": (4 * D, D)}


def _hf_gpt2() -> nn.Module:
    return GPT2LMHeadModel(GPT2Config(n_layer=N_BLOCKS, n_embd=D, n_head=2, vocab_size=VOCAB, n_positions=8))


def _hf_llama() -> nn.Module:
    cfg = LlamaConfig(
        num_hidden_layers=N_BLOCKS, hidden_size=D, intermediate_size=16, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=VOCAB,
    )
    return LlamaForCausalLM(cfg)


# (model factory, expected concrete path -> canonical name for block 1, embed path)
CASES = {
    "LlamaSimple": (
        lambda: _simple_lm("LlamaSimple", GLU_FFN),
        {"h.1.attn.k_proj": "1.attn.k", "h.1.mlp.gate_proj": "1.glu.gate", "h.1.mlp.up_proj": "1.glu.up",
         "h.1.mlp.down_proj": "1.glu.down"},
        "wte",
    ),
    "LlamaSimpleMLP": (
        lambda: _simple_lm("LlamaSimpleMLP", MLP_FFN),
        {"h.1.attn.q_proj": "1.attn.q", "h.1.mlp.c_fc": "1.mlp.up", "h.1.mlp.down_proj": "1.mlp.down"},
        "wte",
    ),
    "GPT2Simple": (
        lambda: _simple_lm("GPT2Simple", MLP_FFN),
        {"h.1.attn.o_proj": "1.attn.o", "h.1.attn.v_proj": "1.attn.v", "h.1.mlp.c_fc": "1.mlp.up"},
        "wte",
    ),
    "GPT2LMHeadModel": (
        _hf_gpt2,
        {"transformer.h.1.attn.c_attn": "1.attn_fused.qkv", "transformer.h.1.attn.c_proj": "1.attn_fused.o",
         "transformer.h.1.mlp.c_fc": "1.mlp.up", "transformer.h.1.mlp.c_proj": "1.mlp.down"},
        "transformer.wte",
    ),
    "LlamaForCausalLM": (
        _hf_llama,
        {"model.layers.1.self_attn.q_proj": "1.attn.q", "model.layers.1.self_attn.o_proj": "1.attn.o",
         "model.layers.1.mlp.gate_proj": "1.glu.gate", "model.layers.1.mlp.down_proj": "1.glu.down"},
        "model.embed_tokens",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_schema_maps_both_ways(name: str) -> None:
    factory, expected, embed_path = CASES[name]
    topo = TransformerTopology(factory())
    assert topo.n_blocks == N_BLOCKS
    assert topo.embed_path == embed_path and topo.target_to_canon(embed_path) == "embed"
    assert topo.target_to_canon("lm_head") == "output" and topo.canon_to_target("output") == "lm_head"
    for path, canonical in expected.items():
        assert topo.target_to_canon(path) == canonical
        assert topo.canon_to_target(canonical) == path
        assert topo.canon_to_target(canonical.replace("1.", "0.", 1)) == path.replace(".1.", ".0.", 1)
    assert isinstance(topo.embedding_module, nn.Embedding)
    unembed = topo.get_unembed_weight()
    assert unembed.shape == (D, VOCAB)
    torch.testing.assert_close(torch.ones(1, D) @ unembed, topo.unembed_module(torch.ones(1, D)))


def test_every_schema_is_covered_by_a_case() -> None:
    assert set(PATH_SCHEMAS) == set(CASES)


def test_every_block_weight_is_placed_and_round_trips() -> None:
    topo = TransformerTopology(_simple_lm("LlamaSimpleMLP", MLP_FFN))
    paths = [n for n, m in topo.model.named_modules() if isinstance(m, nn.Linear | nn.Embedding)]
    names = topo.canonical_names(paths)
    assert len(set(names.values())) == len(paths) == 2 + N_BLOCKS * 6
    assert all(topo.canon_to_target(c) == p for p, c in names.items())


def test_subclass_inherits_schema() -> None:
    class MyGPT2(GPT2LMHeadModel):
        pass

    model = MyGPT2(GPT2Config(n_layer=1, n_embd=D, n_head=2, vocab_size=VOCAB, n_positions=8))
    assert TransformerTopology(model).target_to_canon("transformer.h.0.attn.c_attn") == "0.attn_fused.qkv"


def test_unsupported_architecture_names_the_modules() -> None:
    class Mystery(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(3, 4)
            self.dec = nn.Linear(4, 3)

    with pytest.raises(TopologyError, match=r"Mystery.*enc.*dec"):
        TransformerTopology(Mystery())
    with pytest.raises(TopologyError, match=r"cannot place modules: \['enc'\]"):
        TransformerTopology(Mystery(), decomposed_paths=["enc"])


def test_unplaceable_decomposed_modules_are_named() -> None:
    model = _simple_lm("GPT2Simple", MLP_FFN)
    model.h[0].extra = nn.Linear(D, D)
    with pytest.raises(TopologyError, match=r"\['h\.0\.extra', 'h\.2\.mlp\.c_fc'\]"):
        TransformerTopology(model, decomposed_paths=["h.0.mlp.c_fc", "h.0.extra", "h.2.mlp.c_fc"])
    # A GLU address does not exist in an MLP model, nor a block past the end.
    topo = TransformerTopology(model)
    for bad in ("0.glu.gate", "2.attn.q"):
        with pytest.raises(TopologyError):
            topo.canon_to_target(bad)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [("embed", "embed"), ("output", "output"), ("12.attn.v", LayerAddress(12, "attn", "v")),
     ("0.attn_fused.qkv", LayerAddress(0, "attn_fused", "qkv")), ("3.glu.gate", LayerAddress(3, "glu", "gate")),
     ("1.mlp.down", LayerAddress(1, "mlp", "down"))],
)
def test_parse_canonical(name: str, parsed: object) -> None:
    assert parse_canonical(name) == parsed
    assert str(parsed) == name


@pytest.mark.parametrize("bad", ["wte", "0.attn.qkv", "0.mlp.gate", "0.attn_fused.q", "x.attn.q", "0.ffn.up", "0.attn.q.x"])
def test_parse_canonical_rejects(bad: str) -> None:
    with pytest.raises(TopologyError):
        parse_canonical(bad)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("0.attn.k", "0.attn.o", True),
        ("0.attn.v", "0.attn.o", True),
        ("0.attn.q", "0.attn.o", False),
        ("1.attn.k", "0.attn.o", False),
        ("0.attn.k", "1.attn.o", False),
        ("2.attn_fused.qkv", "2.attn_fused.o", True),
        ("2.attn_fused.qkv", "3.attn_fused.o", False),
        ("0.mlp.up", "0.mlp.down", False),
        ("embed", "0.attn.q", False),
        ("0.attn.o", "output", False),
    ],
)
def test_cross_seq_pairs(source: str, target: str, expected: bool) -> None:
    assert is_cross_seq_pair(source, target) is expected
