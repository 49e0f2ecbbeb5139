"""Small file helpers that treat local paths and gs:// (any fsspec URL) alike. TensorFlow-free."""
from __future__ import annotations

import hashlib
import os
from typing import IO

import fsspec


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def open_file(path: str, mode: str = "r", **kw) -> IO:
    if is_remote(path):
        return fsspec.open(path, mode, **kw).open()
    return open(path, mode, **kw)


def exists(path: str) -> bool:
    if is_remote(path):
        fs, p = fsspec.core.url_to_fs(path)
        return fs.exists(p)
    return os.path.exists(path)


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


def upload_dir(local: str, url: str) -> None:
    """Copies every file under a local directory to a remote directory, keeping relative paths."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    for dirpath, _, names in os.walk(local):
        for name in names:
            src = os.path.join(dirpath, name)
            rel = os.path.relpath(src, local).replace(os.sep, "/")
            fs.put_file(src, f"{root}/{rel}")
