"""The typed client and the `spdlab` CLI end to end, on the platform's real stack fixtures
(`stack`: API + gpu and llm workers; `admin_key`: an admin's API key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spdlab.client import (
    Forbidden,
    JobStatus,
    NotFound,
    SpdlabClient,
    Unauthorized,
    ValidationFailed,
)

pytestmark = pytest.mark.integration


def nonce() -> str:
    return f"n{uuid.uuid4().hex}"  # a letter first: `--param nonce=...` must not parse as a number


@pytest.fixture
def client(stack: Any, admin_key: str) -> Iterator[SpdlabClient]:
    with SpdlabClient(stack.url, admin_key, timeout=15) as c:
        yield c


@pytest.fixture
def member(client: SpdlabClient, stack: Any) -> Iterator[SpdlabClient]:
    created = client.users.create(f"m{uuid.uuid4().hex[:8]}", "member")
    assert created.api_key is not None and created.api_key.key
    with SpdlabClient(stack.url, created.api_key.key, timeout=15) as c:
        yield c


def test_submit_follow_and_wait(client: SpdlabClient) -> None:
    job = client.jobs.submit("test.sleep", {"steps": 4, "step_s": 0.05, "nonce": nonce()})
    assert job.status is JobStatus.QUEUED and job.queue == "gpu"
    events = list(client.follow_job(job.id))
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
    progress = [e for e in events if e.event == "progress"]
    assert progress and progress[-1].fraction == 1.0
    assert events[-1].event == "succeeded"
    final = client.wait(job.id, timeout=30)
    assert final.status is JobStatus.SUCCEEDED and final.result and final.result["steps_done"] == 4
    assert final.progress.current == final.progress.total == 4


def test_follow_resumes_after_the_last_event_id(client: SpdlabClient) -> None:
    job = client.jobs.submit("test.sleep", {"steps": 6, "step_s": 0.1, "nonce": nonce()})
    stream = client.jobs.follow(job.id)
    first = [next(stream), next(stream)]
    stream.close()  # drop the connection mid-run
    rest = list(client.jobs.follow(job.id, last_event_id=first[-1].id))
    ids = [int(e.id or 0) for e in first + rest]
    assert ids == list(range(1, len(ids) + 1)) and rest[-1].event == "succeeded"


def test_list_filters_by_kind_status_and_owner(client: SpdlabClient, member: SpdlabClient) -> None:
    mine = member.jobs.submit("test.llm_sleep", {"steps": 1, "step_s": 0.01, "nonce": nonce()})
    member.wait(mine.id, timeout=30)
    page = member.jobs.list(kind="test.llm_sleep", owner="me", status=JobStatus.SUCCEEDED, limit=200)
    assert mine.id in {j.id for j in page.items}
    assert all(j.kind == "test.llm_sleep" and j.status is JobStatus.SUCCEEDED for j in page.items)
    assert page.total is not None and page.total >= 1
    others = client.jobs.list(owner="me", kind="test.llm_sleep", limit=200)
    assert mine.id not in {j.id for j in others.items}


def test_cancel_stops_a_running_job(client: SpdlabClient) -> None:
    job = client.jobs.submit("test.sleep", {"steps": 400, "step_s": 0.05, "nonce": nonce()})
    events = client.jobs.follow(job.id)
    next(e for e in events if e.event == "progress")  # it is running
    assert client.jobs.cancel(job.id).cancel_requested
    final_event = next(e for e in events if e.is_terminal)
    assert final_event.event == "cancelled"
    assert client.wait(job.id, timeout=15).status is JobStatus.CANCELLED


def test_typed_errors(client: SpdlabClient, member: SpdlabClient, stack: Any) -> None:
    with SpdlabClient(stack.url, "spd_not-a-real-key") as stranger, pytest.raises(Unauthorized):
        stranger.jobs.list()
    with pytest.raises(Forbidden):
        member.users.create(f"x{uuid.uuid4().hex[:8]}")
    with pytest.raises(NotFound):
        client.jobs.get("0" * 32)
    with pytest.raises(ValidationFailed, match="params.steps") as bad:
        client.jobs.submit("test.sleep", {"steps": -1})
    assert bad.value.status == 422
    with pytest.raises(ValidationFailed, match="unknown kind"):
        client.jobs.submit("no.such.kind", {})


def test_keys_can_be_made_and_revoked(client: SpdlabClient, member: SpdlabClient, stack: Any) -> None:
    created = member.users.create_key(name="laptop")
    assert created.key
    with SpdlabClient(stack.url, created.key) as fresh:
        assert fresh.users.me().id == member.users.me().id
        member.users.revoke_key(created.id)
        with pytest.raises(Unauthorized):
            fresh.users.me()


def test_health_reports_ready_with_both_queues(client: SpdlabClient) -> None:
    assert client.health.live().status == "ok"
    ready = client.health.ready()
    assert ready.ready is True and all(n >= 1 for n in ready.checks["workers"].values())


# --- the CLI, as a user runs it -------------------------------------------------------------


def spdlab(stack: Any, key: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("spdlab")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "spdlab.cli"]
    env = {**os.environ, "SPDLAB_URL": stack.url, "SPDLAB_API_KEY": key, "COLUMNS": "120"}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_cli_submit_and_follow_shows_completion(stack: Any, admin_key: str) -> None:
    out = spdlab(stack, admin_key, "jobs", "submit", "test.sleep", "--param", "steps=3",
                 "--param", "step_s=0.05", "--param", f"nonce={nonce()}", "--follow")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split()[0]
    assert f"job {job_id} succeeded" in out.stdout
    assert "3/3" in out.stderr  # the progress bar reached the end

    listed = spdlab(stack, admin_key, "jobs", "list", "--kind", "test.sleep", "--limit", "200", "--json")
    assert job_id in {j["id"] for j in json.loads(listed.stdout)["items"]}
    got = json.loads(spdlab(stack, admin_key, "jobs", "get", job_id).stdout)
    assert got["status"] == "succeeded" and got["result"]["steps_done"] == 3


def test_cli_bad_param_is_one_clear_line(stack: Any, admin_key: str) -> None:
    rejected = spdlab(stack, admin_key, "jobs", "submit", "test.sleep", "--param", "steps=-1")
    assert rejected.returncode == 1
    assert rejected.stderr.strip().splitlines() == [rejected.stderr.strip()]
    assert rejected.stderr.startswith("error: 422") and "params.steps" in rejected.stderr
    assert "Traceback" not in rejected.stderr

    malformed = spdlab(stack, admin_key, "jobs", "submit", "test.sleep", "--param", "steps")
    assert malformed.returncode == 2 and malformed.stderr.strip() == "error: --param expects KEY=VALUE, got 'steps'"

    unauthorized = spdlab(stack, "spd_wrong", "jobs", "list")
    assert unauthorized.returncode == 1 and unauthorized.stderr.startswith("error: 401")
