"""Typed Python client of the spdlab API."""

from spdlab.client.client import SpdlabClient
from spdlab.client.errors import (
    ApiError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    NotFound,
    QuotaExceeded,
    SpdlabError,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from spdlab.client.follow import FollowPolicy
from spdlab.client.models import Job, JobEvent, JobPage, JobStatus

__all__ = [
    "ApiError",
    "Conflict",
    "ConnectionFailed",
    "FollowPolicy",
    "Forbidden",
    "Job",
    "JobEvent",
    "JobPage",
    "JobStatus",
    "NotFound",
    "QuotaExceeded",
    "SpdlabClient",
    "SpdlabError",
    "Unauthorized",
    "Unavailable",
    "ValidationFailed",
]
