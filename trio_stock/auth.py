"""Who may connect, and to what: JSON Web Tokens and the grants they carry.

With ``TRIO_STOCK_AUTH=jwt`` every client shows a token (README "Running it in public").
The gateway only verifies tokens; an application of the operator's issues them (or
``python -m trio_stock token`` in development). Verification is PyJWT's, configured so
that the algorithm is never the token's choice:

- ``TRIO_STOCK_JWT_SECRET``: an HMAC secret (HS256 only), at least 32 bytes (RFC 7518
  §3.2), from the environment or ``.env`` only — never a flag;
- ``TRIO_STOCK_JWT_KEY_FILE``: a PEM public key or a JWKS document; each key admits the
  one algorithm of its type (RSA: RS256, P-256: ES256, Ed25519: EdDSA), and a JWKS key is
  chosen by the token's ``kid``.

Never both, so HMAC and public-key algorithms are never mixed (the algorithm-confusion
attack: an HS256 token "signed" with the public key as its secret). ``exp`` and ``sub``
are required; ``aud`` and ``iss`` are checked when configured; ``exp`` and ``nbf`` are
checked against the hub's clock (which follows Trio's, so tests run on ``MockClock``)
with ``LEEWAY`` seconds of tolerance. Tokens never appear in logs, errors, health or
metrics: :class:`InvalidToken` says why a token failed without quoting it.

Claims the gateway understands, besides the registered ones:

- ``markets``: e.g. ``["KR", "US"]``; absent means every market;
- ``max_symbols``: symbols one connection may hold (at most the server's own limit);
- ``max_connections``: open WebSocket connections of this ``sub`` at once;
- ``admin``: may use the REST subscription endpoints and ``/metrics``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import AuthMode as AuthMode
from .config import Secret
from .errors import ConfigError, TrioStockError
from .model import Market

LEEWAY = 30.0  # seconds of clock skew tolerated on exp and nbf
MAX_TOKEN_BYTES = 8 * 1024  # longer "tokens" are refused before any parsing
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key as long as the hash
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256", "EdDSA")


class InvalidToken(TrioStockError):
    """A token was missing, malformed, badly signed, expired or not for us.

    The message says why in words safe to show a client; it never quotes the token.
    """


@attrs.frozen
class Grant:
    """What one verified token allows.

    ``markets`` None means every market; ``max_symbols``/``max_connections`` None mean the
    server's own limits.
    """

    subject: str
    expires_at: float  # epoch seconds; math.inf for the anonymous grant
    markets: frozenset[Market] | None = None
    max_symbols: int | None = None
    max_connections: int | None = None
    admin: bool = False

    def allows(self, market: Market) -> bool:
        """True if the holder may receive ``market``'s symbols."""
        return self.markets is None or market in self.markets


ANONYMOUS = Grant(subject="anonymous", expires_at=math.inf, admin=True)
"""Every client's grant when auth is off: everything, as before authentication existed."""


@attrs.frozen
class _Key:
    """One verification key and the single algorithm it admits."""

    key: Any  # a cryptography public key, a PyJWK, or the HMAC secret's bytes
    algorithm: str
    kid: str | None = None


class TokenVerifier:
    """Verifies tokens against one configured key source (see module docs).

    Args:
        keys: The verification keys (HMAC or public, never both).
        audience: The required ``aud``, or None.
        issuer: The required ``iss``, or None.
        leeway: Seconds of tolerance on ``exp`` and ``nbf``.
    """

    def __init__(
        self,
        keys: list[_Key],
        *,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = LEEWAY,
    ) -> None:
        if not keys:
            raise ConfigError("no key to verify tokens with")
        self._keys = keys
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway

    @classmethod
    def from_secret(cls, secret: Secret, **options: Any) -> TokenVerifier:
        """HS256 with ``secret``.

        Raises:
            ConfigError: the secret is shorter than ``MIN_SECRET_BYTES``.
        """
        raw = secret.reveal().encode()
        if len(raw) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"TRIO_STOCK_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2)"
            )
        return cls([_Key(raw, "HS256")], **options)

    @classmethod
    def from_key_file(cls, path: Path, **options: Any) -> TokenVerifier:
        """The public key(s) in ``path``: PEM, or a JWKS document (``{"keys": [...]}``).

        Raises:
            ConfigError: unreadable, not a public key, or a key type we do not accept.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"TRIO_STOCK_JWT_KEY_FILE: cannot read {path}: {exc}") from None
        if text.lstrip().startswith("{"):
            return cls(_jwks_keys(text, path), **options)
        return cls([_pem_key(text, path)], **options)

    def verify(self, token: str, now: float) -> Grant:
        """The grant of ``token`` at epoch time ``now``.

        Raises:
            InvalidToken: why the token is not accepted (never quoting it).
        """
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("missing or oversized token")
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # Times are checked below, on the hub's clock; PyJWT reads time.time().
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": self.audience is not None,
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.InvalidAudienceError:
            raise InvalidToken("token is not for this audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token is not from the expected issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken(f"token is not signed with {key.algorithm}") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("malformed token") from None
        return self._grant(claims, now)

    def _key_for(self, token: str) -> _Key:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise InvalidToken("malformed token") from None
        kid = header.get("kid")
        if len(self._keys) == 1 and (kid is None or self._keys[0].kid in (None, kid)):
            return self._keys[0]
        for key in self._keys:
            if key.kid is not None and key.kid == kid:
                return key
        raise InvalidToken("token names an unknown key (kid)")

    def _grant(self, claims: Mapping[str, Any], now: float) -> Grant:
        exp = _number(claims.get("exp"), "exp")
        if now > exp + self.leeway:
            raise InvalidToken("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None and now + self.leeway < _number(nbf, "nbf"):
            raise InvalidToken("token is not valid yet (nbf)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 0 < len(sub) <= 256:
            raise InvalidToken("token 'sub' must be a non-empty string")
        return Grant(
            subject=sub,
            expires_at=exp,
            markets=_markets(claims.get("markets")),
            max_symbols=_positive(claims.get("max_symbols"), "max_symbols"),
            max_connections=_positive(claims.get("max_connections"), "max_connections"),
            admin=_flag(claims.get("admin")),
        )


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"token '{name}' must be a number")
    return float(value)


def _positive(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1_000_000:
        raise InvalidToken(f"token '{name}' must be a positive integer")
    return value


def _flag(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidToken("token 'admin' must be true or false")
    return value


def _markets(value: object) -> frozenset[Market] | None:
    if value is None:
        return None
    known = {m.value: m for m in Market}
    if not isinstance(value, list) or not all(isinstance(v, str) and v in known for v in value):
        raise InvalidToken(f"token 'markets' must be a list of {', '.join(known)}")
    return frozenset(known[v] for v in value)


def _pem_key(text: str, path: Path) -> _Key:
    try:
        key = load_pem_public_key(text.encode())
    except ValueError:
        raise ConfigError(f"TRIO_STOCK_JWT_KEY_FILE: {path} is not a PEM public key") from None
    return _Key(key, _algorithm_of(key, path))


def _algorithm_of(key: object, path: Path) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise ConfigError(f"TRIO_STOCK_JWT_KEY_FILE: {path}: use an RSA, P-256 or Ed25519 public key")


def _jwks_keys(text: str, path: Path) -> list[_Key]:
    where = f"TRIO_STOCK_JWT_KEY_FILE: {path}"
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigError(f"{where} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{where}: a JWKS document needs a non-empty "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or "d" in entry or entry.get("kty") == "oct":
            raise ConfigError(f"{where}: only public RSA, EC and OKP keys belong here")
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{where}: unusable key: {exc}") from None
        if jwk.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
            raise ConfigError(f"{where}: algorithm {jwk.algorithm_name} is not accepted")
        kid = entry.get("kid")
        if len(entries) > 1 and not isinstance(kid, str):
            raise ConfigError(f'{where}: with several keys, each needs a "kid"')
        keys.append(_Key(jwk, jwk.algorithm_name, kid if isinstance(kid, str) else None))
    return keys
