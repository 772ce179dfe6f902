"""`GlobalReverseResidualCiFn` (spec_core §2.7, §4.6, §8 item 12)."""

from dataclasses import dataclass

import pytest
import torch

from spdlab.core.ci_functions.reverse_residual import (
    BlockGroupError,
    GlobalReverseResidualCiFn,
    build_blocks,
)


@dataclass
class Group:
    name: str
    patterns: list[str]


@dataclass
class Attn:
    n_heads: int = 2
    max_len: int = 16
    rope_base: float = 10000.0


# module_info order c_fc, down_proj, q, k, v, o (as the research configs), two blocks.
MODULE_TO_C = {
    f"h.{i}.{m}": c
    for m, c in [("mlp.c_fc", 5), ("mlp.down_proj", 4), ("attn.q_proj", 3), ("attn.k_proj", 3),
                 ("attn.v_proj", 2), ("attn.o_proj", 6)]
    for i in (0, 1)
}
INPUT_DIMS = {p: (16 if p.endswith("down_proj") else 8) for p in MODULE_TO_C}
GROUPS = [Group("h.1.mlp", ["h.1.mlp.*"]), Group("h.1.attn", ["h.1.attn.*"]),
          Group("h.0.mlp", ["h.0.mlp.*"]), Group("h.0.attn", ["h.0.attn.*"])]
D = 8


@dataclass
class Config:
    d_resid_ci_fn: int | None
    reader_hidden_dims: list[int] | None
    transition_hidden_dim: int | None
    block_groups: list[Group] | None
    transition_attn_config: Attn | None


def _fn(transition_hidden_dim: int | None = None, attn: Attn | None = None, reader: list[int] | None = None,
        ) -> GlobalReverseResidualCiFn:
    layer_configs = {p: (INPUT_DIMS[p], c) for p, c in MODULE_TO_C.items()}
    cfg = Config(D, [6] if reader is None else reader, transition_hidden_dim, GROUPS, attn)
    return GlobalReverseResidualCiFn(layer_configs, cfg)


def _inputs(*lead: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randn(*lead, d, generator=g) for p, d in INPUT_DIMS.items()}


def test_blocks_follow_group_order_then_module_to_c_order() -> None:
    blocks = build_blocks(GROUPS, MODULE_TO_C, INPUT_DIMS)
    assert [b.name for b in blocks] == ["h.1.mlp", "h.1.attn", "h.0.mlp", "h.0.attn"]
    assert blocks[1].modules == ["h.1.attn.q_proj", "h.1.attn.k_proj", "h.1.attn.v_proj", "h.1.attn.o_proj"]
    assert blocks[0].input_dims == [8, 16] and blocks[0].cs == [5, 4]
    # Within a group, pattern order wins over module_to_c order.
    (block,) = build_blocks([Group("all", ["*.o_proj", "*mlp*", "*attn.[qkv]_proj"])], MODULE_TO_C, INPUT_DIMS)
    assert block.modules[:4] == ["h.0.attn.o_proj", "h.1.attn.o_proj", "h.0.mlp.c_fc", "h.1.mlp.c_fc"]
    assert len(block.modules) == 12


def test_coverage_errors() -> None:
    with pytest.raises(BlockGroupError, match=r"h\.0\.attn"):
        build_blocks(GROUPS[:3], MODULE_TO_C, INPUT_DIMS)
    with pytest.raises(BlockGroupError, match="matched no module"):
        build_blocks([*GROUPS, Group("emb", ["wte"])], MODULE_TO_C, INPUT_DIMS)
    with pytest.raises(BlockGroupError, match="matched twice"):
        build_blocks([*GROUPS, Group("again", ["h.0.mlp.c_fc"])], MODULE_TO_C, INPUT_DIMS)
    with pytest.raises(BlockGroupError, match="matched twice"):
        build_blocks([Group("a", ["h.*", "h.0.*"])], MODULE_TO_C, INPUT_DIMS)


@pytest.mark.parametrize(("hidden", "attn"), [(None, None), (12, None), (None, Attn()), (12, Attn())])
def test_state_dict_keys_and_shapes(hidden: int | None, attn: Attn | None) -> None:
    sd = _fn(hidden, attn).state_dict()
    names = ["h-1-mlp", "h-1-attn", "h-0-mlp", "h-0-attn"]
    total_in = {"h-1-mlp": 24, "h-1-attn": 32, "h-0-mlp": 24, "h-0-attn": 32}
    total_c = {"h-1-mlp": 9, "h-1-attn": 14, "h-0-mlp": 9, "h-0-attn": 14}
    expected: dict[str, tuple[int, ...]] = {}
    for i, b in enumerate(names):
        expected |= {
            f"_inp_projectors.{b}.W": (total_in[b], D), f"_inp_projectors.{b}.b": (D,),
            f"_readers.{b}.0.W": (D, 6), f"_readers.{b}.0.b": (6,),
            f"_readers.{b}.2.W": (6, total_c[b]), f"_readers.{b}.2.b": (total_c[b],),
            f"_reader_norms.{b}.weight": (D,),
        }
        if i == len(names) - 1:
            continue
        expected[f"_transition_norms.{b}.weight"] = (D,)
        if hidden is None:
            expected |= {f"_transitions.{b}.W": (D, D), f"_transitions.{b}.b": (D,)}
        else:
            expected |= {f"_transitions.{b}.0.W": (D, hidden), f"_transitions.{b}.0.b": (hidden,),
                         f"_transitions.{b}.2.W": (hidden, D), f"_transitions.{b}.2.b": (D,)}
        if attn is not None:
            expected |= {f"_attn_transitions.{b}.{p}_proj.weight": (D, D) for p in ("q", "k", "v", "out")}
            expected |= {f"_attn_transitions.{b}.rope.inv_freq": (D // attn.n_heads // 2,),
                         f"_attn_norms.{b}.weight": (D,)}
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected


@pytest.mark.parametrize(("hidden", "attn", "lead"),
                         [(None, None, (3, 5)), (12, Attn(), (3, 5)), (12, None, (7,)), (None, Attn(), (7,))])
def test_shapes_dependence_and_gradients(hidden: int | None, attn: Attn | None, lead: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    fn = _fn(hidden, attn)
    out = fn(_inputs(*lead))
    assert list(out) == [m for b in fn.blocks for m in b.modules]  # block order split
    assert {p: tuple(t.shape) for p, t in out.items()} == {p: (*lead, c) for p, c in MODULE_TO_C.items()}
    other = fn(_inputs(*lead, seed=1))
    assert all(not torch.allclose(out[p], other[p]) for p in out)
    loss = sum((t**2).sum() for t in out.values())
    loss.backward()
    missing = [n for n, p in fn.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_first_block_output_depends_only_on_its_inputs_and_last_block_on_all() -> None:
    torch.manual_seed(0)
    fn = _fn(12)
    x = _inputs(2, 3)
    base = fn(x)
    changed = dict(x, **{"h.0.attn.q_proj": x["h.0.attn.q_proj"] + 1.0})
    out = fn(changed)
    # h.0.attn is processed last: earlier blocks' CI cannot see its input.
    for p in ("h.1.mlp.c_fc", "h.1.attn.o_proj", "h.0.mlp.down_proj"):
        torch.testing.assert_close(out[p], base[p], rtol=0, atol=0)
    assert not torch.allclose(out["h.0.attn.v_proj"], base["h.0.attn.v_proj"])
    changed = dict(x, **{"h.1.mlp.c_fc": x["h.1.mlp.c_fc"] + 1.0})
    out = fn(changed)
    assert all(not torch.allclose(out[p], base[p]) for p in out)


def test_reader_reads_residual_after_own_transition() -> None:
    """Manual recomputation of the first block with the research code's order of operations."""
    torch.manual_seed(0)
    fn = _fn(None)
    x = _inputs(4)
    b = "h-1-mlp"
    with torch.no_grad():
        fn._transition_norms[b].weight.mul_(1.5)
        r = fn._inp_projectors[b](torch.cat([x["h.1.mlp.c_fc"], x["h.1.mlp.down_proj"]], -1))
        r = r + fn._transitions[b](fn._transition_norms[b](r))
        rms = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + torch.finfo(r.dtype).eps)
        expected = fn._readers[b](rms * fn._reader_norms[b].weight)
        out = fn(x)
    torch.testing.assert_close(torch.cat([out["h.1.mlp.c_fc"], out["h.1.mlp.down_proj"]], -1), expected)


@pytest.mark.parametrize("attn", [None, Attn()])
def test_positions_mix_only_through_attention(attn: Attn | None) -> None:
    torch.manual_seed(0)
    fn = _fn(None, attn, reader=[])
    assert "_readers.h-1-mlp.0.W" in fn.state_dict() and "_readers.h-1-mlp.2.W" not in fn.state_dict()
    x = _inputs(1, 6)
    base = fn(x)
    x_late = {p: t.clone() for p, t in x.items()}
    x_late["h.1.mlp.c_fc"][0, 5] += 1.0
    out = fn(x_late)
    for p in ("h.1.mlp.c_fc", "h.0.attn.o_proj"):
        # Bidirectional attention lets a late edit reach earlier positions, even for the first block
        # itself, because its reader reads after its own (attention) transition.
        assert torch.allclose(out[p][0, :5], base[p][0, :5]) is (attn is None)
        assert not torch.allclose(out[p][0, 5], base[p][0, 5])


def test_missing_config_fields_are_rejected() -> None:
    with pytest.raises(ValueError, match="block_groups"):
        GlobalReverseResidualCiFn({"a": (2, 3)}, Config(D, [6], None, None, None))


def test_attention_dims_are_validated() -> None:
    with pytest.raises(ValueError, match="divisible"):
        _fn(None, Attn(n_heads=3))
    with pytest.raises(ValueError, match="even"):
        _fn(None, Attn(n_heads=8))


def test_state_dict_round_trips_strictly() -> None:
    torch.manual_seed(0)
    a, b = _fn(12, Attn()), _fn(12, Attn())
    b.load_state_dict(a.state_dict(), strict=True)
    x = _inputs(2, 4)
    for p, t in a(x).items():
        torch.testing.assert_close(b(x)[p], t, rtol=0, atol=0)


def test_inside_component_model_with_research_config() -> None:
    """The §2.7 example layout (deepest block first) built through the config and ComponentModel."""
    from spdlab.common.spd_config import GlobalCiConfig
    from spdlab.core.component_model import ComponentModel
    from spdlab.core.module_patterns import expand_module_patterns
    from spdlab.core.targets import build_target

    torch.manual_seed(0)
    target = build_target("LlamaSimpleMLP", {
        "vocab_size": 20, "n_layer": 2, "n_head": 2, "n_embd": 16, "n_intermediate": 24,
        "n_key_value_heads": 2, "block_size": 8, "n_ctx": 8, "rotary_dim": 8,
    }).eval().requires_grad_(False)
    patterns = ["h.*.mlp.c_fc", "h.*.mlp.down_proj", "h.*.attn.q_proj", "h.*.attn.k_proj",
                "h.*.attn.v_proj", "h.*.attn.o_proj"]
    module_to_c = expand_module_patterns(target, [(p, 4 + i) for i, p in enumerate(patterns)])
    ci_config = GlobalCiConfig.model_validate({
        "fn_type": "global_reverse_residual", "d_resid_ci_fn": 8, "reader_hidden_dims": [8],
        "transition_hidden_dim": 8, "transition_attn_config": {"n_heads": 2, "max_len": 8},
        "block_groups": [{"name": f"h.{i}.{s}", "patterns": [f"h.{i}.{s}.*"]} for i in (1, 0) for s in ("mlp", "attn")],
    })
    model = ComponentModel(target, module_to_c, ci_config, pretrained_model_output_attr="idx_0")
    fn = model.ci_fn._global_ci_fn
    assert isinstance(fn, GlobalReverseResidualCiFn)
    assert fn.blocks[1].modules == ["h.1.attn.q_proj", "h.1.attn.k_proj", "h.1.attn.v_proj", "h.1.attn.o_proj"]
    keys = set(model.state_dict())
    prefix = "ci_fn._global_ci_fn."
    assert {f"{prefix}_inp_projectors.h-1-mlp.W", f"{prefix}_transitions.h-0-mlp.2.W",
            f"{prefix}_attn_transitions.h-1-attn.rope.inv_freq", f"{prefix}_reader_norms.h-0-attn.weight"} <= keys
    assert not any(k.startswith(f"{prefix}_transitions.h-0-attn") for k in keys)
    cache = model(torch.randint(0, 20, (2, 5)), cache_type="input").cache
    ci = model.calc_causal_importances(cache, sampling="continuous")
    assert {p: tuple(t.shape) for p, t in ci.pre_sigmoid.items()} == {p: (2, 5, c) for p, c in module_to_c.items()}
