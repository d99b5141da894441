"""Small fsspec helpers: resolve a store path or URL, atomic single-object writes.

Local paths get the strong guarantees (temp name + fsync + os.replace / os.rename);
object stores get them from single-object PUTs (an index part is one object).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


def resolve(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """(filesystem, root) for a local path or an fsspec URL such as s3://bucket/store."""
    fs, root = fsspec.core.url_to_fs(os.fspath(path))
    if is_local(fs):
        root = os.path.abspath(root)
    else:
        forget_listings(fs)
    return fs, root.rstrip("/")


def forget_listings(fs: Any) -> None:
    """Drop the listings an object-store filesystem caches per process (s3fs keeps every
    listing it made): another process may have committed shards since, and a stale listing
    would hide their data files (open, verify and Store.refresh() call this)."""
    if not is_local(fs):
        fs.invalidate_cache()


def is_local(fs: Any) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def token() -> str:
    """A short unique name part, so concurrent or repeated writers never collide."""
    return uuid.uuid4().hex[:12]


def write_then_rename(path: str, write: Callable[[str], None]) -> None:
    """Local: ``write(tmp)`` a file or a directory tree under a temp name next to ``path``,
    then rename it into place, so a reader sees all of it or nothing (POSIX rename)."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".tmp-{token()}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(parent)


def atomic_write_bytes(fs: Any, path: str, data: bytes) -> None:
    """Make ``path`` hold ``data`` in one step: readers see the old or the new, never half."""
    if is_local(fs):
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        write_then_rename(path, write)
    else:
        fs.pipe_file(path, data)


def fsync_dir(path: str) -> None:
    """Persist a rename in ``path`` (best effort; not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove(fs: Any, path: str) -> None:
    """Delete a file or a directory tree; a path that is already gone is fine."""
    try:
        if fs.isdir(path):
            fs.rm(path, recursive=True)
        elif fs.exists(path):
            fs.rm(path)
    except FileNotFoundError:
        pass


def size_on_disk(fs: Any, path: str) -> int:
    """Bytes under ``path`` (a file or a directory tree)."""
    if fs.isdir(path):
        return int(sum(fs.du(path, total=False).values()))
    return int(fs.size(path))


def pending_uploads(fs: Any, root: str) -> list[tuple[str, str, float]]:
    """S3 only: multipart uploads begun under ``root/shards/`` and never completed or
    aborted -- what a writer killed inside a large upload leaves (invisible as an object,
    but S3 keeps and bills the parts). (key relative to the bucket, upload id, unix time
    it began); [] on other filesystems."""
    if getattr(fs, "protocol", None) not in ("s3", ("s3", "s3a")) or not hasattr(fs, "call_s3"):
        return []
    bucket, _, prefix = root.partition("/")
    prefix = f"{prefix}/shards/" if prefix else "shards/"
    out, kwargs = [], {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = fs.call_s3("list_multipart_uploads", **kwargs)
        for u in page.get("Uploads", []):
            out.append((u["Key"], u["UploadId"], u["Initiated"].timestamp()))
        if not page.get("IsTruncated"):
            return out
        kwargs.update(KeyMarker=page["NextKeyMarker"],
                      UploadIdMarker=page["NextUploadIdMarker"])


def abort_upload(fs: Any, root: str, key: str, upload_id: str) -> None:
    """Abort one multipart upload (its parts are deleted by S3)."""
    fs.call_s3("abort_multipart_upload", Bucket=root.partition("/")[0], Key=key,
               UploadId=upload_id)


def newest_mtime(fs: Any, path: str) -> float:
    """Modification time of a file, or of the newest object under a prefix (an object
    store's "directory" has none of its own); 0.0 where the filesystem gives none."""
    try:
        if not is_local(fs) and fs.isdir(path):
            times = [_timestamp(fs.modified(p)) for p in fs.find(path)]
            return max(times, default=0.0)
        return _timestamp(fs.modified(path))
    except (NotImplementedError, FileNotFoundError, IsADirectoryError, AttributeError,
            ValueError):
        return 0.0


def _timestamp(m: Any) -> float:
    return m.timestamp() if hasattr(m, "timestamp") else float(m)
