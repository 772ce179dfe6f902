"""One Redis pattern subscription per API process that wakes the SSE streams of a job.

The job_events table is the truth; a lost notification only delays a stream until its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from spdlab.common.events import channel_pattern
from spdlab.common.settings import Settings

log = logging.getLogger(__name__)


class JobNotifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    @property
    def poll_interval_s(self) -> float:
        # With live notifications polling is only a safety net.
        return 1.0 if self.connected else 0.25

    async def start(self) -> None:
        if self.settings.redis_url:
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _listen(self) -> None:
        assert self.settings.redis_url
        while True:
            client = aioredis.Redis.from_url(self.settings.redis_url, socket_connect_timeout=1)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(channel_pattern(self.settings))
                    self.connected = True
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            data = message["data"]
                            self._wake(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job notification listener lost Redis: %s", exc)
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(1.0)

    def _wake(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    self._waiters.pop(job_id, None)
