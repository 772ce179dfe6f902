"""Contracts of datasets: source specs (the torch-free mirror of the core's `DatasetSource` union),
the registration request, the `dataset.tokenize` job and views."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from spdlab.common.contracts.ids import RowId


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextSourceSpec(_Strict):
    kind: Literal["text"] = "text"
    path: str = Field(min_length=1, max_length=1000)
    document_per: Literal["line", "file"] = "line"


class JsonlSourceSpec(_Strict):
    kind: Literal["jsonl"] = "jsonl"
    path: str = Field(min_length=1, max_length=1000)
    field: str = Field(default="text", min_length=1, max_length=200)


class ParquetSourceSpec(_Strict):
    kind: Literal["parquet"] = "parquet"
    path: str = Field(min_length=1, max_length=1000)
    column: str = Field(default="text", min_length=1, max_length=200)


class ArrowDirSourceSpec(_Strict):
    kind: Literal["arrow_dir"] = "arrow_dir"
    path: str = Field(min_length=1, max_length=1000)
    column: str = Field(default="text", min_length=1, max_length=200)
    split: str | None = Field(default=None, max_length=200)


class DemoSourceSpec(_Strict):
    kind: Literal["demo"] = "demo"
    seed: int = 0
    n_documents: int = Field(default=2000, ge=1, le=1_000_000)


SourceSpec = Annotated[
    TextSourceSpec | JsonlSourceSpec | ParquetSourceSpec | ArrowDirSourceSpec | DemoSourceSpec,
    Field(discriminator="kind"),
]
FILE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "text": (".txt", ".text", ".md"),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "parquet": (".parquet",),
}


class DatasetCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    decomposition_id: int = Field(ge=1, description="tokenized with this decomposition's tokenizer")
    source: SourceSpec
    context_length: int | None = Field(default=None, ge=1, le=1_000_000,
                                       description="window length; default: the decomposition's max_seq_len")
    max_windows: int | None = Field(default=None, ge=1, le=100_000_000)


class DatasetTokenizeParams(_Strict):
    dataset_id: RowId


class DatasetTokenizeJobRequest(_Strict):
    queue: ClassVar[str] = "gpu"
    kind: Literal["dataset.tokenize"]
    params: DatasetTokenizeParams


class DatasetTokenizeResult(BaseModel):
    dataset_id: int
    n_windows: int
    context_length: int
    n_documents: int
    n_tokens_dropped: int


class DatasetOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    owner_id: int
    name: str
    decomposition_id: int
    source: dict[str, Any]
    context_length: int | None
    max_windows: int | None
    status: str
    n_windows: int | None
    n_documents: int | None
    n_tokens_dropped: int | None
    error: str | None
    artifact_ref: str | None
    job_id: str | None
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    total: int
    limit: int
    offset: int
