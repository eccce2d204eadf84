"""Limits on reading one file: upload size, how far an Office file may unpack, time and memory.

The size checks run first and cost milliseconds. The time and memory limits in
``ParseLimits`` are enforced by ``ingest.parse.sandbox`` around the parser child process
(and by ``ingest.parse.libreoffice`` around LibreOffice); the reasons a file over one of
them fails with are here, for both.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from ingest.errors import CorruptDocument, EmptyDocument, TooLarge

MIB = 1_048_576


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Hard limits on reading one file; the defaults are the `ingest` settings' defaults.

    Measured on this 2-core machine (see README, "Limits on reading a file"): real Office
    files unpack to 2-25x their size, repetitive ones (one form row repeated, constant
    cells) to 50x; a 1000-page PDF takes about 40 s of CPU, a 100,000-row sheet 20 s, and
    the idle parser process maps about 0.95 GiB that the memory limit comes on top of.
    """

    timeout_seconds: float = 600.0  # wall clock per file, killed by the parent
    cpu_seconds: int = 120  # RLIMIT_CPU per file in the child
    memory_mb: int = 2048  # RLIMIT_AS per file, on top of what the idle child maps
    max_unpack_ratio: int = 100  # an Office file may unpack to this many times its size...
    unpack_floor_mb: int = 16  # ...or to this much, whichever is more

    def unpack_limit(self, size: int) -> int:
        """How many bytes an Office file of `size` bytes may unpack to."""
        return max(self.max_unpack_ratio * size, self.unpack_floor_mb * MIB)


def _seconds(value: float) -> str:
    if value >= 120 and value % 60 == 0:
        return f"{int(value // 60)} minutes"
    return f"{value:g} seconds" if value != 1 else "1 second"


def timeout_reason(limits: ParseLimits) -> str:
    """Why a file that ran past the wall-clock limit failed, and what to do."""
    return (
        f"Reading this file took longer than {_seconds(limits.timeout_seconds)}, the limit "
        "per file (setting `ingest.parse_timeout_seconds`), so it was stopped. Very long "
        "documents and long scans can take this long: split the file into smaller parts and "
        "upload those, or ask an admin to raise the limit. A small file that takes this long "
        "may have been built to overload the server."
    )


def cpu_reason(limits: ParseLimits) -> str:
    """Why a file that used more than its CPU time failed, and what to do."""
    return (
        f"Reading this file needed more than {_seconds(limits.cpu_seconds)} of processor "
        "time, the limit per file (setting `ingest.parse_cpu_seconds`), so it was stopped. "
        "Split the file into smaller parts and upload those, or ask an admin to raise the "
        "limit. A small file that needs this much may have been built to overload the server."
    )


def memory_reason(limits: ParseLimits) -> str:
    """Why a file that needed more than its memory failed, and what to do."""
    return (
        f"Reading this file needed more than {limits.memory_mb} MiB of memory, the limit "
        "per file (setting `ingest.parse_memory_mb`), so it was stopped. Split the file into "
        "smaller parts (or save it again without embedded objects) and upload those, or ask "
        "an admin to raise the limit."
    )


def mib(size: int) -> str:
    """A size for a person: KiB below 1 MiB, MiB with one decimal below 10 MiB."""
    if size < MIB:
        return f"{max(size // 1024, 1)} KiB"
    return f"{size / MIB:.1f} MiB" if size < 10 * MIB else f"{size // MIB} MiB"


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
            f"The file is {mib(size)}, over the upload limit of {mib(max_bytes)} "
            "(setting `ingest.max_upload_mb`). Split the document or ask an admin to raise "
            "the limit."
        )
    if size == 0:
        raise EmptyDocument("The file is empty (0 bytes). Upload a file that has content.")


def check_unpacked_size(path: Path, limits: ParseLimits) -> None:
    """Refuse an Office file that unpacks to far more than its own size (a zip bomb).

    The sizes are the ones the archive declares. They are an upper bound on what any
    parser here inflates: Python's zipfile stops reading a part at its declared size (and
    fails on the checksum), so a part that understates its size cannot inflate further.
    """
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    limit = limits.unpack_limit(size)
    if unpacked > limit:
        raise TooLarge(
            f"The file is {mib(size)} but unpacks to {mib(unpacked)} "
            f"({unpacked // max(size, 1)} times its size). An Office file may unpack to at "
            f"most {limits.max_unpack_ratio} times its size, or {mib(limits.unpack_floor_mb * MIB)}"
            " if that is more (settings `ingest.max_unpack_ratio` and "
            "`ingest.unpack_floor_mb`), because files built to unpack enormously (zip bombs) "
            "exhaust the server. If this is a genuine document, open it, save it again or "
            "export it as PDF, and upload that; or ask an admin to raise the limit."
        )
