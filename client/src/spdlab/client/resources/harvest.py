"""Datasets, harvests, component data, probes and dataset attributions."""

from __future__ import annotations

from typing import Any

from spdlab.client.models.harvest import (
    AttributionQuery,
    BulkComponents,
    ComponentDetail,
    ComponentPage,
    Dataset,
    DatasetAttributionRun,
    DatasetPage,
    Harvest,
    HarvestPage,
    LayerSummary,
)
from spdlab.client.models.jobs import Job
from spdlab.client.resources._base import API, _Resource


class DatasetsResource(_Resource):
    def add(self, decomposition_id: int | str, source: dict[str, Any], *, name: str = "dataset",
            context_length: int | None = None, max_windows: int | None = None) -> Dataset:
        """Register a source (`{"kind": "jsonl", "path": ...}`, ...); tokenized by a job (`job_id`)."""
        body = {"name": name, "decomposition_id": int(decomposition_id), "source": source,
                "context_length": context_length, "max_windows": max_windows}
        return self._post(f"{API}/datasets", Dataset, body)

    def list(self, *, decomposition_id: int | str | None = None, limit: int | None = None,
             offset: int | None = None) -> DatasetPage:
        params = {"decomposition_id": decomposition_id, "limit": limit, "offset": offset}
        return self._page(f"{API}/datasets", DatasetPage, params)

    def get(self, dataset_id: int | str) -> Dataset:
        return self._get(f"{API}/datasets/{dataset_id}", Dataset)

    def delete(self, dataset_id: int | str) -> None:
        self._delete(f"{API}/datasets/{dataset_id}")


class HarvestsResource(_Resource):
    def run(self, decomposition_id: int | str, dataset_id: int | str, *, n_shards: int = 1,
            config: dict[str, Any] | None = None) -> Harvest:
        """Get-or-compute: an identical finished or running harvest is returned instead of a new one."""
        body = {"decomposition_id": int(decomposition_id), "dataset_id": int(dataset_id), "n_shards": n_shards,
                "config": config or {}}
        return self._post(f"{API}/harvests", Harvest, body)

    def list(self, *, decomposition_id: int | str | None = None, limit: int | None = None,
             offset: int | None = None) -> HarvestPage:
        return self._page(f"{API}/harvests", HarvestPage,
                          {"decomposition_id": decomposition_id, "limit": limit, "offset": offset})

    def get(self, harvest_id: int | str) -> Harvest:
        return self._get(f"{API}/harvests/{harvest_id}", Harvest)

    def cancel(self, harvest_id: int | str) -> Harvest:
        return self._post(f"{API}/harvests/{harvest_id}/cancel", Harvest)

    def delete(self, harvest_id: int | str) -> None:
        self._delete(f"{API}/harvests/{harvest_id}")


class ComponentsResource(_Resource):
    def layers(self, harvest_id: int | str) -> list[LayerSummary]:
        return [LayerSummary.model_validate(x) for x in self._t.request("GET", f"{API}/harvests/{harvest_id}/layers")]

    def list(self, harvest_id: int | str, *, layer: str | None = None, order: str | None = None,
             limit: int | None = None, offset: int | None = None) -> ComponentPage:
        params = {"layer": layer, "order": order, "limit": limit, "offset": offset}
        return self._page(f"{API}/harvests/{harvest_id}/components", ComponentPage, params)

    def get(self, harvest_id: int | str, layer: str, idx: int, *, metric: str | None = None,
            limit: int | None = None, examples_limit: int | None = None) -> ComponentDetail:
        params = {"metric": metric, "limit": limit, "examples_limit": examples_limit}
        return self._get(f"{API}/harvests/{harvest_id}/components/{layer}/{idx}", ComponentDetail, params)

    def bulk(self, harvest_id: int | str, keys: list[str], **options: Any) -> BulkComponents:
        return self._post(f"{API}/harvests/{harvest_id}/components:bulk", BulkComponents, {"keys": keys, **options})


class ProbesResource(_Resource):
    def run(self, decomposition_id: int | str, text: str, layer: str, component_idx: int) -> Job:
        """Submit a probe job; `client.wait(job.id).result` holds tokens, CI and activations."""
        body = {"decomposition_id": int(decomposition_id), "text": text, "layer": layer,
                "component_idx": component_idx}
        return self._post(f"{API}/probes", Job, body)


class DatasetAttributionsResource(_Resource):
    def run(self, decomposition_id: int | str, dataset_id: int | str, *, n_shards: int = 1,
            config: dict[str, Any] | None = None) -> DatasetAttributionRun:
        body = {"decomposition_id": int(decomposition_id), "dataset_id": int(dataset_id), "n_shards": n_shards,
                "config": config or {}}
        return self._post(f"{API}/dataset-attributions", DatasetAttributionRun, body)

    def get(self, run_id: int | str) -> DatasetAttributionRun:
        return self._get(f"{API}/dataset-attributions/{run_id}", DatasetAttributionRun)

    def top(self, run_id: int | str, layer: str, idx: int, *, direction: str = "sources", metric: str = "attr",
            sign: str = "positive", k: int = 10) -> AttributionQuery:
        params = {"direction": direction, "metric": metric, "sign": sign, "k": k}
        return self._get(f"{API}/dataset-attributions/{run_id}/components/{layer}/{idx}", AttributionQuery, params)
