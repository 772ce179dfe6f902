"""Job models: a job row, a page of jobs, and one progress event."""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from spdlab.client.models._base import ApiModel
from spdlab.client.sse import SseMessage


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobProgress(ApiModel):
    current: float | None = None
    total: float | None = None
    stage: str | None = None


class JobError(ApiModel):
    """The user-facing error of a failed job (the traceback stays in the worker's logs)."""

    code: str | None = None
    message: str


class Job(ApiModel):
    id: str
    kind: str
    status: JobStatus
    queue: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    owner_id: str | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    result: dict[str, Any] | None = None
    result_ref: str | None = None
    error: JobError | None = None
    attempts: int | None = None
    cancel_requested: bool = False
    worker: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None


class JobPage(ApiModel):
    items: list[Job]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class JobEvent(ApiModel):
    """One SSE event of a job: `progress`, `log`, or a terminal state name."""

    id: str | None = None
    event: str
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.event in TERMINAL_STATUSES

    @property
    def fraction(self) -> float | None:
        """Progress in [0, 1] from `current`/`total` (or a `fraction` field), when the event has it."""
        current, total = self.data.get("current"), self.data.get("total")
        if isinstance(current, int | float) and isinstance(total, int | float) and total > 0:
            return min(max(current / total, 0.0), 1.0)
        frac = self.data.get("fraction")
        return float(frac) if isinstance(frac, int | float) else None

    @classmethod
    def from_sse(cls, message: SseMessage) -> JobEvent:
        try:
            data = json.loads(message.data)
        except ValueError:
            data = {"message": message.data}
        return cls(id=message.id, event=message.event, data=data if isinstance(data, dict) else {"value": data})
