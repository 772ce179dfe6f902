"""The Celery app: queues ``gpu`` and ``llm``, routed by task-name prefix.

There is no result backend: the jobs table is the source of truth.
"""

from __future__ import annotations

import logging
import os

from celery import Celery
from kombu import Queue

from spdlab.common.settings import Settings, get_settings

QUEUES = ("gpu", "llm")
_APPS: dict[tuple[str, str, int], Celery] = {}
log = logging.getLogger(__name__)


def _tolerate_closed_channel() -> None:
    """When Redis goes away while a task is unacked, kombu's channel close (restore of unacked
    messages) and a later ack or reject go through a channel whose connection is already None and
    raise AttributeError; Celery calls that unrecoverable and the worker exits. Nothing is lost to
    us (the jobs table is the truth, duplicates are skipped at claim, the sweeper re-dispatches), so
    log and let Celery reconnect instead."""
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    if getattr(qos, "_spdlab_tolerant", False):
        return

    def tolerant(name: str):  # type: ignore[no-untyped-def]
        original = getattr(qos, name)

        def method(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            try:
                return original(self, *args, **kwargs)
            except (AttributeError, *kombu_redis.Transport.connection_errors) as exc:
                log.warning("broker connection lost during %s: %r", name, exc)
                if name == "restore_unacked":
                    self._delivered.clear()
                return None

        return method

    for name in ("restore_unacked", "ack", "reject"):
        setattr(qos, name, tolerant(name))
    qos._spdlab_tolerant = True


def _transport_options(settings: Settings) -> dict[str, object]:
    if settings.redis_url:
        # An unacked message comes back after this: keep it above the longest job. Jobs of dead
        # workers are recovered earlier by the sweeper (stale heartbeat).
        return {"visibility_timeout": settings.visibility_timeout_s}
    queue_dir = settings.broker_dir / "queue"
    processed = settings.broker_dir / "processed"
    control = settings.broker_dir / "control"  # fanout/pidbox state; kombu's default is ./control
    for folder in (queue_dir, processed, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir),
        "data_folder_out": str(queue_dir),
        "control_folder": str(control),
        "processed_folder": str(processed),
        "store_processed": False,
        "polling_interval": 0.2,
    }


def make_celery(settings: Settings) -> Celery:
    if settings.redis_url:
        _tolerate_closed_channel()
    app = Celery("spdlab", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[Queue(settings.queue_name(q)) for q in QUEUES],
        task_routes={f"{q}.*": {"queue": settings.queue_name(q)} for q in QUEUES},
        task_default_queue=settings.queue_name("gpu"),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


def get_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    key = (settings.broker_url, settings.namespace, os.getpid())
    app = _APPS.get(key)
    if app is None:
        app = make_celery(settings)
        _APPS[key] = app
    return app
