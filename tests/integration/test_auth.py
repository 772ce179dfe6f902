"""Auth: keys required, shown once and revocable; owner-or-admin deletes; per-user quota."""

from __future__ import annotations

from typing import Any

import httpx
from platform_helpers import submit, wait_job

from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition


def test_key_required_everywhere_but_health_metrics_docs(stack: Any):
    for path in ("/api/v1/jobs", "/api/v1/users/me", "/api/v1/decompositions", "/api/v1/jobs/x/events"):
        resp = httpx.get(f"{stack.url}{path}")
        assert resp.status_code == 401, path
        assert resp.headers["www-authenticate"] == "Bearer"
    assert httpx.post(f"{stack.url}/api/v1/jobs", json={"kind": "test.sleep"}).status_code == 401
    bad = httpx.get(f"{stack.url}/api/v1/users/me", headers={"Authorization": "Bearer spd_not-a-key"})
    assert bad.status_code == 401 and "invalid" in bad.json()["detail"]
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert httpx.get(f"{stack.url}{path}").status_code == 200, path


def test_keys_are_shown_once_and_revocable(make_user: Any, stack: Any):
    user_id, member = make_user()
    created = member.post("/api/v1/users/me/keys", json={"name": "laptop"})
    assert created.status_code == 201
    key = created.json()["key"]
    listed = member.get("/api/v1/users/me/keys").json()
    assert len(listed) == 2 and all("key" not in k for k in listed)
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": key}) as laptop:
        assert laptop.get("/api/v1/users/me").json()["id"] == user_id
        assert laptop.delete(f"/api/v1/users/me/keys/{created.json()['id']}").status_code == 200
        assert laptop.get("/api/v1/users/me").status_code == 401


def test_admin_only_user_management(api: httpx.Client, make_user: Any):
    _, member = make_user()
    assert member.post("/api/v1/users", json={"name": "sneaky"}).status_code == 403
    other_id, _ = make_user()
    assert member.post(f"/api/v1/users/{other_id}/keys", json={}).status_code == 403
    assert api.post(f"/api/v1/users/{other_id}/keys", json={"name": "ops"}).status_code == 201
    name = api.get("/api/v1/users/me").json()["name"]
    assert api.post("/api/v1/users", json={"name": name}).status_code == 409


def test_members_read_shared_but_only_owner_or_admin_deletes(api: httpx.Client, make_user: Any,
                                                             stack_settings: Any):
    owner_id, owner = make_user()
    _, other = make_user()
    job = submit(owner, "test.llm_sleep", steps=100, step_s=0.05)
    assert other.get(f"/api/v1/jobs/{job['id']}").status_code == 200  # team members can read
    forbidden = other.delete(f"/api/v1/jobs/{job['id']}")
    assert forbidden.status_code == 403 and "owner or an admin" in forbidden.json()["detail"]
    assert api.delete(f"/api/v1/jobs/{job['id']}").status_code == 200  # admin may
    assert wait_job(owner, job["id"])["status"] == "cancelled"

    with session_scope(stack_settings) as session:
        rows = [Decomposition(owner_id=owner_id, name=f"d{i}", source="demo", config={}, summary={})
                for i in range(2)]
        session.add_all(rows)
        session.flush()
        first, second = (r.id for r in rows)
    assert other.get(f"/api/v1/decompositions/{first}").json()["name"] == "d0"
    assert other.delete(f"/api/v1/decompositions/{first}").status_code == 403
    assert owner.delete(f"/api/v1/decompositions/{first}").status_code == 204
    assert owner.get(f"/api/v1/decompositions/{first}").status_code == 404
    assert api.delete(f"/api/v1/decompositions/{second}").status_code == 204


def test_quota_of_queued_plus_running_jobs(make_user: Any):
    _, member = make_user(max_active_jobs=2)
    jobs = [submit(member, "test.llm_sleep", steps=100, step_s=0.05) for _ in range(2)]
    over = member.post("/api/v1/jobs", json={"kind": "test.llm_sleep", "params": {"nonce": "third"}})
    assert over.status_code == 429
    body = over.json()
    assert body["limit"] == 2 and body["active"] == 2 and "quota exceeded" in body["detail"]
    assert "Retry-After" in over.headers
    for job in jobs:
        member.delete(f"/api/v1/jobs/{job['id']}")
    for job in jobs:
        wait_job(member, job["id"])
    assert member.post("/api/v1/jobs", json={"kind": "test.llm_sleep",
                                             "params": {"steps": 0, "nonce": "fourth"}}).status_code == 202
