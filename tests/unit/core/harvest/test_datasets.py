"""Dataset readers (text, JSONL, Parquet, save_to_disk Arrow dirs, demo) and windowing; clear errors."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from harvest_fakes import WordEncoder
from pydantic import TypeAdapter

from spdlab.core.harvest.adapter import HFTokenEncoder
from spdlab.core.harvest.datasets import (
    ArrowDirSource,
    DatasetError,
    DatasetSource,
    DemoSource,
    JsonlSource,
    ParquetSource,
    TextSource,
    check_vocab,
    load_windows,
    read_documents,
    tokenize_windows,
)

DOCS = ["t1 t2 t3", "t4 t5", "t6 t7 t8 t9"]


def _save_to_disk_dir(root: Path, docs: list[str], n_files: int = 2) -> None:
    """What `datasets.Dataset.save_to_disk` writes: Arrow IPC stream files + state.json."""
    root.mkdir(parents=True)
    names = []
    per = -(-len(docs) // n_files)
    for i in range(n_files):
        name = f"data-{i:05d}-of-{n_files:05d}.arrow"
        table = pa.table({"text": docs[i * per : (i + 1) * per], "id": list(range(len(docs[i * per : (i + 1) * per])))})
        with pa.OSFile(str(root / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        names.append(name)
    (root / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names]}))
    (root / "dataset_info.json").write_text("{}")


def test_each_format_reads_the_same_documents(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("\n".join(DOCS) + "\n\n")
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": d, "n": 1}) for d in DOCS) + "\n")
    pq.write_table(pa.table({"content": DOCS}), tmp_path / "a.parquet", row_group_size=2)
    _save_to_disk_dir(tmp_path / "ds", DOCS)
    dd = tmp_path / "dd"
    _save_to_disk_dir(dd / "train", DOCS)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train"]}))
    sources = [
        TextSource(path=str(tmp_path / "a.txt")),
        JsonlSource(path=str(tmp_path / "a.jsonl"), field="body"),
        ParquetSource(path=str(tmp_path / "a.parquet"), column="content"),
        ParquetSource(path=str(tmp_path), column="content"),  # a directory of parquet files
        ArrowDirSource(path=str(tmp_path / "ds")),
        ArrowDirSource(path=str(dd), split="train"),
    ]
    for src in sources:
        assert list(read_documents(src)) == DOCS, src
    assert list(read_documents(TextSource(path=str(tmp_path / "a.txt"), document_per="file"))) == ["\n".join(DOCS) + "\n"]
    # Sources are a discriminated union (what a job payload carries).
    parsed = TypeAdapter(DatasetSource).validate_python({"kind": "jsonl", "path": "x.jsonl"})
    assert isinstance(parsed, JsonlSource) and parsed.field == "text"


def test_windows_join_documents_with_eos_and_drop_the_tail(tmp_path: Path) -> None:
    enc = WordEncoder(vocab_size=20, eos=0)
    w = tokenize_windows(DOCS, enc, context_length=4, docs_per_batch=2)
    stream = [1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9, 0]
    assert w.tokens.tolist() == [stream[0:4], stream[4:8], stream[8:12]]
    assert (w.n_documents, w.n_tokens_total, w.n_tokens_dropped) == (3, 12, 0)
    w5 = tokenize_windows(DOCS, enc, context_length=5)
    assert w5.tokens.tolist() == [stream[0:5], stream[5:10]] and w5.n_tokens_dropped == 2
    no_eos = tokenize_windows(DOCS, WordEncoder(20), context_length=3, max_windows=2)
    assert no_eos.tokens.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert torch.equal(tokenize_windows(DOCS, enc, 4).tokens, w.tokens)  # deterministic
    with pytest.raises(DatasetError, match="fewer than one window"):
        tokenize_windows(["t1"], enc, context_length=8)
    with pytest.raises(DatasetError, match="outside the model's vocabulary of 5"):
        check_vocab(w, 5)


def test_fixture_tokenizer_and_demo_corpus() -> None:
    from tokenizers import Tokenizer

    tok_file = Path(__file__).parents[3] / "fixtures/research_runs/llama_mlp_vector/target/tokenizer.json"
    enc = HFTokenEncoder(Tokenizer.from_file(str(tok_file)))
    assert enc.eos_token_id is None
    w = tokenize_windows(["t3 t250 t7", "t9"], enc, context_length=2)
    assert w.tokens.tolist() == [[3, 250], [7, 9]]

    from spdlab.core.demo.tokenizer import train_tokenizer

    demo = DemoSource(seed=3, n_documents=40)
    docs = list(read_documents(demo))
    assert len(docs) == 40 and docs == list(read_documents(demo))
    demo_enc = HFTokenEncoder(train_tokenizer(docs, vocab_size=300))
    assert demo_enc.eos_token_id is not None
    windows = load_windows(demo, demo_enc, context_length=16)
    assert windows.n_windows > 10 and int((windows.tokens == demo_enc.eos_token_id).sum()) >= 30


@pytest.mark.parametrize(
    ("content", "source_kwargs", "message"),
    [
        ('{"text": "a"}\n{"text": "b"}\n{"text": "c", oops}\n', {}, r"a\.jsonl:3:15: invalid JSON"),
        ('{"text": "a"}\n\n{"txt": "b"}\n', {}, r"a\.jsonl:3: missing field 'text'"),
        ('{"text": 5}\n', {}, r"a\.jsonl:1: field 'text' must be a string, got int"),
        ('[1, 2]\n', {}, r"a\.jsonl:1:1: expected a JSON object"),
        ("", {}, r"a\.jsonl: empty file"),
        ("\n\n", {}, r"a\.jsonl: no records"),
        ('{"body": "x"}\n', {"field": "body"}, None),
    ],
)
def test_jsonl_errors_name_file_line_and_column(tmp_path: Path, content: str, source_kwargs: dict,
                                                message: str | None) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(content)
    src = JsonlSource(path=str(path), **source_kwargs)
    if message is None:
        assert list(read_documents(src)) == ["x"]
        return
    with pytest.raises(DatasetError, match=message):
        list(read_documents(src))


def test_text_parquet_and_arrow_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nsecond \xff line\n")
    with pytest.raises(DatasetError, match=r"bad\.txt:2:8: invalid UTF-8"):
        list(read_documents(TextSource(path=str(bad))))
    with pytest.raises(DatasetError, match=r"missing\.txt: no such file"):
        list(read_documents(TextSource(path=str(tmp_path / "missing.txt"))))
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n")
    with pytest.raises(DatasetError, match="no non-blank lines"):
        list(read_documents(TextSource(path=str(blank))))

    pq.write_table(pa.table({"body": ["a", None, "c"], "n": [1, 2, 3]}), tmp_path / "p.parquet")
    with pytest.raises(DatasetError, match=r"p\.parquet: unknown column 'text' \(columns: \['body', 'n'\]\)"):
        list(read_documents(ParquetSource(path=str(tmp_path / "p.parquet"))))
    with pytest.raises(DatasetError, match=r"p\.parquet: row 1, column 'body': null value"):
        list(read_documents(ParquetSource(path=str(tmp_path / "p.parquet"), column="body")))
    with pytest.raises(DatasetError, match=r"column 'n' has type int64, expected string"):
        list(read_documents(ParquetSource(path=str(tmp_path / "p.parquet"), column="n")))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match=r"junk\.parquet: not a readable Parquet file"):
        list(read_documents(ParquetSource(path=str(tmp_path / "junk.parquet"))))

    _save_to_disk_dir(tmp_path / "ds", DOCS)
    with pytest.raises(DatasetError, match=r"data-00000-of-00002\.arrow: unknown column 'body'"):
        list(read_documents(ArrowDirSource(path=str(tmp_path / "ds"), column="body")))
    (tmp_path / "ds" / "data-00001-of-00002.arrow").unlink()
    with pytest.raises(DatasetError, match="missing"):
        list(read_documents(ArrowDirSource(path=str(tmp_path / "ds"))))
    dd = tmp_path / "dd"
    _save_to_disk_dir(dd / "train", DOCS)
    _save_to_disk_dir(dd / "test", DOCS)
    (dd / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(DatasetError, match="choose one with `split`"):
        list(read_documents(ArrowDirSource(path=str(dd))))
    with pytest.raises(DatasetError, match=r"unknown split 'val'"):
        list(read_documents(ArrowDirSource(path=str(dd), split="val")))
