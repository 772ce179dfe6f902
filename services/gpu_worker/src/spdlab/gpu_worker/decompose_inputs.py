"""What a `decompose` job trains on: the target model (from files under an allowed import root) and
the batch streams (generated sparse features, or a registered dataset's token windows).

Target files are read with the research importer's target loaders, so a target that imports as part
of a research run also trains. Every failure a user can fix is a `JobFailedError` naming the piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spdlab.common.contracts.decompose import (
    CheckpointTarget,
    DatasetData,
    DecomposeParams,
    RunDirTarget,
    ToyWeightsTarget,
)
from spdlab.common.runner import JobContext, JobFailedError
from spdlab.common.settings import Settings
from spdlab.gpu_worker.decomposition_import import ImportPathError, check_import_path

if TYPE_CHECKING:
    from pydantic import BaseModel
    from torch import Tensor, nn

    from spdlab.common.spd_config import Config

# Research code (spec §4.3): feature values ~ U(range), (0, 1) for TMS and (-1, 1) for ResidMLP.
VALUE_RANGES = {"tms": (0.0, 1.0), "resid_mlp": (-1.0, 1.0)}
EVAL_HOLDOUT_FRACTION = 10  # 1/10 of a dataset's windows are held out for eval (when >= 20 windows)


@dataclass
class TrainTarget:
    model: nn.Module
    model_type: str
    config: BaseModel
    tokenizer_json: str | None
    path: str


@dataclass
class BatchStreams:
    train: Iterator[Tensor]
    eval: Callable[[], Iterator[Tensor]]
    description: str


# --- target -----------------------------------------------------------------------------------------


def _class_name(config: Config) -> str:
    return config.pretrained_model_class.rsplit(".", 1)[-1]


def _checked(path: str, settings: Settings) -> Path:
    try:
        return check_import_path(path, settings)
    except ImportPathError as exc:
        raise JobFailedError(str(exc), "path_not_allowed") from exc


def _toy_weights_file(path: Path) -> Path:
    """`path` itself, or the one `<name>.pth` in the directory with `<name>_train_config.yaml` beside it."""
    if path.is_file():
        return path
    pairs = sorted(p for p in path.glob("*.pth") if (p.parent / f"{p.stem}_train_config.yaml").is_file())
    if len(pairs) != 1:
        found = ", ".join(p.name for p in pairs) or "none"
        raise JobFailedError(f"target directory {path} must hold exactly one <name>.pth with "
                             f"<name>_train_config.yaml beside it; found: {found}", "target_invalid")
    return pairs[0]


def _load_research_target(target: RunDirTarget | ToyWeightsTarget, config: Config, settings: Settings) -> TrainTarget:
    # The importer's own loaders: the same files, checks and error messages as an import.
    from spdlab.core.research_import import _load_file_target, _load_target

    root = _checked(target.path, settings)
    if isinstance(target, ToyWeightsTarget):
        weights = _toy_weights_file(root)
        loaded = _load_file_target(weights.parent, weights.name, _class_name(config))
    else:
        if not root.is_dir():
            raise JobFailedError(f"target.path {target.path!r} is not a directory", "target_invalid")
        loaded = _load_target(root, config)
    if loaded.target_dir is not None:  # the config's relative path must not lead outside the roots
        _checked(str(loaded.target_dir), settings)
    return TrainTarget(loaded.model, loaded.model_type, loaded.config, loaded.tokenizer_json, target.path)


def _load_checkpoint_target(target: CheckpointTarget, settings: Settings) -> TrainTarget:
    from spdlab.core.checkpoints import load_decomposition

    loaded = load_decomposition(_checked(target.path, settings))
    return TrainTarget(loaded.component_model.target_model, loaded.target_model_type, loaded.target_config,
                       loaded.tokenizer_json, target.path)


def load_train_target(params: DecomposeParams, settings: Settings) -> TrainTarget:
    """The frozen target model the config decomposes; its class must match `pretrained_model_class`."""
    from spdlab.core.module_patterns import freeze_
    from spdlab.core.research_import import RunImportError

    target = params.target
    try:
        if isinstance(target, CheckpointTarget):
            loaded = _load_checkpoint_target(target, settings)
        else:
            loaded = _load_research_target(target, params.config, settings)
    except RunImportError as exc:
        raise JobFailedError(f"cannot load the target from {target.path!r}: {exc}", "target_invalid") from exc
    if loaded.model_type != _class_name(params.config):
        raise JobFailedError(f"target at {target.path!r} is a {loaded.model_type}, but config."
                             f"pretrained_model_class names {params.config.pretrained_model_class!r}", "target_invalid")
    freeze_(loaded.model)
    return loaded


# --- batches ----------------------------------------------------------------------------------------


def generated_streams(config: Config, target_config: Any) -> BatchStreams:
    """Sparse feature batches (train: seed `config.seed`, eval: `config.seed + 1`, as the research code)."""
    from spdlab.core.data.sparse_features import sparse_feature_batches

    task = config.task_config
    n_features = int(target_config.n_features)
    value_range = VALUE_RANGES[task.task_name]

    def stream(batch_size: int, seed: int) -> Iterator[Tensor]:
        return sparse_feature_batches(task.data_generation_type, batch_size, n_features,  # type: ignore[union-attr,arg-type]
                                      task.feature_probability, value_range, seed=seed)  # type: ignore[union-attr]

    eval_stream = stream(config.eval_batch_size, config.seed + 1)
    return BatchStreams(stream(config.batch_size, config.seed), lambda: eval_stream,
                        f"{task.task_name} sparse features ({task.data_generation_type}, n_features {n_features})")  # type: ignore[union-attr]


def shuffled_batches(windows: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless batches of rows; each epoch visits every row once in a fresh seeded order."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.int64)
    while True:
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(windows.shape[0], generator=gen)])
        yield windows[order[:batch_size]]
        order = order[batch_size:]


def dataset_streams(ctx: JobContext, data: DatasetData, config: Config, target_config: Any) -> BatchStreams:
    """A tokenized dataset's windows cut to `max_seq_len`; 1/10 held out for eval when there are enough."""
    from spdlab.gpu_worker.harvest_inputs import load_windows

    windows = load_windows(ctx, data.dataset_id)
    max_seq_len = config.task_config.max_seq_len  # type: ignore[union-attr]
    windows = windows[:, :max_seq_len]
    vocab = getattr(target_config, "vocab_size", None)
    if vocab is not None and windows.numel() and int(windows.max()) >= vocab:
        raise JobFailedError(f"dataset {data.dataset_id} has token ids up to {int(windows.max())}, beyond the "
                             f"target's vocab_size {vocab}: tokenize it with the target's tokenizer", "dataset_mismatch")
    n = windows.shape[0]
    if n == 0:
        raise JobFailedError(f"dataset {data.dataset_id} has no windows", "dataset_empty")
    n_eval = n // EVAL_HOLDOUT_FRACTION if n >= 2 * EVAL_HOLDOUT_FRACTION else 0
    train, held_out = (windows[: n - n_eval], windows[n - n_eval:]) if n_eval else (windows, windows)
    eval_stream = shuffled_batches(held_out, config.eval_batch_size, config.seed + 1)
    return BatchStreams(shuffled_batches(train, config.batch_size, config.seed), lambda: eval_stream,
                        f"dataset {data.dataset_id}: {train.shape[0]} train / {n_eval} eval windows of "
                        f"{windows.shape[1]} tokens")


def batch_streams(ctx: JobContext, params: DecomposeParams, target: TrainTarget) -> BatchStreams:
    if isinstance(params.data, DatasetData):
        return dataset_streams(ctx, params.data, params.config, target.config)
    return generated_streams(params.config, target.config)
