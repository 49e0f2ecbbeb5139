"""Small file helpers that treat local paths and gs:// (any fsspec URL) alike. TensorFlow-free.

The one storage layer outside Beam workers (the launcher, the trainer, the exporter). Code that runs
inside the Beam job keeps Beam's `FileSystems`, which the workers are set up for.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import hashlib
import json
import os
import shutil
import tempfile
from typing import IO, Any, Iterator, Sequence

import fsspec


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def dirname(path: str) -> str:
    if is_remote(path):
        return path.rsplit("/", 1)[0]
    return os.path.dirname(path)


def abspath(path: str) -> str:
    """Local paths made absolute (a later chdir cannot move them); URLs unchanged."""
    return path if is_remote(path) else os.path.abspath(path)


def open_file(path: str, mode: str = "r", **kw) -> IO:
    if is_remote(path):
        return fsspec.open(path, mode, **kw).open()
    return open(path, mode, **kw)


def size(path: str) -> int:
    """A file's size in bytes (a metadata lookup, no read)."""
    if is_remote(path):
        fs, p = fsspec.core.url_to_fs(path)
        return fs.size(p)
    return os.path.getsize(path)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def exists(path: str) -> bool:
    if is_remote(path):
        fs, p = fsspec.core.url_to_fs(path)
        return fs.exists(p)
    return os.path.exists(path)


def _url(like: str, path: str) -> str:
    """fsspec returns paths without the protocol: put back the one of `like`."""
    return like.split("://", 1)[0] + "://" + path.lstrip("/")


def glob(pattern: str) -> list[str]:
    """The files (not directories) matching a glob, sorted; `**` crosses directories, local or remote.
    A pattern without wildcards matches itself when it is a file."""
    if is_remote(pattern):
        fs, p = fsspec.core.url_to_fs(pattern)
        return sorted(_url(pattern, f) for f, info in fs.glob(p, detail=True).items() if info["type"] == "file")
    return sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))


def makedirs(path: str) -> None:
    """Creates a local directory and its parents; nothing for a URL (object stores have no
    directories: writing a file is enough)."""
    if path and not is_remote(path):  # "": the current directory
        os.makedirs(path, exist_ok=True)


def write_json(path: str, obj: Any) -> None:
    """Indented JSON with sorted keys and a final newline; a local parent directory is created."""
    makedirs(dirname(path))
    with open_file(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


@contextlib.contextmanager
def replacing_writer(path: str) -> Iterator[IO[bytes]]:
    """A binary writer whose file appears whole or not at all: locally through a temporary name,
    renamed when the block ends without an error (a local parent directory is created); an object
    store publishes an object only when its upload completes."""
    if is_remote(path):
        with open_file(path, "wb") as f:
            yield f
        return
    makedirs(dirname(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file so that a reader never sees part of it (replacing_writer)."""
    with replacing_writer(path) as f:
        f.write(data)


def remove_dir(path: str) -> None:
    """Removes a directory (an object-store prefix) and everything under it; nothing when absent."""
    if is_remote(path):
        fs, p = fsspec.core.url_to_fs(path)
        if fs.exists(p):
            fs.rm(p, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as f:
        return f.read()


def copy_files(src_dir: str, names: Sequence[str], dst_dir: str) -> None:
    """Copies local files `src_dir/name` to `dst_dir/name` (a local directory or a URL); names may
    hold sub-directories."""
    if is_remote(dst_dir):
        fs, root = fsspec.core.url_to_fs(dst_dir)
        root = root.rstrip("/")
        for name in names:
            fs.put_file(os.path.join(src_dir, name), f"{root}/{name.replace(os.sep, '/')}")
        return
    for name in names:
        dst = os.path.join(dst_dir, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(src_dir, name), dst)


def cache_dir() -> str:
    return os.environ.get(
        "SET_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sentence-embedding-training")
    )


def download_dir(url: str) -> str:
    """Copies a remote directory (recursively) to a local cache directory and returns the local path.
    Files already there with the same size are not fetched again."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    local = os.path.join(cache_dir(), "remote", hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16])
    files = [f for f in fs.find(root) if not f.endswith("/")]
    if not files:
        raise FileNotFoundError(f"no files under {url}")
    for f in files:
        dst = os.path.join(local, os.path.relpath(f, root))
        size = fs.size(f)
        if os.path.isfile(dst) and os.path.getsize(dst) == size:
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst + ".part"
        fs.get_file(f, tmp)
        os.replace(tmp, dst)  # atomic, so an interrupted copy is never taken for a complete file
    return local


def local_dir(path: str) -> str:
    """A local directory with the files of `path`: itself, or a cached copy of a remote directory."""
    return download_dir(path) if is_remote(path) else path


def upload_dir(local: str, url: str) -> None:
    """Copies every file under a local directory to a remote directory, keeping relative paths."""
    names = [os.path.relpath(os.path.join(d, n), local) for d, _, files in os.walk(local) for n in files]
    copy_files(local, names, url)


@contextlib.contextmanager
def staged_dir(dst: str) -> Iterator[str]:
    """A local directory to write the files of `dst` into: `dst` itself (created) when local; for a
    URL a temporary directory, uploaded to `dst` when the block ends without an error, then removed
    (so a failed write leaves nothing half-uploaded)."""
    if not is_remote(dst):
        os.makedirs(dst, exist_ok=True)
        yield dst
        return
    stage = tempfile.mkdtemp(prefix="staged-")
    try:
        yield stage
        upload_dir(stage, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
