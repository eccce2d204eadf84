"""The classification vocabulary of documents: one enum, used by every domain and setting."""

from __future__ import annotations

from enum import StrEnum

from appliance.core.errors import InvalidInput


class Classification(StrEnum):
    """How sensitive a document is; drives retention and separation of duties."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    PERSONAL = "personal"


CLASSIFICATIONS: tuple[str, ...] = tuple(c.value for c in Classification)
"""The names, least sensitive first."""

SENSITIVE: frozenset[str] = frozenset({Classification.CONFIDENTIAL, Classification.PERSONAL})
"""Classifications an admin may not read without a second admin's approval (invariant 4)."""


def check_classification(value: str) -> Classification:
    """The classification named ``value``, or InvalidInput that lists the valid names."""
    try:
        return Classification(value)
    except ValueError:
        raise InvalidInput(
            f"Classification is one of {', '.join(CLASSIFICATIONS)}, not {value!r}."
        ) from None
