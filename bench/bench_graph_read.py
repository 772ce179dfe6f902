"""Graph read latency: `GET /api/v1/graphs/{id}` over HTTP for stored graphs of 1e4, 1e5, 1e6 edges.

    python bench/bench_graph_read.py            # a throwaway API on the machine's Postgres + Redis

Graphs are written straight through the DB layer (random columns, the stored codec). For each size:
the cold read (first GET: blob fetch + decode + sort index + view), then warm reads (decoded graph
cached in the API process), p50/p95 over repeats, with the default view (edge limit 1000, CI
threshold) and with normalize=target; the in-process decode + index + view path as the reference;
and the floor of any authenticated request (GET /users/me) on this machine. Target: warm p95 ≤ 150 ms at 1e6 edges.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "api"))

SIZES = (10_000, 100_000, 1_000_000)


def pct(data: list[float], q: float) -> float:
    s = sorted(data)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


@contextmanager
def local_api() -> Iterator[tuple[str, str, object]]:
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
    stack = start_stack(env, services=("api",), log_dir=Path(f"/tmp/{name}/logs"), timeout=90)
    try:
        settings = Settings(database_url=db_url, redis_url=env["REDIS_URL"], namespace=env["SPDLAB_NAMESPACE"])
        with session_scope(settings) as session:
            key = create_api_key(session, create_user(session, "bench", "admin"), "bench")[1]
        yield stack.url, key, settings
    finally:
        stack.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def store_graphs(settings: object, sizes: tuple[int, ...]) -> dict[int, int]:
    """size -> graph id, written directly (decomposition, prompt, graph rows)."""
    from graph_factory import LAYERS, random_graph

    from spdlab.common.db import session_scope
    from spdlab.common.graph_codec import encode
    from spdlab.common.graph_tables import Graph
    from spdlab.common.models import Decomposition, Prompt, User

    ids = {}
    with session_scope(settings) as session:  # type: ignore[arg-type]
        owner = session.query(User).first()
        assert owner is not None
        layers = [{"canonical": n, "concrete": n, "C": 20} for n in LAYERS[1:-1]]
        dec = Decomposition(owner_id=owner.id, name="bench", source="demo", summary={"layers": layers,
                            "vocab_size": 256, "n_ctx": 16})
        session.add(dec)
        session.flush()
        prompt = Prompt(decomposition_id=dec.id, owner_id=owner.id, text="bench", token_ids=list(range(16)))
        session.add(prompt)
        session.flush()
        for n in sizes:
            arrays = random_graph(n)
            arrays.meta["token_ids"] = list(range(16))
            g = Graph(prompt_id=prompt.id, decomposition_id=dec.id, owner_id=owner.id, graph_type="standard",
                      params={"n": n}, params_key=f"bench-{n}", blob=encode(arrays), n_nodes=arrays.n_nodes,
                      n_edges=arrays.n_edges, n_component_nodes=0, summary={})
            session.add(g)
            session.flush()
            ids[n] = g.id
    return ids


def in_process(n: int, repeats: int) -> tuple[float, float]:
    """Decode + index + view, as on a cold API cache, without HTTP or the database."""
    from graph_factory import random_graph

    from spdlab.api.graph_view import ViewParams, build_index, view
    from spdlab.common.graph_codec import decode, encode

    blob = encode(random_graph(n))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        g = decode(blob)
        view(g, ViewParams(ci_threshold=0.1), build_index(g))
        times.append(time.perf_counter() - t0)
    return pct(times, 0.5), pct(times, 0.95)


def timed(client: httpx.Client, path: str, repeats: int, normalize: str) -> list[float]:
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        r = client.get(path, params={"ci_threshold": 0.1 + 0.001 * (i % 5), "normalize": normalize})
        out.append(time.perf_counter() - t0)
        assert r.status_code == 200
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with local_api() as (url, key, settings):
        ids = store_graphs(settings, SIZES)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as client:
            floor = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                client.get("/api/v1/users/me")
                floor.append(time.perf_counter() - t0)
            print(f"request floor (GET /users/me): p50 {pct(floor, 0.5):.1f} ms  p95 {pct(floor, 0.95):.1f} ms")
            print(f"{'edges':>9}  {'cold ms':>8}  {'warm p50':>8}  {'warm p95':>8}  {'norm p50':>8}  {'norm p95':>8}"
                  f"  {'in-proc p50':>11}  {'in-proc p95':>11}")
            for n in SIZES:
                path = f"/api/v1/graphs/{ids[n]}"
                t0 = time.perf_counter()
                resp = client.get(path, params={"ci_threshold": 0.1})
                cold = (time.perf_counter() - t0) * 1000
                assert resp.status_code == 200, resp.text
                assert resp.json()["stats"]["n_edges_stored"] == n
                warm = timed(client, path, args.repeats, "none")
                norm = timed(client, path, args.repeats, "target")
                ip50, ip95 = in_process(n, max(5, args.repeats // 3))
                print(f"{n:>9}  {cold:8.1f}  {pct(warm, 0.5):8.1f}  {pct(warm, 0.95):8.1f}  {pct(norm, 0.5):8.1f}  "
                      f"{pct(norm, 0.95):8.1f}  {ip50:11.1f}  {ip95:11.1f}")
                sys.stdout.flush()
    print("target: warm p95 ≤ 150 ms at 1e6 edges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
