"""A short run of bench/bench_load.py against the session stack: zero 5xx under concurrency."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_load.py"


def test_short_load_has_no_server_errors(stack: Any, make_user: Any, api: Any):
    spec = importlib.util.spec_from_file_location("bench_load", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_load", bench)  # dataclasses resolve annotations through it
    spec.loader.exec_module(bench)
    _, member = make_user(max_active_jobs=100)
    key = member.headers["authorization"].split(" ", 1)[1]
    result = asyncio.run(bench.run_load(stack.url, key, clients=10, seconds=4))
    assert result.server_errors == 0, result.report()
    assert not result.errors, result.report()
    assert result.jobs_done > 0 and result.statuses[202] > 0
