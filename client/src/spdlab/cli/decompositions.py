"""`spdlab decompositions import`: register a research-code run or spdlab checkpoint directory."""

from __future__ import annotations

from typing import Annotated

import typer

from spdlab.cli.context import client_from
from spdlab.cli.jobs import _follow

app = typer.Typer(help="Register decompositions.", no_args_is_help=True)


@app.command("import")
def import_run(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="Run directory as seen by the workers (under an allowed root)")],
    name: Annotated[str, typer.Option(help="Display name")] = "imported",
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Follow the import job")] = True,
) -> None:
    """Import a run; prints the job id, then (with --follow) the job's result with the decomposition id."""
    with client_from(ctx) as client:
        job = client.decompositions.import_run(path, name)
        typer.echo(f"{job.id}  {job.kind}  {job.status.value}")
        if follow:
            _follow(client, job.id)
