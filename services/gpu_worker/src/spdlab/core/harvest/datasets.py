"""Dataset sources for harvests: read documents, tokenize them into fixed-length windows.

Sources are a discriminated union on `kind`: a text file (one document per line, or the whole
file), JSONL (a string field per line), Parquet (a string column), a directory written by
`datasets.save_to_disk` (its Arrow stream files are read with pyarrow, so the `datasets` package is
not needed), or the bundled demo corpus. Every problem a user can fix raises `DatasetError` naming
the file and the line/column (or row/column) at fault.

Tokenization is deterministic: documents in source order, each followed by the tokenizer's EOS
token when it has one, concatenated and cut into `context_length` windows; a final partial window
is dropped (its size is reported).
"""

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from spdlab.core.callbacks import CancelFn, ProgressFn, check_cancel, no_progress
from spdlab.core.harvest.adapter import TokenEncoder


class DatasetError(ValueError):
    """A dataset the user can fix: the message names the file and the place."""


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextSource(_Source):
    kind: Literal["text"] = "text"
    path: str
    document_per: Literal["line", "file"] = "line"


class JsonlSource(_Source):
    kind: Literal["jsonl"] = "jsonl"
    path: str
    field: str = "text"


class ParquetSource(_Source):
    """A Parquet file, or a directory whose `*.parquet` files are read in name order."""

    kind: Literal["parquet"] = "parquet"
    path: str
    column: str = "text"


class ArrowDirSource(_Source):
    """A `datasets.save_to_disk` directory (a Dataset, or a DatasetDict with `split`)."""

    kind: Literal["arrow_dir"] = "arrow_dir"
    path: str
    column: str = "text"
    split: str | None = None


class DemoSource(_Source):
    """The bundled procedural story corpus."""

    kind: Literal["demo"] = "demo"
    seed: int = 0
    n_documents: int = Field(default=2000, ge=1)


DatasetSource = Annotated[
    TextSource | JsonlSource | ParquetSource | ArrowDirSource | DemoSource, Field(discriminator="kind")
]


@dataclass(frozen=True)
class TokenWindows:
    """`tokens` `[n_windows, context_length]` int64 plus what was read and dropped."""

    tokens: Tensor
    n_documents: int
    n_tokens_total: int
    n_tokens_dropped: int

    @property
    def n_windows(self) -> int:
        return int(self.tokens.shape[0])


# --- readers ----------------------------------------------------------------------------------


def _existing_file(path: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{path}: no such file")
    if not p.is_file():
        raise DatasetError(f"{path}: not a file")
    if p.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file")
    return p


def _decoded_lines(p: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); bad UTF-8 is reported with line and column."""
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{p}:{lineno}:{e.start + 1}: invalid UTF-8 ({e.reason})") from e
            yield lineno, line.rstrip("\r\n")


def _read_text(src: TextSource) -> Iterator[str]:
    p = _existing_file(src.path)
    if src.document_per == "file":
        text = "\n".join(line for _, line in _decoded_lines(p))
        if not text.strip():
            raise DatasetError(f"{src.path}: file has no text")
        yield text
        return
    n = 0
    for _, line in _decoded_lines(p):
        if line.strip():
            n += 1
            yield line
    if n == 0:
        raise DatasetError(f"{src.path}: file has no non-blank lines")


def _read_jsonl(src: JsonlSource) -> Iterator[str]:
    p = _existing_file(src.path)
    n = 0
    for lineno, line in _decoded_lines(p):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{src.path}:{lineno}:{e.colno}: invalid JSON: {e.msg}") from e
        if not isinstance(record, dict):
            raise DatasetError(f"{src.path}:{lineno}:1: expected a JSON object, got {type(record).__name__}")
        if src.field not in record:
            raise DatasetError(
                f"{src.path}:{lineno}: missing field {src.field!r} (fields: {sorted(record)[:10]})"
            )
        value = record[src.field]
        if not isinstance(value, str):
            raise DatasetError(
                f"{src.path}:{lineno}: field {src.field!r} must be a string, got {type(value).__name__}"
            )
        n += 1
        yield value
    if n == 0:
        raise DatasetError(f"{src.path}: no records")


def _strings_of_column(table: object, column: str, where: str, row_offset: int = 0) -> list[str]:
    """The string values of `column` of a pyarrow table; names the row of a null or non-string."""
    import pyarrow as pa

    assert isinstance(table, pa.Table)
    if column not in table.column_names:
        raise DatasetError(f"{where}: unknown column {column!r} (columns: {table.column_names})")
    col = table.column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DatasetError(f"{where}: column {column!r} has type {col.type}, expected string")
    if col.null_count:
        first_null = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
        raise DatasetError(f"{where}: row {row_offset + first_null}, column {column!r}: null value")
    return col.to_pylist()


def _read_parquet(src: ParquetSource) -> Iterator[str]:
    import pyarrow.parquet as pq

    p = Path(src.path)
    if p.is_dir():
        files = sorted(p.glob("*.parquet"))
        if not files:
            raise DatasetError(f"{src.path}: directory has no .parquet files")
    else:
        files = [_existing_file(src.path)]
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise DatasetError(f"{f}: not a readable Parquet file ({e})") from e
        names = pf.schema_arrow.names
        if src.column not in names:
            raise DatasetError(f"{f}: unknown column {src.column!r} (columns: {names})")
        offset = 0
        for rg in range(pf.num_row_groups):
            table = pf.read_row_group(rg, columns=[src.column])
            yield from _strings_of_column(table, src.column, str(f), offset)
            offset += table.num_rows


def _arrow_files(root: Path, split: str | None) -> list[Path]:
    """The Arrow files of a `save_to_disk` directory, in the order `state.json` lists them."""
    dict_file = root / "dataset_dict.json"
    if dict_file.exists():
        splits = json.loads(dict_file.read_text()).get("splits", [])
        if split is None:
            if len(splits) != 1:
                raise DatasetError(f"{root}: a DatasetDict with splits {splits}; choose one with `split`")
            split = splits[0]
        if split not in splits:
            raise DatasetError(f"{root}: unknown split {split!r} (splits: {splits})")
        return _arrow_files(root / split, None)
    state_file = root / "state.json"
    if state_file.exists():
        try:
            state = json.loads(state_file.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{state_file}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from e
        files = [root / d["filename"] for d in state.get("_data_files", [])]
    else:
        files = sorted(root.glob("*.arrow"))
    if not files:
        raise DatasetError(f"{root}: no Arrow data files (expected state.json or *.arrow)")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise DatasetError(f"{root}: data files listed in state.json are missing: {missing}")
    return files


def _read_arrow_file(f: Path) -> object:
    import pyarrow as pa

    # `save_to_disk` writes the IPC stream format; accept the file format too.
    for opener in (pa.ipc.open_stream, pa.ipc.open_file):
        try:
            with pa.memory_map(str(f)) as source:
                return opener(source).read_all()
        except pa.ArrowInvalid:
            continue
    raise DatasetError(f"{f}: not an Arrow IPC stream or file")


def _read_arrow_dir(src: ArrowDirSource) -> Iterator[str]:
    root = Path(src.path)
    if not root.is_dir():
        raise DatasetError(f"{src.path}: not a directory")
    for f in _arrow_files(root, src.split):
        yield from _strings_of_column(_read_arrow_file(f), src.column, str(f))


def _read_demo(src: DemoSource) -> Iterator[str]:
    from spdlab.core.demo.stories import generate_stories

    for story in generate_stories(src.seed, src.n_documents):
        yield story.text


_READERS: dict[str, Callable[..., Iterator[str]]] = {
    "text": _read_text,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "arrow_dir": _read_arrow_dir,
    "demo": _read_demo,
}


def read_documents(source: TextSource | JsonlSource | ParquetSource | ArrowDirSource | DemoSource) -> Iterator[str]:
    """Documents of a source, in a deterministic order; raises `DatasetError` on bad input."""
    return _READERS[source.kind](source)


def describe_source(source: _Source) -> str:
    """A short human string for logs and job rows."""
    return json.dumps(source.model_dump(), sort_keys=True)


# --- tokenization -----------------------------------------------------------------------------


def _chunks(docs: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def tokenize_windows(
    documents: Iterable[str],
    tokenizer: TokenEncoder,
    context_length: int,
    *,
    max_windows: int | None = None,
    docs_per_batch: int = 1024,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
) -> TokenWindows:
    """Tokenize documents (joined by EOS when the tokenizer has one) into `[N, context_length]` windows.

    Progress is reported in windows against `max_windows` (0 when unbounded).
    """
    if context_length < 1:
        raise ValueError(f"context_length must be ≥ 1, got {context_length}")
    eos = tokenizer.eos_token_id
    pieces: list[Tensor] = []
    n_docs = n_tokens = 0
    cap = None if max_windows is None else max_windows * context_length
    for chunk in _chunks(documents, docs_per_batch):
        check_cancel(should_cancel)
        ids = tokenizer.encode_batch(chunk)
        flat = [t for doc in ids for t in ([*doc, eos] if eos is not None else doc)]
        n_docs += len(chunk)
        pieces.append(torch.tensor(flat, dtype=torch.int64))
        n_tokens += len(flat)
        progress(min(n_tokens, cap or n_tokens) // context_length, max_windows or 0, "tokenize")
        if cap is not None and n_tokens >= cap:
            break
    if n_docs == 0:
        raise DatasetError("dataset has no documents")
    stream = torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
    n_windows = stream.numel() // context_length
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    used = n_windows * context_length
    if n_windows == 0:
        raise DatasetError(
            f"dataset has {stream.numel()} tokens, fewer than one window of {context_length}"
        )
    return TokenWindows(
        tokens=stream[:used].reshape(n_windows, context_length).clone(),
        n_documents=n_docs,
        n_tokens_total=int(stream.numel()),
        n_tokens_dropped=int(stream.numel() - used),
    )


def load_windows(
    source: TextSource | JsonlSource | ParquetSource | ArrowDirSource | DemoSource,
    tokenizer: TokenEncoder,
    context_length: int,
    *,
    max_windows: int | None = None,
    progress: ProgressFn = no_progress,
    should_cancel: CancelFn | None = None,
) -> TokenWindows:
    """`read_documents` then `tokenize_windows`."""
    return tokenize_windows(
        read_documents(source), tokenizer, context_length,
        max_windows=max_windows, progress=progress, should_cancel=should_cancel,
    )


def check_vocab(windows: TokenWindows, vocab_size: int) -> None:
    """Refuse token ids the model cannot embed (a tokenizer/model mismatch)."""
    top = int(windows.tokens.max()) if windows.tokens.numel() else -1
    if top >= vocab_size:
        raise DatasetError(f"token id {top} is outside the model's vocabulary of {vocab_size}")
