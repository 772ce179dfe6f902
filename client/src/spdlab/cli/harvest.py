"""`spdlab datasets add`, `spdlab harvest run --follow`, `spdlab components show`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from spdlab.cli.context import client_from
from spdlab.cli.jobs import _follow

datasets_app = typer.Typer(help="Register datasets (tokenized once for a decomposition).", no_args_is_help=True)
harvest_app = typer.Typer(help="Harvest component statistics over a dataset.", no_args_is_help=True)
components_app = typer.Typer(help="Component data of a finished harvest.", no_args_is_help=True)

KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".txt": "text"}


@datasets_app.command("add")
def add_dataset(
    ctx: typer.Context,
    decomposition_id: Annotated[int, typer.Argument(help="Tokenize with this decomposition's tokenizer")],
    path: Annotated[str, typer.Argument(help="File or save_to_disk directory (as the workers see it), or 'demo'")],
    name: Annotated[str, typer.Option(help="Display name")] = "dataset",
    kind: Annotated[str | None, typer.Option(help="text | jsonl | parquet | arrow_dir (default: from extension)")] = None,
    field: Annotated[str, typer.Option(help="JSONL field / Parquet or Arrow column")] = "text",
    context_length: Annotated[int | None, typer.Option(help="Window length (default: the model's)")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Follow the tokenize job")] = True,
) -> None:
    if path == "demo":
        source: dict[str, object] = {"kind": "demo"}
    else:
        k = kind or next((v for ext, v in KINDS.items() if path.endswith(ext)), "arrow_dir")
        source = {"kind": k, "path": path}
        if k == "jsonl":
            source["field"] = field
        elif k in ("parquet", "arrow_dir"):
            source["column"] = field
    with client_from(ctx) as client:
        dataset = client.datasets.add(decomposition_id, source, name=name, context_length=context_length)
        typer.echo(f"dataset {dataset.id}  job {dataset.job_id}")
        if follow and dataset.job_id:
            _follow(client, dataset.job_id)


@harvest_app.command("run")
def run_harvest(
    ctx: typer.Context,
    decomposition_id: Annotated[int, typer.Argument()],
    dataset_id: Annotated[int, typer.Argument()],
    shards: Annotated[int, typer.Option(help="Number of shards (parallel GPU jobs)")] = 1,
    config: Annotated[str, typer.Option(help="HarvestConfig as JSON")] = "{}",
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Follow the harvest")] = False,
) -> None:
    with client_from(ctx) as client:
        harvest = client.harvests.run(decomposition_id, dataset_id, n_shards=shards, config=json.loads(config))
        typer.echo(f"harvest {harvest.id}  job {harvest.job_id}  {harvest.status}")
        if follow and harvest.job_id:
            _follow(client, harvest.job_id)


@components_app.command("show")
def show_component(
    ctx: typer.Context,
    harvest_id: Annotated[int, typer.Argument()],
    key: Annotated[str, typer.Argument(help="layer:idx, e.g. 0.mlp.up:3")],
    metric: Annotated[str, typer.Option(help="precision | recall | jaccard | pmi")] = "jaccard",
    examples: Annotated[int, typer.Option(help="Examples to print")] = 5,
) -> None:
    layer, _, idx = key.rpartition(":")
    with client_from(ctx) as client:
        c = client.components.get(harvest_id, layer, int(idx), metric=metric, examples_limit=examples)
    typer.echo(f"{c.key}  density {c.firing_density:.4g}  mean CI {c.mean_ci:.4g}  examples {c.n_examples}")
    for ex in c.examples:
        toks = [f"[{t}]" if i == ex["firing_offset"] else t for i, t in enumerate(ex["tokens"])]
        typer.echo("  " + " ".join(toks))
    top = ", ".join(f"{t['token']} {t['value']:.3g}" for t in c.input_tokens.get("precision", [])[:10])
    typer.echo(f"input tokens (precision): {top}")
    corr = ", ".join(f"{x['key']} {x['value']:.3g}" for x in c.correlated)
    typer.echo(f"correlated ({metric}): {corr}")
