"""The appliance's errors: one tree, each class mapped to one HTTP status.

    ApplianceError                      500  (never raised bare)
    ├── UnsafeConfiguration             500  refuse to start; the message says the fix
    ├── NotAuthenticated                401  no valid session or API token
    │   └── SignInFailed                401  a sign-in step failed (never says which part)
    ├── NotFound                        404  also what a caller without `read` gets
    ├── PermissionDenied                403
    ├── InvalidInput                    422
    │   └── Duplicate                   409
    ├── PayloadTooLarge                 413
    ├── QueueFull                       429  the user has as many questions waiting as allowed
    ├── ModelUnavailable                503  model file missing, unverified or failing
    ├── IndexUnavailable                503  vector engine failing
    ├── Maintenance                     503  an admin paused answering (kill switch)
    ├── ReadOnly                        503  an admin put the appliance read-only
    ├── CryptoError                     500  a ciphertext that will not open: names the object
    │   └── KeyMissing                  500  its data key was deleted (crypto-shredded)
    ├── IngestFailed                    422  a document could not be ingested (the reason)
    └── LeaseLost                       409  a job run outlived its lease; another took over

The libraries below the appliance keep their own roots, because ``models`` and ``ingest``
import nothing of ours; `LIBRARY_ERRORS` is the one table that maps them into this tree
(`translate`), and the service installs one handler per library root that uses it, so
none of them reaches a user as a bare 500:

    models.protocols.ModelError    ->  ModelUnavailable
    ingest.index.VectorIndexError  ->  IndexUnavailable
    ingest.errors.IngestError      ->  IngestFailed   (its ``reason`` is the message)

Adapters translate library exceptions at the boundary with ``raise ... from exc``; every
message tells a person what went wrong and what to do.
"""

from __future__ import annotations

from collections.abc import Callable

from ingest.errors import IngestError
from ingest.index import VectorIndexError
from models.protocols import ModelError

GENERIC_SIGN_IN_FAILURE = (
    "Sign-in failed. Check the username, password and code. After several failures, "
    "wait a few minutes or ask an admin to unlock the account."
)
"""What every failed sign-in step says (it never reveals which part was wrong)."""


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


class NotAuthenticated(ApplianceError):
    """No valid session or API token came with the request."""

    status_code = 401
    code = "not_authenticated"


class SignInFailed(NotAuthenticated):
    """A sign-in step failed; the message never says which part was wrong."""

    code = "sign_in_failed"

    def __init__(self, message: str = GENERIC_SIGN_IN_FAILURE) -> None:
        super().__init__(message)


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


class QueueFull(ApplianceError):
    """The user already has as many questions waiting as allowed."""

    status_code = 429
    code = "queue_full"


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


class LeaseLost(ApplianceError):
    """Another process holds the lease now: the job must stop where it is."""

    status_code = 409
    code = "lease_lost"


def _ingest_failed(exc: Exception) -> ApplianceError:
    return IngestFailed(exc.reason if isinstance(exc, IngestError) else str(exc))


LIBRARY_ERRORS: dict[type[Exception], Callable[[Exception], ApplianceError]] = {
    ModelError: lambda exc: ModelUnavailable(str(exc)),
    VectorIndexError: lambda exc: IndexUnavailable(
        f"The search index failed: {exc}. Try again; if it persists, an admin should check "
        "`appliance index stats` and the service log."
    ),
    IngestError: _ingest_failed,
}
"""Library error root -> how it becomes an `ApplianceError` (the one translation table)."""


def translate(exc: Exception) -> ApplianceError:
    """The appliance error for a library exception (itself if it is one of ours already)."""
    if isinstance(exc, ApplianceError):
        return exc
    for root, make in LIBRARY_ERRORS.items():
        if isinstance(exc, root):
            return make(exc)
    raise TypeError(f"{type(exc).__name__} has no entry in LIBRARY_ERRORS") from exc
