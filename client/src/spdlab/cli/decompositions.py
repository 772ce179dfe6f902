"""`spdlab decompositions import` (a research-code run or spdlab checkpoint directory) and
`spdlab decompositions decompose` (train one with a `decompose` job)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from spdlab.cli.context import client_from
from spdlab.cli.errors import InputProblem
from spdlab.cli.jobs import _follow
from spdlab.cli.params import load_params_file

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


TARGET_KINDS = ("auto", "run_dir", "toy_weights", "checkpoint")


def guess_target_kind(path: str, task_name: str | None) -> str:
    """From the local filesystem when the path is visible here, else from the config's task."""
    from pathlib import Path

    local = Path(path).expanduser()
    if (local / "spdlab.json").is_file():
        return "checkpoint"
    if local.suffix == ".pth" or any(local.glob("*_train_config.yaml")):
        return "toy_weights"
    if local.is_dir():
        return "run_dir"
    return "toy_weights" if task_name in ("tms", "resid_mlp") else "run_dir"


@app.command("decompose")
def decompose(
    ctx: typer.Context,
    config: Annotated[Path, typer.Option("--config", "-c", help="SPD run config (YAML or JSON), research-code fields")],
    target: Annotated[str, typer.Option(help="Target path as seen by the workers (under an allowed root)")],
    target_kind: Annotated[str, typer.Option(help=f"One of {', '.join(TARGET_KINDS)}")] = "auto",
    name: Annotated[str, typer.Option(help="Display name")] = "decomposed",
    steps: Annotated[int | None, typer.Option(min=1, help="Override config.steps")] = None,
    dataset_id: Annotated[int | None, typer.Option(help="Train on a tokenized dataset (LM tasks)")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(min=1, help="Steps between stored checkpoints")] = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", "-f", help="Follow the job")] = True,
) -> None:
    """Train a decomposition; prints the job id, then (with --follow) the result with the decomposition id."""
    spd_config = load_params_file(config)
    if steps is not None:
        spd_config["steps"] = steps
    if target_kind not in TARGET_KINDS:
        raise InputProblem(f"--target-kind must be one of {', '.join(TARGET_KINDS)}, got {target_kind!r}")
    task = spd_config.get("task_config") or {}
    kind = guess_target_kind(target, task.get("task_name")) if target_kind == "auto" else target_kind
    data = {"kind": "dataset", "dataset_id": dataset_id} if dataset_id is not None else None
    with client_from(ctx) as client:
        job = client.decompositions.decompose(spd_config, {"kind": kind, "path": target}, name, data=data,
                                              checkpoint_every=checkpoint_every)
        typer.echo(f"{job.id}  {job.kind}  {job.status.value}")
        if follow:
            _follow(client, job.id)
