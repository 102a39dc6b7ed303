"""A directory on the local disk or an object store, with atomic writes: the I/O under a sweep dir.

Locations are local paths, ``file://`` URIs, ``s3://bucket/key`` (S3 and S3-compatible stores:
the endpoint and credentials come from the environment) or any other ``pyarrow.fs`` URI.

No reader ever sees a half-written file: locally a file is written to a hidden temporary name in
the same directory, flushed, fsynced and renamed over its final name; on object stores the fully
serialised bytes go up in one PUT, which S3 makes visible only once complete. Listings skip names
starting with ``.`` or ``_`` (temporary files).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from sweeper.errors import InputError


def _resolve_s3(uri: str) -> tuple[pafs.FileSystem, str]:
    """An S3FileSystem for ``s3://bucket/key`` with the endpoint override and credentials taken
    from the environment (S3-compatible stores such as MinIO, moto, R2)."""
    parsed = urlparse(uri)
    path = (parsed.netloc + parsed.path).rstrip("/")
    endpoint = (
        os.environ.get("SWEEPER_S3_ENDPOINT")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    kwargs: dict[str, Any] = {
        # An explicit region avoids a network round trip to discover the bucket's region.
        "region": os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    }
    if endpoint:
        ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = ep.netloc
        kwargs["scheme"] = ep.scheme or "https"
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs), path


def _resolve(uri: str) -> tuple[pafs.FileSystem | None, str, str]:
    """(file system or None for local, path within it, canonical uri)."""
    if uri.startswith("file://"):
        local = Path(urlparse(uri).path)
        local = local.resolve()
        return None, str(local), str(local)
    if "://" not in uri:
        local = Path(uri).expanduser().resolve()
        return None, str(local), str(local)
    if uri.startswith("s3://"):
        fs, path = _resolve_s3(uri)
        return fs, path, "s3://" + path
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, ValueError) as err:
        raise InputError(f"{uri}: unsupported storage URI ({err})") from err
    return fs, path.rstrip("/"), uri.rstrip("/")


class StorageDir:
    """One directory, local (``fs`` None) or in a ``pyarrow`` file system; binds without
    checking that it exists."""

    def __init__(self, uri: str) -> None:
        self._fs, self._root, self.uri = _resolve(str(uri))

    @property
    def is_local(self) -> bool:
        """True when the directory is on the local file system."""
        return self._fs is None

    def path(self, rel: str = "") -> str:
        """The absolute local path or URI of ``rel`` inside the sweep dir."""
        if self._fs is None:
            return str(Path(self._root, rel)) if rel else self._root
        base = self.uri
        return f"{base}/{rel}" if rel else base

    def _p(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def _mkdir(self, rel: str) -> None:
        if self._fs is None:
            Path(self._p(rel)).mkdir(parents=True, exist_ok=True)
        else:
            # Object stores have no directories; create_dir is a no-op or a marker there.
            with contextlib.suppress(OSError):
                self._fs.create_dir(self._p(rel), recursive=True)

    def _isdir(self, rel: str) -> bool:
        if self._fs is None:
            return Path(self._p(rel)).is_dir()
        info = self._fs.get_file_info(self._p(rel))
        return info.type == pafs.FileType.Directory

    def _nonempty(self) -> bool:
        if self._fs is None:
            root = Path(self._root)
            if root.exists() and not root.is_dir():
                raise InputError(f"{self.uri}: exists and is not a directory")
            return root.is_dir() and any(root.iterdir())
        sel = pafs.FileSelector(self._root, allow_not_found=True, recursive=True)
        return any(i.type == pafs.FileType.File for i in self._fs.get_file_info(sel))

    def exists(self, rel: str) -> bool:
        """Whether the file ``rel`` exists in the sweep dir."""
        if self._fs is None:
            return Path(self._p(rel)).is_file()
        return self._fs.get_file_info(self._p(rel)).type == pafs.FileType.File

    def _listdir(self, rel: str) -> list[str]:
        """Visible file names in ``rel`` (hidden and temp names skipped), sorted."""
        if self._fs is None:
            d = Path(self._p(rel))
            names = [p.name for p in d.iterdir() if p.is_file()] if d.is_dir() else []
        else:
            sel = pafs.FileSelector(self._p(rel), allow_not_found=True)
            names = [
                i.base_name for i in self._fs.get_file_info(sel) if i.type == pafs.FileType.File
            ]
        return sorted(n for n in names if not n.startswith((".", "_")))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Atomically write ``data`` to ``rel`` (temp file + rename locally, one PUT on object
        stores); returns the file's path or URI."""
        target = self._p(rel)
        if self._fs is not None:
            parent = target.rsplit("/", 1)[0]
            with contextlib.suppress(OSError):
                self._fs.create_dir(parent, recursive=True)
            with self._fs.open_output_stream(target) as out:
                out.write(data)
            return self.path(rel)
        dst = Path(target)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp-{uuid.uuid4().hex[:12]}")
        try:
            _write_file(tmp, data)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return str(dst)

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of ``rel``; FileNotFoundError if absent."""
        if self._fs is None:
            return Path(self._p(rel)).read_bytes()
        try:
            with self._fs.open_input_stream(self._p(rel)) as f:
                return bytes(f.read())
        except OSError as err:
            if not self.exists(rel):
                raise FileNotFoundError(self.path(rel)) from err
            raise

    def remove(self, rel: str) -> None:
        """Delete the file ``rel`` (gone already: nothing to do)."""
        with contextlib.suppress(FileNotFoundError):
            if self._fs is None:
                Path(self._p(rel)).unlink()
            else:
                self._fs.delete_file(self._p(rel))

    def remove_temp_files(self, rel: str, name: str = "*") -> int:
        """Delete the hidden temp files of ``name`` that killed atomic writes left in the
        directory ``rel`` (local dirs only: object stores have none; for a file's one writer);
        returns how many."""
        d = Path(self._p(rel))
        if self._fs is not None or not d.is_dir():
            return 0
        count = 0
        for path in d.glob(f".{name}.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                count += 1
        return count

    def remove_tree(self) -> None:
        """Delete this directory and everything in it (a new sweep that failed to start)."""
        if self._fs is None:
            import shutil

            shutil.rmtree(self._root, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._fs.delete_dir(self._root)

    def write_text(self, rel: str, text: str) -> str:
        """Atomically write UTF-8 text to ``rel``; returns its path or URI."""
        return self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        """UTF-8 text of ``rel``."""
        return self.read_bytes(rel).decode()


def _write_file(path: Path, data: bytes) -> None:
    """Write and fsync ``data`` to ``path`` (the temp file of an atomic write)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
