"""The CLI without a server: parameter parsing, one-line errors, and the direct-DB admin commands."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from spdlab.cli.errors import InputProblem
from spdlab.cli.main import app
from spdlab.cli.params import load_params_file, merge_params
from spdlab.cli.progress import render_events, summary
from spdlab.client.models.jobs import JobEvent

runner = CliRunner()


def test_params_parse_json_values_and_dotted_keys(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"steps": 1, "opt": {"lr": 0.1, "keep": True}}))
    params = merge_params(load_params_file(path), ["steps=3", "opt.lr=1e-3", "name=run one", "ids=[1,2]"])
    assert params == {"steps": 3, "opt": {"lr": 1e-3, "keep": True}, "name": "run one", "ids": [1, 2]}
    assert json.loads(path.read_text())["opt"]["lr"] == 0.1  # the file's values are not mutated


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", "steps.x=1"])
def test_malformed_params_are_rejected(bad: str) -> None:
    with pytest.raises(InputProblem):
        merge_params({"steps": 2}, [bad])


def test_params_file_must_be_an_object(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("[1, 2]")
    with pytest.raises(InputProblem, match="must hold an object"):
        load_params_file(path)


def test_progress_renders_unknown_total_then_counts_logs_and_final_state() -> None:
    out = io.StringIO()
    events = [
        JobEvent(id="1", event="progress", data={"stage": "load"}),
        JobEvent(id="2", event="log", data={"message": "attempt 1 started"}),
        JobEvent(id="3", event="progress", data={"current": 2, "total": 8, "stage": "sleep"}),
        JobEvent(id="4", event="failed", data={"error": {"code": "x", "message": "boom at step 2"}}),
        JobEvent(id="5", event="progress", data={"current": 3}),  # after the end: never read
    ]
    final = render_events(iter(events), "job j1", Console(file=out, width=100))
    assert final is events[3]
    text = out.getvalue()
    assert "attempt 1 started" in text and "2/8" in text and "sleep" in text
    assert summary("j1", final) == "[red]job j1 failed[/red]: boom at step 2"


def test_bad_param_is_a_one_line_error_with_exit_2() -> None:
    result = runner.invoke(app, ["jobs", "submit", "test.sleep", "--param", "steps"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --param expects KEY=VALUE, got 'steps'"


def test_unreachable_api_is_a_one_line_error_with_exit_1() -> None:
    result = runner.invoke(app, ["--url", "http://127.0.0.1:9", "jobs", "get", "x"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach http://127.0.0.1:9")


@pytest.fixture
def embedded_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the settings at a fresh SQLite database under tmp_path for this test only."""
    settings = pytest.importorskip("spdlab.common.settings")
    for name in ("DATABASE_URL", "SPDLAB_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPDLAB_DATA_DIR", str(tmp_path))
    settings.get_settings.cache_clear()
    yield tmp_path
    settings.get_settings.cache_clear()


def test_admin_creates_a_user_and_a_working_key(embedded_db: Path) -> None:
    from spdlab.common.db import session_scope
    from spdlab.common.users import authenticate

    created = runner.invoke(app, ["admin", "create-user", "--name", "ada", "--role", "admin"])
    assert created.exit_code == 0 and created.stdout.strip().isdigit()
    assert (embedded_db / "spdlab.db").is_file()
    duplicate = runner.invoke(app, ["admin", "create-user", "--name", "ada"])
    assert duplicate.exit_code == 2 and "already exists" in duplicate.output
    unknown = runner.invoke(app, ["admin", "create-key", "--user", "bob"])
    assert unknown.exit_code == 2 and "no user 'bob'" in unknown.output

    key = runner.invoke(app, ["admin", "create-key", "--user", "ada"]).stdout.strip()
    with session_scope() as session:
        user = authenticate(session, key)
        assert user is not None and (user.name, user.role) == ("ada", "admin")
