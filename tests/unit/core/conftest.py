"""Shared fixtures for the torch-core tests (helpers live in `research_fixtures.py`)."""

from collections.abc import Iterator
from typing import Any

import pytest
from research_fixtures import ALL_RUNS, RESEARCH_RUNS, run_dir

__all__ = ["RESEARCH_RUNS"]


@pytest.fixture(scope="session")
def imported_runs() -> dict[str, Any]:
    """Each fixture run imported once per session (read-only use in tests)."""
    from spdlab.core.research_import import import_research_run

    return {name: import_research_run(run_dir(name)) for name in ALL_RUNS}


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread for a module's tests: tiny tensors on the shared 2-core box, where a second
    thread only adds contention. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
