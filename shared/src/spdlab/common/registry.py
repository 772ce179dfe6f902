"""Handler registry: job kind -> handler function, one registry per worker queue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from spdlab.common.runner import JobContext


@dataclass(frozen=True)
class HandlerResult:
    """What a handler may return instead of a bare result model: a small JSON result plus a
    reference to where the large output lives (an artifact key or a table row)."""

    result: BaseModel | dict[str, Any] | None = None
    result_ref: str | None = None


Handler = Callable[["JobContext"], BaseModel | HandlerResult | dict[str, Any] | None]


@dataclass
class HandlerRegistry:
    queue: str
    _handlers: dict[str, Handler] = field(default_factory=dict)

    def register(self, kind: str) -> Callable[[Handler], Handler]:
        def decorator(fn: Handler) -> Handler:
            if kind in self._handlers:
                raise ValueError(f"handler for {kind!r} registered twice")
            self._handlers[kind] = fn
            return fn

        return decorator

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)
