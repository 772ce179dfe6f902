import json

import pytest
import torch
from research_fixtures import ALL_RUNS

from spdlab.core.checkpoints import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    export_research_run,
    load_decomposition,
    save_decomposition,
)
from spdlab.core.research_import import RunImportError, import_research_run


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("run", ALL_RUNS)
def test_save_load_round_trip_bit_exact(imported_runs, run, tmp_path):
    loaded = imported_runs[run]
    save_decomposition(loaded, tmp_path / "ckpt")
    again = load_decomposition(tmp_path / "ckpt")
    _assert_same_tensors(loaded.component_model, again.component_model)
    assert again.config == loaded.config and again.target_config == loaded.target_config
    assert again.tokenizer_json == loaded.tokenizer_json
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1 and manifest["target"]["model_type"] == loaded.target_model_type
    # export -> import again: the same bits
    save_decomposition(again, tmp_path / "ckpt2")
    _assert_same_tensors(loaded.component_model, load_decomposition(tmp_path / "ckpt2").component_model)


def test_tied_weights_stay_tied_after_load(imported_runs, tmp_path):
    save_decomposition(imported_runs["llama_mlp_vector"], tmp_path / "c")
    target = load_decomposition(tmp_path / "c").component_model.target_model
    assert target.wte.weight is target.lm_head.weight


@pytest.mark.parametrize("run", ALL_RUNS)
def test_export_research_run_round_trip(imported_runs, run, tmp_path):
    loaded = imported_runs[run]
    export_research_run(loaded, tmp_path / "run")
    again = import_research_run(tmp_path / "run")
    _assert_same_tensors(loaded.component_model, again.component_model)
    assert again.config == loaded.config
    assert (again.tokenizer is None) == (loaded.tokenizer is None)


def test_load_errors(imported_runs, tmp_path):
    with pytest.raises(RunImportError, match="missing manifest"):
        load_decomposition(tmp_path)
    save_decomposition(imported_runs["tms_5-2"], tmp_path / "c")
    (tmp_path / "c" / WEIGHTS_FILE).unlink()
    with pytest.raises(RunImportError, match="missing weights file"):
        load_decomposition(tmp_path / "c")
    manifest = json.loads((tmp_path / "c" / MANIFEST_FILE).read_text())
    manifest["format_version"] = 99
    (tmp_path / "c" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(RunImportError, match="unsupported format_version 99"):
        load_decomposition(tmp_path / "c")
