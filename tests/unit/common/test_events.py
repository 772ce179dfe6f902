"""Event log ordering: gapless per-job sequence numbers, resumable reads."""

from __future__ import annotations

import threading
import uuid

from spdlab.common import jobs
from spdlab.common.contracts.jobs import parse_job_request
from spdlab.common.db import session_scope
from spdlab.common.events import append_event, events_after
from spdlab.common.models import User
from spdlab.common.settings import Settings


def _job(settings: Settings, owner: User) -> str:
    request = parse_job_request("test.sleep", {"nonce": uuid.uuid4().hex})
    with session_scope(settings) as session:
        return jobs.submit_job(session, owner=owner, request=request, queue="gpu", default_quota=100).job.id


def test_sequence_is_gapless_and_resumable(db_settings: Settings, owner: User):
    job_id = _job(db_settings, owner)
    other = _job(db_settings, owner)
    for i in range(5):
        with session_scope(db_settings) as session:
            append_event(session, job_id, "progress", {"current": i})
            append_event(session, other, "log", {"message": str(i)})
    with session_scope(db_settings) as session:
        seqs = [e.seq for e in events_after(session, job_id, 0)]
        assert seqs == [1, 2, 3, 4, 5]
        resumed = events_after(session, job_id, 3)
        assert [e.seq for e in resumed] == [4, 5] and [e.data["current"] for e in resumed] == [3, 4]


def test_rolled_back_events_leave_no_gap(db_settings: Settings, owner: User):
    job_id = _job(db_settings, owner)
    with session_scope(db_settings) as session:
        append_event(session, job_id, "log", {"message": "kept"})
    try:
        with session_scope(db_settings) as session:
            append_event(session, job_id, "log", {"message": "dropped"})
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    with session_scope(db_settings) as session:
        append_event(session, job_id, "log", {"message": "next"})
        events = events_after(session, job_id, 0)
    assert [(e.seq, e.data["message"]) for e in events] == [(1, "kept"), (2, "next")]


def test_concurrent_writers_serialise_per_job(db_settings: Settings, owner: User):
    job_id = _job(db_settings, owner)

    def write(n: int) -> None:
        for i in range(10):
            with session_scope(db_settings) as session:
                append_event(session, job_id, "log", {"message": f"{n}-{i}"})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope(db_settings) as session:
        seqs = [e.seq for e in events_after(session, job_id, 0, limit=100)]
    assert seqs == list(range(1, 31))
