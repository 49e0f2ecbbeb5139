"""pipeline/storage.py on local paths (tmp_path) and on fsspec's in-memory filesystem, which takes
the code path gs:// takes (gcsfs) without a network."""

import json
import os

import fsspec
import pytest

from pipeline import storage


@pytest.fixture
def mem():
    """A fresh memory:// bucket; returns (its URL, the memory filesystem)."""
    fs = fsspec.filesystem("memory")
    yield "memory://bucket", fs
    if fs.exists("/bucket"):
        fs.rm("/bucket", recursive=True)


def _tree(root) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(d, n), root): open(os.path.join(d, n), "rb").read()
        for d, _, names in os.walk(root)
        for n in names
    }


def _local_files(tmp_path) -> str:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.json").write_text("{}")
    return str(src)


def test_paths():
    assert storage.is_remote("gs://b/x") and storage.is_remote("memory://b")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x") and not storage.is_remote("rel/x")
    assert storage.join("gs://b/run/", "/checkpoints/", "1") == "gs://b/run/checkpoints/1"
    assert storage.join("/tmp/run", "checkpoints") == "/tmp/run/checkpoints"
    assert storage.dirname("gs://b/cfg/data_config.json") == "gs://b/cfg"
    assert storage.dirname("/tmp/cfg/data_config.json") == "/tmp/cfg"
    assert storage.abspath("gs://b/out") == "gs://b/out"
    assert storage.abspath("out/data") == os.path.join(os.getcwd(), "out", "data")


def test_open_exists_and_write_json_local(tmp_path):
    path = str(tmp_path / "new" / "deeper" / "x.json")
    assert not storage.exists(path)
    storage.write_json(path, {"b": 1, "a": [1, 2]})
    assert storage.exists(path)
    with storage.open_file(path) as f:
        text = f.read()
    assert text == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'  # indented, sorted, final newline


def test_open_exists_and_write_json_remote(mem):
    url, fs = mem
    path = storage.join(url, "run", "x.json")
    assert not storage.exists(path)
    storage.write_json(path, {"b": 1, "a": 2})
    assert storage.exists(path)
    assert json.loads(fs.cat("/bucket/run/x.json")) == {"a": 2, "b": 1}
    with storage.open_file(path, "r", encoding="utf-8") as f:
        assert json.load(f) == {"a": 2, "b": 1}


def test_glob_local(tmp_path):
    src = _local_files(tmp_path)
    (tmp_path / "src" / "c.txt").write_text("gamma")
    assert storage.glob(os.path.join(src, "*.txt")) == [os.path.join(src, "a.txt"), os.path.join(src, "c.txt")]
    assert storage.glob(os.path.join(src, "*")) == [os.path.join(src, "a.txt"), os.path.join(src, "c.txt")]  # no dirs
    assert storage.glob(os.path.join(src, "**", "*.json")) == [os.path.join(src, "sub", "b.json")]
    assert storage.glob(os.path.join(src, "a.txt")) == [os.path.join(src, "a.txt")]  # no wildcard: itself
    assert storage.glob(os.path.join(src, "sub")) == []  # a directory is not a file
    assert storage.glob(os.path.join(src, "nothing*")) == []


def test_glob_remote(mem, tmp_path):
    url, _ = mem
    storage.upload_dir(_local_files(tmp_path), storage.join(url, "d"))
    storage.write_json(storage.join(url, "d", "c.txt"), {})
    assert storage.glob(url + "/d/*.txt") == ["memory://bucket/d/a.txt", "memory://bucket/d/c.txt"]
    assert storage.glob(url + "/d/*") == ["memory://bucket/d/a.txt", "memory://bucket/d/c.txt"]  # no dirs
    assert storage.glob(url + "/d/**/*.json") == ["memory://bucket/d/sub/b.json"]
    assert storage.glob(url + "/d/a.txt") == ["memory://bucket/d/a.txt"]
    assert storage.glob(url + "/d/nothing*") == []
    # What glob returns opens again.
    with storage.open_file(storage.glob(url + "/d/a*")[0]) as f:
        assert f.read() == "alpha"


def test_makedirs(tmp_path, mem):
    storage.makedirs(str(tmp_path / "a" / "b"))
    storage.makedirs(str(tmp_path / "a" / "b"))  # exists: fine
    assert (tmp_path / "a" / "b").is_dir()
    url, fs = mem
    storage.makedirs(url + "/x/y")  # object stores have no directories: nothing is written
    assert not fs.exists("/bucket/x")


def test_copy_files_local_and_remote(tmp_path, mem):
    src = _local_files(tmp_path)
    dst = tmp_path / "dst" / "model_source"
    storage.copy_files(src, ["a.txt", os.path.join("sub", "b.json")], str(dst))
    assert _tree(dst) == {"a.txt": b"alpha", os.path.join("sub", "b.json"): b"{}"}
    url, fs = mem
    storage.copy_files(src, ["a.txt"], url + "/model_source/")
    assert fs.find("/bucket") == ["/bucket/model_source/a.txt"]
    assert fs.cat("/bucket/model_source/a.txt") == b"alpha"


def test_upload_then_download_dir(tmp_path, mem, monkeypatch):
    monkeypatch.setenv("SET_CACHE_DIR", str(tmp_path / "cache"))
    assert storage.cache_dir() == str(tmp_path / "cache")
    src = _local_files(tmp_path)
    url, fs = mem
    storage.upload_dir(src, url + "/m")
    assert sorted(fs.find("/bucket")) == ["/bucket/m/a.txt", "/bucket/m/sub/b.json"]
    local = storage.download_dir(url + "/m/")
    assert local.startswith(str(tmp_path / "cache")) and _tree(local) == _tree(src)
    assert storage.download_dir(url + "/m") == local  # a trailing slash names the same directory
    assert storage.local_dir(url + "/m") == local and storage.local_dir(src) == src
    with pytest.raises(FileNotFoundError, match="no files under"):
        storage.download_dir(url + "/empty")


def test_staged_dir_local_writes_in_place(tmp_path):
    dst = str(tmp_path / "out" / "export")
    with storage.staged_dir(dst) as stage:
        assert stage == dst and os.path.isdir(dst)
        storage.write_json(os.path.join(stage, "1_Pooling", "config.json"), {})
    assert _tree(dst) == {os.path.join("1_Pooling", "config.json"): b"{}\n"}


def test_staged_dir_remote_uploads_when_complete(mem):
    url, fs = mem
    with storage.staged_dir(url + "/export") as stage:
        assert os.path.isdir(stage) and not storage.is_remote(stage)
        storage.write_json(os.path.join(stage, "1_Pooling", "config.json"), {})
        with open(os.path.join(stage, "README.md"), "w") as f:
            f.write("# card\n")
        assert not fs.exists("/bucket/export")  # nothing is uploaded before the block ends
    assert sorted(fs.find("/bucket")) == ["/bucket/export/1_Pooling/config.json", "/bucket/export/README.md"]
    assert fs.cat("/bucket/export/README.md") == b"# card\n"
    assert not os.path.exists(stage)  # the stage is removed


def test_staged_dir_remote_uploads_nothing_on_error(mem):
    url, fs = mem
    with pytest.raises(RuntimeError):
        with storage.staged_dir(url + "/export") as stage:
            storage.write_json(os.path.join(stage, "config.json"), {})
            raise RuntimeError("failed half way")
    assert not fs.exists("/bucket/export") and not os.path.exists(stage)
