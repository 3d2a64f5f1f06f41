"""``python -m trio_stock token``: issue a token for development and tests.

It signs with what the gateway verifies with: the HMAC secret of the environment or
``.env`` (``TRIO_STOCK_JWT_SECRET``), or a private key given with ``--private-key`` whose
public half is the gateway's ``TRIO_STOCK_JWT_KEY_FILE``. ``aud`` and ``iss`` are taken
from ``TRIO_STOCK_JWT_AUDIENCE``/``TRIO_STOCK_JWT_ISSUER`` when set, so the token fits the
gateway configured by the same environment. In production an identity provider issues
tokens; this command is for a developer's terminal and for tests.

    python -m trio_stock token --sub alice --markets KR,US --ttl 1h
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from .auth import MIN_SECRET_BYTES
from .config import Config
from .errors import ConfigError
from .model import Market

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h`` or ``7d`` as seconds."""
    match = re.fullmatch(r"(\d{1,7})([smhd]?)", text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError("a duration such as 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def parse_markets(text: str) -> list[str]:
    """``KR,US`` as a list of market codes."""
    markets = [m.strip().upper() for m in text.split(",") if m.strip()]
    known = {m.value for m in Market}
    if not markets or not set(markets) <= known:
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(sorted(known))}")
    return markets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_stock token",
        description="Print a token the gateway accepts (development and tests).",
    )
    parser.add_argument("--sub", required=True, help="the user the token is for (claim sub)")
    parser.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime: 90s, 15m, 1h, 7d")
    parser.add_argument(
        "--markets", type=parse_markets, help="e.g. KR,US (claim markets; default: all)"
    )
    parser.add_argument("--max-symbols", type=int, help="claim max_symbols")
    parser.add_argument("--max-connections", type=int, help="claim max_connections")
    parser.add_argument("--admin", action="store_true", help="claim admin: REST writes, /metrics")
    parser.add_argument(
        "--private-key", type=Path, help="sign with this PEM private key instead of the secret"
    )
    parser.add_argument("--kid", help="the key id, when the gateway's key file is a JWKS")
    return parser


def issue(args: argparse.Namespace, config: Config, now: float) -> str:
    """The signed token.

    Raises:
        ConfigError: nothing to sign with, or an unusable key.
    """
    claims: dict[str, Any] = {"sub": args.sub, "iat": int(now), "exp": int(now) + args.ttl}
    optional = {
        "markets": args.markets,
        "max_symbols": args.max_symbols,
        "max_connections": args.max_connections,
        "admin": args.admin or None,
        "aud": config.jwt_audience,
        "iss": config.jwt_issuer,
    }
    claims.update({k: v for k, v in optional.items() if v is not None})
    headers = {"kid": args.kid} if args.kid else None
    if args.private_key is not None:
        key, algorithm = _private_key(args.private_key)
        return jwt.encode(claims, key, algorithm, headers=headers)
    if config.jwt_secret is None:
        raise ConfigError("set TRIO_STOCK_JWT_SECRET (environment or .env), or --private-key")
    secret = config.jwt_secret.reveal()
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"TRIO_STOCK_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
    return jwt.encode(claims, secret, "HS256", headers=headers)


def _private_key(path: Path) -> tuple[Any, str]:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"--private-key {path}: not a readable PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key, "EdDSA"
    raise ConfigError(f"--private-key {path}: use an RSA, P-256 or Ed25519 key")


def main(argv: Sequence[str]) -> int:
    """Print the token; exit code 2 on a usage or configuration error."""
    args = build_parser().parse_args(argv)
    try:
        token = issue(args, Config.from_env(), time.time())
    except ConfigError as exc:
        print(f"trio_stock token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0
