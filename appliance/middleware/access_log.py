"""The HTTP access log without query strings: they carry what people search for.

uvicorn logs each request on the ``uvicorn.access`` logger as ``(client, method, path with
query string, HTTP version, status)``. A filter on that logger drops everything from the
``?`` on before any handler formats the line, whatever log configuration uvicorn applies
afterwards (``logging.config.dictConfig`` replaces a logger's handlers, not its filters).
The path itself is kept: it holds ids, never names or text.
"""

from __future__ import annotations

import logging

ACCESS_LOGGER = "uvicorn.access"


def _without_query(value: object) -> object:
    if isinstance(value, str) and "?" in value:
        return value.split("?", 1)[0]
    return value


class StripQueryStrings(logging.Filter):
    """Remove the query string from every argument (and the message) of an access record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drop it."""
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _without_query(arg) for key, arg in record.args.items()}
        if not record.args and isinstance(record.msg, str) and "?" in record.msg:
            record.msg = " ".join(str(_without_query(word)) for word in record.msg.split(" "))
        return True


def install() -> None:
    """Put the filter on uvicorn's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, StripQueryStrings) for f in logger.filters):
        logger.addFilter(StripQueryStrings())
