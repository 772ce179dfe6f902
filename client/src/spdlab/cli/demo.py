"""`spdlab demo`: the product's main job on the embedded default, from nothing to a graph.

Builds the bundled demo decomposition (cached after the first run), starts the stack, imports the
demo through the API, writes a prompt, computes its attribution graph through a GPU-worker job and
prints where to open it. Everything goes through the same API a research team uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from spdlab.cli.errors import CommandFailed, InputProblem
from spdlab.cli.jobs import err_console
from spdlab.cli.progress import render_events
from spdlab.cli.stack import _start, _supervise

DEFAULT_PROMPT = "Mia has a red ball. Tom has a blue kite. Tom finds the blue kite. Mia throws the red"


def _build_demo(demo_dir: Path) -> dict[str, Any]:
    """Run the demo build in a child process (the CLI itself never imports torch)."""
    typer.echo(f"building the demo decomposition in {demo_dir} (cached after the first run) ...", err=True)
    done = subprocess.run([sys.executable, "-m", "spdlab.core.demo.build", "--out", str(demo_dir)], check=False)
    if done.returncode != 0:
        raise CommandFailed("the demo build failed (see its output above)")
    return json.loads((demo_dir / "demo.json").read_text())


def _admin_key(settings: Any) -> str:
    from spdlab.common.admin import ensure_admin
    from spdlab.common.db import session_scope
    from spdlab.common.users import create_api_key, user_by_name

    key = ensure_admin(settings)
    if key:
        return key
    with session_scope(settings) as session:
        admin = user_by_name(session, "admin")
        if admin is None:
            raise CommandFailed("this database has users but no 'admin'; run `spdlab up` and use your own key")
        return create_api_key(session, admin, "demo")[1]


def _wait_job(client: Any, job_id: str, label: str) -> Any:
    final = render_events(client.jobs.follow(job_id), label, err_console)
    job = client.jobs.get(job_id)
    if final is None or job.status != "succeeded":
        raise CommandFailed(f"{label} did not succeed: {job.error or job.status}")
    return job


def run_demo(client: Any, demo_dir: Path, prompt_text: str, name: str = "demo") -> tuple[str, str]:
    """Import the demo, write the prompt, compute the standard graph; returns (prompt id, graph id).

    The import is a get-or-compute job keyed on (path, name): a rebuilt demo must come with a new
    name (the CLI uses the build's recipe hash) or the previous import is reused."""
    job = client.decompositions.import_run(str(demo_dir.resolve()), name)
    if job.status != "succeeded":
        job = _wait_job(client, job.id, "importing the demo decomposition")
    decomposition_id = job.result["decomposition_id"]
    prompt = client.prompts.create(decomposition_id, text=prompt_text)
    sub = client.graphs.compute("standard", prompt.id)
    if sub.status != "stored":
        job = _wait_job(client, sub.job.id, "computing the attribution graph")
        graph_ids = job.result["graph_ids"]
    else:
        graph_ids = [g.id for g in sub.graphs]
    return str(prompt.id), str(graph_ids[0])


def demo(
    prompt: Annotated[str, typer.Option(help="Prompt text for the first graph")] = DEFAULT_PROMPT,
    port: Annotated[int | None, typer.Option(help="API port (default SPDLAB_API_PORT or 8000)")] = None,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep the stack running afterwards")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack")] = 120.0,
) -> None:
    """Build the demo, start the stack, compute an attribution graph and print where to open it."""
    try:
        from spdlab.client import SpdlabClient
        from spdlab.common.settings import get_settings
    except ImportError:
        raise InputProblem("`spdlab demo` needs the services installed (make setup)") from None
    settings = get_settings()
    demo_dir = Path(settings.data_dir).resolve() / "demo"
    info = _build_demo(demo_dir)
    typer.echo(f"demo decomposition: {info['spd']['sum_c']} components, "
               f"{info['spd']['l0_total']['0.1']:.1f} alive per position at CI > 0.1", err=True)
    stack = _start(settings, settings.api_host, port or settings.api_port, timeout)
    try:
        key = _admin_key(settings)
        with SpdlabClient(stack.url, key) as client:
            prompt_id, graph_id = run_demo(client, demo_dir, prompt, name=f"demo-{info['recipe_hash']}")
            view = client.graphs.get(graph_id, normalize="layer", edge_limit=5)
        stats = view.stats
        typer.echo(f"\nprompt {prompt_id}: {'|'.join(view.prompt_tokens)}")
        typer.echo(f"graph {graph_id}: {stats.get('n_edges_stored')} edges, "
                   f"{stats.get('l0_total')} component nodes")
        typer.echo(f"open it:   {stack.url}/ui/#/graphs/{graph_id}   (API key below)")
        typer.echo(f"API:       {stack.url}/api/v1/graphs/{graph_id}   docs {stack.url}/docs")
        typer.echo(f"API key:   {key}")
        if serve:
            typer.echo("the stack keeps running; Ctrl-C stops it")
            died = _supervise(stack)
            if died is not None:
                raise CommandFailed(f"{died} exited unexpectedly (logs in {settings.data_dir / 'logs'})")
    finally:
        stack.stop()
