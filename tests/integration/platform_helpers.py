"""Helpers for the platform's integration tests: submit, poll, read an SSE stream."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


def submit(client: httpx.Client, kind: str = "test.sleep", **params: Any) -> dict[str, Any]:
    params.setdefault("nonce", uuid.uuid4().hex)
    resp = client.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


def wait_job(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
    """Poll until ``until(job)`` (default: a final state)."""
    until = until or (lambda job: job["status"] in FINAL)
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if until(job):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} stuck: {job}")
        time.sleep(0.05)


def read_sse(client: httpx.Client, job_id: str, last_event_id: int | None = None,
             max_events: int | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Read the job's SSE stream into [{id, event, data}] until it ends (or ``max_events``)."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    events.append(current)
                    current = {}
                    if max_events is not None and len(events) >= max_events:
                        break
                continue
            field, _, value = line.partition(": ")
            current[field] = int(value) if field == "id" else json.loads(value) if field == "data" else value
    return events
