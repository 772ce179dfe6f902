"""Response models of the API, as the client sees them."""

from spdlab.client.models.decompositions import Decomposition, DecompositionPage
from spdlab.client.models.health import Health
from spdlab.client.models.jobs import (
    TERMINAL_STATUSES,
    Job,
    JobError,
    JobEvent,
    JobPage,
    JobProgress,
    JobStatus,
)
from spdlab.client.models.users import ApiKey, User, UserCreated

__all__ = [
    "TERMINAL_STATUSES",
    "ApiKey",
    "Decomposition",
    "DecompositionPage",
    "Health",
    "Job",
    "JobError",
    "JobEvent",
    "JobPage",
    "JobProgress",
    "JobStatus",
    "User",
    "UserCreated",
]
