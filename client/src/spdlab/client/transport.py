"""HTTP transport: base URL, auth header, JSON decoding and typed errors over one httpx client."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from spdlab.client.errors import ConnectionFailed, error_from_response

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SPDLAB_URL"
KEY_ENV = "SPDLAB_API_KEY"


def resolve_url(url: str | None) -> str:
    return (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def resolve_key(api_key: str | None) -> str | None:
    return api_key or os.environ.get(KEY_ENV) or None


def _drop_none(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if params is None else {k: v for k, v in params.items() if v is not None}


class Transport:
    """Sends requests and turns failures into `SpdlabError`s; owns the httpx client."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = resolve_url(url)
        self.api_key = resolve_key(api_key)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        # An injected client (tests, custom TLS) keeps its own settings; we only add auth.
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)
        self._http.headers.update(headers)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (None for an empty body)."""
        try:
            response = self._http.request(method, path, json=json, params=_drop_none(params))
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
        if response.is_error:
            raise error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    @contextmanager
    def stream(
        self,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Iterator[httpx.Response]:
        """Open a streaming GET (for SSE); raises typed errors before yielding the response."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
        try:
            with self._http.stream("GET", path, headers=headers, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise error_from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc}") from exc
