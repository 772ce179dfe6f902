"""Register a trained decomposition (our checkpoint format, in a local directory).

Transformer targets go through `register_decomposition` (topology, gradient connectivity, canonical
layer names). The toy targets (TMS, ResidMLP) have no transformer topology, so attribution graphs do
not apply to them; they are stored with their concrete module paths as layer names and no
`sources_by_target`, which is all their decomposition view needs.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import select

from spdlab.common.artifacts import ArtifactStore
from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition
from spdlab.common.settings import Settings
from spdlab.gpu_worker.model_cache import CHECKPOINT_FILES

TOY_TARGETS = frozenset({"TMSModel", "ResidMLP"})


def toy_summary(directory: Path) -> dict[str, Any]:
    """The decomposition view's summary without a topology: layers in forward order, C per layer."""
    from spdlab.core.checkpoints import load_decomposition

    loaded = load_decomposition(directory)
    model = loaded.component_model
    order = {name: i for i, (name, _) in enumerate(model.target_model.named_modules())}
    forward = sorted(model.target_module_paths, key=lambda p: order.get(p, len(order)))
    return {
        "vocab_size": None,
        "n_ctx": None,
        "target_model_type": loaded.target_model_type,
        "sampling": loaded.config.sampling,
        "layers": [{"canonical": p, "concrete": p, "C": int(model.module_to_c[p])} for p in forward],
        "embed": None,
        "unembed": None,
        "n_components": int(sum(model.module_to_c.values())),
        "has_tokenizer": False,
        "n_target_layers": 0,
        "source": asdict(loaded.source),
    }


def _register_toy(directory: Path, *, name: str, owner_id: int, settings: Settings, artifacts: ArtifactStore,
                  artifact_prefix: str, config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with session_scope(settings) as session:
        existing = session.scalar(select(Decomposition).where(Decomposition.artifact_ref == artifact_prefix))
        if existing is not None:
            return existing.id, existing.summary
    summary = toy_summary(directory)
    for file in CHECKPOINT_FILES:
        if (directory / file).is_file():
            artifacts.put_file(f"{artifact_prefix}/{file}", directory / file)
    with session_scope(settings) as session:
        row = Decomposition(owner_id=owner_id, name=name, source="decompose", status="ready",
                            config={"spd": config}, summary=summary, artifact_ref=artifact_prefix)
        session.add(row)
        session.flush()
        return row.id, summary


def register_trained(directory: Path, *, target_model_type: str, config: dict[str, Any], name: str, owner_id: int,
                     settings: Settings, artifacts: ArtifactStore, artifact_prefix: str) -> int:
    """Idempotent per `artifact_prefix`: a retried job finds the row it wrote."""
    from spdlab.gpu_worker.decomposition_import import register_decomposition

    if target_model_type in TOY_TARGETS:
        decomposition_id, _ = _register_toy(directory, name=name, owner_id=owner_id, settings=settings,
                                            artifacts=artifacts, artifact_prefix=artifact_prefix, config=config)
    else:
        decomposition_id, _ = register_decomposition(
            directory, name=name, owner_id=owner_id, settings=settings, artifacts=artifacts,
            artifact_prefix=artifact_prefix, source="decompose", check_roots=False,
        )
    return decomposition_id
