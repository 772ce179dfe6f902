"""What harvest-family handlers load: a decomposition from the model cache, a dataset's token
windows from the artifact store, and the SPD adapter over them."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import Dataset
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.common.settings import Settings

if TYPE_CHECKING:
    from torch import Tensor

    from spdlab.core.harvest.spd_adapter import SPDAdapter
    from spdlab.gpu_worker.model_cache import LoadedEntry

WINDOWS_TENSOR = "tokens"


def windows_key(dataset_id: int) -> str:
    return f"datasets/{dataset_id}/windows.safetensors"


def load_entry(ctx: JobContext, decomposition_id: int) -> LoadedEntry:
    from spdlab.gpu_worker.model_cache import DecompositionUnavailableError, get_decomposition

    try:
        return get_decomposition(decomposition_id, ctx.settings, ctx.artifacts)
    except DecompositionUnavailableError as exc:
        raise JobFailedError(str(exc), "decomposition_unavailable") from exc


def load_windows(ctx: JobContext, dataset_id: int) -> Tensor:
    """`[N, S]` int64 token windows of a tokenized dataset."""
    import torch
    from safetensors.torch import load_file

    with session_scope(ctx.settings) as session:
        row = session.get(Dataset, dataset_id)
        ref = None if row is None else row.artifact_ref
        status = None if row is None else row.status
    if ref is None:
        raise JobFailedError(f"dataset {dataset_id} is not ready (status {status})", "dataset_not_ready")
    with tempfile.TemporaryDirectory() as tmp:
        path = ctx.artifacts.get_file(ref, Path(tmp) / "windows.safetensors")
        return load_file(str(path))[WINDOWS_TENSOR].to(torch.int64)


def make_adapter(entry: LoadedEntry, context_length: int, settings: Settings) -> SPDAdapter:
    """The SPD adapter over a loaded decomposition; its forward runs in bf16 when `settings` ask (CUDA)."""
    from spdlab.core.harvest.adapter import HFTokenEncoder
    from spdlab.core.harvest.spd_adapter import SPDAdapter
    from spdlab.gpu_worker.autocast import autocast_dtype

    tok = entry.tokenizer
    return SPDAdapter(entry.model, None if tok is None else HFTokenEncoder(tok), context_length=context_length,
                      sampling=entry.sampling, autocast_dtype=autocast_dtype(settings, entry.device))
