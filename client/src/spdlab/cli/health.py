"""`spdlab health`: is the API alive, and are its dependencies ready?"""

from __future__ import annotations

import json

import typer

from spdlab.cli.context import client_from


def health(ctx: typer.Context) -> None:
    """Check /healthz and /readyz; exits 1 when the API is not ready."""
    with client_from(ctx) as client:
        client.health.live()
        ready = client.health.ready()
    checks = ", ".join(f"{name}={json.dumps(value) if isinstance(value, dict) else value}"
                       for name, value in ready.checks.items())
    typer.echo(f"{client.url}: {'ready' if ready.ready is not False else 'NOT READY'}" + (f" ({checks})" if checks else ""))
    if ready.ready is False:
        raise typer.Exit(1)
