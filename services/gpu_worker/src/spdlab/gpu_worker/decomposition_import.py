"""Register a decomposition: load a research-code run (or one of our checkpoint directories), save it
in our format into the artifact store, compute gradient connectivity once, and write the row.

`register_decomposition` is the entry point for the import job and for the bundled demo. Paths must
lie under an allowed root (settings), so a client cannot make the worker read arbitrary host files.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from spdlab.common.artifacts import ArtifactStore
from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition
from spdlab.common.settings import Settings
from spdlab.gpu_worker.model_cache import CHECKPOINT_FILES

if TYPE_CHECKING:
    from spdlab.core.research_import import LoadedDecomposition
    from spdlab.core.topology import TransformerTopology


class ImportPathError(ValueError):
    """The path is outside the allowed roots, or does not exist."""


def check_import_path(path: str, settings: Settings) -> Path:
    resolved = Path(path).expanduser().resolve()
    roots = settings.allowed_import_roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise ImportPathError(f"path {path!r} is not under an allowed import root ({', '.join(map(str, roots))})")
    if not resolved.exists():
        raise ImportPathError(f"path {path!r} does not exist")
    return resolved


def load_any(path: Path) -> LoadedDecomposition:
    """Our checkpoint format when the directory has a manifest, else a research-code run."""
    from spdlab.core.checkpoints import MANIFEST_FILE, load_decomposition
    from spdlab.core.research_import import import_research_run

    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        return load_decomposition(path)
    return import_research_run(path)


def context_length(target_config: Any) -> int | None:
    for name in ("block_size", "n_ctx", "n_positions", "max_position_embeddings"):
        value = getattr(target_config, name, None)
        if isinstance(value, int):
            return value
    return None


def decomposition_summary(loaded: LoadedDecomposition, topology: TransformerTopology,
                          sources: dict[str, list[str]]) -> dict[str, Any]:
    """What the API needs without torch: vocabulary, context, layers (canonical + concrete + C)."""
    model = loaded.component_model
    order = {name: i for i, (name, _) in enumerate(model.target_model.named_modules())}
    forward = sorted(model.target_module_paths, key=lambda p: order.get(p, len(order)))
    canon = topology.canonical_names(model.target_module_paths)
    embedding = topology.embedding_module
    return {
        "vocab_size": int(embedding.weight.shape[0]),  # type: ignore[union-attr]
        "n_ctx": context_length(loaded.target_config),
        "target_model_type": loaded.target_model_type,
        "sampling": loaded.config.sampling,
        "layers": [{"canonical": canon[p], "concrete": p, "C": int(model.module_to_c[p])} for p in forward],
        "embed": topology.embed_path,
        "unembed": topology.unembed_path,
        "n_components": int(sum(model.module_to_c.values())),
        "has_tokenizer": loaded.tokenizer is not None or loaded.tokenizer_json is not None,
        "n_target_layers": len(sources),
        "source": asdict(loaded.source),
    }


def register_decomposition(
    path: str | Path,
    *,
    name: str,
    owner_id: int,
    settings: Settings,
    artifacts: ArtifactStore,
    artifact_prefix: str,
    source: str = "import",
    check_roots: bool = True,
) -> tuple[int, dict[str, Any]]:
    """Import and store; idempotent per `artifact_prefix` (a retried job finds its row)."""
    from spdlab.core.checkpoints import save_decomposition
    from spdlab.core.gradient_connectivity import sources_by_target_concrete
    from spdlab.core.topology import TransformerTopology

    resolved = check_import_path(str(path), settings) if check_roots else Path(path).resolve()
    with session_scope(settings) as session:
        existing = session.scalar(select(Decomposition).where(Decomposition.artifact_ref == artifact_prefix))
        if existing is not None:
            return existing.id, existing.summary
    loaded = load_any(resolved)
    model = loaded.component_model
    topology = TransformerTopology(model.target_model, model.target_module_paths)
    concrete = sources_by_target_concrete(model, topology)
    canonical = {topology.target_to_canon(t): [topology.target_to_canon(s) for s in srcs]
                 for t, srcs in concrete.items()}
    summary = decomposition_summary(loaded, topology, concrete)
    with tempfile.TemporaryDirectory(prefix="spdlab-import-") as tmp:
        out = save_decomposition(loaded, tmp)
        for file in CHECKPOINT_FILES:
            if (out / file).is_file():
                artifacts.put_file(f"{artifact_prefix}/{file}", out / file)
    has_tok = artifacts.exists(f"{artifact_prefix}/tokenizer.json")
    with session_scope(settings) as session:
        row = Decomposition(
            owner_id=owner_id, name=name, source=source, status="ready",
            config={"spd": _jsonable(loaded.config)}, summary=summary, artifact_ref=artifact_prefix,
            sources_by_target={"concrete": concrete, "canonical": canonical},
            tokenizer_ref=f"{artifact_prefix}/tokenizer.json" if has_tok else None,
        )
        session.add(row)
        session.flush()
        return row.id, summary


def _jsonable(config: Any) -> dict[str, Any]:
    from spdlab.common.spd_config import export_config

    return export_config(config)
