"""Rendering a job's event stream as a rich progress bar with its log lines above it."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from spdlab.client.models.jobs import JobEvent

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}


class CountColumn(ProgressColumn):
    """`current/total` once the job has reported a total; blank while it is unknown."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.total == 1.0 and task.fields.get("fractional"):
            return Text("")
        return Text(f"{task.completed:g}/{task.total:g}", style="progress.download")


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        CountColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def render_events(events: Iterable[JobEvent], label: str, console: Console) -> JobEvent | None:
    """Show progress until the terminal event, which is returned (None if the stream stopped early)."""
    with _bar(console) as progress:
        task = progress.add_task(label, total=None)
        for event in events:
            if event.event == "progress":
                _advance(progress, task, event, label)
            elif event.event == "log":
                progress.console.print(f"[dim]{event.data.get('message', event.data)}")
            elif event.is_terminal:
                if event.event == "succeeded":
                    total = progress.tasks[0].total or 1
                    progress.update(task, total=total, completed=total)
                return event
    return None


def _advance(progress: Progress, task: int, event: JobEvent, label: str) -> None:
    stage = event.data.get("stage")
    description = f"{label} · {stage}" if stage else label
    current, total = event.data.get("current"), event.data.get("total")
    if isinstance(total, int | float) and isinstance(current, int | float) and total > 0:
        progress.update(task, description=description, total=total, completed=current, fractional=False)
    elif (fraction := event.fraction) is not None:
        progress.update(task, description=description, total=1.0, completed=fraction, fractional=True)
    else:
        progress.update(task, description=description)


def summary(job_id: str, event: JobEvent) -> str:
    """One line for the final state, with the job's error when it failed."""
    style = _STYLE.get(event.event, "bold")
    error = event.data.get("error")
    if isinstance(error, dict):  # the API's user-facing error: {"message": ..., maybe "type"}
        error = error.get("message") or error
    tail = f": {error}" if error and event.event != "succeeded" else ""
    return f"[{style}]job {job_id} {event.event}[/{style}]{tail}"
