"""Access control at the edge: which hosts and origins are served, and which token may do what.

Three checks, in the order a request meets them:

1. **Host** (every request): against DNS rebinding, where a page on ``evil.example``
   re-points its name at 127.0.0.1 to reach a local gateway. Bound to a loopback address,
   the gateway answers only ``localhost``, ``127.0.0.1`` and ``[::1]`` (any port) unless
   ``TRIO_STOCK_ALLOWED_HOSTS`` says otherwise (``*``: any); bound elsewhere, any host
   unless listed.
2. **Origin** (WebSocket upgrades and every non-GET request, when a browser sends one):
   against cross-site WebSocket hijacking and cross-site REST writes. Allowed: the
   gateway's own origin, loopback origins (a dev server on ``http://localhost:3000``), and
   whatever ``TRIO_STOCK_ALLOWED_ORIGINS`` lists — exact matches only, ``*`` for any,
   ``null`` (a page opened from a file) only when listed. Refused with 403 before the
   upgrade: a browser shows a refused upgrade only as 1006, but an origin it may not use
   is not a user's mistake to explain.
3. **Token** (``TRIO_STOCK_AUTH=jwt``): ``Authorization: Bearer``, or the
   ``access_token`` query parameter (RFC 6750 §2.3; browsers cannot set WebSocket
   headers), or in band after the upgrade (:mod:`trio_stock.endpoints.client`). REST
   answers 401 with ``WWW-Authenticate: Bearer`` or 403; WebSockets close with 4001,
   4003 or 4008 after the upgrade, where a browser can read the code and reason.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from .auth import ANONYMOUS, Grant, InvalidToken, TokenVerifier
from .config import AuthMode, Config
from .errors import ConfigError
from .transport.http import Request, RequestError

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
TOKEN_PARAMETER = "access_token"  # RFC 6750 §2.3


def is_loopback(host: str) -> bool:
    """True for a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config) -> None:
    """Refuse to serve strangers anonymously unless told to.

    Raises:
        ConfigError: a non-loopback address without ``--auth``, or ``jwt`` without exactly
            one key source.
    """
    if config.auth is None and not is_loopback(config.host):
        raise ConfigError(
            f"binding {config.host} without authentication: pass --auth jwt (with "
            "TRIO_STOCK_JWT_SECRET or TRIO_STOCK_JWT_KEY_FILE), or --auth none to serve "
            "anonymous clients on purpose (TRIO_STOCK_AUTH)"
        )
    one_key = (config.jwt_secret is None) != (config.jwt_key_file is None)
    if config.auth is AuthMode.JWT and not one_key:
        raise ConfigError(
            "--auth jwt needs exactly one of TRIO_STOCK_JWT_SECRET (HS256) and "
            "TRIO_STOCK_JWT_KEY_FILE (a public key or JWKS): never both"
        )
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("TLS needs both --tls-cert and --tls-key")


def build_verifier(config: Config) -> TokenVerifier | None:
    """The token verifier of ``--auth jwt``, or None when auth is off.

    Raises:
        ConfigError: the key source is unusable.
    """
    check_exposure(config)
    if config.auth is not AuthMode.JWT:
        return None
    options = {"audience": config.jwt_audience, "issuer": config.jwt_issuer}
    if config.jwt_secret is not None:
        return TokenVerifier.from_secret(config.jwt_secret, **options)
    assert config.jwt_key_file is not None
    return TokenVerifier.from_key_file(Path(config.jwt_key_file), **options)


class AccessPolicy:
    """The three checks of the module docs, and each subject's open WebSocket count.

    Args:
        config: The settings (hosts, origins, auth).
        verifier: The token verifier; None when auth is off.
        now: Epoch seconds (the hub's clock, so tests run on ``MockClock``).
        scheme: ``http`` or ``https``, for the gateway's own origin.
    """

    def __init__(
        self,
        config: Config,
        verifier: TokenVerifier | None,
        now: Callable[[], float],
        scheme: str = "http",
    ) -> None:
        self.verifier = verifier
        self.now = now
        self.scheme = scheme
        self._origins = frozenset(o.lower() for o in config.allowed_origins or ())
        if config.allowed_hosts is not None and "*" not in config.allowed_hosts:
            self._hosts: frozenset[str] | None = frozenset(
                h.lower().strip("[]") for h in config.allowed_hosts
            )
        elif config.allowed_hosts is not None:
            self._hosts = None  # "*": any host, said explicitly
        elif is_loopback(config.host):
            self._hosts = LOOPBACK_HOSTS
        else:
            self._hosts = None
        self.connections: Counter[str] = Counter()  # open WebSockets per token subject

    @property
    def enabled(self) -> bool:
        """True when every client needs a token."""
        return self.verifier is not None

    # ---- hosts and origins -------------------------------------------------------------

    def check_request(self, request: Request) -> RequestError | None:
        """The Host check for every request, and the Origin check where it applies."""
        host = request.headers.get("host", "")
        if self._hosts is not None and _hostname(host) not in self._hosts:
            return RequestError(403, "this host name is not served here (TRIO_STOCK_ALLOWED_HOSTS)")
        origin = request.headers.get("origin")
        guarded = request.is_websocket_upgrade or request.method not in ("GET", "HEAD")
        if origin is not None and guarded and not self.origin_allowed(origin, host):
            return RequestError(403, "origin not allowed (TRIO_STOCK_ALLOWED_ORIGINS)")
        return None

    def origin_allowed(self, origin: str, host: str) -> bool:
        """True for our own origin, a loopback origin, or one listed (exactly)."""
        origin = origin.strip().lower()
        if "*" in self._origins or origin in self._origins:
            return True
        if origin == "null":
            return False  # a file:// page or a sandbox: only when listed
        if origin == f"{self.scheme}://{host.lower()}":
            return True
        return _is_loopback_origin(origin)

    # ---- tokens ------------------------------------------------------------------------

    def token_of(self, request: Request) -> str | None:
        """The token a request brought: ``Authorization: Bearer`` first, else the query."""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        for key, value in parse_qsl(request.query, max_num_fields=32):
            if key == TOKEN_PARAMETER:
                return value
        return None

    def verify(self, token: str | None) -> Grant:
        """The grant of ``token`` (the anonymous grant when auth is off).

        Raises:
            InvalidToken: auth is on and the token is missing or not accepted.
        """
        if self.verifier is None:
            return ANONYMOUS
        if token is None:
            raise InvalidToken("authentication required: a bearer token")
        return self.verifier.verify(token, self.now())

    def authorize(self, request: Request, *, admin: bool) -> Grant | RequestError:
        """A REST request's grant, or its 401/403 answer."""
        try:
            grant = self.verify(self.token_of(request))
        except InvalidToken as exc:
            error = "invalid_token" if self.token_of(request) else "invalid_request"
            challenge = f'Bearer realm="trio_stock", error="{error}"'
            return RequestError(401, str(exc), (("www-authenticate", challenge),))
        if admin and not grant.admin:
            return RequestError(403, "this token has no 'admin' claim")
        return grant


def redact(query: str) -> str:
    """A query string fit for a log line: the token's value replaced."""
    if TOKEN_PARAMETER not in query:
        return query
    parts = query.split("&")
    return "&".join(
        f"{TOKEN_PARAMETER}=***" if p.split("=", 1)[0] == TOKEN_PARAMETER else p for p in parts
    )


def _hostname(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        _ = parts.port  # a malformed port raises ValueError
    except ValueError:
        return False
    rest = parts.path or parts.query or parts.fragment or parts.username or parts.password
    return (
        parts.scheme in ("http", "https") and not rest and (parts.hostname or "") in LOOPBACK_HOSTS
    )
