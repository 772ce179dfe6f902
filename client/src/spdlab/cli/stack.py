"""`spdlab up`: run the API and both workers on this machine until Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from spdlab.cli.errors import CommandFailed, InputProblem


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops the stack the way Ctrl-C does; SIGINT is set too because a shell starts
    # background jobs with it ignored.
    raise KeyboardInterrupt


def _start(settings: Any, host: str, port: int, timeout: float) -> Any:
    from spdlab.common.stack import start_stack

    log_dir = settings.data_dir / "logs"
    try:
        return start_stack(host=host, port=port, log_dir=log_dir, timeout=timeout)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CommandFailed(f"database migration failed: {last[0]}") from None
    except (RuntimeError, TimeoutError) as exc:
        raise CommandFailed(f"the stack did not start: {exc} (logs in {log_dir})") from None


def _supervise(stack: Any) -> str | None:
    """Block until Ctrl-C/SIGTERM (None) or until a service dies (its name)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for service, proc in stack.processes.items():
                if proc.poll() is not None:
                    return str(service)
            time.sleep(0.5)
    except KeyboardInterrupt:
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def up(
    host: Annotated[str | None, typer.Option(help="API host (default SPDLAB_API_HOST or 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default SPDLAB_API_PORT or 8000)")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness")] = 120.0,
) -> None:
    """Start API, GPU worker and LLM worker (embedded SQLite + file broker unless DATABASE_URL/REDIS_URL)."""
    try:
        from spdlab.common.admin import ensure_admin
        from spdlab.common.settings import get_settings
    except ImportError:
        raise InputProblem("`spdlab up` needs spdlab-common and the services installed") from None
    settings = get_settings()
    mode = "embedded (SQLite, file broker)" if settings.embedded else "Postgres/Redis from the environment"
    typer.echo(f"starting spdlab, {mode}, data in {Path(settings.data_dir).resolve()} ...", err=True)
    stack = _start(settings, host or settings.api_host, port or settings.api_port, timeout)
    try:
        key = ensure_admin(settings)
        typer.echo(f"spdlab is up at {stack.url}  (docs {stack.url}/docs; Ctrl-C stops everything)")
        if key:
            typer.echo(f"first admin 'admin' created; API key (shown once): {key}")
        died = _supervise(stack)
    finally:
        typer.echo("stopping ...", err=True)
        stack.stop()
    if died is not None:
        raise CommandFailed(f"{died} exited unexpectedly (logs in {settings.data_dir / 'logs'}); stopped the stack")
