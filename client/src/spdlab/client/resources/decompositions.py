"""Decompositions: list, get, delete (created by import or decompose jobs)."""

from __future__ import annotations

from typing import Any

from spdlab.client.models.decompositions import Decomposition, DecompositionPage
from spdlab.client.models.jobs import Job
from spdlab.client.resources._base import API, _Resource


class DecompositionsResource(_Resource):
    def list(
        self, *, owner: str | int | None = None, limit: int | None = None, offset: int | None = None
    ) -> DecompositionPage:
        """`owner` is a user id or "me"."""
        params = {"owner": owner, "limit": limit, "offset": offset}
        return self._page(f"{API}/decompositions", DecompositionPage, params)

    def get(self, decomposition_id: str) -> Decomposition:
        return self._get(f"{API}/decompositions/{decomposition_id}", Decomposition)

    def delete(self, decomposition_id: str) -> None:
        self._delete(f"{API}/decompositions/{decomposition_id}")

    def import_run(self, path: str, name: str) -> Job:
        """Import a research-code run directory or an spdlab checkpoint directory (under an allowed
        import root on the workers); the job's result holds `decomposition_id`."""
        return self._post(f"{API}/decompositions/import", Job, {"path": path, "name": name})

    def decompose(
        self,
        config: dict[str, Any],
        target: dict[str, Any] | str,
        name: str,
        *,
        data: dict[str, Any] | None = None,
        checkpoint_every: int | None = None,
        nonce: str | None = None,
    ) -> Job:
        """Train a decomposition (`decompose` job). `config` is a research-code SPD run config;
        `target` is `{"kind": "run_dir" | "toy_weights" | "checkpoint", "path": ...}` (a bare path
        means `toy_weights`); `data` is `{"kind": "generated"}` (default, TMS / ResidMLP) or
        `{"kind": "dataset", "dataset_id": N}` (LM). The job's result holds `decomposition_id`."""
        body: dict[str, Any] = {
            "name": name, "config": config,
            "target": {"kind": "toy_weights", "path": target} if isinstance(target, str) else target,
        }
        if data is not None:
            body["data"] = data
        if checkpoint_every is not None:
            body["checkpoint_every"] = checkpoint_every
        if nonce is not None:
            body["nonce"] = nonce
        return self._post(f"{API}/decompositions/decompose", Job, body)
