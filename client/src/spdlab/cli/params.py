"""Parsing job parameters from `--param key=value` options and a `--params-file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spdlab.cli.errors import InputProblem


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists, objects, null), else the raw string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """`a.b=1` sets target["a"]["b"]; a dotted key into a non-object is a mistake, not an overwrite."""
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InputProblem(f"--param {dotted}: '{part}' is already set to a non-object value")
        node = child
    node[leaf] = value


def parse_assignment(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise InputProblem(f"--param expects KEY=VALUE, got {item!r}")
    return key, parse_value(text)


def load_params_file(path: Path) -> dict[str, Any]:
    """Read a JSON object (or YAML, when PyYAML is installed) of parameters."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputProblem(f"cannot read {path}: {exc.strerror}") from None
    data = _load_yaml(path, text) if path.suffix in {".yaml", ".yml"} else _load_json(path, text)
    if not isinstance(data, dict):
        raise InputProblem(f"{path} must hold an object of parameters")
    return data


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputProblem(f"{path} is not valid JSON: {exc}") from None


def _load_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise InputProblem("YAML parameter files need PyYAML; use JSON or `pip install pyyaml`") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputProblem(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None


def merge_params(file_params: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Parameters from the file, then each `--param` set on top (dotted keys reach into objects)."""
    params = json.loads(json.dumps(file_params))  # deep copy: dotted keys write into nested objects
    for item in assignments:
        set_dotted(params, *parse_assignment(item))
    return params
