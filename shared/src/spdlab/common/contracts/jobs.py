"""Job submission union (discriminated on ``kind``) and job views.

To add a job kind: define ``<Kind>JobRequest`` with ``kind: Literal[...]``, ``params`` and a
``queue: ClassVar[str]`` ("gpu" or "llm") in its area's contracts module, add it to ``JobRequest``
below, and register a handler for the kind in the worker of that queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from spdlab.common.contracts.dataset_attributions import (
    DatasetAttributionJobRequest,
    DatasetAttributionShardJobRequest,
)
from spdlab.common.contracts.datasets import DatasetTokenizeJobRequest
from spdlab.common.contracts.decompose import DecomposeJobRequest
from spdlab.common.contracts.graphs import (
    DecompositionImportJobRequest,
    InterventionJobRequest,
    ManualGraphJobRequest,
    OptimizedGraphJobRequest,
    StandardGraphJobRequest,
)
from spdlab.common.contracts.harvest import HarvestJobRequest, HarvestShardJobRequest
from spdlab.common.contracts.probes import ProbeJobRequest
from spdlab.common.contracts.sleep import LlmSleepJobRequest, SleepJobRequest

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
EventType = Literal["progress", "log", "ci_snapshot", "succeeded", "failed", "cancelled"]

JobRequest = Annotated[
    SleepJobRequest
    | LlmSleepJobRequest
    | DecompositionImportJobRequest
    | StandardGraphJobRequest
    | ManualGraphJobRequest
    | OptimizedGraphJobRequest
    | InterventionJobRequest
    | DatasetTokenizeJobRequest
    | HarvestJobRequest
    | HarvestShardJobRequest
    | ProbeJobRequest
    | DatasetAttributionJobRequest
    | DatasetAttributionShardJobRequest
    | DecomposeJobRequest,
    Field(discriminator="kind"),
]
JOB_REQUEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobRequest)
JOB_REQUEST_TYPES: tuple[type[BaseModel], ...] = (
    SleepJobRequest,
    LlmSleepJobRequest,
    DecompositionImportJobRequest,
    StandardGraphJobRequest,
    ManualGraphJobRequest,
    OptimizedGraphJobRequest,
    InterventionJobRequest,
    DatasetTokenizeJobRequest,
    HarvestJobRequest,
    HarvestShardJobRequest,
    ProbeJobRequest,
    DatasetAttributionJobRequest,
    DatasetAttributionShardJobRequest,
    DecomposeJobRequest,
)


def kind_queues() -> dict[str, str]:
    """kind -> logical queue name."""
    return {get_args(t.model_fields["kind"].annotation)[0]: t.queue for t in JOB_REQUEST_TYPES}  # type: ignore[attr-defined]


def parse_job_request(kind: str, params: dict[str, Any]) -> BaseModel:
    return JOB_REQUEST_ADAPTER.validate_python({"kind": kind, "params": params})


class Progress(BaseModel):
    current: float | None = None
    total: float | None = None
    stage: str | None = None


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    queue: str
    owner_id: int
    params: dict[str, Any]
    params_key: str
    status: JobStatus
    progress: Progress
    error: JobError | None
    result: dict[str, Any] | None
    result_ref: str | None
    attempts: int
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class JobEventOut(BaseModel):
    seq: int
    type: EventType
    data: dict[str, Any]
    created_at: datetime
