"""Error mapping: bad input -> 422 naming field and reason; a missing dependency -> 503 with
Retry-After; a 500 is a bug (logged with the request id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import kombu.exceptions
import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from spdlab.common.contracts.jobs import kind_queues
from spdlab.common.jobs import JobStateError, QuotaExceededError
from spdlab.common.logs import request_id_var

log = logging.getLogger("spdlab.api")


class DependencyUnavailableError(Exception):
    def __init__(self, dependency: str) -> None:
        super().__init__(f"{dependency} is unavailable")
        self.dependency = dependency


def field_name(loc: Sequence[Any]) -> str:
    """('body', 'test.sleep', 'params', 'steps') -> 'params.steps'; ('query', 'limit') -> 'limit'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    kinds = kind_queues()
    parts = [p for i, p in enumerate(parts) if not (i == 0 and p in kinds)]
    return ".".join(str(p) for p in parts) or "body"


def validation_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    out = []
    for err in errors:
        reason, field = err.get("msg", "invalid"), field_name(err.get("loc", ()))
        if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            # The job union's discriminator: name the field the client must fix.
            reason = f"missing or unknown kind; expected one of: {', '.join(sorted(kind_queues()))}"
            field = "kind" if field == "body" else f"{field}.kind"
        out.append({"field": field, "reason": reason, "type": str(err.get("type", ""))})
    return out


def _unavailable(dependency: str, retry_after: int) -> JSONResponse:
    return JSONResponse(
        {"detail": f"{dependency} is unavailable; retry later", "dependency": dependency},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def install_error_handlers(app: FastAPI) -> None:
    retry_after = app.state.settings.retry_after_s

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(exc.errors())
        summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return JSONResponse({"detail": f"invalid request: {summary}", "errors": errors}, status_code=422)

    @app.exception_handler(QuotaExceededError)
    async def _quota(request: Request, exc: QuotaExceededError) -> JSONResponse:
        detail = (f"quota exceeded: you have {exc.active} queued or running jobs and the limit is "
                  f"{exc.limit}; wait for some to finish or cancel them")
        return JSONResponse({"detail": detail, "active": exc.active, "limit": exc.limit}, status_code=429,
                            headers={"Retry-After": str(retry_after)})

    @app.exception_handler(JobStateError)
    async def _conflict(request: Request, exc: JobStateError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc)
        return _unavailable("database", retry_after)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    @app.exception_handler(kombu.exceptions.OperationalError)
    async def _broker(request: Request, exc: Exception) -> JSONResponse:
        log.warning("broker unavailable: %s", exc)
        return _unavailable("broker", retry_after)

    @app.exception_handler(DependencyUnavailableError)
    async def _dependency(request: Request, exc: DependencyUnavailableError) -> JSONResponse:
        return _unavailable(exc.dependency, retry_after)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error", "request_id": request_id_var.get()}, status_code=500)
