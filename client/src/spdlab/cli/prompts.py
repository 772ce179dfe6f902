"""`spdlab prompts create|list`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from spdlab.cli.context import client_from

app = typer.Typer(help="Create and list prompts.", no_args_is_help=True)
console = Console()


@app.command()
def create(
    ctx: typer.Context,
    decomposition_id: Annotated[int, typer.Argument(help="Decomposition id")],
    text: Annotated[str | None, typer.Option(help="Prompt text (the decomposition's tokenizer)")] = None,
    token_ids: Annotated[str | None, typer.Option(help="Comma-separated token ids instead of text")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the prompt as JSON")] = False,
) -> None:
    """Create a prompt; prints its id and tokens."""
    ids = None if token_ids is None else [int(t) for t in token_ids.split(",") if t.strip()]
    with client_from(ctx) as client:
        prompt = client.prompts.create(decomposition_id, text=text, token_ids=ids)
    typer.echo(prompt.model_dump_json(indent=2) if as_json else f"{prompt.id}  {' '.join(prompt.tokens)}")


@app.command("list")
def list_prompts(
    ctx: typer.Context,
    decomposition_id: Annotated[int | None, typer.Option(help="Only this decomposition's prompts")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the page as JSON")] = False,
) -> None:
    """List prompts, newest first."""
    with client_from(ctx) as client:
        page = client.prompts.list(decomposition_id=decomposition_id, limit=limit)
    if as_json:
        typer.echo(page.model_dump_json(indent=2))
        return
    table = Table("id", "decomposition", "tokens", "text")
    for p in page.items:
        table.add_row(p.id, p.decomposition_id, str(len(p.token_ids)), p.text[:60])
    console.print(table)
