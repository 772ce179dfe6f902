"""docker-compose.yml validates against the Compose specification and wires the stack as designed."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = Path(__file__).with_name("schemas") / "compose-spec.json"
SERVICES = {"postgres", "redis", "migrations", "api", "gpu-worker", "llm-worker", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(item.split(None, 1)[0].upper(), item.split(None, 1)[1]) for item in logical]


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_service() -> None:
    """The schema is strict enough to catch a typo (so the test above can fail)."""
    schema = json.loads(SCHEMA.read_text())
    broken = {"services": {"api": {"image": "x", "restart_policy": "always"}}}
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))


def test_every_service_of_the_stack_is_defined(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_dependencies_name_defined_services_and_wait_for_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert set(deps) <= set(services), f"{name} depends on an undefined service"
    for name in ("api", "gpu-worker", "llm-worker"):
        assert services[name]["depends_on"]["migrations"]["condition"] == "service_completed_successfully"
    assert services["migrations"]["command"] == ["python", "-m", "spdlab.common.db"]


def test_gpu_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    devices = compose["services"]["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] for device in devices)


def test_built_services_use_existing_dockerfiles_from_the_repo_root(compose: dict[str, Any]) -> None:
    built = {name: svc["build"] for name, svc in compose["services"].items() if "build" in svc}
    assert {"api", "gpu-worker", "llm-worker", "migrations"} <= set(built)
    for build in built.values():
        assert build["context"] == "."
        assert (ROOT / build["dockerfile"]).is_file()


@pytest.mark.parametrize("service", ["api", "gpu_worker", "llm_worker"])
def test_dockerfile_copies_exist_and_shared_is_installed_first(service: str) -> None:
    steps = dockerfile_instructions(ROOT / "services" / service / "Dockerfile")
    copies = [args.split()[0] for op, args in steps if op == "COPY"]
    assert copies[0] == "shared/"
    assert all((ROOT / source).exists() for source in copies)
    assert any(op == "CMD" and json.loads(args) for op, args in steps)


def _pip_installed_paths(dockerfile: Path) -> set[str]:
    paths: set[str] = set()
    for op, args in dockerfile_instructions(dockerfile):
        if op == "RUN":
            for command in re.findall(r"pip install ([^&;]+)", args):
                paths |= {token.rstrip("/") for token in command.split() if not token.startswith("-")}
    return paths


def _dependencies(dist_dir: str) -> list[str]:
    return tomllib.loads((ROOT / dist_dir / "pyproject.toml").read_text())["project"]["dependencies"]


def test_api_image_has_no_torch(compose: dict[str, Any]) -> None:
    dockerfile = ROOT / compose["services"]["api"]["build"]["dockerfile"]
    installed = _pip_installed_paths(dockerfile)
    assert installed == {"./shared", "./services/api", "./client"}
    for dist in installed:
        assert not any(dep.lower().startswith("torch") for dep in _dependencies(dist)), dist
    # The build also refuses to finish if torch arrives transitively.
    assert any("find_spec('torch') is not None" in args for op, args in dockerfile_instructions(dockerfile))


def test_gpu_worker_image_installs_the_pinned_torch() -> None:
    steps = dockerfile_instructions(ROOT / "services/gpu_worker/Dockerfile")
    torch_dep = next(dep for dep in _dependencies("services/gpu_worker") if dep.startswith("torch"))
    args = dict((a.split("=", 1) + [""])[:2] for op, a in steps if op == "ARG")
    assert torch_dep == f"torch=={args['TORCH_VERSION']}"
    assert any(op == "RUN" and 'torch==${TORCH_VERSION}' in a for op, a in steps)


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"**/.venv", "**/.git", "var", "tests"} <= set(ignored)


def _entry_modules() -> list[str]:
    """Modules the images and the migration service start: `python -m X` and uvicorn's `X:attr`."""
    commands = [json.loads(a) for d in ("api", "gpu_worker", "llm_worker")
                for op, a in dockerfile_instructions(ROOT / "services" / d / "Dockerfile") if op == "CMD"]
    commands.append(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["migrations"]["command"])
    modules = []
    for argv in commands:
        if "-m" in argv:
            modules.append(argv[argv.index("-m") + 1])
        modules += [arg for arg in argv if re.fullmatch(r"[\w.]+:\w+", arg)]
    return modules


@pytest.mark.parametrize("target", _entry_modules())
def test_entry_points_exist(target: str) -> None:
    """What the containers run must exist in the code (module for -m, module:attribute for uvicorn)."""
    module, _, attr = target.partition(":")
    if attr:
        assert callable(getattr(importlib.import_module(module), attr))
    else:
        spec = importlib.util.find_spec(module)
        assert spec is not None
        assert spec.submodule_search_locations is None or importlib.util.find_spec(f"{module}.__main__")
