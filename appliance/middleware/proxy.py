"""Forwarded client addresses and schemes, believed only from the configured proxies.

A reverse proxy tells the service who its client is (``X-Forwarded-For``) and whether the
browser used HTTPS (``X-Forwarded-Proto``). Anyone can send those headers, so they are
honoured only when the request's direct peer is listed in ``server.trusted_proxies`` (by
default nobody): otherwise a local process, or anyone who reaches the port, could pick the
address that throttling, the session list and the audit log record. With a trusted peer
the client is the right-most address in ``X-Forwarded-For`` that is not itself a trusted
proxy (nginx's ``$proxy_add_x_forwarded_for`` appends the address it saw, so whatever a
client wrote in the header itself lies further left and is passed over). The parsing is
uvicorn's `ProxyHeadersMiddleware`; this module decides whom it believes.

`appliance serve` must start uvicorn with ``proxy_headers=False``: uvicorn's own copy of
that middleware believes 127.0.0.1 (or ``$FORWARDED_ALLOW_IPS``) whatever this setting says,
and rewrites the address before the app can see the real peer.
"""

from __future__ import annotations

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from appliance.core.config import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Believe forwarded headers from ``server.trusted_proxies`` only; add this outermost."""
    trusted = list(settings.server.trusted_proxies)
    if trusted:  # with nobody trusted the headers are simply never read
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
