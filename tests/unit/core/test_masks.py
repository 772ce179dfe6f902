import pytest
import torch

from spdlab.core.masks import (
    LayerRouter,
    StaticProbabilityRouter,
    calc_stochastic_component_mask_info,
    make_mask_infos,
    perturb_pre_sigmoid,
    router_from_config,
    sample_uniform_k_subset_routing_masks,
)


def _cis(shape=(64, 8)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ci_a = torch.rand(*shape, 5, generator=g)
    ci_a[..., 0] = 1.0
    return {"a": ci_a, "b": torch.rand(*shape, 3, generator=g)}


@pytest.mark.parametrize("sampling", ["continuous", "binomial"])
def test_stochastic_masks_lie_in_ci_to_one(sampling):
    cis = _cis()
    deltas = {"a": torch.randn(4, 4), "b": torch.randn(2, 2)}
    infos = calc_stochastic_component_mask_info(cis, sampling, deltas, generator=torch.Generator().manual_seed(1))
    for path, ci in cis.items():
        m = infos[path].component_mask
        assert (m >= ci - 1e-7).all() and (m <= 1 + 1e-7).all()
        assert torch.equal(m[..., 0], torch.ones_like(m[..., 0])) if path == "a" else True
        if sampling == "binomial":
            assert (torch.isclose(m, ci) | torch.isclose(m, torch.ones_like(m))).all()
        dm = infos[path].weight_delta_and_mask.mask
        assert dm.shape == ci.shape[:-1]
        assert (dm >= 0).all() and (dm <= 1).all() and dm.std() > 0.2  # U(0,1), not binary
        assert infos[path].routing_mask == "all"


def test_no_delta_masks_without_deltas():
    infos = calc_stochastic_component_mask_info(_cis(), "continuous", None)
    assert all(i.weight_delta_and_mask is None for i in infos.values())


def test_uniform_k_subset_routes_at_least_one_and_k_uniform():
    names = ["a", "b", "c", "d"]
    masks = sample_uniform_k_subset_routing_masks((20000,), names, "cpu", torch.Generator().manual_seed(2))
    k = torch.stack([masks[n] for n in names], -1).sum(-1)
    assert (k >= 1).all() and (k <= 4).all()
    freq = torch.bincount(k, minlength=5)[1:].float() / k.numel()
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)
    # each module routed equally often: P = E[k]/n = 2.5/4
    per_module = torch.stack([masks[n].float().mean() for n in names])
    assert torch.allclose(per_module, torch.full((4,), 0.625), atol=0.02)


def test_layer_and_static_routers():
    m = LayerRouter("b").get_masks(["a", "b"], (3, 2), "cpu")
    assert m["b"].all() and not m["a"].any()
    with pytest.raises(ValueError):
        LayerRouter("z").get_masks(["a"], (1,), "cpu")
    s = StaticProbabilityRouter(0.3).get_masks(["a"], (50000,), "cpu", torch.Generator().manual_seed(0))
    assert abs(s["a"].float().mean().item() - 0.3) < 0.01


def test_router_from_config():
    class Cfg:
        type = "uniform_k_subset"

    assert type(router_from_config(Cfg())).__name__ == "UniformKSubsetRouter"
    assert router_from_config(None).get_masks(["a"], (1,), "cpu") == "all"
    with pytest.raises(ValueError, match="unknown routing"):
        router_from_config(type("X", (), {"type": "nope"})())


def test_binomial_perturbation_only_in_binomial_mode():
    g = torch.randn(1000)
    assert perturb_pre_sigmoid(g, "continuous") is g
    p = perturb_pre_sigmoid(g, "binomial", torch.Generator().manual_seed(0))
    u = (1.05 * g - p) / 0.05
    assert (u >= -1e-4).all() and (u <= 1 + 1e-4).all() and u.std() > 0.2


def test_make_mask_infos_checks_keys():
    with pytest.raises(ValueError, match="routing mask keys"):
        make_mask_infos({"a": torch.ones(1)}, {"b": torch.ones(1, dtype=torch.bool)})
    with pytest.raises(ValueError, match="weight delta keys"):
        make_mask_infos({"a": torch.ones(1)}, "all", {})
