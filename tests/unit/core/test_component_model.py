import pytest
import torch
from torch import nn

from spdlab.common.spd_config import LayerwiseCiConfig
from spdlab.core.component_model import ComponentModel, OutputWithCache, build_component_model
from spdlab.core.components import WeightDeltaAndMask
from spdlab.core.masks import ComponentsMaskInfo, make_mask_infos
from spdlab.core.module_patterns import expand_module_patterns, freeze_, insert_identity_operations_

CI = LayerwiseCiConfig(fn_type="mlp", hidden_dims=[4])


class Toy(nn.Module):
    def __init__(self, conv1d: type[nn.Module] | None = None):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = conv1d(5, 8) if conv1d is not None else nn.Linear(8, 5)  # HF Conv1D(nf=out, nx=in)
        self.head = nn.Linear(5, 3, bias=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(self.emb(ids)))))), None


def _model(conv1d: bool = False, paths=("emb", "fc1", "fc2", "head")) -> ComponentModel:
    torch.manual_seed(0)
    conv = None
    if conv1d:
        from transformers.pytorch_utils import Conv1D

        conv = Conv1D
    target = freeze_(Toy(conv))
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    return ComponentModel(target, {p: 4 for p in paths}, CI, pretrained_model_output_attr="idx_0")


IDS = torch.tensor([[1, 2, 3, 10], [0, 5, 5, 7]])


@pytest.mark.parametrize("conv1d", [False, True])
def test_full_delta_reproduces_target(conv1d):
    cm = _model(conv1d)
    deltas = cm.calc_weight_deltas()
    masks = {p: torch.ones(2, 4, 4) for p in cm.components}
    wd = {p: WeightDeltaAndMask(deltas[p], torch.ones(2, 4)) for p in cm.components}
    out = cm(IDS, mask_infos=make_mask_infos(masks, weight_deltas_and_masks=wd))
    assert torch.allclose(out, cm(IDS), atol=1e-5)
    assert not torch.allclose(cm(IDS, mask_infos=make_mask_infos(masks)), cm(IDS), atol=1e-3)


@pytest.mark.parametrize("conv1d", [False, True])
def test_weight_delta_identity(conv1d):
    cm = _model(conv1d)
    for p, delta in cm.calc_weight_deltas().items():
        assert torch.allclose(cm.target_weight(p), cm.components[p].weight + delta, atol=1e-6)
    if conv1d:
        assert torch.equal(cm.target_weight("fc2"), cm.target_model.fc2.weight.T)


def test_component_weight_layout_replaces_target():
    cm = _model(paths=("fc1",))
    comp = cm.components["fc1"]
    ones = make_mask_infos({"fc1": torch.ones(4)})
    with torch.no_grad():
        cm.target_model.fc1.weight.copy_((comp.V @ comp.U).T)
    assert torch.allclose(cm(IDS, mask_infos=ones), cm(IDS), atol=1e-5)
    with torch.no_grad():
        cm.target_model.fc1.weight.mul_(2)
        cm.target_model.fc1.bias.zero_()
        comp.bias.zero_()
    cached = cm(IDS, mask_infos=ones, cache_type="output").cache["fc1"]
    target_out = cm(IDS, cache_type="output").cache["fc1"]
    assert torch.allclose(target_out, 2 * cached, atol=1e-5)


def test_hooks_are_transparent_and_input_cache():
    cm = _model()
    plain = cm.target_model(IDS)[0]
    res = cm(IDS, cache_type="input")
    assert isinstance(res, OutputWithCache) and torch.equal(res.output, plain)
    assert torch.equal(res.cache["emb"], IDS) and res.cache["emb"].dtype == torch.long
    assert torch.equal(res.cache["fc1"], cm.target_model.emb(IDS))
    assert not any(m._forward_hooks for m in cm.target_model.modules())  # hooks removed


def test_routing_keeps_target_where_false():
    cm = _model(paths=("fc1",))
    routing = torch.tensor([[True, False, True, False], [False, False, True, True]])
    info = {"fc1": ComponentsMaskInfo(torch.zeros(4), routing_mask=routing)}
    out = cm(IDS, mask_infos=info, cache_type="output").cache["fc1"]
    target = cm(IDS, cache_type="output").cache["fc1"]
    comp = cm.components["fc1"](cm.target_model.emb(IDS), mask=torch.zeros(4))
    assert torch.equal(out[~routing], target[~routing]) and torch.allclose(out[routing], comp[routing])


def test_component_acts_cache_and_ci():
    cm = _model()
    acts = cm(IDS, cache_type="input").cache
    ci = cm.calc_causal_importances(acts, sampling="continuous")
    assert list(ci.lower_leaky) == sorted(cm.components)
    assert all(v.shape == (2, 4, 4) for v in ci.pre_sigmoid.values())
    assert all(torch.equal(ci.lower_leaky[p], ci.pre_sigmoid[p].clamp(0, 1)) for p in ci.pre_sigmoid)
    res = cm(IDS, mask_infos=make_mask_infos(ci.lower_leaky), cache_type="component_acts")
    assert set(res.cache) == {f"{p}_{s}" for p in cm.components for s in ("pre_detach", "post_detach")}
    # Only fc1 replaced: its input is the target's, so its acts are x @ V of the cached input.
    res = cm(IDS, mask_infos=make_mask_infos({"fc1": ci.lower_leaky["fc1"]}), cache_type="component_acts")
    assert torch.allclose(res.cache["fc1_pre_detach"], acts["fc1"] @ cm.components["fc1"].V)


def test_state_dict_layout():
    cm = _model()
    keys = set(cm.state_dict())
    assert {"target_model.emb.weight", "_components.fc1.V", "_components.fc1.bias", "_components.emb.U",
            "ci_fn._ci_fns.head.layers.0.W"} <= keys
    assert "_components.head.bias" not in keys and "_components.emb.bias" not in keys


def test_errors():
    target = Toy()
    with pytest.raises(ValueError, match="requires grad"):
        ComponentModel(target, {"fc1": 2}, CI)
    cm = _model(paths=("fc1",))
    with pytest.raises(ValueError, match="not decomposed"):
        cm(IDS, mask_infos=make_mask_infos({"fc2": torch.ones(4)}))


class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.h = nn.ModuleList(nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 2)}) for _ in range(2))


def test_expand_module_patterns_order_and_errors():
    m2c = expand_module_patterns(Deep(), [("h.*.b", 3), ("h.*.a", 5)])
    assert list(m2c.items()) == [("h.0.b", 3), ("h.1.b", 3), ("h.0.a", 5), ("h.1.a", 5)]
    with pytest.raises(ValueError, match="matches no module"):
        expand_module_patterns(Deep(), [("h.*.c", 3)])
    with pytest.raises(ValueError, match="matches both"):
        expand_module_patterns(Deep(), [("h.0.*", 3), ("h.*.a", 5)])


def test_identity_insertion():
    target = freeze_(Toy())
    before = target(IDS)[0]
    assert insert_identity_operations_(target, [("fc2", 4)]) == ["fc2"]
    assert torch.equal(target(IDS)[0], before)
    with pytest.raises(ValueError, match="Linear/Conv1D only"):
        insert_identity_operations_(target, [("emb", 4)])
    config = type("C", (), {
        "module_info": [], "identity_module_info": [type("M", (), {"module_pattern": "fc2", "C": 4})()],
        "ci_config": CI, "sigmoid_type": "leaky_hard", "pretrained_model_output_attr": "idx_0",
    })()
    cm = build_component_model(target, config)
    assert cm.target_module_paths == ["fc2.pre_identity"]
    assert torch.equal(cm.target_weight("fc2.pre_identity"), torch.eye(8))
    assert not any(k.startswith("target_model.fc2.pre_identity") for k in cm.state_dict())
    out = cm(IDS, mask_infos=make_mask_infos({"fc2.pre_identity": torch.ones(4)}))
    assert not torch.allclose(out, before, atol=1e-3)
    d = cm.calc_weight_deltas()["fc2.pre_identity"]
    info = make_mask_infos({"fc2.pre_identity": torch.ones(4)},
                           weight_deltas_and_masks={"fc2.pre_identity": WeightDeltaAndMask(d, torch.ones(2, 4))})
    assert torch.allclose(cm(IDS, mask_infos=info), before, atol=1e-5)
