"""The appliance's errors, one tree, each mapped to one HTTP status.

    ApplianceError                      500  (never raised bare)
    ├── UnsafeConfiguration             500  refuse to start; the message says the fix
    ├── NotFound                        404  also what a caller without `read` gets
    ├── PermissionDenied                403
    ├── InvalidInput                    422
    │   └── Duplicate                   409
    ├── PayloadTooLarge                 413
    ├── ModelUnavailable                503  model file missing, unverified or failing
    ├── IndexUnavailable                503  vector engine failing
    ├── Maintenance                     503  an admin paused answering (kill switch)
    ├── ReadOnly                        503  an admin put the appliance read-only
    ├── CryptoError                     500  a ciphertext that will not open: names the object
    │   └── KeyMissing                  500  its data key was deleted (crypto-shredded)
    ├── IngestFailed                    422  wraps ingest.errors.IngestError for a caller
    └── LeaseLost (jobs.leases)         409  a job run outlived its lease; another took over

Library exceptions are translated at the boundary with ``raise ... from exc``; every
message tells a person what went wrong and what to do.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""

    status_code = 500
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsafeConfiguration(ApplianceError):
    """The configuration is unsafe or incomplete; the service refuses to start."""

    code = "unsafe_configuration"


class NotFound(ApplianceError):
    """The thing does not exist, or the caller may not know that it does."""

    status_code = 404
    code = "not_found"


class PermissionDenied(ApplianceError):
    """The caller is known but lacks the permission."""

    status_code = 403
    code = "permission_denied"


class InvalidInput(ApplianceError):
    """The request is malformed or names something impossible."""

    status_code = 422
    code = "invalid_input"


class Duplicate(InvalidInput):
    """The same content or name exists already."""

    status_code = 409
    code = "duplicate"


class PayloadTooLarge(ApplianceError):
    """An upload is over the configured limit."""

    status_code = 413
    code = "too_large"


class ModelUnavailable(ApplianceError):
    """A model cannot be used: missing, unverified, or failing to load."""

    status_code = 503
    code = "model_unavailable"


class IndexUnavailable(ApplianceError):
    """The vector engine failed."""

    status_code = 503
    code = "index_unavailable"


class Maintenance(ApplianceError):
    """An admin paused this part of the appliance (answering questions) for maintenance."""

    status_code = 503
    code = "maintenance"


class ReadOnly(ApplianceError):
    """An admin put the appliance in read-only mode: nothing may change."""

    status_code = 503
    code = "read_only"


class CryptoError(ApplianceError):
    """A ciphertext failed to decrypt or a key failed to unwrap."""

    code = "crypto_error"


class KeyMissing(CryptoError):
    """The data key of an object is gone (it was crypto-shredded, or the key store is lost)."""

    code = "key_missing"


class IngestFailed(ApplianceError):
    """A document could not be ingested; the message is the reason for a person."""

    status_code = 422
    code = "ingest_failed"
