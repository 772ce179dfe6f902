"""Turning expected failures into one-line messages and exit codes, never tracebacks."""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from spdlab.client.errors import ApiError, SpdlabError


class InputProblem(Exception):
    """A mistake in what the user typed (a malformed --param, an unreadable file)."""


class CommandFailed(Exception):
    """A local operation failed for a reason the message explains (a service would not start)."""


def describe(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        hint = f" (retry after {exc.retry_after:g} s)" if getattr(exc, "retry_after", None) else ""
        return f"{exc.status} {type(exc).__name__}: {exc.message}{hint}"
    return " ".join(str(exc).split()) or type(exc).__name__


class ErrorReportingGroup(TyperGroup):
    """Top-level group: every subcommand runs inside it, so one handler covers the whole CLI."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputProblem as exc:
            typer.echo(f"error: {describe(exc)}", err=True)
            raise typer.Exit(2) from None
        except (SpdlabError, CommandFailed, TimeoutError) as exc:
            typer.echo(f"error: {describe(exc)}", err=True)
            raise typer.Exit(1) from None
