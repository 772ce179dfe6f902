import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from spdlab.common.spd_config import GlobalCiConfig, LayerwiseCiConfig
from spdlab.core.ci_functions import GlobalCiFnWrapper, LayerwiseCiFnWrapper, make_ci_fn
from spdlab.core.ci_functions.blocks import Linear, ParallelLinear, SelfAttention
from spdlab.core.ci_functions.global_mlp import GlobalSharedMLPCiFn
from spdlab.core.ci_functions.global_transformer import GlobalSharedTransformerCiFn
from spdlab.core.ci_functions.layerwise import MLPCiFn, VectorMLPCiFn, VectorSharedMLPCiFn
from spdlab.core.components import EmbeddingComponents, LinearComponents

LAYERS = {"z.up": (6, 4), "a.down": (3, 5), "m.emb": (4, 2)}  # path -> (input width, C)


def _inputs(batch: tuple[int, ...], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {p: torch.randn(*batch, d, generator=g) for p, (d, _) in LAYERS.items()}


def _assert_grads_reach_all(module: nn.Module, loss: torch.Tensor, skip: tuple[str, ...] = ()) -> None:
    loss.backward()
    for name, p in module.named_parameters():
        if not name.endswith(skip):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_linear_and_parallel_linear_layout_and_init():
    torch.manual_seed(0)
    lin = Linear(400, 300, nonlinearity="relu")
    assert lin.W.shape == (400, 300) and torch.equal(lin.b, torch.zeros(300))
    assert abs(lin.W.std().item() - math.sqrt(2 / 400)) < 3e-3
    par = ParallelLinear(3, 4, 2)
    x = torch.randn(5, 3, 4)
    assert torch.allclose(par(x), torch.stack([x[:, c] @ par.W[c] + par.b[c] for c in range(3)], 1), atol=1e-6)
    assert par(torch.randn(5, 1, 4)).shape == (5, 3, 2)  # singleton C broadcasts



@pytest.mark.parametrize(
    ("C", "d_in", "d_out", "x_shape"),
    [(6, 1, 5, (7, 3, 6, 1)), (6, 5, 1, (7, 6, 5)), (6, 5, 4, (2, 7, 1, 5)), (1, 5, 4, (7, 1, 5))],
    ids=["width1_input", "width1_output", "shared_input", "single_c"],
)
def test_parallel_linear_fast_paths_match_einsum(C: int, d_in: int, d_out: int, x_shape: tuple[int, ...]):
    """The width-1 and shared-input shortcuts agree with the plain batched einsum, values and grads."""
    torch.manual_seed(0)
    par = ParallelLinear(C, d_in, d_out)
    with torch.no_grad():
        par.b.normal_()
    x = torch.randn(*x_shape, requires_grad=True)
    weight = torch.randn(*x_shape[:-2], C, d_out)
    fast = par(x)
    (fast * weight).sum().backward()
    fast_grads = [t.grad.clone() for t in (x, par.W, par.b)]
    for t in (x, par.W, par.b):
        t.grad = None
    ref = torch.einsum("...ci,cio->...co", x, par.W) + par.b
    (ref * weight).sum().backward()
    assert fast.shape == ref.shape and torch.allclose(fast, ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(fast_grads, (x.grad, par.W.grad, par.b.grad), strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    if d_in == 1:
        assert torch.equal(fast, ref)  # an outer product: exact

def test_layerwise_shapes_and_param_names():
    mlp = MLPCiFn(C=7, hidden_dims=[16])
    assert mlp(torch.randn(2, 3, 7)).shape == (2, 3, 7)
    assert {k: tuple(v.shape) for k, v in mlp.state_dict().items()} == {
        "layers.0.W": (7, 1, 16), "layers.0.b": (7, 16), "layers.2.W": (7, 16, 1), "layers.2.b": (7, 1)
    }
    assert VectorMLPCiFn(C=7, input_dim=5, hidden_dims=[4])(torch.randn(2, 3, 5)).shape == (2, 3, 7)
    shared = VectorSharedMLPCiFn(C=7, input_dim=5, hidden_dims=[])
    assert shared(torch.randn(4, 5)).shape == (4, 7) and set(shared.state_dict()) == {"layers.0.W", "layers.0.b"}
    with pytest.raises(ValueError):
        MLPCiFn(C=2, hidden_dims=[])


def test_mlp_ci_fn_is_per_component():
    fn = MLPCiFn(C=3, hidden_dims=[8])
    x = torch.randn(4, 3)
    x2 = x.clone()
    x2[:, 1] += 1.0
    diff = (fn(x) - fn(x2)).abs().sum(0)
    assert diff[1] > 0 and diff[0] == 0 and diff[2] == 0


def _toy_target() -> tuple[nn.Module, dict[str, int], dict]:
    target = nn.Module()
    target.up = nn.Linear(6, 4)
    target.down = nn.Linear(3, 5)
    target.emb = nn.Embedding(10, 4)
    module_to_c = {"up": 4, "down": 5, "emb": 2}
    comps = {
        "up": LinearComponents(4, 6, 4), "down": LinearComponents(5, 3, 5), "emb": EmbeddingComponents(2, 10, 4)
    }
    return target, module_to_c, comps


def test_builder_layerwise_sorted_and_embedding_rules():
    target, m2c, comps = _toy_target()
    wrapper = make_ci_fn(target, m2c, comps, LayerwiseCiConfig(fn_type="mlp", hidden_dims=[4]))
    assert isinstance(wrapper, LayerwiseCiFnWrapper) and wrapper.layer_names == ["down", "emb", "up"]
    out = wrapper({"up": torch.randn(2, 6), "down": torch.randn(2, 3), "emb": torch.tensor([1, 2])})
    assert list(out) == ["down", "emb", "up"] and out["emb"].shape == (2, 2)
    with pytest.raises(ValueError, match="not allowed for embedding"):
        make_ci_fn(target, m2c, comps, LayerwiseCiConfig(fn_type="vector_mlp", hidden_dims=[4]))


def test_builder_global_types_and_embedding_acts():
    target, m2c, comps = _toy_target()
    cfg = GlobalCiConfig(fn_type="global_shared_mlp", hidden_dims=[8])
    wrapper = make_ci_fn(target, m2c, comps, cfg)
    assert isinstance(wrapper, GlobalCiFnWrapper)
    fn = wrapper._global_ci_fn
    assert fn.layer_order == ["down", "emb", "up"] and fn.layers[0].W.shape == (3 + 2 + 6, 8)
    out = wrapper({"up": torch.randn(2, 6), "down": torch.randn(2, 3), "emb": torch.tensor([1, 2])})
    assert {k: v.shape for k, v in out.items()} == {"down": (2, 5), "emb": (2, 2), "up": (2, 4)}


def test_builder_dispatches_reverse_residual():
    target, m2c, comps = _toy_target()
    cfg = GlobalCiConfig(
        fn_type="global_reverse_residual", d_resid_ci_fn=8, reader_hidden_dims=[8],
        block_groups=[{"name": "all", "patterns": ["*"]}],
    )
    wrapper = make_ci_fn(target, m2c, comps, cfg)
    assert type(wrapper._global_ci_fn).__name__ == "GlobalReverseResidualCiFn"


def test_global_shared_mlp_concat_order_is_sorted():
    fn = GlobalSharedMLPCiFn(LAYERS, hidden_dims=[])
    x = _inputs((5,))
    with torch.no_grad():
        fn.layers[0].W.zero_()
        # input column of "a.down" (first in sorted order) -> output column of "a.down"
        fn.layers[0].W[0, 0] = 1.0
    out = fn(x)
    assert list(out) == ["a.down", "m.emb", "z.up"]
    assert torch.allclose(out["a.down"][:, 0], x["a.down"][:, 0])


@pytest.mark.parametrize("batch", [(3, 5), (7,)])
def test_global_transformer_shapes_sensitivity_and_grads(batch):
    torch.manual_seed(0)
    fn = GlobalSharedTransformerCiFn(LAYERS, d_model=8, n_blocks=2, n_heads=2, mlp_hidden_dims=[16])
    out = fn(_inputs(batch))
    assert list(out) == sorted(LAYERS)
    assert all(out[p].shape == (*batch, c) for p, (_, c) in LAYERS.items())
    other = fn(_inputs(batch, seed=1))
    assert not torch.allclose(out["z.up"], other["z.up"])
    # With a length-1 sequence (2-D input) softmax attention is constant in q and k.
    skip = ("q_proj.weight", "k_proj.weight") if len(batch) == 1 else ()
    _assert_grads_reach_all(fn, sum(v.sum() for v in out.values()), skip)


def test_transformer_state_dict_keys():
    fn = GlobalSharedTransformerCiFn(LAYERS, d_model=8, n_blocks=1, n_heads=2, mlp_hidden_dims=[16])
    keys = set(fn.state_dict())
    assert {"_input_projector.W", "_output_head.b", "_blocks.0.attn.q_proj.weight",
            "_blocks.0.attn.out_proj.weight", "_blocks.0.attn.rope.inv_freq", "_blocks.0.mlp.0.W",
            "_blocks.0.mlp.2.b"} <= keys
    assert torch.allclose(fn._blocks[0].attn.rope.inv_freq, 1 / 10000 ** (torch.arange(0, 4, 2) / 4))


def test_self_attention_is_bidirectional_and_position_aware():
    torch.manual_seed(0)
    attn = SelfAttention(8, n_heads=2)
    x = torch.randn(1, 5, 8)
    x_late = x.clone()
    x_late[0, 4] += 1.0
    # a change at the last position changes the output at position 0 (no causal mask)
    assert not torch.allclose(attn(x)[0, 0], attn(x_late)[0, 0])
    # RoPE: permuting the sequence is not equivariant
    perm = torch.tensor([1, 0, 2, 3, 4])
    assert not torch.allclose(attn(x)[:, perm], attn(x[:, perm]), atol=1e-5)


def test_unknown_fn_type_raises():
    target, m2c, comps = _toy_target()
    with pytest.raises(ValueError, match="unknown"):
        make_ci_fn(target, m2c, comps, SimpleNamespace(mode="global", fn_type="nope"))
