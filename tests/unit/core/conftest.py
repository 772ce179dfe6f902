"""Shared fixtures for the torch-core tests (helpers live in `research_fixtures.py`)."""

from typing import Any

import pytest
from research_fixtures import ALL_RUNS, RESEARCH_RUNS, run_dir

__all__ = ["RESEARCH_RUNS"]


@pytest.fixture(scope="session")
def imported_runs() -> dict[str, Any]:
    """Each fixture run imported once per session (read-only use in tests)."""
    from spdlab.core.research_import import import_research_run

    return {name: import_research_run(run_dir(name)) for name in ALL_RUNS}
