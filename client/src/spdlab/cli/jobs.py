"""`spdlab jobs ...`: submit, list, get, cancel and follow jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from spdlab.cli.context import client_from
from spdlab.cli.params import load_params_file, merge_params
from spdlab.cli.progress import render_events, summary
from spdlab.client import SpdlabClient
from spdlab.client.models.jobs import Job, JobStatus

app = typer.Typer(help="Submit, inspect and follow jobs.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _line(job: Job) -> str:
    return f"{job.id}  {job.kind}  {job.status.value}"


@app.command()
def submit(
    ctx: typer.Context,
    kind: Annotated[str, typer.Argument(help="Job kind, e.g. test.sleep")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE (JSON values)")] = None,
    params_file: Annotated[Path | None, typer.Option(help="JSON (or YAML) object of parameters")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow progress until the end")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON")] = False,
) -> None:
    """Submit a job; prints its id (an identical existing job is reused)."""
    params = merge_params(load_params_file(params_file) if params_file else {}, param or [])
    with client_from(ctx) as client:
        job = client.jobs.submit(kind, params)
        typer.echo(job.model_dump_json(indent=2) if as_json else _line(job))
        if follow:
            _follow(client, job.id)


@app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this state")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's jobs (admins)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON")] = False,
) -> None:
    """List jobs, newest first."""
    with client_from(ctx) as client:
        page = client.jobs.list(status=status, kind=kind, owner=owner, limit=limit, offset=offset)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    # ids must stay whole and copyable, whatever the terminal's width
    table = Table(Column("id", no_wrap=True, min_width=32), "kind", "status", "created", box=None)
    for job in page.items:
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else ""
        table.add_row(job.id, job.kind, job.status.value, created)
    console.print(table)
    if page.total is not None:
        console.print(f"[dim]{len(page.items)} of {page.total}")


@app.command()
def get(ctx: typer.Context, job_id: str) -> None:
    """Print one job as JSON."""
    with client_from(ctx) as client:
        typer.echo(client.jobs.get(job_id).model_dump_json(indent=2))


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Cancel a job; the worker stops at its next check."""
    with client_from(ctx) as client:
        typer.echo(_line(client.jobs.cancel(job_id)))


@app.command()
def follow(ctx: typer.Context, job_id: str) -> None:
    """Show a job's progress until it ends; exits non-zero unless it succeeded."""
    with client_from(ctx) as client:
        _follow(client, job_id)


def _follow(client: SpdlabClient, job_id: str) -> None:
    final = render_events(client.jobs.follow(job_id), f"job {job_id}", err_console)
    if final is None:
        raise typer.Exit(1)
    console.print(summary(job_id, final), highlight=False)
    if final.event != JobStatus.SUCCEEDED:
        raise typer.Exit(1)
