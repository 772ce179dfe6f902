"""Liveness and readiness (no auth needed)."""

from __future__ import annotations

from spdlab.client.errors import Unavailable
from spdlab.client.models.health import Health
from spdlab.client.resources._base import _Resource


class HealthResource(_Resource):
    def live(self) -> Health:
        return self._get("/healthz", Health)

    def ready(self) -> Health:
        """Readiness with its checks; a 503 that reports checks is an answer (`ready=False`), not an error."""
        try:
            return self._get("/readyz", Health)
        except Unavailable as exc:
            if isinstance(exc.body, dict) and "checks" in exc.body:
                return Health.model_validate({**exc.body, "ready": False})
            raise
