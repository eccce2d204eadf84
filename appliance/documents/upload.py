"""Receive a multipart upload as a stream, straight into a private directory, with a limit.

Starlette's own form parser spools every file part over 1 MiB into the system temp
directory, in plaintext, before the route can look at its size; with chunked transfer (no
Content-Length) it would also take a 2 GB body in full before refusing it. Here the body is
fed to python-multipart's streaming parser chunk by chunk: the file part goes only to
`dest` (a 0700 directory the caller made, in memory when /dev/shm is there), and the
request is refused the moment the file passes the limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from appliance.core.errors import InvalidInput

MAX_FIELD_BYTES = 4096
_NOT_MULTIPART = "Send the upload as multipart/form-data with the file in the field 'file'."


@dataclass
class Received:
    """What arrived: the file (in the caller's directory), its name, and the text fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, list[str]]


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    is_file: bool = False
    text: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart callbacks: route each part to the file or to a small text field."""

    def __init__(self, dest: Path, *, limit: int, max_fields: int, too_large: Exception) -> None:
        self.dest = dest
        self.limit = limit
        self.max_fields = max_fields
        self.too_large = too_large
        self.path: Path | None = None
        self.filename = "upload"
        self.size = 0
        self.fields: dict[str, list[str]] = {}
        self.part = _Part()
        self._field_name = b""
        self._value = b""
        self._out: BinaryIO | None = None
        self._count = 0
        self.ended = False  # the closing boundary arrived: the body is complete
        self.error: Exception | None = None

    # -- headers of a part
    def on_part_begin(self) -> None:
        self.part = _Part()
        self._count += 1
        if self._count > self.max_fields + 1:
            self.error = InvalidInput(f"An upload has at most {self.max_fields + 1} fields.")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self._field_name.lower()] = self._value
        self._field_name, self._value = b"", b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self.part.headers.get(b"content-disposition", b"")
        )
        if disposition != b"form-data" or b"name" not in options:
            self.error = InvalidInput(_NOT_MULTIPART)
            return
        self.part.name = options[b"name"].decode("utf-8", errors="replace")
        if self.part.name == "file":
            if self.path is not None:
                self.error = InvalidInput("Send one file per upload.")
                return
            raw = options.get(b"filename", b"upload")
            self.filename = raw.decode("utf-8", errors="replace")
            self.path = self.dest / "upload"
            self._out = self.path.open("xb")
            self.part.is_file = True

    # -- body of a part
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.error is not None:
            return
        if self._out is not None:
            self.size += end - start
            if self.size > self.limit:
                self.error = self.too_large
                return
            self._out.write(data[start:end])
        else:
            self.part.text += data[start:end]
            if len(self.part.text) > MAX_FIELD_BYTES:
                self.error = InvalidInput(
                    f"The field {self.part.name!r} is over {MAX_FIELD_BYTES} bytes."
                )

    def on_part_end(self) -> None:
        if self.part.is_file:
            self.close()
        elif self.error is None:
            try:
                value = self.part.text.decode("utf-8")
            except UnicodeDecodeError:
                self.error = InvalidInput(f"The field {self.part.name!r} is not UTF-8 text.")
                return
            self.fields.setdefault(self.part.name, []).append(value)

    def on_end(self) -> None:
        self.ended = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive(
    content_type: str,
    body: AsyncIterator[bytes],
    *,
    dest: Path,
    limit: int,
    max_fields: int,
    too_large: Exception,
) -> Received:
    """Parse a multipart body; the file lands in `dest`; refuse at once past `limit` bytes."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidInput(_NOT_MULTIPART)
    collector = _Collector(dest, limit=limit, max_fields=max_fields, too_large=too_large)
    callbacks = {
        name: getattr(collector, name)
        for name in (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
    }
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in body:
            parser.write(chunk)
            if collector.error is not None:
                raise collector.error
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidInput(f"The upload is not valid multipart/form-data ({exc}).") from exc
    finally:
        collector.close()
    if collector.error is not None:
        raise collector.error
    if not collector.ended:
        raise InvalidInput(
            "The upload was cut off before its end (no closing multipart boundary); "
            "send the file again."
        )
    if collector.path is None:
        raise InvalidInput("Send the file as the multipart field 'file'.")
    return Received(collector.path, collector.filename, collector.size, collector.fields)
