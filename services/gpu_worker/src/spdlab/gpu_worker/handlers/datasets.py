"""``dataset.tokenize``: read a registered source, tokenize it once with the decomposition's
tokenizer into fixed-length windows, store them (safetensors, int32) in the artifact store.

Any `DatasetError` (bad file, line, column) fails the job with that message and marks the dataset
row failed with it, so `GET /datasets/{id}` shows the same error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from spdlab.common.contracts.datasets import DatasetTokenizeParams, DatasetTokenizeResult
from spdlab.common.db import session_scope
from spdlab.common.harvest_tables import Dataset
from spdlab.common.runner import JobCancelledError, JobContext, JobFailedError
from spdlab.gpu_worker.handlers import REGISTRY
from spdlab.gpu_worker.harvest_inputs import WINDOWS_TENSOR, load_entry, windows_key


def _mark(ctx: JobContext, dataset_id: int, **values: object) -> None:
    with session_scope(ctx.settings) as session:
        row = session.get(Dataset, dataset_id)
        if row is not None:
            for name, value in values.items():
                setattr(row, name, value)


def _context_length(entry: object, requested: int | None) -> int:
    if requested is not None:
        return requested
    task = getattr(entry.loaded.config, "task_config", None)  # type: ignore[attr-defined]
    length = getattr(task, "max_seq_len", None)
    if length is None:
        raise JobFailedError("the decomposition has no max_seq_len; give context_length", "context_length_required")
    return int(length)


@REGISTRY.register("dataset.tokenize")
def run_dataset_tokenize(ctx: JobContext) -> DatasetTokenizeResult:
    import torch
    from pydantic import TypeAdapter
    from safetensors.torch import save_file

    from spdlab.core.callbacks import Cancelled
    from spdlab.core.harvest.adapter import HFTokenEncoder
    from spdlab.core.harvest.datasets import DatasetError, DatasetSource, check_vocab, load_windows
    from spdlab.core.harvest.spd_adapter import _vocab_size

    params = ctx.params
    assert isinstance(params, DatasetTokenizeParams)
    with session_scope(ctx.settings) as session:
        row = session.get(Dataset, params.dataset_id)
        if row is None:
            raise JobFailedError(f"dataset {params.dataset_id} not found", "not_found")
        source_spec, decomposition_id = dict(row.source), row.decomposition_id
        requested, max_windows = row.context_length, row.max_windows
    _mark(ctx, params.dataset_id, status="running", job_id=ctx.job_id)
    entry = load_entry(ctx, decomposition_id)
    if entry.tokenizer is None:
        raise JobFailedError(f"decomposition {decomposition_id} has no tokenizer", "no_tokenizer")
    context_length = _context_length(entry, requested)
    source = TypeAdapter(DatasetSource).validate_python(source_spec)
    try:
        windows = load_windows(source, HFTokenEncoder(entry.tokenizer), context_length, max_windows=max_windows,
                               progress=lambda c, t, s: ctx.progress(c, t or None, s),
                               should_cancel=ctx.should_cancel)
        check_vocab(windows, _vocab_size(entry.model))
    except DatasetError as exc:
        _mark(ctx, params.dataset_id, status="failed", error=str(exc)[:4000])
        raise JobFailedError(str(exc), "dataset_invalid") from exc
    except Cancelled:
        _mark(ctx, params.dataset_id, status="cancelled")
        raise JobCancelledError() from None
    key = windows_key(params.dataset_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.safetensors"
        save_file({WINDOWS_TENSOR: windows.tokens.to(torch.int32).contiguous()}, str(path))
        ctx.artifacts.put_file(key, path)
    _mark(ctx, params.dataset_id, status="ready", artifact_ref=key, context_length=context_length,
          n_windows=windows.n_windows, n_documents=windows.n_documents, n_tokens_dropped=windows.n_tokens_dropped,
          error=None)
    return DatasetTokenizeResult(dataset_id=params.dataset_id, n_windows=windows.n_windows,
                                 context_length=context_length, n_documents=windows.n_documents,
                                 n_tokens_dropped=windows.n_tokens_dropped)
