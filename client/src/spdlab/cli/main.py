"""The `spdlab` command line: start the stack, manage users and keys, submit and follow jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from spdlab.cli import admin, decompositions, demo, graphs, harvest, jobs, prompts, stack
from spdlab.cli.context import CliConfig
from spdlab.cli.errors import ErrorReportingGroup
from spdlab.cli.health import health

app = typer.Typer(
    cls=ErrorReportingGroup,
    name="spdlab",
    help="spdlab: SPD interpretability as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(envvar="SPDLAB_URL", help="API base URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="SPDLAB_API_KEY", help="API key")] = None,
) -> None:
    ctx.obj = CliConfig(url=url, api_key=api_key)


app.command("up")(stack.up)
app.command("demo")(demo.demo)
app.command("health")(health)
app.add_typer(jobs.app, name="jobs")
app.add_typer(admin.app, name="admin")
app.add_typer(decompositions.app, name="decompositions")
app.add_typer(prompts.app, name="prompts")
app.add_typer(graphs.app, name="graphs")
app.add_typer(harvest.datasets_app, name="datasets")
app.add_typer(harvest.harvest_app, name="harvest")
app.add_typer(harvest.components_app, name="components")
