"""Recently used decompositions stay loaded: an LRU of models within a byte budget.

API (also used by harvest jobs)::

    entry = get_decomposition(decomposition_id, settings, artifacts)
    entry.model, entry.topology, entry.sources_by_target, entry.sampling, entry.tokenizer, entry.device

A miss downloads the decomposition's files from the artifact store into `<data_dir>/cache/` and
loads them onto the worker's device; `sources_by_target` comes from the decomposition row (computed
once at import), so gradient connectivity is never recomputed per job. The budget counts parameter
and buffer bytes; the least recently used entries are dropped until a new one fits (one entry is
always kept, even over budget). One worker process runs one job at a time, but the lock keeps the
cache safe should a handler use threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spdlab.common.artifacts import ArtifactStore
from spdlab.common.db import session_scope
from spdlab.common.models import Decomposition
from spdlab.common.settings import Settings

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from spdlab.core.component_model import ComponentModel
    from spdlab.core.research_import import LoadedDecomposition
    from spdlab.core.topology import TransformerTopology

# Files of our checkpoint format, as stored under a decomposition's artifact prefix.
CHECKPOINT_FILES = ("spdlab.json", "weights.safetensors", "tokenizer.json")


class DecompositionUnavailableError(LookupError):
    """The decomposition row or its files are missing (deleted, or never imported)."""


@dataclass(frozen=True)
class LoadedEntry:
    decomposition_id: int
    loaded: LoadedDecomposition
    topology: TransformerTopology
    sources_by_target: dict[str, list[str]]  # concrete target path -> concrete source paths
    device: torch.device
    nbytes: int

    @property
    def model(self) -> ComponentModel:
        return self.loaded.component_model

    @property
    def sampling(self) -> Any:
        return self.loaded.config.sampling

    @property
    def tokenizer(self) -> Tokenizer | None:
        return self.loaded.tokenizer


def resolve_device(settings: Settings) -> torch.device:
    import torch

    if settings.device != "auto":
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_torch(settings: Settings) -> None:
    """Thread count from settings (1 is fastest for these small models on a shared 2-core box)."""
    import torch

    if settings.torch_threads and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)


class ModelCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[int, LoadedEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, decomposition_id: int, settings: Settings, artifacts: ArtifactStore) -> LoadedEntry:
        with self._lock:
            entry = self._entries.get(decomposition_id)
            if entry is not None:
                self._entries.move_to_end(decomposition_id)
                return entry
            entry = _load(decomposition_id, settings, artifacts)
            self._evict_for(entry.nbytes, settings.model_cache_bytes)
            self._entries[decomposition_id] = entry
            return entry

    def drop(self, decomposition_id: int) -> None:
        with self._lock:
            self._entries.pop(decomposition_id, None)

    def loaded_ids(self) -> list[int]:
        return list(self._entries)

    def _evict_for(self, nbytes: int, budget: int) -> None:
        used = sum(e.nbytes for e in self._entries.values())
        while self._entries and used + nbytes > budget:
            _, old = self._entries.popitem(last=False)
            used -= old.nbytes


_CACHE = ModelCache()


def get_decomposition(decomposition_id: int, settings: Settings, artifacts: ArtifactStore) -> LoadedEntry:
    """The loaded decomposition (cached per worker process); raises `DecompositionUnavailableError`."""
    configure_torch(settings)
    return _CACHE.get(decomposition_id, settings, artifacts)


def model_cache() -> ModelCache:
    return _CACHE


def fetch_checkpoint(artifact_ref: str, directory: Path, artifacts: ArtifactStore) -> Path:
    """Copy a stored checkpoint (`artifact_ref` = its key prefix) into a local directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        key = f"{artifact_ref.rstrip('/')}/{name}"
        if artifacts.exists(key):
            artifacts.get_file(key, directory / name)
    return directory


def _load(decomposition_id: int, settings: Settings, artifacts: ArtifactStore) -> LoadedEntry:
    from spdlab.core.checkpoints import load_decomposition
    from spdlab.core.gradient_connectivity import sources_by_target_concrete
    from spdlab.core.research_import import RunImportError
    from spdlab.core.topology import TransformerTopology

    with session_scope(settings) as session:
        row = session.get(Decomposition, decomposition_id)
        if row is None or row.artifact_ref is None:
            raise DecompositionUnavailableError(f"decomposition {decomposition_id} does not exist or has no files")
        ref, stored_sources = row.artifact_ref, row.sources_by_target
    device = resolve_device(settings)
    local = fetch_checkpoint(ref, (settings.data_dir / "cache" / "decompositions" / str(decomposition_id)).resolve(),
                             artifacts)
    try:
        loaded = load_decomposition(local, device=device)
    except RunImportError as exc:
        raise DecompositionUnavailableError(f"decomposition {decomposition_id}: {exc}") from exc
    model = loaded.component_model
    model.eval()
    topology = TransformerTopology(model.target_model, model.target_module_paths)
    concrete = (stored_sources or {}).get("concrete")
    sources = concrete if concrete else sources_by_target_concrete(model, topology)
    nbytes = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return LoadedEntry(decomposition_id, loaded, topology, {k: list(v) for k, v in sources.items()}, device, nbytes)
