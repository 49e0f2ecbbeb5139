"""`hf://` paths in Beam: a read-only Beam FileSystem over huggingface_hub's fsspec file system.

Beam's IOs (our line reader, ReadFromText, the Parquet IO) open files through Beam's `FileSystems`,
which knows local paths and gs:// but not hf://. Beam finds FileSystem subclasses by their
`scheme()` once the defining module is imported; every module of the job that opens a file
(pipeline/reading.py, reddit.py, beir.py) imports this one, so launchers and workers alike resolve
`hf://datasets/OWNER/NAME/PATH` (public datasets need no token; HF_TOKEN is read by huggingface_hub as
usual). Writing to the Hub is not supported.

`hf://datasets/OWNER/NAME@REVISION/PATH` reads that revision (a branch, tag or commit). The launcher
pins every hf:// file to the commit its revision names when the job starts (`pin_revisions`), so all
workers of a long job read one commit even if the repository moves meanwhile; the manifest records
the pins (`hf_revisions`) and the pinned paths.
"""

from __future__ import annotations

import posixpath

from apache_beam.io.filesystem import (
    BeamIOError,
    CompressedFile,
    CompressionTypes,
    FileMetadata,
    FileSystem,
    MatchResult,
)

SCHEME = "hf"


def _fs():
    import fsspec

    return fsspec.filesystem(SCHEME)


def _strip(path: str) -> str:
    return path[len(SCHEME) + 3 :] if path.startswith(f"{SCHEME}://") else path


class HuggingFaceFileSystem(FileSystem):
    """Reads `hf://` files (match, open, size, exists); the write operations raise."""

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return posixpath.join(basepath, *(p.lstrip("/") for p in paths))

    def split(self, path):
        head, tail = posixpath.split(path)
        return head, tail

    def has_dirs(self):
        return True

    def match(self, patterns, limits=None):
        limits = limits or [None] * len(patterns)
        results, errors = [], {}
        for pattern, limit in zip(patterns, limits):
            try:
                infos = _fs().glob(_strip(pattern), detail=True)
                files = [
                    FileMetadata(f"{SCHEME}://{p}", info.get("size") or 0)
                    for p, info in sorted(infos.items())
                    if info.get("type") == "file"
                ]
                results.append(MatchResult(pattern, files[:limit] if limit else files))
            except Exception as e:  # noqa: BLE001 (the HTTP client's errors are not OSErrors)
                errors[pattern] = e
        if errors:
            raise BeamIOError("Match operation failed", errors)
        return results

    def _list(self, dir_or_prefix):
        for path, info in _fs().find(_strip(dir_or_prefix), detail=True).items():
            yield FileMetadata(f"{SCHEME}://{path}", info.get("size") or 0)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        raw = _fs().open(_strip(path), "rb")
        compression_type = self._get_compression_type(path, compression_type)
        return raw if compression_type == CompressionTypes.UNCOMPRESSED else CompressedFile(raw, compression_type)

    def exists(self, path):
        return _fs().exists(_strip(path))

    def size(self, path):
        return _fs().size(_strip(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path))

    def last_updated(self, path):
        raise BeamIOError("last_updated is not supported for hf:// paths")

    def checksum(self, path):
        return str(self.size(path))

    def _read_only(self, *_args, **_kwargs):
        raise BeamIOError("hf:// is read-only in this job: write outputs to a local or gs:// directory")

    create = mkdirs = copy = rename = delete = _read_only


def pin_revisions(files: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(files with each hf:// path's revision replaced by its commit, {"hf://REPO[@REVISION]": commit});
    other paths unchanged. One lookup per repository and revision; a failure is a UserError naming
    the path."""
    if not any(p.startswith(f"{SCHEME}://") for paths in files.values() for p in paths):
        return files, {}
    from huggingface_hub import HfApi, constants

    from pipeline.user_errors import UserError

    fs = _fs()
    commits: dict[tuple, str] = {}
    pins: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for name, paths in files.items():
        out[name] = []
        for path in paths:
            if not path.startswith(f"{SCHEME}://"):
                out[name].append(path)
                continue
            try:
                r = fs.resolve_path(_strip(path))
                key = (r.repo_type, r.repo_id, r.revision)
                if key not in commits:
                    commits[key] = (
                        HfApi(endpoint=fs.endpoint).repo_info(r.repo_id, revision=r.revision, repo_type=r.repo_type).sha
                    )
            except Exception as e:  # noqa: BLE001 (the HTTP client's errors are not OSErrors)
                raise UserError(
                    f"corpus {name!r}: cannot resolve the revision of {path}: {type(e).__name__}: {str(e)[:300]}"
                ) from None
            pins[f"{SCHEME}://{r.root}"] = commits[key]  # as the user wrote it: repository[@revision]
            repo = f"{SCHEME}://{constants.REPO_TYPES_URL_PREFIXES.get(r.repo_type, '')}{r.repo_id}"
            out[name].append(f"{repo}@{commits[key]}" + (f"/{r.path_in_repo}" if r.path_in_repo else ""))
    return out, pins
