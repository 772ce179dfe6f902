"""Where a `decompose` job keeps its checkpoints, and the small pure helpers around them.

Layout in the artifact store, per job:
    decompositions/decompose-<job_id>/step-<n>/{spdlab.json, weights.safetensors, tokenizer.json}
    decompositions/decompose-<job_id>/step-<steps>/metrics.json   (written last: "training finished")
    decompositions/decompose-<job_id>/{spdlab.json, weights.safetensors, ...}   (the registered model)
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spdlab.common.artifacts import ArtifactStore
from spdlab.common.contracts.decompose import DecomposeMetrics
from spdlab.gpu_worker.model_cache import CHECKPOINT_FILES

if TYPE_CHECKING:
    from spdlab.core.research_import import LoadedDecomposition

METRICS_FILE = "metrics.json"
_STEP_DIR = re.compile(r"/step-(\d+)/")


def job_prefix(job_id: str) -> str:
    return f"decompositions/decompose-{job_id}"


def step_prefix(job_id: str, step: int) -> str:
    return f"{job_prefix(job_id)}/step-{step}"


def save_checkpoint(artifacts: ArtifactStore, prefix: str, loaded: LoadedDecomposition) -> None:
    """Our format (`save_decomposition`) uploaded file by file under `prefix`."""
    from spdlab.core.checkpoints import save_decomposition

    with tempfile.TemporaryDirectory(prefix="spdlab-decompose-") as tmp:
        out = save_decomposition(loaded, tmp)
        for name in CHECKPOINT_FILES:
            if (out / name).is_file():
                artifacts.put_file(f"{prefix}/{name}", out / name)


def fetch_checkpoint(artifacts: ArtifactStore, prefix: str, directory: Path) -> Path:
    for name in CHECKPOINT_FILES:
        key = f"{prefix}/{name}"
        if artifacts.exists(key):
            artifacts.get_file(key, directory / name)
    return directory


def stored_steps(artifacts: ArtifactStore, job_id: str) -> list[int]:
    """Steps with a complete (weights + manifest) checkpoint, ascending."""
    keys = set(artifacts.list(f"{job_prefix(job_id)}/step-"))
    steps = {int(m.group(1)) for k in keys if (m := _STEP_DIR.search(k))}
    return sorted(s for s in steps if {f"{step_prefix(job_id, s)}/{f}" for f in CHECKPOINT_FILES[:2]} <= keys)


def write_metrics(artifacts: ArtifactStore, prefix: str, metrics: DecomposeMetrics, seconds: float) -> None:
    artifacts.put_bytes(f"{prefix}/{METRICS_FILE}",
                        json.dumps({"metrics": metrics.model_dump(), "seconds": seconds}).encode())


def read_metrics(artifacts: ArtifactStore, prefix: str) -> tuple[DecomposeMetrics, float] | None:
    key = f"{prefix}/{METRICS_FILE}"
    if not artifacts.exists(key):
        return None
    data = json.loads(artifacts.get_bytes(key))
    return DecomposeMetrics.model_validate(data["metrics"]), float(data["seconds"])


def _finite(values: dict[str, Any]) -> dict[str, float]:
    """JSON columns reject NaN/inf; non-scalar entries (figures, arrays) are not metrics either."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def final_metrics(last_train_log: dict[str, float], last_eval: dict[str, Any]) -> DecomposeMetrics:
    train = _finite(last_train_log)
    return DecomposeMetrics(
        l0={k.removeprefix("train/l0/"): v for k, v in train.items() if k.startswith("train/l0/")},
        losses={k.removeprefix("train/loss/"): v for k, v in train.items() if k.startswith("train/loss/")},
        eval=_finite(last_eval),
    )


def format_log_line(step: int, steps: int, values: dict[str, float]) -> str:
    """One short line per log step: total loss, each loss term, L0 per module (eval: a few scalars)."""
    if "train/loss/total" in values:
        parts = [f"{k.removeprefix('train/loss/')}={v:.4g}" for k, v in values.items() if k.startswith("train/loss/")]
        l0 = [f"{k.removeprefix('train/l0/')}={v:.2f}" for k, v in values.items() if k.startswith("train/l0/")]
        return f"step {step}/{steps}: " + " ".join(parts) + (" | L0 " + " ".join(l0) if l0 else "")
    scalars = _finite(values)
    shown = [f"{k}={v:.4g}" for k, v in list(scalars.items())[:8]]
    more = f" (+{len(scalars) - 8} more)" if len(scalars) > 8 else ""
    return f"eval step {step}/{steps}: " + " ".join(shown) + more
