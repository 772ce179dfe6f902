"""`SpdlabClient`: the typed entry point to the whole API."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import httpx

from spdlab.client.models.jobs import Job, JobEvent
from spdlab.client.resources.decompositions import DecompositionsResource
from spdlab.client.resources.graphs import GraphsResource
from spdlab.client.resources.harvest import (
    ComponentsResource,
    DatasetAttributionsResource,
    DatasetsResource,
    HarvestsResource,
    ProbesResource,
)
from spdlab.client.resources.health import HealthResource
from spdlab.client.resources.interventions import InterventionsResource
from spdlab.client.resources.jobs import JobsResource
from spdlab.client.resources.prompts import PromptsResource
from spdlab.client.resources.users import UsersResource
from spdlab.client.transport import Transport


class SpdlabClient:
    """Sync client. URL and key come from the arguments, else `SPDLAB_URL` / `SPDLAB_API_KEY`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._transport = Transport(url, api_key, timeout=timeout, http=http)
        self.health = HealthResource(self._transport)
        self.jobs = JobsResource(self._transport)
        self.users = UsersResource(self._transport)
        self.decompositions = DecompositionsResource(self._transport)
        self.prompts = PromptsResource(self._transport)
        self.graphs = GraphsResource(self._transport)
        self.interventions = InterventionsResource(self._transport)
        self.datasets = DatasetsResource(self._transport)
        self.harvests = HarvestsResource(self._transport)
        self.components = ComponentsResource(self._transport)
        self.probes = ProbesResource(self._transport)
        self.dataset_attributions = DatasetAttributionsResource(self._transport)

    @property
    def url(self) -> str:
        return self._transport.url

    def follow_job(self, job_id: str, *, last_event_id: str | None = None) -> Iterator[JobEvent]:
        return self.jobs.follow(job_id, last_event_id=last_event_id)

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self.jobs.wait(job_id, timeout=timeout)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> SpdlabClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
