"""Base of the resource groups: typed helpers over the transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from spdlab.client.transport import Transport

M = TypeVar("M", bound=BaseModel)

API = "/api/v1"


def as_page(body: Any) -> Any:
    """Accept both `{"items": [...], ...}` and a bare list as a page body."""
    return {"items": body} if isinstance(body, list) else body


class _Resource:
    """One group of endpoints; a new resource is a subclass with a few typed methods."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _get(self, path: str, model: type[M], params: Mapping[str, Any] | None = None) -> M:
        return model.model_validate(self._t.request("GET", path, params=params))

    def _post(self, path: str, model: type[M], body: Any = None) -> M:
        return model.model_validate(self._t.request("POST", path, json=body))

    def _delete(self, path: str) -> Any:
        return self._t.request("DELETE", path)

    def _page(self, path: str, model: type[M], params: Mapping[str, Any] | None = None) -> M:
        return model.model_validate(as_page(self._t.request("GET", path, params=params)))
