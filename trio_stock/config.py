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
import hashlib
import io
import math
import os
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import dotenv
import orjson
from cattrs.errors import AttributeValidationNote as AttributeNote

from .cluster.role import Role
from .converter import converter
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


@attrs.frozen
class KisAccount:
    """One KIS app key of ``KIS_ACCOUNTS``: one WebSocket session of the pool.

    ``env`` and ``custtype`` None mean ``KIS_ENV`` / ``KIS_CUSTTYPE``
    (:meth:`Config.kis_account_list` fills them in).
    """

    app_key: Secret
    app_secret: Secret
    env: str | None = attrs.field(
        default=None, validator=attrs.validators.in_((None, *KIS_WS_URLS))
    )
    custtype: str | None = attrs.field(
        default=None, validator=attrs.validators.in_((None, "P", "B"))
    )

    def label(self, number: int) -> str:
        """A short name for health and logs, e.g. ``kis-1 (a3f9…)``: a SHA-256 prefix of
        the app key, which cannot be turned back into the key."""
        digest = hashlib.sha256(self.app_key.reveal().encode()).hexdigest()[:4]
        return f"kis-{number} ({digest}\u2026)"


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


class SettingError(ValueError):
    """A setting's text or value is not what it must be; ``name`` is the setting's, if known."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def _between(low: float, high: float) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and not low <= value <= high:
            raise SettingError(f"must be between {_show(low)} and {_show(high)}", attribute.name)

    check.allowed = f"{_show(low)} to {_show(high)}"  # type: ignore[attr-defined]  # --help
    return check


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _one_of(*choices: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise SettingError(f"must be one of {', '.join(choices)}", attribute.name)

    check.allowed = f"one of {', '.join(choices)}"  # type: ignore[attr-defined]  # --help
    return check


def _url(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.startswith(("ws://", "wss://", "http://", "https://")):
        raise SettingError("must be a ws://, wss://, http:// or https:// URL", attribute.name)


_url.allowed = "a ws://, wss://, http:// or https:// URL"  # type: ignore[attr-defined]


def _redis_url(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
        raise SettingError("must be a redis://, rediss:// or unix:// URL", attribute.name)


_redis_url.allowed = "a redis://, rediss:// or unix:// URL"  # type: ignore[attr-defined]


def _trim_http(value: str | None) -> str | None:
    """``https://host/`` → ``https://host`` (REST bases are joined with paths)."""
    return value.rstrip("/") if value is not None and value.startswith("http") else value


def _setting(env: str, default: Any, check: Any = None, **kw: Any) -> Any:
    return attrs.field(default=default, validator=check, metadata={"env": env}, **kw)


@attrs.frozen(kw_only=True)
class Config:
    """Every setting of the gateway. Build with :meth:`from_env` or directly in code."""

    host: str = _setting("TRIO_STOCK_HOST", "127.0.0.1")
    port: int = _setting("TRIO_STOCK_PORT", 8000, _between(0, 65535))
    kr_provider: KrProvider = _setting("TRIO_STOCK_KR_PROVIDER", KrProvider.AUTO)
    us_provider: UsProvider = _setting("TRIO_STOCK_US_PROVIDER", UsProvider.AUTO)
    linger: float = _setting("TRIO_STOCK_LINGER", 5.0, _between(0, 3600))
    ack_timeout: float = _setting("TRIO_STOCK_ACK_TIMEOUT", 10.0, _between(0.1, 300))
    max_symbols_per_client: int = _setting(
        "TRIO_STOCK_MAX_SYMBOLS_PER_CLIENT", 200, _between(1, 10_000)
    )
    max_clients: int = _setting("TRIO_STOCK_MAX_CLIENTS", 10_000, _between(1, 1_000_000))
    # Per client IP (limits.py): open connections, and new connections per second.
    max_connections_per_ip: int = _setting(
        "TRIO_STOCK_MAX_CONNECTIONS_PER_IP", 2_000, _between(1, 1_000_000)
    )
    connect_rate_per_ip: float = _setting(
        "TRIO_STOCK_CONNECT_RATE_PER_IP", 500.0, _between(0.01, 1_000_000)
    )
    ping_interval: float = _setting("TRIO_STOCK_PING_INTERVAL", 20.0, _between(0, 3600))
    ping_timeout: float = _setting("TRIO_STOCK_PING_TIMEOUT", 20.0, _between(0.1, 3600))
    sim_ticks_per_second: float = _setting(
        "TRIO_STOCK_SIM_TICKS_PER_SECOND", 2.0, _between(0.001, 10_000)
    )
    sim_seed: int = _setting("TRIO_STOCK_SIM_SEED", 0, _between(0, 2**63))
    # Trade around the clock instead of in each exchange's hours (market_hours.py).
    sim_always_open: bool = _setting("TRIO_STOCK_SIM_ALWAYS_OPEN", False)
    # None: anonymous on a loopback address, and a start error anywhere else (auth.py).
    auth: AuthMode | None = _setting("TRIO_STOCK_AUTH", None)
    jwt_secret: Secret | None = _setting("TRIO_STOCK_JWT_SECRET", None)
    jwt_key_file: str | None = _setting("TRIO_STOCK_JWT_KEY_FILE", None)
    jwt_audience: str | None = _setting("TRIO_STOCK_JWT_AUDIENCE", None)
    jwt_issuer: str | None = _setting("TRIO_STOCK_JWT_ISSUER", None)
    # Browser origins allowed to open a WebSocket or send a non-GET request (exact match;
    # "*" allows any). None: this gateway's own origin and loopback origins (origins.py).
    allowed_origins: tuple[str, ...] | None = _setting("TRIO_STOCK_ALLOWED_ORIGINS", None)
    # Host header values accepted (against DNS rebinding). None: loopback names when bound
    # to a loopback address, any host otherwise.
    allowed_hosts: tuple[str, ...] | None = _setting("TRIO_STOCK_ALLOWED_HOSTS", None)
    tls_cert: str | None = _setting("TRIO_STOCK_TLS_CERT", None)
    tls_key: str | None = _setting("TRIO_STOCK_TLS_KEY", None)
    log_level: str = _setting(
        "TRIO_STOCK_LOG_LEVEL",
        "INFO",
        _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
        converter=str.upper,  # "debug" works too
    )
    log_format: str = _setting("TRIO_STOCK_LOG_FORMAT", "text", _one_of("text", "json"))
    redis_url: str | None = _setting("TRIO_STOCK_REDIS_URL", None, _redis_url)
    role: Role = _setting("TRIO_STOCK_ROLE", Role.ALL)
    node_id: str | None = _setting("TRIO_STOCK_NODE_ID", None)
    node_ttl: float = _setting("TRIO_STOCK_NODE_TTL", 30.0, _between(0.3, 3600))
    lease_ttl: float = _setting("TRIO_STOCK_LEASE_TTL", 10.0, _between(0.3, 600))
    cluster_prefix: str = _setting("TRIO_STOCK_CLUSTER_PREFIX", "trio_stock")
    kis_app_key: Secret | None = _setting("KIS_APP_KEY", None)
    kis_app_secret: Secret | None = _setting("KIS_APP_SECRET", None)
    # Several app keys, one session each, as one pool (kis_pool.py): a JSON array.
    kis_accounts: tuple[KisAccount, ...] | None = _setting(
        "KIS_ACCOUNTS", None, lambda config, _, value: _one_kis_form(config, value)
    )
    kis_env: str = _setting("KIS_ENV", "real", _one_of("real", "paper"))
    kis_ws_url: str | None = _setting("KIS_WS_URL", None, _url)
    kis_rest_url: str | None = _setting("KIS_REST_URL", None, _url, converter=_trim_http)
    kis_max_subscriptions: int = _setting("KIS_MAX_SUBSCRIPTIONS", 40, _between(1, 10_000))
    kis_orderbook: bool = _setting("KIS_ORDERBOOK", False)
    kis_custtype: str = _setting("KIS_CUSTTYPE", "P", _one_of("P", "B"))  # kis.md §2
    kis_watchdog: float = _setting("KIS_WATCHDOG", 60.0, _between(1, 3600))  # kis.md §8.3
    # Seconds between registration frames; None: 0.05 real, 0.5 paper (kis.md §7).
    kis_register_interval: float | None = _setting("KIS_REGISTER_INTERVAL", None, _between(0, 10))
    fmp_api_key: Secret | None = _setting("FMP_API_KEY", None)
    fmp_ws_url: str = _setting("FMP_WS_URL", "wss://websockets.financialmodelingprep.com", _url)
    fmp_rest_url: str = _setting(
        "FMP_REST_URL", "https://financialmodelingprep.com", _url, converter=_trim_http
    )
    fmp_max_subscriptions: int = _setting("FMP_MAX_SUBSCRIPTIONS", 500, _between(1, 100_000))
    fmp_ca_bundle: str | None = _setting("FMP_CA_BUNDLE", None)
    # Seconds without any FMP frame (heartbeats included) before reconnecting (fmp.md §5, §8.4).
    fmp_watchdog: float = _setting("FMP_WATCHDOG", 90.0, _between(5, 3600))

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
        """True when KIS credentials are present (both of the one-key form, or KIS_ACCOUNTS)."""
        one_key = self.kis_app_key is not None and self.kis_app_secret is not None
        return one_key or self.kis_accounts is not None

    def kis_account_list(self) -> tuple[KisAccount, ...]:
        """``KIS_ACCOUNTS`` with each account's ``env``/``custtype`` defaulted to
        ``KIS_ENV``/``KIS_CUSTTYPE`` (empty when it is not set)."""
        return tuple(
            attrs.evolve(
                account,
                env=account.env or self.kis_env,
                custtype=account.custtype or self.kis_custtype,
            )
            for account in self.kis_accounts or ()
        )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: str | Path | None = ".env",
        flags: Mapping[str, str] = {},
    ) -> Config:
        """Read the settings from ``environ`` (default ``os.environ``) and a ``.env`` file,
        with command-line ``flags`` (setting name → text) on top.

        Raises:
            ConfigError: an unknown ``TRIO_STOCK_*`` variable or a malformed value.
        """
        merged: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            merged.update(read_dotenv(Path(dotenv)))
        merged.update(os.environ if environ is None else environ)
        return cls.from_mapping(merged, flags=flags)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], *, flags: Mapping[str, str] = {}) -> Config:
        """Parse settings from environment variable names to text, then ``flags`` on top.

        ``flags`` maps setting names to the text given on the command line; an error names
        the flag (``--port``) for those and the variable (``TRIO_STOCK_PORT``) otherwise,
        with the same words.

        Raises:
            ConfigError: unknown ``TRIO_STOCK_*`` variables, or malformed values (all of
                them, one per line).
        """
        fields = {f.name: f for f in attrs.fields(cls)}
        known = {f.metadata["env"]: f for f in fields.values()}
        unknown = sorted(k for k in values if k.startswith("TRIO_STOCK_") and k not in known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        texts: dict[str, str] = {}
        sources: dict[str, str] = {}
        for env, field in known.items():
            text = values.get(env)
            if text is not None and not (text == "" and field.default is None):
                texts[field.name], sources[field.name] = text, env
        for name, text in flags.items():
            texts[name], sources[name] = text, "--" + name.replace("_", "-")
        try:
            return _settings.structure(texts, cls)
        except cattrs.ClassValidationError as exc:
            raise ConfigError(_describe(exc, texts, sources, fields)) from None

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (command-line flags use this)."""
        return attrs.evolve(self, **changes)

    def env_name(self, field_name: str) -> str:
        """The environment variable of a setting (for messages and --help)."""
        return str(attrs.fields_dict(type(self))[field_name].metadata["env"])


attrs.resolve_types(Config)  # real types on the fields, for cattrs and --help


def is_secret(field: attrs.Attribute[Any]) -> bool:
    """True for a setting that holds a secret (no flag, never shown)."""
    secrets = (Secret, tuple[KisAccount, ...])
    return field.type in secrets or any(t in secrets for t in typing.get_args(field.type))


def _one_kis_form(config: Config, accounts: tuple[KisAccount, ...] | None) -> None:
    if accounts is not None and (config.kis_app_key or config.kis_app_secret):
        raise SettingError(
            "give either KIS_ACCOUNTS or KIS_APP_KEY/KIS_APP_SECRET, not both", "kis_accounts"
        )


# ---- text to values: the converter's hooks -----------------------------------------------

_settings = converter.copy()  # the shared converter, taught to read settings from text


def _whole_number(text: str, _: type) -> int:
    text = text.strip().replace("_", "")
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise SettingError("must be a whole number")
    return int(text)


def _number(text: str, _: type) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingError("must be a number") from None
    if not math.isfinite(value):
        raise SettingError("must be a finite number")
    return value


def _flag(text: str, _: type) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingError("must be true or false")


def _choice(text: str, kind: type[enum.Enum]) -> enum.Enum:
    for member in kind:
        if member.value == text.strip().lower():
            return member
    raise SettingError(f"must be one of {', '.join(m.value for m in kind)}")


def _comma_list(text: str, _: type) -> tuple[str, ...]:
    """A comma-separated list; blanks around items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


_settings.register_structure_hook(int, _whole_number)
_settings.register_structure_hook(float, _number)
_settings.register_structure_hook(bool, _flag)
_settings.register_structure_hook_func(
    lambda kind: isinstance(kind, type) and issubclass(kind, enum.Enum), _choice
)
_settings.register_structure_hook(Secret, lambda text, _: Secret(text))

# KIS_ACCOUNTS: JSON text, then each object through the shared converter, strictly.
_accounts = converter.copy(forbid_extra_keys=True)
ACCOUNTS_EXPECTED = (
    'must be a JSON array of objects {"app_key": "...", "app_secret": "...", '
    '"env": "real"|"paper" (optional), "custtype": "P"|"B" (optional)}'
)


def _secret(value: object, _: type) -> Secret:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a non-empty string")
    return Secret(value)


_accounts.register_structure_hook(Secret, _secret)


def _kis_accounts(text: str, _: type) -> tuple[KisAccount, ...]:
    """Parse ``KIS_ACCOUNTS``. Errors say where and what was expected, never a value
    (nor a key's name, which could be a misplaced app key)."""
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise SettingError(f"{ACCOUNTS_EXPECTED}; this is not JSON") from None
    if not isinstance(items, list) or not items:
        raise SettingError(f"{ACCOUNTS_EXPECTED}; this is not a non-empty array")
    accounts = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise SettingError(f"{ACCOUNTS_EXPECTED}; item {number} is not an object")
        try:
            accounts.append(_accounts.structure(item, KisAccount))
        except (cattrs.BaseValidationError, ValueError, TypeError):
            raise SettingError(
                f"{ACCOUNTS_EXPECTED}; item {number} does not fit (a key missing, unknown, "
                "empty or of the wrong type)"
            ) from None
    keys = [account.app_key for account in accounts]
    if len(set(keys)) != len(keys):
        raise SettingError(f"{ACCOUNTS_EXPECTED}; the same app_key is given twice")
    return tuple(accounts)


_settings.register_structure_hook_func(lambda kind: kind == tuple[KisAccount, ...], _kis_accounts)
_settings.register_structure_hook_func(lambda kind: kind == tuple[str, ...], _comma_list)


def _describe(
    error: cattrs.ClassValidationError,
    texts: Mapping[str, str],
    sources: Mapping[str, str],
    fields: Mapping[str, attrs.Attribute[Any]],
) -> str:
    """One line per bad setting: where it came from, the text given, what was expected."""
    lines = []
    for problem in error.exceptions:
        name = next(
            (n.name for n in getattr(problem, "__notes__", ()) if isinstance(n, AttributeNote)),
            None,
        )
        if name is None and isinstance(problem, SettingError):
            name = problem.name  # raised by a validator, after structuring
        source = sources.get(name or "", "a setting")
        secret = name is not None and is_secret(fields[name])
        shown = "***" if secret else repr(texts.get(name or "", ""))
        lines.append(f"{source}={shown}: {problem}")
    return "\n".join(lines)


def read_dotenv(path: Path) -> dict[str, str]:
    """The settings of a ``.env`` file, in the de-facto format python-dotenv reads.

    Comments, ``export``, single and double quotes (with escapes in double quotes),
    multi-line quoted values and inline ``# comments`` after a value work as users expect
    from other tools; a line without ``=`` is an error naming the line.

    Raises:
        ConfigError: the file cannot be read, or a line is not ``KEY=value``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    values = dotenv.dotenv_values(stream=io.StringIO(text), interpolate=False)
    for number, line in enumerate(text.splitlines(), 1):
        bare = line.strip()
        if bare and not bare.startswith("#") and "=" not in bare and bare in values:
            raise ConfigError(f"{path}:{number}: expected KEY=value")
    return {key: value for key, value in values.items() if value is not None}
