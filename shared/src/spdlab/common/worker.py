"""Celery worker shell shared by the gpu and llm workers: the run task, the liveness/sweeper thread
and the worker launcher. Each worker package only supplies its queue name and handler registry."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

from spdlab.common import jobs, shard_jobs
from spdlab.common.broker import broker_epoch, publish_job, task_name
from spdlab.common.db import session_scope
from spdlab.common.models import Job, Worker, utcnow
from spdlab.common.registry import HandlerRegistry
from spdlab.common.runner import run_job
from spdlab.common.settings import Settings, get_settings

log = logging.getLogger(__name__)


def make_run_task(app: Celery, registry: HandlerRegistry) -> Task:
    """Register ``<queue>.run_job(job_id)`` on ``app``; acked late and requeued if the process dies."""

    @app.task(name=task_name(registry.queue), bind=True, acks_late=True, reject_on_worker_lost=True,
              max_retries=None)
    def run_job_task(self: Task, job_id: str) -> str:
        worker = f"{self.request.hostname}/{os.getpid()}"
        try:
            return run_job(job_id, registry=registry, worker=worker)
        except OperationalError as exc:  # database down: keep the message alive and retry later
            raise self.retry(exc=exc, countdown=get_settings().retry_after_s) from exc

    return run_job_task


def sweep(settings: Settings) -> list[str]:
    """Re-publish jobs whose message may be lost (stale claim, broker restart, missed dispatch) and
    settle shards that ended without telling their parent; returns the re-published job ids."""
    epoch = broker_epoch(settings)
    with session_scope(settings) as session:
        todo = jobs.requeue_stale(session, stale_after_s=settings.stale_claim_after_s)
        todo += jobs.undispatched(session, epoch_started=epoch, grace_s=settings.dispatch_grace_s)
    failed: list[str] = []
    for job_id, queue in todo:
        try:
            publish_job(job_id, queue, settings)
        except Exception as exc:
            log.warning("re-dispatch of job %s failed: %s", job_id, exc)
            failed.append(job_id)
    if failed:  # leave them for the next sweep
        with session_scope(settings) as session:
            session.query(Job).filter(Job.id.in_(failed)).update({Job.dispatched_at: None})
    if todo:
        log.info("re-dispatched %d job(s)", len(todo) - len(failed))
    settled = shard_jobs.settle_orphans(settings)
    return [job_id for job_id, _ in todo if job_id not in failed] + settled


class WorkerMonitor(threading.Thread):
    """Runs in the worker's main process: liveness row for /readyz, then a sweep."""

    def __init__(self, name: str, queue: str, settings: Settings) -> None:
        super().__init__(name="spdlab-worker-monitor", daemon=True)
        self.worker_name, self.queue, self.settings = name, queue, settings
        self._stop_event = threading.Event()

    def beat(self) -> None:
        with session_scope(self.settings) as session:
            row = session.get(Worker, self.worker_name)
            if row is None:
                session.add(Worker(name=self.worker_name, queue=self.queue, pid=os.getpid(),
                                   started_at=utcnow(), last_seen_at=utcnow()))
            else:
                row.last_seen_at = utcnow()

    def run(self) -> None:
        while True:
            try:
                self.beat()
                sweep(self.settings)
            except Exception as exc:  # Postgres or Redis away: try again next round
                log.warning("worker monitor round failed: %s", exc)
            if self._stop_event.wait(self.settings.sweep_interval_s):
                return

    def stop(self) -> None:
        self._stop_event.set()
        try:
            with session_scope(self.settings) as session:
                session.execute(delete(Worker).where(Worker.name == self.worker_name))
        except Exception as exc:
            log.warning("could not remove worker row: %s", exc)


def install_worker_monitor(queue: str) -> None:
    state: dict[str, WorkerMonitor] = {}

    @worker_ready.connect(weak=False)
    def _start(sender: object = None, **_: object) -> None:
        hostname = getattr(sender, "hostname", None) or f"{queue}@{socket.gethostname()}"
        monitor = WorkerMonitor(f"{hostname}/{os.getpid()}", queue, get_settings())
        state["monitor"] = monitor
        monitor.start()

    @worker_shutdown.connect(weak=False)
    def _stop(**_: object) -> None:
        if "monitor" in state:
            state["monitor"].stop()


def worker_argv(queue: str, extra: Sequence[str] = ()) -> list[str]:
    """Celery worker arguments: gpu = one prefork child with prefetch 1; llm = a thread pool."""
    settings = get_settings()
    if queue == "gpu":
        pool = ["-P", "prefork", "-c", os.environ.get("SPDLAB_GPU_CONCURRENCY", "1")]
    else:
        pool = ["-P", "threads", "-c", os.environ.get("SPDLAB_LLM_CONCURRENCY", "8")]
    return [
        "worker",
        "-Q", settings.queue_name(queue),
        "-n", f"{queue}-{os.getpid()}@{socket.gethostname()}",
        "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle",
        "--loglevel", settings.log_level,
        *pool,
        *extra,
    ]
