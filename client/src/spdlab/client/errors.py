"""Typed errors raised by the client: one class per status a caller may want to handle."""

from __future__ import annotations

from typing import Any

import httpx


class SpdlabError(Exception):
    """Base of every error the client raises."""


class ConnectionFailed(SpdlabError):
    """The API could not be reached (refused, DNS, timeout)."""


class ApiError(SpdlabError):
    """The API answered with a non-2xx status; `detail` is its `detail` field (or the body)."""

    def __init__(self, status: int, detail: Any, *, method: str = "", url: str = "", body: Any = None) -> None:
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        self.body = body  # the whole decoded answer: extra fields such as per-field `errors`
        super().__init__(f"{status}: {format_detail(detail)}")

    @property
    def message(self) -> str:
        """One line that names the problem, for CLIs and logs."""
        return format_detail(self.detail)


class Unauthorized(ApiError):
    """401: missing or unknown API key."""


class Forbidden(ApiError):
    """403: the key's user may not do this."""


class NotFound(ApiError):
    """404: no such resource (or not visible to this user)."""


class Conflict(ApiError):
    """409: the resource is in a state that forbids the request."""


class ValidationFailed(ApiError):
    """422 (or 400): the request does not validate; `detail` lists the fields."""


class _RetryableError(ApiError):
    def __init__(self, status: int, detail: Any, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(status, detail, **kw)
        self.retry_after = retry_after


class QuotaExceeded(_RetryableError):
    """429: rate limit or quota reached; `retry_after` seconds when the server says."""


class Unavailable(_RetryableError):
    """503: a dependency is down; `retry_after` seconds when the server says."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    429: QuotaExceeded,
    503: Unavailable,
}


def format_detail(detail: Any) -> str:
    """Render a FastAPI `detail` (a string, or a list of pydantic errors) as one line."""
    if isinstance(detail, list):
        return "; ".join(_format_item(item) for item in detail) or "invalid request"
    if isinstance(detail, dict):
        return _format_item(detail)
    return " ".join(str(detail).split())


def _format_item(item: Any) -> str:
    if not isinstance(item, dict):
        return " ".join(str(item).split())
    loc = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    msg = " ".join(str(item.get("msg", item)).split())
    return f"{loc}: {msg}" if loc else msg


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing for a hint
        return None


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text or response.reason_phrase


def error_from_response(response: httpx.Response) -> ApiError:
    """Build the typed error that matches a failed response."""
    cls = _BY_STATUS.get(response.status_code, ApiError)
    body = _body(response)
    detail = body.get("detail", body) if isinstance(body, dict) else body
    kw: dict[str, Any] = {"method": response.request.method, "url": str(response.request.url), "body": body}
    if issubclass(cls, _RetryableError):
        return cls(response.status_code, detail, retry_after=_retry_after(response), **kw)
    return cls(response.status_code, detail, **kw)
