import shutil
from pathlib import Path

import pytest
import torch
import yaml
from research_fixtures import ALL_RUNS, LM_RUNS, RUN_CHECKPOINTS, expected_json, run_dir

from spdlab.common.spd_config import parse_config
from spdlab.core.masks import make_mask_infos
from spdlab.core.research_import import RunImportError, import_research_run, map_legacy_state_dict_keys

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.mark.parametrize("run", ALL_RUNS)
def test_import_state_dict_equals_file(imported_runs, run):
    loaded = imported_runs[run]
    file_sd = torch.load(run_dir(run) / RUN_CHECKPOINTS[run], weights_only=True)
    sd = loaded.component_model.state_dict()
    assert sd.keys() == file_sd.keys()
    assert all(sd[k].dtype == file_sd[k].dtype and torch.equal(sd[k], file_sd[k]) for k in sd)
    assert loaded.source.step == int(RUN_CHECKPOINTS[run].split("_")[1].split(".")[0])
    assert (loaded.tokenizer is None) == (run == "tms_5-2")


@pytest.mark.parametrize("run", LM_RUNS)
def test_module_order_matches_research(imported_runs, run):
    meta = expected_json(run, "meta.json")
    cm = imported_runs[run].component_model
    assert cm.target_module_paths == meta["target_module_paths_order"]
    assert cm.module_to_c == meta["module_to_c"]


def _forward_ci(loaded, token_ids):
    cm = loaded.component_model
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        cache = cm(ids, cache_type="input").cache
        ci = cm.calc_causal_importances(cache, sampling="continuous")
    return cm, ids, cache, ci


@pytest.mark.parametrize("run", LM_RUNS)
@pytest.mark.parametrize("prompt", ["p8_fp32.json", "p24_fp32.json"])
def test_ci_and_outputs_match_research(imported_runs, run, prompt):
    exp = expected_json(run, prompt)
    cm, ids, cache, ci = _forward_ci(imported_runs[run], exp["token_ids"])
    for path, vals in exp["calc_causal_importances"].items():
        for field in ("pre_sigmoid", "lower_leaky", "upper_leaky"):
            assert torch.allclose(getattr(ci, field)[path][0], torch.tensor(vals[field]), **TOL), (path, field)

    with torch.no_grad():
        masked = cm(ids, mask_infos=make_mask_infos(ci.lower_leaky))[0]
        target = cm(ids)[0]
    attrs = exp["compute_prompt_attributions"]
    for ranking in ("output_top5_by_ci_masked_prob", "output_top5_by_target_prob"):
        rows = [(pos, e) for pos, lst in enumerate(attrs[ranking]) for e in lst]
        pos = torch.tensor([p for p, _ in rows])
        tok = torch.tensor([e["token_id"] for _, e in rows])
        for key, logits in (("ci_masked", masked), ("target", target)):
            got_prob = logits.softmax(-1)[pos, tok]
            assert torch.allclose(got_prob, torch.tensor([e[f"{key}_prob"] for _, e in rows]), **TOL)
            assert torch.allclose(logits[pos, tok], torch.tensor([e[f"{key}_logit"] for _, e in rows]), **TOL)

    canon_to_path = {v: k for k, v in expected_json(run, "meta.json")["canonical"].items()}
    acts = {p: cache[p][0] @ cm.components[p].V.detach() for p in cm.components}
    keys = list(attrs["node_subcomp_acts"])
    got = torch.stack([acts[canon_to_path[k.split(":")[0]]][int(k.split(":")[1]), int(k.split(":")[2])] for k in keys])
    assert torch.allclose(got, torch.tensor(list(attrs["node_subcomp_acts"].values())), **TOL)


@pytest.mark.parametrize("run", LM_RUNS)
def test_intervention_masked_forward_matches_research(imported_runs, run):
    exp = expected_json(run, "intervention_p24_fp32.json")
    node_set = exp["node_sets"]["ci_gt_0.1"]
    cm = imported_runs[run].component_model
    ids = torch.tensor([exp["token_ids"]])
    seq = ids.shape[1]
    masks = {p: torch.zeros(1, seq, c) for p, c in cm.module_to_c.items()}
    for path, pos, c in node_set["active_nodes"]:
        masks[path][0, pos, c] = 1.0
    with torch.no_grad():
        masked = cm(ids, mask_infos=make_mask_infos(masks))[0]
        target = cm(ids)[0]
    rows = [(pos, e) for pos, lst in enumerate(node_set["result"]["predictions_per_position"]) for e in lst]
    pos = torch.tensor([p for p, _ in rows])
    tok = torch.tensor([e["token_id"] for _, e in rows])
    assert torch.allclose(masked.softmax(-1)[pos, tok], torch.tensor([e["spd_prob"] for _, e in rows]), **TOL)
    assert torch.allclose(masked[pos, tok], torch.tensor([e["logit"] for _, e in rows]), **TOL)
    assert torch.allclose(target.softmax(-1)[pos, tok], torch.tensor([e["target_prob"] for _, e in rows]), **TOL)
    assert torch.allclose(target[pos, tok], torch.tensor([e["target_logit"] for _, e in rows]), **TOL)
    tokens = imported_runs[run].tokenizer.decode(exp["token_ids"][:2]).split()
    assert tokens == node_set["result"]["input_tokens"][0:1] + [node_set["result"]["input_tokens"][1].strip()]


def test_checkpoint_file_path_is_accepted():
    loaded = import_research_run(run_dir("tms_5-2") / "model_2000.pth")
    assert loaded.source.checkpoint == "model_2000.pth"


# --- error cases ---------------------------------------------------------------------------------


@pytest.fixture
def tms_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run_dir("tms_5-2"), dst)
    return dst


def _edit_config(run: Path, edit) -> None:
    cfg = yaml.safe_load((run / "final_config.yaml").read_text())
    edit(cfg)
    (run / "final_config.yaml").write_text(yaml.dump(cfg, sort_keys=False))


def _edit_checkpoint(run: Path, edit) -> None:
    path = run / "model_2000.pth"
    sd = torch.load(path, weights_only=True)
    torch.save(edit(sd), path)


def test_missing_config(tms_copy):
    (tms_copy / "final_config.yaml").unlink()
    with pytest.raises(RunImportError, match="missing SPD config"):
        import_research_run(tms_copy)


def test_missing_checkpoint(tms_copy):
    (tms_copy / "model_2000.pth").unlink()
    with pytest.raises(RunImportError, match=r"no checkpoint file model_<step>\.pth"):
        import_research_run(tms_copy)


def test_latest_checkpoint_is_used(tms_copy):
    sd = torch.load(tms_copy / "model_2000.pth", weights_only=True)
    sd["_components.linear1.U"] = sd["_components.linear1.U"] * 2
    torch.save(sd, tms_copy / "model_10000.pth")
    loaded = import_research_run(tms_copy)
    assert loaded.source.step == 10000
    assert torch.equal(loaded.component_model.components["linear1"].U, sd["_components.linear1.U"])


def test_missing_target_files(tms_copy):
    (tms_copy / "target" / "tms.pth").unlink()
    with pytest.raises(RunImportError, match="missing target weights"):
        import_research_run(tms_copy)
    shutil.copy(run_dir("tms_5-2") / "target" / "tms.pth", tms_copy / "target" / "tms.pth")
    (tms_copy / "target" / "tms_train_config.yaml").unlink()
    with pytest.raises(RunImportError, match="missing target train config"):
        import_research_run(tms_copy)


def test_missing_lm_target_config(tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir("gpt2_simple_global"), dst, ignore=shutil.ignore_patterns("expected", "metrics.jsonl"))
    (dst / "target" / "model_config.yaml").unlink()
    with pytest.raises(RunImportError, match="missing target model config"):
        import_research_run(dst)


def test_unexpected_and_missing_keys(tms_copy):
    _edit_checkpoint(tms_copy, lambda sd: {**sd, "ci_fn._ci_fns.linear1.layers.9.W": torch.zeros(1)})
    with pytest.raises(RunImportError, match=r"unexpected state-dict keys: ci_fn\._ci_fns\.linear1\.layers\.9\.W"):
        import_research_run(tms_copy)
    _edit_checkpoint(tms_copy, lambda sd: {k: v for k, v in sd.items() if k not in (
        "ci_fn._ci_fns.linear1.layers.9.W", "_components.linear2.bias")})
    with pytest.raises(RunImportError, match=r"missing state-dict keys: _components\.linear2\.bias"):
        import_research_run(tms_copy)


def test_shape_mismatch(tms_copy):
    _edit_config(tms_copy, lambda c: c["module_info"][0].update(C=19))
    with pytest.raises(RunImportError, match=r"shape mismatches: .*_components\.linear1\.U: checkpoint \(20, 2\) vs model \(19, 2\)"):
        import_research_run(tms_copy)


def test_layerwise_vs_global_mismatch(tms_copy):
    _edit_config(tms_copy, lambda c: c.update(ci_config={"mode": "global", "fn_type": "global_shared_mlp", "hidden_dims": [8]}))
    with pytest.raises(RunImportError, match="mode is 'global' but the checkpoint has layerwise CI keys"):
        import_research_run(tms_copy)


def test_invalid_config_names_the_field(tms_copy):
    _edit_config(tms_copy, lambda c: c["loss_metric_configs"].append({"classname": "NoSuchLoss", "coeff": 1.0}))
    with pytest.raises(RunImportError, match="unknown metric classname 'NoSuchLoss'"):
        import_research_run(tms_copy)


def test_legacy_state_dict_keys_load(tms_copy):
    def to_legacy(sd):
        out = {}
        for k, v in sd.items():
            if k.endswith(".weight") and k.startswith("target_model."):
                k = "patched_model." + k.removeprefix("target_model.").removesuffix(".weight") + ".original.weight"
            elif k.startswith("_components.") and k[-2:] in (".U", ".V"):
                k = f"patched_model.{k.split('.')[1].replace('-', '.')}.components.{k[-1]}"
            elif k.startswith("ci_fn._ci_fns."):
                k = "_gates." + k.removeprefix("ci_fn._ci_fns.")
            out[k] = v
        return out

    _edit_checkpoint(tms_copy, to_legacy)
    legacy = torch.load(tms_copy / "model_2000.pth", weights_only=True)
    assert "_gates.linear1.layers.0.W" in legacy and "patched_model.linear1.components.U" in legacy
    loaded = import_research_run(tms_copy)
    ref = torch.load(run_dir("tms_5-2") / "model_2000.pth", weights_only=True)
    sd = loaded.component_model.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


def test_top_level_ci_fns_key_mapping():
    mapped = map_legacy_state_dict_keys({"_ci_fns.a.layers.0.W": torch.zeros(1)})
    assert list(mapped) == ["ci_fn._ci_fns.a.layers.0.W"]


# --- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ALL_RUNS)
def test_config_round_trips_to_yaml(run):
    raw = yaml.safe_load((run_dir(run) / "final_config.yaml").read_text())
    dumped = parse_config(raw).model_dump(mode="json")
    assert dumped == raw and list(dumped) == list(raw)


def test_legacy_config_migrations():
    raw = yaml.safe_load((run_dir("tms_5-2") / "final_config.yaml").read_text())
    for key in ("ci_config", "module_info", "identity_module_info", "lr_schedule", "eval_batch_size", "slow_eval_freq"):
        raw.pop(key)
    raw.update(
        C=7, target_module_patterns=["linear1", "linear2"], identity_module_patterns=None,
        gate_type="mlp", gate_hidden_dims=[3], lr=0.01, lr_schedule="cosine", lr_warmup_pct=0.1,
        print_freq=raw.pop("eval_freq"), image_freq=5, eval_metrics=["x"],
        pretrained_model_class="simple_stories_train.models.llama.Llama",
    )
    raw["loss_metric_configs"][0] = {"classname": "ImportanceMinimalityLoss", "coeff": 1.0, "pnorm_1": 2.0, "pnorm_2": 1.0}
    raw["eval_metric_configs"].append({"classname": "Whatever", "extra_init_kwargs": {}})
    cfg = parse_config(raw)
    assert [(m.module_pattern, m.C) for m in cfg.module_info] == [("linear1", 7), ("linear2", 7)]
    assert cfg.ci_config.mode == "layerwise" and cfg.ci_config.fn_type == "mlp" and cfg.ci_config.hidden_dims == [3]
    assert (cfg.lr_schedule.start_val, cfg.lr_schedule.fn_type, cfg.lr_schedule.final_val_frac) == (0.01, "cosine", 0.0)
    assert cfg.eval_freq == 1000 and cfg.slow_eval_freq == 1000 and cfg.eval_batch_size == cfg.batch_size
    assert cfg.loss_metric_configs[0].pnorm == 2.0 and cfg.loss_metric_configs[0].beta == 0.0
    assert cfg.pretrained_model_class == "spd.pretrain.models.llama.Llama"
    assert len(cfg.eval_metric_configs) == 7


def test_legacy_global_ci_and_ppgd_scope_migrations():
    raw = yaml.safe_load((run_dir("llama_mlp_vector") / "final_config.yaml").read_text())
    raw.pop("ci_config")
    raw.update(use_global_ci=True, ci_fn_type="global_shared_mlp", ci_fn_hidden_dims=[5])
    raw["loss_metric_configs"].append({
        "classname": "PersistentPGDReconLoss", "coeff": 0.5, "scope": {"type": "batch_invariant", "n_masks": 2},
        "optimizer": {"type": "sign", "step_size": 0.1},
    })
    cfg = parse_config(raw)
    assert cfg.ci_config.mode == "global" and cfg.ci_config.hidden_dims == [5]
    ppgd = cfg.loss_metric_configs[-1]
    assert ppgd.scope.type == "repeat_across_batch" and ppgd.scope.n_sources == 2
    assert ppgd.optimizer.lr_schedule.start_val == 0.1 and ppgd.optimizer.lr_schedule.fn_type == "constant"
