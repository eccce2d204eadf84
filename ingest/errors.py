"""Why a document could not be ingested: one tree, each error with a reason for a person.

    IngestError                 ingest_failed       base; also a broken parser installation,
                                                    LibreOffice missing (converter_unavailable)
    ├── UnsupportedType         unsupported_type    says which types are supported
    ├── EmptyDocument           empty               empty file, or no text at all
    ├── CorruptDocument         corrupt             a library could not read the file
    ├── PasswordProtected       password_protected  remove the password and upload again
    ├── TooLarge                too_large           over `ingest.max_upload_mb`
    └── NeedsOCR                needs_ocr           scanned pages and no usable tesseract

``reason`` is shown to the user: what happened and what to do. ``code`` is for machines.
Library exceptions are translated at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class IngestError(Exception):
    """A document could not be turned into text; ``reason`` tells a person why and what to do."""

    code: str = "ingest_failed"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code


class UnsupportedType(IngestError):
    """The file type is not one the appliance reads."""

    code = "unsupported_type"


class EmptyDocument(IngestError):
    """The file is empty or holds no text at all."""

    code = "empty"


class CorruptDocument(IngestError):
    """The file is damaged, or is not what its name says."""

    code = "corrupt"


class PasswordProtected(IngestError):
    """The file is encrypted with a password."""

    code = "password_protected"


class TooLarge(IngestError):
    """The file (or what it unpacks to) is over the configured limit."""

    code = "too_large"


class NeedsOCR(IngestError):
    """The document is scanned images and OCR is unavailable, switched off or failing."""

    code = "needs_ocr"
