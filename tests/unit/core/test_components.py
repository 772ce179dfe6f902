import pytest
import torch

from spdlab.core.components import EmbeddingComponents, LinearComponents, WeightDeltaAndMask


def test_linear_weight_layout_and_acts():
    torch.manual_seed(0)
    comp = LinearComponents(C=4, d_in=3, d_out=5)
    assert comp.V.shape == (3, 4) and comp.U.shape == (4, 5)
    assert torch.allclose(comp.weight, (comp.V @ comp.U).T)
    x = torch.randn(2, 7, 3)
    assert torch.allclose(comp.get_component_acts(x), x @ comp.V)
    # Unmasked forward equals an nn.Linear with the summed weight.
    assert torch.allclose(comp(x), x @ comp.weight.T, atol=1e-6)


def test_masked_forward_with_delta_and_bias_order():
    torch.manual_seed(1)
    bias = torch.randn(5)
    comp = LinearComponents(C=4, d_in=3, d_out=5, bias=bias)
    x = torch.randn(2, 6, 3)
    mask = torch.rand(2, 6, 4)
    delta = torch.randn(5, 3)
    m_delta = torch.rand(2, 6)
    out = comp(x, mask=mask, weight_delta_and_mask=WeightDeltaAndMask(delta, m_delta))
    expected = ((x @ comp.V) * mask) @ comp.U + m_delta[..., None] * (x @ delta.T) + bias
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(AssertionError, match="delta mask shape"):
        comp(x, mask=mask, weight_delta_and_mask=WeightDeltaAndMask(delta, torch.rand(2, 6, 1)))


def test_bias_is_a_frozen_buffer_in_state_dict():
    comp = LinearComponents(C=2, d_in=3, d_out=4, bias=torch.ones(4))
    assert "bias" in comp.state_dict() and "bias" not in dict(comp.named_parameters())
    assert "bias" not in LinearComponents(C=2, d_in=3, d_out=4).state_dict()


def test_embedding_components_gather_and_delta():
    torch.manual_seed(2)
    comp = EmbeddingComponents(C=3, vocab_size=10, embedding_dim=4)
    ids = torch.tensor([[1, 9, 1]])
    assert torch.equal(comp.get_component_acts(ids), comp.V[ids])
    assert torch.allclose(comp.weight, comp.V @ comp.U)
    delta = torch.randn(10, 4)
    m = torch.rand(1, 3)
    out = comp(ids, mask=torch.ones(3), weight_delta_and_mask=WeightDeltaAndMask(delta, m))
    assert torch.allclose(out, comp.weight[ids] + m[..., None] * delta[ids], atol=1e-6)


def test_component_acts_cache_detaches():
    comp = LinearComponents(C=3, d_in=2, d_out=2)
    cache: dict[str, torch.Tensor] = {}
    out = comp(torch.randn(4, 2), component_acts_cache=cache)
    post = cache["post_detach"]
    assert post.is_leaf and post.requires_grad and cache["pre_detach"].grad_fn is not None
    (grad,) = torch.autograd.grad(out.sum(), post)
    assert torch.allclose(grad, comp.U.sum(-1).expand(4, 3).detach())


def test_init_std():
    torch.manual_seed(3)
    comp = LinearComponents(C=400, d_in=900, d_out=100)
    assert abs(comp.V.std().item() - 1 / 30) < 2e-3  # 1/sqrt(v_dim)
    assert abs(comp.U.std().item() - 1 / 20) < 3e-3  # 1/sqrt(C)
