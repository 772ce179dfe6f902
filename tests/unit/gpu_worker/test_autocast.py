"""`SPDLAB_AUTOCAST_BF16`: bf16 autocast only when asked for AND on a bf16-capable CUDA device; float32
(no autocast) otherwise. CUDA is faked by patching torch's availability checks, so no GPU is needed:
the autocast contexts are built but never entered."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from spdlab.common.settings import Settings
from spdlab.gpu_worker import autocast
from spdlab.gpu_worker.harvest_inputs import make_adapter
from spdlab.gpu_worker.model_cache import resolve_device

FIXTURE_RUN = Path(__file__).resolve().parents[2] / "fixtures" / "research_runs" / "llama_mlp_vector"
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_notes() -> None:
    autocast._note_ignored.cache_clear()  # each test sees its own "ignored" log line


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A CPU-only torch that believes a bf16-capable GPU is present."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return monkeypatch


def test_setting_defaults_off_and_reads_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPDLAB_AUTOCAST_BF16", raising=False)
    assert Settings().autocast_bf16 is False
    monkeypatch.setenv("SPDLAB_AUTOCAST_BF16", "true")
    assert Settings().autocast_bf16 is True


def test_off_means_float32_everywhere(fake_cuda: pytest.MonkeyPatch) -> None:
    settings = Settings(autocast_bf16=False)
    for device in (CPU, CUDA):
        assert autocast.autocast_dtype(settings, device) is None
        assert isinstance(autocast.core_autocast(settings, device), nullcontext)


def test_cpu_ignores_the_setting_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(autocast_bf16=True, device="cpu")
    with caplog.at_level(logging.WARNING, logger=autocast.__name__):
        for _ in range(3):
            assert autocast.autocast_dtype(settings, resolve_device(settings)) is None
            assert isinstance(autocast.core_autocast(settings, CPU), nullcontext)
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "cpu" in ignored[0].getMessage()


def test_cuda_with_the_setting_chooses_bf16_autocast(fake_cuda: pytest.MonkeyPatch) -> None:
    settings = Settings(autocast_bf16=True, device="auto")
    device = resolve_device(settings)
    assert device.type == "cuda"  # "auto" follows the (faked) availability
    assert autocast.autocast_dtype(settings, device) == torch.bfloat16
    ctx = autocast.core_autocast(settings, device)
    assert isinstance(ctx, torch.autocast)
    assert ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16 and ctx._enabled


def test_cuda_without_bf16_support_stays_float32(fake_cuda: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with caplog.at_level(logging.WARNING, logger=autocast.__name__):
        assert autocast.autocast_dtype(Settings(autocast_bf16=True), CUDA) is None
    assert any("bfloat16" in r.getMessage() for r in caplog.records)


def test_harvest_adapter_gets_the_decision(fake_cuda: pytest.MonkeyPatch) -> None:
    """`make_adapter` (harvest and probe jobs) hands the chosen dtype to the adapter's forward pass."""
    from spdlab.core.research_import import import_research_run

    loaded = import_research_run(FIXTURE_RUN)
    on = Settings(autocast_bf16=True)
    for device, setting, want in ((CUDA, on, torch.bfloat16), (CPU, on, None), (CUDA, Settings(), None)):
        entry = SimpleNamespace(model=loaded.component_model, tokenizer=None, sampling=loaded.config.sampling,
                                device=device)
        adapter = make_adapter(entry, 8, setting)  # type: ignore[arg-type]
        assert adapter.autocast_dtype == want
