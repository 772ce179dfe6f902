"""The client against a scripted HTTP server: requests, pages, SSE follow with resume, wait."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from spdlab.client import ConnectionFailed, FollowPolicy, JobStatus, NotFound, SpdlabClient

Handler = Callable[[httpx.Request], httpx.Response]


def job(status: str = "queued", **extra: object) -> dict[str, object]:
    return {"id": "j1", "kind": "test.sleep", "status": status, "owner_id": 1, **extra}


def client_for(handler: Handler) -> SpdlabClient:
    http = httpx.Client(base_url="http://api", transport=httpx.MockTransport(handler))
    return SpdlabClient("http://api", "spd_secret", http=http)


def sse(*events: tuple[str, str, dict[str, object]]) -> bytes:
    return "".join(f"id: {i}\nevent: {e}\ndata: {json.dumps(d)}\n\n" for i, e, d in events).encode()


def test_submit_sends_kind_params_and_bearer_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=job(params=json.loads(request.content)["params"]))

    submitted = client_for(handler).jobs.submit("test.sleep", {"steps": 2})
    assert submitted.status is JobStatus.QUEUED and submitted.owner_id == "1"
    assert seen[0].headers["authorization"] == "Bearer spd_secret"
    assert json.loads(seen[0].content) == {"kind": "test.sleep", "params": {"steps": 2}}


def test_list_drops_unset_filters_and_parses_the_page() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert dict(request.url.params) == {"status": "running", "limit": "5"}
        return httpx.Response(200, json={"items": [job("running")], "total": 9, "limit": 5, "offset": 0})

    page = client_for(handler).jobs.list(status=JobStatus.RUNNING, limit=5)
    assert page.total == 9 and [j.status for j in page.items] == [JobStatus.RUNNING]


def test_errors_and_unreachable_server_are_typed() -> None:
    client = client_for(lambda r: httpx.Response(404, json={"detail": "job not found"}))
    with pytest.raises(NotFound, match="job not found"):
        client.jobs.get("nope")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ConnectionFailed, match="cannot reach http://api"):
        client_for(refuse).jobs.get("j1")


def test_follow_resumes_after_a_drop_with_last_event_id() -> None:
    calls: list[str | None] = []

    def dropped_after_two() -> Iterator[bytes]:
        yield sse(("1", "progress", {"current": 1, "total": 3}), ("2", "log", {"message": "hi"}))
        raise httpx.ReadError("connection reset")

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("last-event-id"))
        if len(calls) == 1:
            return httpx.Response(200, content=dropped_after_two())
        return httpx.Response(200, content=sse(("3", "progress", {"current": 3, "total": 3}), ("4", "succeeded", {})))

    client = client_for(handler)
    events = list(client.jobs.follow("j1", policy=FollowPolicy(retry_delay=0.0)))
    assert [e.id for e in events] == ["1", "2", "3", "4"]
    assert calls == [None, "2"]
    assert events[-1].is_terminal


def test_follow_gives_up_after_max_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    follow = client_for(handler).jobs.follow("j1", policy=FollowPolicy(max_retries=2, retry_delay=0.0))
    with pytest.raises(ConnectionFailed):
        list(follow)


def test_stream_closed_on_a_finished_job_yields_its_final_state() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=b": nothing to replay\n\n")
        return httpx.Response(200, json=job("failed", error={"code": "boom", "message": "step 2 failed"}))

    events = list(client_for(handler).jobs.follow("j1"))
    assert [e.event for e in events] == ["failed"]
    assert events[0].data["error"]["message"] == "step 2 failed"


def test_wait_follows_until_terminal_and_returns_the_final_row() -> None:
    rows = iter([job("running"), job("succeeded", result={"steps_done": 2})])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=sse(("1", "progress", {"current": 1}), ("2", "succeeded", {})))
        return httpx.Response(200, json=next(rows))

    final = client_for(handler).wait("j1", timeout=5)
    assert final.status is JobStatus.SUCCEEDED and final.result == {"steps_done": 2}


def test_cancel_uses_delete_and_reads_the_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "DELETE"
        return httpx.Response(200, json=job("running", cancel_requested=True))

    assert client_for(handler).jobs.cancel("j1").cancel_requested


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPDLAB_URL", "http://example.invalid:9000/")
    monkeypatch.setenv("SPDLAB_API_KEY", "spd_env")
    with SpdlabClient() as client:
        assert client.url == "http://example.invalid:9000"
        assert client._transport._http.headers["authorization"] == "Bearer spd_env"
