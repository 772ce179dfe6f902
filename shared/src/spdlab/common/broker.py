"""Broker-side helpers: publish a job, the broker epoch, queue depth, ping.

The *epoch* is the time the broker's current incarnation was first seen (a Redis key, or a file
next to the filesystem transport's folders). A job dispatched before the epoch began sat in a
broker that has since lost its data (Redis restarted without persistence), so the sweeper
dispatches it again.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import redis

from spdlab.common.models import utcnow
from spdlab.common.settings import Settings, get_settings

_REDIS: dict[tuple[str, int], redis.Redis] = {}


def get_redis(settings: Settings | None = None) -> redis.Redis:
    settings = settings or get_settings()
    assert settings.redis_url, "REDIS_URL is not configured"
    key = (settings.redis_url, os.getpid())
    client = _REDIS.get(key)
    if client is None:
        client = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=1, socket_timeout=2, health_check_interval=10
        )
        _REDIS[key] = client
    return client


def task_name(queue: str) -> str:
    return f"{queue}.run_job"


def publish_job(job_id: str, queue: str, settings: Settings | None = None) -> None:
    """Send ``<queue>.run_job(job_id)``; raises when the broker is unreachable."""
    from spdlab.common.celery_app import get_celery

    settings = settings or get_settings()
    get_celery(settings).send_task(
        task_name(queue),
        args=[job_id],
        queue=settings.queue_name(queue),
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    )


def broker_epoch(settings: Settings | None = None) -> datetime:
    settings = settings or get_settings()
    now = utcnow().isoformat()
    if settings.redis_url:
        client = get_redis(settings)
        key = settings.redis_key("broker_epoch")
        client.set(key, now, nx=True)
        value: Any = client.get(key)
        return datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)
    path = settings.broker_dir / "epoch"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, now.encode())
        os.close(fd)
    except FileExistsError:
        pass
    return datetime.fromisoformat(path.read_text().strip() or now)


def ping(settings: Settings | None = None) -> None:
    """Raise if the broker is unreachable."""
    settings = settings or get_settings()
    if settings.redis_url:
        get_redis(settings).ping()
    else:
        settings.broker_dir.mkdir(parents=True, exist_ok=True)


def queue_depths(settings: Settings | None = None) -> dict[str, int]:
    settings = settings or get_settings()
    depths: dict[str, int] = {}
    for queue in ("gpu", "llm"):
        name = settings.queue_name(queue)
        if settings.redis_url:
            depths[queue] = int(get_redis(settings).llen(name))  # type: ignore[arg-type]
        else:
            folder = settings.broker_dir / "queue"
            depths[queue] = sum(1 for p in folder.glob(f"*.{name}.msg")) if folder.exists() else 0
    return depths
