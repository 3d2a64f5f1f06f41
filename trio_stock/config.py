"""Configuration: one frozen value, read from the environment, a ``.env`` file and flags.

Every setting has an environment variable (DESIGN.md's names); ``python -m trio_stock``
has a matching flag, and flags win. A ``.env`` file in the working directory is read as
seed 003's guide shows (``FMP_API_KEY=...``); variables already in the environment win
over it. Unknown ``TRIO_STOCK_*`` variables and malformed values fail loudly at start.

Secrets are held in :class:`Secret`, whose ``repr`` and ``str`` never show the value, so a
config can be logged or shown in health without leaking a key.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from .errors import ConfigError

KIS_WS_URLS = {
    "real": "ws://ops.koreainvestment.com:21000",
    "paper": "ws://ops.koreainvestment.com:31000",
}
KIS_REST_URLS = {
    "real": "https://openapi.koreainvestment.com:9443",
    "paper": "https://openapivts.koreainvestment.com:29443",
}
KIS_SESSION_LIMIT = 41  # registrations per app key, measured (protocols/kis.md §7)


@attrs.frozen(repr=False)
class Secret:
    """A secret string that never shows itself in ``repr``, ``str``, logs or health."""

    _value: str

    def reveal(self) -> str:
        """The secret itself: pass it to the upstream and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class KrProvider(enum.Enum):
    """Which provider serves Korean codes."""

    AUTO = "auto"  # KIS when KIS_APP_KEY and KIS_APP_SECRET are set, else simulated
    SIM = "sim"
    KIS = "kis"


class UsProvider(enum.Enum):
    """Which provider serves US tickers."""

    AUTO = "auto"  # FMP when FMP_API_KEY is set, else simulated
    SIM = "sim"
    FMP = "fmp"


class AuthMode(enum.Enum):
    """``TRIO_STOCK_AUTH``: anonymous clients, or a token for every client (auth.py)."""

    NONE = "none"
    JWT = "jwt"


def _parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _parse_float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _parse_url(text: str) -> str:
    if not text.startswith(("ws://", "wss://", "http://", "https://")):
        raise ValueError("must be a ws://, wss://, http:// or https:// URL")
    return text.rstrip("/") if text.startswith("http") else text


def _setting(env: str, default: Any, parse: Callable[[str], Any] = str, **kw: Any) -> Any:
    return attrs.field(default=default, metadata={"env": env, "parse": parse}, **kw)


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the gateway. Build with :meth:`from_env` or directly in code."""

    host: str = _setting("TRIO_STOCK_HOST", "127.0.0.1")
    port: int = _setting("TRIO_STOCK_PORT", 8000, _parse_int(0, 65535))
    kr_provider: KrProvider = _setting("TRIO_STOCK_KR_PROVIDER", KrProvider.AUTO, KrProvider)
    us_provider: UsProvider = _setting("TRIO_STOCK_US_PROVIDER", UsProvider.AUTO, UsProvider)
    linger: float = _setting("TRIO_STOCK_LINGER", 5.0, _parse_float(0, 3600))
    ack_timeout: float = _setting("TRIO_STOCK_ACK_TIMEOUT", 10.0, _parse_float(0.1, 300))
    max_symbols_per_client: int = _setting(
        "TRIO_STOCK_MAX_SYMBOLS_PER_CLIENT", 200, _parse_int(1, 10_000)
    )
    max_clients: int = _setting("TRIO_STOCK_MAX_CLIENTS", 10_000, _parse_int(1, 1_000_000))
    # Per client IP (limits.py): open connections, and new connections per second.
    max_connections_per_ip: int = _setting(
        "TRIO_STOCK_MAX_CONNECTIONS_PER_IP", 2_000, _parse_int(1, 1_000_000)
    )
    connect_rate_per_ip: float = _setting(
        "TRIO_STOCK_CONNECT_RATE_PER_IP", 500.0, _parse_float(0.01, 1_000_000)
    )
    ping_interval: float = _setting("TRIO_STOCK_PING_INTERVAL", 20.0, _parse_float(0, 3600))
    ping_timeout: float = _setting("TRIO_STOCK_PING_TIMEOUT", 20.0, _parse_float(0.1, 3600))
    sim_ticks_per_second: float = _setting(
        "TRIO_STOCK_SIM_TICKS_PER_SECOND", 2.0, _parse_float(0.001, 10_000)
    )
    sim_seed: int = _setting("TRIO_STOCK_SIM_SEED", 0, _parse_int(0, 2**63))
    # None: anonymous on a loopback address, and a start error anywhere else (auth.py).
    auth: AuthMode | None = _setting("TRIO_STOCK_AUTH", None, AuthMode)
    jwt_secret: Secret | None = _setting("TRIO_STOCK_JWT_SECRET", None, Secret)
    jwt_key_file: str | None = _setting("TRIO_STOCK_JWT_KEY_FILE", None)
    jwt_audience: str | None = _setting("TRIO_STOCK_JWT_AUDIENCE", None)
    jwt_issuer: str | None = _setting("TRIO_STOCK_JWT_ISSUER", None)
    # Browser origins allowed to open a WebSocket or send a non-GET request (exact match;
    # "*" allows any). None: this gateway's own origin and loopback origins (origins.py).
    allowed_origins: tuple[str, ...] | None = _setting(
        "TRIO_STOCK_ALLOWED_ORIGINS", None, _parse_list
    )
    # Host header values accepted (against DNS rebinding). None: loopback names when bound
    # to a loopback address, any host otherwise.
    allowed_hosts: tuple[str, ...] | None = _setting("TRIO_STOCK_ALLOWED_HOSTS", None, _parse_list)
    tls_cert: str | None = _setting("TRIO_STOCK_TLS_CERT", None)
    tls_key: str | None = _setting("TRIO_STOCK_TLS_KEY", None)
    log_level: str = _setting(
        "TRIO_STOCK_LOG_LEVEL", "INFO", _parse_choice("DEBUG", "INFO", "WARNING", "ERROR")
    )
    kis_app_key: Secret | None = _setting("KIS_APP_KEY", None, Secret)
    kis_app_secret: Secret | None = _setting("KIS_APP_SECRET", None, Secret)
    kis_env: str = _setting("KIS_ENV", "real", _parse_choice("real", "paper"))
    kis_ws_url: str | None = _setting("KIS_WS_URL", None, _parse_url)
    kis_rest_url: str | None = _setting("KIS_REST_URL", None, _parse_url)
    kis_max_subscriptions: int = _setting("KIS_MAX_SUBSCRIPTIONS", 40, _parse_int(1, 10_000))
    kis_orderbook: bool = _setting("KIS_ORDERBOOK", False, _parse_bool)
    kis_custtype: str = _setting("KIS_CUSTTYPE", "P", _parse_choice("P", "B"))  # kis.md §2
    kis_watchdog: float = _setting("KIS_WATCHDOG", 60.0, _parse_float(1, 3600))  # kis.md §8.3
    # Seconds between registration frames; None: 0.05 real, 0.5 paper (kis.md §7).
    kis_register_interval: float | None = _setting(
        "KIS_REGISTER_INTERVAL", None, _parse_float(0, 10)
    )
    fmp_api_key: Secret | None = _setting("FMP_API_KEY", None, Secret)
    fmp_ws_url: str = _setting(
        "FMP_WS_URL", "wss://websockets.financialmodelingprep.com", _parse_url
    )
    fmp_rest_url: str = _setting("FMP_REST_URL", "https://financialmodelingprep.com", _parse_url)
    fmp_max_subscriptions: int = _setting("FMP_MAX_SUBSCRIPTIONS", 500, _parse_int(1, 100_000))
    fmp_ca_bundle: str | None = _setting("FMP_CA_BUNDLE", None)
    # Seconds without any FMP frame (heartbeats included) before reconnecting (fmp.md §5, §8.4).
    fmp_watchdog: float = _setting("FMP_WATCHDOG", 90.0, _parse_float(5, 3600))

    @property
    def kis_ws_endpoint(self) -> str:
        """The KIS WebSocket URL: ``KIS_WS_URL`` or the default of ``KIS_ENV``."""
        return self.kis_ws_url or KIS_WS_URLS[self.kis_env]

    @property
    def kis_rest_endpoint(self) -> str:
        """The KIS REST base URL: ``KIS_REST_URL`` or the default of ``KIS_ENV``."""
        return self.kis_rest_url or KIS_REST_URLS[self.kis_env]

    @property
    def kis_configured(self) -> bool:
        """True when both KIS credentials are present."""
        return self.kis_app_key is not None and self.kis_app_secret is not None

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, dotenv: str | Path | None = ".env"
    ) -> Config:
        """Read the settings from ``environ`` (default ``os.environ``) and a ``.env`` file.

        Raises:
            ConfigError: an unknown ``TRIO_STOCK_*`` variable or a malformed value.
        """
        merged: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            merged.update(read_dotenv(Path(dotenv)))
        merged.update(os.environ if environ is None else environ)
        return cls.from_mapping(merged)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Config:
        """Parse settings from a mapping of environment variable names to text."""
        known = {f.metadata["env"]: f for f in attrs.fields(cls)}
        unknown = sorted(k for k in values if k.startswith("TRIO_STOCK_") and k not in known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        for env, field in known.items():
            text = values.get(env)
            if text is None or (text == "" and field.default is None):
                continue
            try:
                kwargs[field.name] = field.metadata["parse"](text)
            except ValueError as exc:
                shown = "***" if field.metadata["parse"] is Secret else repr(text)
                raise ConfigError(f"{env}={shown}: {exc}") from None
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (command-line flags use this)."""
        return attrs.evolve(self, **changes)

    def env_name(self, field_name: str) -> str:
        """The environment variable of a setting (for messages and --help)."""
        return str(attrs.fields_dict(type(self))[field_name].metadata["env"])


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes/``export``."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
