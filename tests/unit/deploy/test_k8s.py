"""k8s/ renders with kustomize and every document validates against the bundled Kubernetes schemas."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[3]
K8S_VERSION = "1.30.0"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with built-in kustomize) is not installed")


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [KUBECTL or "kubectl", "kustomize", str(ROOT / target)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["k8s/base", "k8s/overlays/dev"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind_name(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_every_document_validates_strictly(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_validator_rejects_a_misspelled_field(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    doc = by_kind_name(docs, "Deployment", "spdlab-api")
    broken = {**doc, "spec": {**doc["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_stack_is_complete(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {
        ("Deployment", "spdlab-api"),
        ("Service", "spdlab-api"),
        ("Deployment", "spdlab-gpu-worker"),
        ("Deployment", "spdlab-llm-worker"),
        ("HorizontalPodAutoscaler", "spdlab-llm-worker"),
        ("Deployment", "spdlab-flower"),
        ("Service", "spdlab-flower"),
        ("Job", "spdlab-migrate"),
        ("ConfigMap", "spdlab-config"),
    } <= kinds
    assert not any(d["kind"] == "Secret" for d in docs), "secret values must not be committed"


def test_api_probes_health_and_readiness(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    api = container(by_kind_name(docs, "Deployment", "spdlab-api"))
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port_names = {p["name"] for p in api["ports"]}
    assert api["livenessProbe"]["httpGet"]["port"] in port_names


def test_services_select_their_deployments_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for name in ("spdlab-api", "spdlab-flower"):
        selector = by_kind_name(docs, "Service", name)["spec"]["selector"]
        pod_labels = by_kind_name(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()


def test_gpu_worker_requests_one_gpu(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    resources = container(by_kind_name(docs, "Deployment", "spdlab-gpu-worker"))["resources"]
    assert str(resources["limits"]["nvidia.com/gpu"]) == "1"
    assert str(resources["requests"]["nvidia.com/gpu"]) == "1"


def test_llm_worker_autoscaler_targets_its_deployment(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    hpa = by_kind_name(docs, "HorizontalPodAutoscaler", "spdlab-llm-worker")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spdlab-llm-worker"}
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    worker = container(by_kind_name(docs, "Deployment", "spdlab-llm-worker"))
    assert "cpu" in worker["resources"]["requests"], "a CPU utilization target needs a CPU request"


def test_secrets_are_references_only(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    workloads = [d for d in docs if d["kind"] in {"Deployment", "Job"}]
    for doc in workloads:
        for c in doc["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            if "DATABASE_URL" in env:
                assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "spdlab-secrets"
            assert all("value" not in e or "KEY" not in e["name"] for e in env.values())


def test_migration_job_runs_the_schema_upgrade(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    job = container(by_kind_name(docs, "Job", "spdlab-migrate"))
    assert job["command"] == ["python", "-m", "spdlab.common.db"]
    assert job["image"].startswith("spdlab/api")


def test_dev_overlay_sets_namespace_and_tags() -> None:
    docs = render("k8s/overlays/dev")
    assert {d["metadata"].get("namespace") for d in docs} == {"spdlab-dev"}
    images = {c["image"] for d in docs if d["kind"] == "Deployment" for c in d["spec"]["template"]["spec"]["containers"]}
    assert {"spdlab/api:dev", "spdlab/gpu-worker:dev", "spdlab/llm-worker:dev"} <= images
    assert by_kind_name(docs, "Deployment", "spdlab-api")["spec"]["replicas"] == 1


def test_base_is_namespace_free() -> None:
    assert not any("namespace" in d["metadata"] for d in render("k8s/base"))
