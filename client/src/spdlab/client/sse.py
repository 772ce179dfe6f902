"""Server-sent events: a pure parser from text lines to messages (per the WHATWG event-stream format)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    """One dispatched event. `id` is None when the event carried no id line."""

    event: str
    data: str
    id: str | None = None
    retry_ms: int | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Yield a message at each blank line that ends an event with data; ignore comments (keep-alives)."""
    event, data, event_id, retry = "", [], None, None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield SseMessage(event or "message", "\n".join(data), event_id, retry)
            event, data, event_id, retry = "", [], None, None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id" and "\0" not in value:
            event_id = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
