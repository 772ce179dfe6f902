"""Model cache eviction within its byte budget; import paths confined to the allowed roots."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from spdlab.common.settings import Settings
from spdlab.gpu_worker import model_cache
from spdlab.gpu_worker.decomposition_import import ImportPathError, check_import_path

FIXTURE_RUN = Path(__file__).resolve().parents[2] / "fixtures" / "research_runs" / "llama_mlp_vector"


def test_lru_keeps_recent_entries_within_budget(monkeypatch, tmp_path):
    loads: list[int] = []

    def fake_load(decomposition_id, settings, artifacts):  # type: ignore[no-untyped-def]
        loads.append(decomposition_id)
        return SimpleNamespace(nbytes=40)

    monkeypatch.setattr(model_cache, "_load", fake_load)
    cache = model_cache.ModelCache()
    settings = Settings(data_dir=tmp_path, model_cache_bytes=100)
    for i in (1, 2, 1, 3):  # 3 evicts 2 (1 was used more recently)
        cache.get(i, settings, None)  # type: ignore[arg-type]
    assert loads == [1, 2, 3]
    assert cache.loaded_ids() == [1, 3]
    cache.get(2, settings, None)  # type: ignore[arg-type]
    assert cache.loaded_ids() == [3, 2] and loads[-1] == 2


def test_import_paths_must_be_under_an_allowed_root(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert check_import_path(str(FIXTURE_RUN), settings) == FIXTURE_RUN.resolve()
    with pytest.raises(ImportPathError, match="not under an allowed import root"):
        check_import_path("/etc", settings)
    with pytest.raises(ImportPathError, match="not under an allowed import root"):
        check_import_path(str(tmp_path / ".." / ".." / "etc"), settings)
    with pytest.raises(ImportPathError, match="does not exist"):
        check_import_path(str(tmp_path / "missing"), settings)
    extra = tmp_path.parent / "elsewhere"
    extra.mkdir(exist_ok=True)
    assert check_import_path(str(extra), Settings(data_dir=tmp_path, import_roots=str(extra))) == extra.resolve()
