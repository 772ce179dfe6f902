"""`spdlab graphs compute|show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from spdlab.cli.context import client_from
from spdlab.cli.jobs import _follow
from spdlab.cli.params import load_params_file, merge_params

app = typer.Typer(help="Compute and show attribution graphs.", no_args_is_help=True)


@app.command()
def compute(
    ctx: typer.Context,
    prompt_id: Annotated[int, typer.Argument(help="Prompt id")],
    kind: Annotated[str, typer.Option(help="standard | manual | optimized")] = "standard",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE (JSON values)")] = None,
    params_file: Annotated[Path | None, typer.Option(help="JSON (or YAML) object of parameters")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Follow the job")] = True,
) -> None:
    """Get or compute graphs of a prompt; prints the stored graph ids, or follows the job."""
    if kind not in ("standard", "manual", "optimized"):
        raise typer.BadParameter("kind must be standard, manual or optimized", param_hint="--kind")
    params = merge_params(load_params_file(params_file) if params_file else {}, param or [])
    with client_from(ctx) as client:
        sub = client.graphs.compute(kind, prompt_id, **params)  # type: ignore[arg-type]
        if sub.status == "stored":
            typer.echo(" ".join(g.id for g in sub.graphs))
            return
        assert sub.job is not None
        typer.echo(f"{sub.job.id}  {sub.job.kind}  {sub.job.status.value}")
        if follow:
            _follow(client, sub.job.id)


@app.command()
def show(
    ctx: typer.Context,
    graph_id: Annotated[int, typer.Argument(help="Graph id")],
    ci_threshold: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    normalize: Annotated[str, typer.Option(help="none | target | layer")] = "none",
    edge_limit: Annotated[int, typer.Option(min=1, max=100_000)] = 20,
    fmt: Annotated[str, typer.Option("--format", help="table | json | neuronpedia")] = "table",
) -> None:
    """Show the top edges of a graph (or its JSON / Neuronpedia export)."""
    norm: Literal["none", "target", "layer"] = normalize  # type: ignore[assignment]
    with client_from(ctx) as client:
        if fmt == "neuronpedia":
            body = client.graphs.neuronpedia(graph_id, ci_threshold=ci_threshold, normalize=norm,
                                             edge_limit=edge_limit)
            typer.echo(json.dumps(body))
            return
        graph = client.graphs.get(graph_id, ci_threshold=ci_threshold, normalize=norm, edge_limit=edge_limit)
    if fmt == "json":
        typer.echo(graph.model_dump_json())
        return
    stats = graph.stats
    typer.echo(f"graph {graph.id} ({graph.graph_type}) prompt {graph.prompt_id}: {' '.join(graph.prompt_tokens)}")
    typer.echo(f"edges: {stats.get('n_edges_after_filter')} after filter, {stats.get('n_edges_returned')} shown, "
               f"{stats.get('n_edges_cut_by_limit')} cut by the limit")
    keys = graph.nodes.get("key", [])
    for s, t, v in zip(graph.edges.get("source", []), graph.edges.get("target", []), graph.edges.get("value", []),
                       strict=True):
        typer.echo(f"{v:+.5f}  {keys[s]} -> {keys[t]}")
