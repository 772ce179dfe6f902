"""SSE parsing and the mapping of error responses to typed exceptions."""

from __future__ import annotations

import httpx
import pytest

from spdlab.client.errors import (
    ApiError,
    Forbidden,
    NotFound,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    ValidationFailed,
    error_from_response,
)
from spdlab.client.models.jobs import JobEvent
from spdlab.client.sse import SseMessage, parse_sse


def test_parse_sse_joins_data_lines_skips_comments_and_keeps_ids() -> None:
    stream = [
        ": keep-alive",
        "id: 1",
        "event: progress",
        'data: {"current": 1,',
        'data:  "total": 4}',
        "",
        "",  # a second blank line dispatches nothing
        "retry: 2500",
        "data: plain",
        "",
        "id: 3",
        "event: succeeded",
        "data: {}",
    ]  # the last event has no closing blank line: the stream was cut, so it is not dispatched
    messages = list(parse_sse(stream))
    assert messages == [
        SseMessage(event="progress", data='{"current": 1,\n "total": 4}', id="1"),
        SseMessage(event="message", data="plain", id=None, retry_ms=2500),
    ]


def test_job_event_from_sse_parses_json_and_progress() -> None:
    event = JobEvent.from_sse(SseMessage(event="progress", data='{"current": 3, "total": 4, "stage": "x"}', id="7"))
    assert (event.id, event.event, event.data["stage"]) == ("7", "progress", "x")
    assert event.fraction == pytest.approx(0.75)
    assert not event.is_terminal
    assert JobEvent.from_sse(SseMessage(event="cancelled", data="not json")).is_terminal


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", "http://api/api/v1/jobs")
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, Unauthorized), (403, Forbidden), (404, NotFound), (422, ValidationFailed), (429, QuotaExceeded)],
)
def test_status_maps_to_typed_error(status: int, cls: type[ApiError]) -> None:
    error = error_from_response(_response(status, {"detail": "nope"}))
    assert type(error) is cls
    assert (error.status, error.message, error.method) == (status, "nope", "POST")


def test_validation_detail_becomes_one_line_naming_fields() -> None:
    detail = [
        {"loc": ["body", "params", "steps"], "msg": "Input should be greater than or equal to 0"},
        {"loc": ["body", "kind"], "msg": "Input tag 'x' found\nusing 'kind' does not match"},
    ]
    error = error_from_response(_response(422, {"detail": detail}))
    assert "\n" not in error.message
    assert error.message.startswith("params.steps: Input should be greater than or equal to 0; kind: ")


def test_unavailable_carries_retry_after_and_unknown_status_is_generic() -> None:
    error = error_from_response(_response(503, {"detail": "database down"}, {"Retry-After": "5"}))
    assert isinstance(error, Unavailable) and error.retry_after == 5.0
    generic = error_from_response(_response(500, {"unexpected": True}))
    assert type(generic) is ApiError and generic.detail == {"unexpected": True}
