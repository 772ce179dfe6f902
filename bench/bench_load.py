"""Bounded load test on loopback: N concurrent clients submit jobs and poll them to completion.

    python bench/bench_load.py                 # starts a stack on the machine's Postgres + Redis
    python bench/bench_load.py --url http://127.0.0.1:8000 --key spd_...   # an existing stack

Prints throughput, latency percentiles and the 5xx count; exits 1 if any 5xx was seen.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

FINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class LoadResult:
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    jobs_done: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")

    def report(self) -> str:
        n = len(self.latencies)
        lines = [
            f"duration        {self.seconds:.1f} s",
            f"requests        {n}  ({n / self.seconds:.1f} req/s)",
            f"jobs completed  {self.jobs_done}  ({self.jobs_done / self.seconds:.1f} jobs/s)",
            f"latency ms      p50 {self.percentile(0.5):.1f}  p95 {self.percentile(0.95):.1f}  "
            f"p99 {self.percentile(0.99):.1f}  mean {statistics.fmean(self.latencies) * 1000 if n else 0:.1f}",
            f"status codes    {dict(sorted(self.statuses.items()))}",
            f"5xx             {self.server_errors}",
        ]
        if self.errors:
            lines.append(f"client errors   {dict(self.errors)}")
        return "\n".join(lines)


async def _request(client: httpx.AsyncClient, result: LoadResult, method: str, url: str, **kw: object) -> httpx.Response | None:
    start = time.perf_counter()
    try:
        resp = await client.request(method, url, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        result.errors[type(exc).__name__] += 1
        return None
    result.latencies.append(time.perf_counter() - start)
    result.statuses[resp.status_code] += 1
    return resp


async def _client_loop(client: httpx.AsyncClient, result: LoadResult, deadline: float, index: int) -> None:
    kind = "test.sleep" if index % 5 == 0 else "test.llm_sleep"  # a fifth on the single-slot gpu queue
    while time.monotonic() < deadline:
        body = {"kind": kind, "params": {"steps": 1, "step_s": 0.01, "nonce": uuid.uuid4().hex}}
        resp = await _request(client, result, "POST", "/api/v1/jobs", json=body)
        if resp is None or resp.status_code not in (200, 202):
            await asyncio.sleep(0.2)
            continue
        job_id = resp.json()["id"]
        while time.monotonic() < deadline + 30:
            await asyncio.sleep(0.1)
            poll = await _request(client, result, "GET", f"/api/v1/jobs/{job_id}")
            if poll is not None and poll.status_code == 200 and poll.json()["status"] in FINAL:
                result.jobs_done += 1
                break


async def run_load(url: str, key: str, clients: int = 50, seconds: float = 60.0) -> LoadResult:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30, limits=limits) as client:
        start = time.monotonic()
        deadline = start + seconds
        result = LoadResult(seconds=seconds)
        await asyncio.gather(*(_client_loop(client, result, deadline, i) for i in range(clients)))
        result.seconds = time.monotonic() - start
    return result


@contextmanager
def local_stack(clients: int) -> Iterator[tuple[str, str]]:
    """A throwaway stack on the machine's Postgres and Redis (fresh database, namespaced queues)."""
    import psycopg

    from spdlab.common.db import session_scope
    from spdlab.common.settings import Settings
    from spdlab.common.stack import start_stack
    from spdlab.common.users import create_api_key, create_user

    name = f"spdlab_bench_{uuid.uuid4().hex[:8]}"
    user = os.environ.get("PGUSER", "postgres")
    admin = f"postgresql://{user}@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"postgresql+psycopg://{user}@127.0.0.1:5432/{name}"
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": "redis://127.0.0.1:6379/14",
           "SPDLAB_NAMESPACE": f"{name}.", "SPDLAB_DATA_DIR": f"/tmp/{name}", "SPDLAB_LOG_LEVEL": "WARNING"}
    stack = start_stack(env, log_dir=Path(f"/tmp/{name}/logs"), timeout=90)
    try:
        settings = Settings(database_url=db_url, redis_url=env["REDIS_URL"], namespace=env["SPDLAB_NAMESPACE"])
        with session_scope(settings) as session:
            bench_user = create_user(session, "bench", "admin", max_active_jobs=clients * 2)
            key = create_api_key(session, bench_user, "bench")[1]
        yield stack.url, key
    finally:
        stack.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    if args.url:
        if not args.key:
            parser.error("--key is required with --url")
        result = asyncio.run(run_load(args.url, args.key, args.clients, args.seconds))
    else:
        with local_stack(args.clients) as (url, key):
            result = asyncio.run(run_load(url, key, args.clients, args.seconds))
    print(f"load test: {args.clients} clients submitting and polling on loopback")
    print(result.report())
    return 1 if result.server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
