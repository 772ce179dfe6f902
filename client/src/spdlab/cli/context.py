"""What the top-level options give every command: where the API is and which key to use."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from spdlab.client import SpdlabClient


@dataclass(frozen=True)
class CliConfig:
    url: str | None = None
    api_key: str | None = None


def client_from(ctx: typer.Context) -> SpdlabClient:
    config = ctx.find_object(CliConfig) or CliConfig()
    return SpdlabClient(config.url, config.api_key)
