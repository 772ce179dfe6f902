"""Contracts of the `decompose` job: train an SPD decomposition of a target model on a GPU worker.

The SPD run config is the research code's `Config` (validated here, so a bad config is a 422 that
names the field, e.g. `config.module_info.0.C`). The target is read from files under an allowed
import root; the data is either generated sparse features (TMS / ResidMLP tasks) or the token
windows of a registered, tokenized dataset (LM tasks).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from spdlab.common.contracts.ids import RowId
from spdlab.common.spd_config import Config

DECOMPOSE_KIND = "decompose"
PathField = Annotated[str, Field(min_length=1, max_length=1000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- target ---------------------------------------------------------------------------------------


class RunDirTarget(_Strict):
    """A directory against which the config's `pretrained_model_path` (TMS / ResidMLP) or
    `pretrained_model_name` (LlamaSimpleMLP / GPT2Simple pretrain checkpoint) resolves, as in a
    research-code run directory."""

    kind: Literal["run_dir"] = "run_dir"
    path: PathField


class ToyWeightsTarget(_Strict):
    """A TMS / ResidMLP weights file `<name>.pth` with `<name>_train_config.yaml` beside it, or a
    directory holding exactly one such pair (the research code's `tms.pth` / `resid_mlp.pth`)."""

    kind: Literal["toy_weights"] = "toy_weights"
    path: PathField


class CheckpointTarget(_Strict):
    """The target model stored in one of our checkpoint directories (`spdlab.json`)."""

    kind: Literal["checkpoint"] = "checkpoint"
    path: PathField


DecomposeTarget = Annotated[RunDirTarget | ToyWeightsTarget | CheckpointTarget, Field(discriminator="kind")]


# --- data -----------------------------------------------------------------------------------------


class GeneratedData(_Strict):
    """Sparse feature batches from `config.task_config` (tms / resid_mlp tasks)."""

    kind: Literal["generated"] = "generated"


class DatasetData(_Strict):
    """Token windows of a registered, tokenized dataset (lm tasks), cut to `task_config.max_seq_len`."""

    kind: Literal["dataset"] = "dataset"
    dataset_id: RowId


DecomposeData = Annotated[GeneratedData | DatasetData, Field(discriminator="kind")]
_DATA_FOR_TASK = {"tms": "generated", "resid_mlp": "generated", "lm": "dataset"}


# --- request / result -----------------------------------------------------------------------------


class DecomposeParams(_Strict):
    name: str = Field(min_length=1, max_length=200)
    config: Config
    target: DecomposeTarget
    data: DecomposeData = Field(default_factory=GeneratedData)
    checkpoint_every: int | None = Field(
        default=None, ge=1,
        description="steps between checkpoints in the artifact store (overrides config.save_freq; "
                    "None keeps config.save_freq); the final step is always saved",
    )
    # Any new value forces a fresh run of an otherwise identical request (part of the params key).
    nonce: str | None = Field(default=None, max_length=64)

    @field_validator("config")
    @classmethod
    def _trainable(cls, config: Config) -> Config:
        if config.steps < 1:  # the loop divides by `steps`
            raise ValueError(f"config.steps must be at least 1 to train, got {config.steps}")
        return config

    @field_validator("data")
    @classmethod
    def _data_fits_task(cls, data: GeneratedData | DatasetData, info: ValidationInfo) -> GeneratedData | DatasetData:
        config = info.data.get("config")
        if config is None:  # the config itself is invalid; that error is reported already
            return data
        task = config.task_config.task_name
        if _DATA_FOR_TASK[task] != data.kind:
            raise ValueError(f"a {task!r} task needs data.kind {_DATA_FOR_TASK[task]!r}, not {data.kind!r}")
        return data


class DecomposeJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["decompose"]
    params: DecomposeParams


class DecomposeMetrics(BaseModel):
    """Final numbers: the last train log's per-module L0 and losses, and the last eval's scalars."""

    l0: dict[str, float] = Field(default_factory=dict, description="module path -> mean active components")
    losses: dict[str, float] = Field(default_factory=dict, description="loss class name (and 'total') -> value")
    eval: dict[str, float] = Field(default_factory=dict, description="eval key (e.g. loss/StochasticReconLoss)")


class DecomposeResult(BaseModel):
    decomposition_id: int
    steps: int
    seconds: float
    metrics: DecomposeMetrics
    artifact_ref: str
    checkpoints: list[int] = Field(default_factory=list, description="steps with a stored checkpoint")
    resumed_from_final: bool = Field(
        default=False, description="a redelivered job found the final checkpoint and only registered it",
    )
