"""Size limits: the upload limit, and how far an Office file may unpack (zip bombs)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ingest.errors import CorruptDocument, EmptyDocument, TooLarge

# Office files are ZIP archives; this bounds what one may unpack to (zip bombs).
_MAX_UNPACK_RATIO = 20


def _mib(size: int) -> str:
    if size < 1_048_576:
        return f"{max(size // 1024, 1)} KiB"
    return f"{size / 1_048_576:.1f} MiB" if size < 10 * 1_048_576 else f"{size // 1_048_576} MiB"


def check_file_size(path: Path, max_bytes: int) -> None:
    """Refuse a file that cannot be read, is over the upload limit, or is empty."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise CorruptDocument(
            "The uploaded file could not be read from disk. Upload it again."
        ) from exc
    if size > max_bytes:
        raise TooLarge(
            f"The file is {_mib(size)}, over the upload limit of {_mib(max_bytes)} "
            "(setting `ingest.max_upload_mb`). Split the document or ask an admin to raise "
            "the limit."
        )
    if size == 0:
        raise EmptyDocument("The file is empty (0 bytes). Upload a file that has content.")


def check_unpacked_size(path: Path, max_bytes: int) -> None:
    """Refuse Office files that unpack to far more than the upload limit (zip bombs)."""
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    limit = max_bytes * _MAX_UNPACK_RATIO
    if unpacked > limit:
        raise TooLarge(
            f"The file unpacks to {_mib(unpacked)}, more than {_MAX_UNPACK_RATIO} times the "
            f"upload limit of {_mib(max_bytes)} (setting `ingest.max_upload_mb`). "
            "Split the document or ask an admin to raise the limit."
        )
