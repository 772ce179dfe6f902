from __future__ import annotations

import pytest
from pydantic import ValidationError

from spdlab.common.contracts.jobs import kind_queues, parse_job_request
from spdlab.common.jobs import canonical_json, params_key


def _key(kind: str, params: dict) -> str:
    request = parse_job_request(kind, params)
    return params_key(request.kind, request.params.model_dump(mode="json"))


def test_key_ignores_order_and_defaults():
    a = _key("test.sleep", {"steps": 3, "step_s": 0.5})
    b = _key("test.sleep", {"step_s": 0.5, "steps": 3, "fail_at": None})
    assert a == b


def test_key_normalises_numeric_spelling():
    assert _key("test.sleep", {"step_s": 1}) == _key("test.sleep", {"step_s": 1.0})


def test_key_differs_by_value_and_kind():
    base = _key("test.sleep", {"steps": 3})
    assert base != _key("test.sleep", {"steps": 4})
    assert base != _key("test.sleep", {"steps": 3, "nonce": "x"})
    assert base != _key("test.llm_sleep", {"steps": 3})


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == '{"a":[1,{"c":3,"d":2}],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_union_dispatches_on_kind_and_knows_queues():
    queues = kind_queues()
    assert {"test.sleep": "gpu", "test.llm_sleep": "llm"}.items() <= queues.items()
    assert set(queues.values()) <= {"gpu", "llm"}
    with pytest.raises(ValidationError) as info:
        parse_job_request("nope", {})
    assert info.value.errors()[0]["type"] == "union_tag_invalid"
    with pytest.raises(ValidationError) as info:
        parse_job_request("test.sleep", {"steps": -1})
    assert info.value.errors()[0]["loc"] == ("test.sleep", "params", "steps")
