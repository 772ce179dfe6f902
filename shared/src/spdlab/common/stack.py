"""Launch the whole stack (API + gpu worker + llm worker) as subprocesses.

Used by ``spdlab up`` and by the integration tests. ``python -m spdlab.common.stack`` runs it in
the foreground (embedded default when DATABASE_URL/REDIS_URL are unset) and prints the URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SERVICES = ("api", "gpu", "llm")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> dict[str, object]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # /readyz answers 503 with a body while not ready
        return json.loads(exc.read())


@dataclass
class Stack:
    """Handles to the running processes; each runs in its own process group."""

    url: str
    env: dict[str, str]
    host: str
    port: int
    log_dir: Path | None
    python: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def command(self, service: str) -> list[str]:
        if service == "api":
            return [self.python, "-m", "uvicorn", "spdlab.api.main:create_app", "--factory",
                    "--host", self.host, "--port", str(self.port), "--no-access-log", "--log-level", "warning"]
        return [self.python, "-m", f"spdlab.{service}_worker"]

    def start(self, service: str) -> subprocess.Popen[bytes]:
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = self._logs[service] = open(self.log_dir / f"{service}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(self.command(service), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes[service] = proc
        return proc

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """Signal a service's whole process group (kill -9 by default: a crash, not a shutdown)."""
        proc = self.processes.get(service)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def restart(self, service: str) -> subprocess.Popen[bytes]:
        self.kill(service)
        return self.start(service)

    def stop(self, timeout: float = 5.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for service, proc in self.processes.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(service)
        for log in self._logs.values():
            log.close()

    def wait_ready(self, timeout: float = 60.0, require_workers: Sequence[str] = ("gpu", "llm")) -> None:
        """Wait until /readyz reports the database, the broker and the given worker queues live."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            for service, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with code {proc.returncode}")
            try:
                body = _get_json(f"{self.url}/readyz")
                last = body
                checks = body["checks"]
                if (checks["database"] == "ok" and checks["broker"] == "ok"
                        and all(checks["workers"].get(q, 0) > 0 for q in require_workers)):
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"stack not ready after {timeout} s: {last}")


def start_stack(
    env: Mapping[str, str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    services: Sequence[str] = SERVICES,
    log_dir: Path | None = None,
    migrate: bool = True,
    wait: bool = True,
    timeout: float = 60.0,
    python: str = sys.executable,
) -> Stack:
    """Start API and workers with ``env`` (default: this process's environment); migrate first.

    Returns a :class:`Stack` (``.url``, ``.kill(service)``, ``.restart(service)``, ``.stop()``).
    """
    full_env = dict(os.environ if env is None else env)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    port = port or free_port(host)
    if migrate:
        subprocess.run([python, "-m", "spdlab.common.db"], env=full_env, check=True, capture_output=True)
    stack = Stack(url=f"http://{host}:{port}", env=full_env, host=host, port=port, log_dir=log_dir, python=python)
    try:
        for service in services:
            stack.start(service)
        if wait:
            stack.wait_ready(timeout, require_workers=[s for s in services if s != "api"])
    except BaseException:
        stack.stop()
        raise
    return stack


def main() -> None:
    from spdlab.common.admin import ensure_admin
    from spdlab.common.settings import get_settings

    settings = get_settings()
    stack = start_stack(log_dir=settings.data_dir / "logs", port=settings.api_port, host=settings.api_host)
    key = ensure_admin(settings)
    print(f"spdlab is up at {stack.url}  (docs: {stack.url}/docs, logs: {settings.data_dir / 'logs'})")
    if key:
        print(f"admin API key (shown once): {key}")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
