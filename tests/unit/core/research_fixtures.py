"""Paths and cached expected values of the research-run fixtures (importable by test modules)."""

import json
from functools import cache
from pathlib import Path
from typing import Any

RESEARCH_RUNS = Path(__file__).parents[2] / "fixtures" / "research_runs"
LM_RUNS = ("llama_mlp_vector", "gpt2_simple_global")
ALL_RUNS = (*LM_RUNS, "tms_5-2")
RUN_CHECKPOINTS = {
    "llama_mlp_vector": "model_1200.pth",
    "gpt2_simple_global": "model_1000.pth",
    "tms_5-2": "model_2000.pth",
}


def run_dir(name: str) -> Path:
    return RESEARCH_RUNS / name


@cache
def expected_json(run: str, name: str) -> dict[str, Any]:
    return json.loads((RESEARCH_RUNS / run / "expected" / name).read_text())
