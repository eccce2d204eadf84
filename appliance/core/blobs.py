"""The blob store: encrypted original files under <data_dir>/blobs, one file per document."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


class BlobStore:
    """Stores opaque (already encrypted) bytes by document id."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, doc_id: str) -> Path:
        if not doc_id.isalnum():
            raise ValueError(f"unsafe blob id {doc_id!r}")
        return self.root / doc_id[:2] / doc_id

    def put(self, doc_id: str, data: bytes) -> None:
        """Write atomically (tmp + fsync + rename)."""
        path = self._path(doc_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{doc_id}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def get(self, doc_id: str) -> bytes:
        """Read a blob; FileNotFoundError when absent."""
        return self._path(doc_id).read_bytes()

    def exists(self, doc_id: str) -> bool:
        """Whether a blob is stored."""
        return self._path(doc_id).exists()

    def delete(self, doc_id: str) -> None:
        """Remove a blob (idempotent)."""
        self._path(doc_id).unlink(missing_ok=True)

    def ids(self) -> set[str]:
        """Every stored blob id (for the orphan cleanup)."""
        if not self.root.exists():
            return set()
        return {p.name for p in self.root.glob("*/*") if p.is_file() and not p.name.startswith(".")}

    def mtime(self, doc_id: str) -> float:
        """When a blob was written (seconds since the epoch)."""
        return self._path(doc_id).stat().st_mtime

    def remove_stale_temp(self, *, older_than: float) -> int:
        """Delete temp files left by a crash mid-write (older than a cut-off time)."""
        count = 0
        if self.root.exists():
            for p in self.root.glob("*/.*.tmp"):
                if p.stat().st_mtime < older_than:
                    p.unlink(missing_ok=True)
                    count += 1
        return count
