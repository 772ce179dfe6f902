"""`decomposition.import`: a research-code run or one of our checkpoints → a stored decomposition."""

from __future__ import annotations

from spdlab.common.contracts.graphs import DecompositionImportParams, DecompositionImportResult
from spdlab.common.registry import HandlerResult
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.gpu_worker.decomposition_import import ImportPathError, register_decomposition
from spdlab.gpu_worker.graph_store import job_owner
from spdlab.gpu_worker.handlers import REGISTRY


@REGISTRY.register("decomposition.import")
def run_import(ctx: JobContext) -> HandlerResult:
    from spdlab.core.research_import import RunImportError
    from spdlab.core.topology import TopologyError

    params = ctx.params
    assert isinstance(params, DecompositionImportParams)
    ctx.progress(0, 2, "loading")
    try:
        decomposition_id, summary = register_decomposition(
            params.path, name=params.name, owner_id=job_owner(ctx), settings=ctx.settings, artifacts=ctx.artifacts,
            artifact_prefix=f"decompositions/import-{ctx.job_id}",
        )
    except ImportPathError as exc:
        raise JobFailedError(str(exc), "path_not_allowed") from exc
    except (RunImportError, TopologyError) as exc:
        raise JobFailedError(f"cannot import {params.path!r}: {exc}", "import_failed") from exc
    ctx.progress(2, 2, "stored")
    return HandlerResult(DecompositionImportResult(decomposition_id=decomposition_id, summary=summary),
                         f"decompositions:{decomposition_id}")
