"""The exceptions trio_stock raises.

Everything the package raises on purpose derives from :class:`TrioStockError`::

    TrioStockError
    ├── ConfigError          a setting is unknown or malformed (raised at start-up)
    ├── InvalidSymbol        a symbol is neither a 6-digit Korean code nor a US ticker
    ├── SubscriberTooSlow    a lossless subscriber fell behind its bound and was cut off
    └── UpstreamError        a provider's session failed
        ├── AuthFailed       the provider refused the credentials; retrying will not help
        ├── SessionRefused   refused for now, retry later (upstream/session.py)
        ├── MalformedFrame   one inbound frame unparseable; skipped (upstream/session.py)
        └── WebSocketClosed  the upstream WebSocket closed, with its code (upstream/wsclient.py)

Errors of dependencies (trio-websocket, httpx, cattrs) are translated into these at the
boundary, the way httpx maps httpcore's errors.
"""

from __future__ import annotations


class TrioStockError(Exception):
    """Root of every error trio_stock raises on purpose."""


class ConfigError(TrioStockError):
    """A configuration value is unknown or malformed."""


class InvalidSymbol(TrioStockError, ValueError):
    """A symbol is neither a 6-digit Korean code nor a US ticker."""

    def __init__(self, raw: object) -> None:
        super().__init__(f"invalid symbol: {raw!r}")
        self.raw = raw


class SubscriberTooSlow(TrioStockError):
    """A lossless subscriber's bounded queue overflowed; its stream has ended."""


class UpstreamError(TrioStockError):
    """An upstream provider session failed (connect, protocol or server error)."""


class AuthFailed(UpstreamError):
    """The provider rejected the credentials. Permanent until the configuration changes."""
