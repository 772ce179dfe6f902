"""Artifact store: local directory, and S3 through a local moto server (skipped without moto)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from spdlab.common.artifacts import (
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    artifact_store_from_settings,
    validate_key,
)
from spdlab.common.settings import Settings
from spdlab.common.stack import free_port


@pytest.fixture(scope="module")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    server_mod = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    port = free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("s3"), artifact_backend="s3", s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_bucket="spdlab-test", s3_prefix="run1", s3_access_key_id="test", s3_secret_access_key="test",
    )
    store = artifact_store_from_settings(settings)
    assert isinstance(store, S3ArtifactStore)
    store.client.create_bucket(Bucket="spdlab-test")
    yield settings
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return artifact_store_from_settings(Settings(data_dir=tmp_path))
    settings = request.getfixturevalue("s3_settings")
    s3 = artifact_store_from_settings(settings)
    for key in s3.list():
        s3.delete(key)
    return s3


def test_roundtrip_list_delete(store: ArtifactStore, tmp_path: Path):
    assert store.put_bytes("a/b/one.bin", b"123") == "a/b/one.bin"
    store.put_bytes("a/two.bin", b"x" * 1000)
    src = tmp_path / "src.txt"
    src.write_text("file body")
    store.put_file("c/three.txt", src)
    assert store.get_bytes("a/b/one.bin") == b"123"
    assert store.get_file("c/three.txt", tmp_path / "dst.txt").read_text() == "file body"
    assert store.list() == ["a/b/one.bin", "a/two.bin", "c/three.txt"]
    assert store.list("a/") == ["a/b/one.bin", "a/two.bin"]
    assert store.exists("a/two.bin") and not store.exists("a/none.bin")
    store.put_bytes("a/two.bin", b"replaced")
    assert store.get_bytes("a/two.bin") == b"replaced"
    store.delete("a/two.bin")
    assert not store.exists("a/two.bin")
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes("a/two.bin")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a\\b", "./a"])
def test_keys_cannot_escape(key: str, tmp_path: Path):
    with pytest.raises(ValueError):
        validate_key(key)
    with pytest.raises(ValueError):
        LocalArtifactStore(tmp_path).put_bytes(key, b"x")


def test_local_uri_points_inside_root(tmp_path: Path):
    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes("k/v.bin", b"1")
    assert store.uri("k/v.bin") == (tmp_path / "root" / "k" / "v.bin").as_uri()
