"""Where a price stream connects, and with which credentials. No I/O.

The URL becomes host, port and resource (seed 003's path when it names none). The token
goes in the upgrade's ``Authorization: Bearer`` header, the form the gateway prefers for
programs (README "Running it in public"); an ``access_token`` in the URL works too, and is
masked wherever the URL is shown.
"""

from __future__ import annotations

import re
import urllib.parse

import attrs

from ..access import redact

PRICES_PATH = "/api/v2/realtime/ws/prices"  # used when the URL names no path
# A header value may not hold spaces or line breaks (they would split the request);
# JWTs are base64url and dots. The bound keeps a mistake from becoming a huge request.
TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")


@attrs.frozen
class Address:
    """The gateway's price-stream endpoint."""

    host: str
    port: int
    resource: str  # path and query
    tls: bool
    public_url: str  # the URL with any access_token masked: safe to show and log

    @classmethod
    def from_url(cls, url: str) -> Address:
        """``ws://host[:port][/path][?query]`` or ``wss://…``.

        Raises:
            ValueError: not a ws:// or wss:// URL with a host.
        """
        parts = urllib.parse.urlsplit(url)
        public = urllib.parse.urlunsplit(parts._replace(query=redact(parts.query)))
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL with a host: {public!r}")
        tls = parts.scheme == "wss"
        resource = parts.path if parts.path not in ("", "/") else PRICES_PATH
        if parts.query:
            resource += "?" + parts.query
        return cls(parts.hostname, parts.port or (443 if tls else 80), resource, tls, public)

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"


def bearer_header(token: str | None) -> list[tuple[bytes, bytes]]:
    """The upgrade's extra headers for ``token`` (none without one).

    Raises:
        ValueError: the token cannot be a header value (the message does not show it).
    """
    if token is None:
        return []
    if not TOKEN.fullmatch(token):
        raise ValueError("the token must be 1 to 8192 visible ASCII characters, no spaces")
    return [(b"Authorization", f"Bearer {token}".encode())]
