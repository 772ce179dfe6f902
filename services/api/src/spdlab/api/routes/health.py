"""Liveness, readiness (database, broker, live workers per queue) and Prometheus metrics."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select, text

from spdlab.common.broker import ping
from spdlab.common.celery_app import QUEUES
from spdlab.common.db import session_factory
from spdlab.common.models import Worker, utcnow
from spdlab.common.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_database(settings: Settings) -> tuple[str, dict[str, int]]:
    with session_factory(settings.effective_database_url)() as session:
        session.execute(text("SELECT 1"))
        cutoff = utcnow() - timedelta(seconds=settings.worker_alive_after_s)
        rows = session.execute(
            select(Worker.queue, func.count()).where(Worker.last_seen_at >= cutoff).group_by(Worker.queue)
        ).all()
    return "ok", {queue: int(n) for queue, n in rows}


def _readiness(settings: Settings) -> tuple[bool, dict[str, object]]:
    checks: dict[str, object] = {}
    workers: dict[str, int] = {}
    try:
        checks["database"], workers = _check_database(settings)
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        ping(settings)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    checks["workers"] = {queue: workers.get(queue, 0) for queue in QUEUES}
    ready = checks["database"] == "ok" and checks["broker"] == "ok" and all(workers.get(q, 0) > 0 for q in QUEUES)
    return ready, checks


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    ready, checks = await run_in_threadpool(_readiness, settings)
    headers = {} if ready else {"Retry-After": str(settings.retry_after_s)}
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503, headers=headers)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(request.app.state.metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
