"""Configuration from the environment and .env; secrets never show."""

from __future__ import annotations

import enum
import typing
from pathlib import Path
from typing import Any

import attrs
import pytest

from trio_stock import Config, ConfigError, Secret
from trio_stock.config import AuthMode, KrProvider, is_secret


def test_defaults_need_no_configuration() -> None:
    config = Config.from_mapping({})
    assert (config.host, config.port, config.kis_max_subscriptions) == ("127.0.0.1", 8000, 40)
    assert config.kis_ws_endpoint == "ws://ops.koreainvestment.com:21000"
    assert not config.kis_configured


def test_environment_values_are_parsed() -> None:
    config = Config.from_mapping(
        {
            "TRIO_STOCK_PORT": "9000",
            "KIS_ENV": "paper",
            "KIS_MAX_SUBSCRIPTIONS": "12",
            "TRIO_STOCK_KR_PROVIDER": "sim",
            "TRIO_STOCK_LINGER": "0.5",
            "KIS_ORDERBOOK": "yes",
        }
    )
    assert config.port == 9000
    assert config.kis_ws_endpoint.endswith(":31000")
    assert config.kis_max_subscriptions == 12
    assert config.kr_provider is KrProvider.SIM
    assert config.linger == 0.5
    assert config.kis_orderbook is True


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("TRIO_STOCK_PORT", "eighty", "TRIO_STOCK_PORT='eighty'"),
        ("TRIO_STOCK_PORT", "70000", "between 0 and 65535"),
        ("KIS_ENV", "prod", "one of real, paper"),
        ("KIS_WS_URL", "ops.koreainvestment.com", "URL"),
        ("TRIO_STOCK_LINGER", "-1", "between"),
        ("TRIO_STOCK_PROT", "1", "unknown setting(s): TRIO_STOCK_PROT"),
    ],
)
def test_malformed_or_unknown_settings_fail_loudly(env: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_mapping({env: value})
    assert message in str(info.value)


def test_secrets_never_show_in_repr_or_errors() -> None:
    config = Config.from_mapping(
        {"KIS_APP_KEY": "PSkey-123", "KIS_APP_SECRET": "s3cr3t", "FMP_API_KEY": "fmpk"}
    )
    text = repr(config) + str(config)
    for secret in ("PSkey-123", "s3cr3t", "fmpk"):
        assert secret not in text
    assert config.kis_app_key is not None and config.kis_app_key.reveal() == "PSkey-123"
    assert repr(Secret("x")) == "Secret('***')"


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('# keys\nFMP_API_KEY="from-file"\nexport TRIO_STOCK_PORT=8100\n\n')
    config = Config.from_env({"TRIO_STOCK_PORT": "8200"}, dotenv=dotenv)
    assert config.fmp_api_key is not None and config.fmp_api_key.reveal() == "from-file"
    assert config.port == 8200


def test_malformed_dotenv_line_is_reported_with_its_place(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("FMP_API_KEY\n")
    with pytest.raises(ConfigError, match=r"\.env:1"):
        Config.from_env({}, dotenv=dotenv)


def _malformed(field: attrs.Attribute[Any]) -> str | None:
    """A text this setting refuses, by its type and validator; None for free text."""
    kinds = typing.get_args(field.type) or (field.type,)
    if int in kinds or float in kinds:
        return "twelve"
    if bool in kinds:
        return "maybe"
    if any(isinstance(k, type) and issubclass(k, enum.Enum) for k in kinds):
        return "sometimes"
    return "ftp://nowhere" if field.validator is not None else None


def test_each_malformed_setting_fails_naming_its_variable() -> None:
    checked = 0
    for field in attrs.fields(Config):
        text = _malformed(field)
        if text is None:
            continue
        env = field.metadata["env"]
        with pytest.raises(ConfigError) as refused:
            Config.from_mapping({env: text})
        shown = "***" if is_secret(field) else f"'{text}'"  # KIS_ACCOUNTS holds secrets
        assert str(refused.value).startswith(f"{env}={shown}: must be "), str(refused.value)
        checked += 1
    assert checked >= 25  # every typed setting is covered, not a handful


def test_every_malformed_setting_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as refused:
        Config.from_mapping(
            {"TRIO_STOCK_PORT": "x", "TRIO_STOCK_LINGER": "y", "KIS_ORDERBOOK": "z"}
        )
    lines = str(refused.value).splitlines()
    assert sorted(lines) == [
        "KIS_ORDERBOOK='z': must be true or false",
        "TRIO_STOCK_LINGER='y': must be a number",
        "TRIO_STOCK_PORT='x': must be a whole number",
    ]


def test_settings_are_structured_by_cattrs_and_checked_in_code_too() -> None:
    config = Config.from_mapping(
        {
            "TRIO_STOCK_LOG_LEVEL": "debug",
            "TRIO_STOCK_ALLOWED_ORIGINS": " https://a.example , https://b.example ",
            "TRIO_STOCK_AUTH": "JWT",
            "TRIO_STOCK_MAX_CLIENTS": "10_000",
            "KIS_REST_URL": "https://kis.example/",
        }
    )
    assert config.log_level == "DEBUG"
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.auth is AuthMode.JWT
    assert config.max_clients == 10_000
    assert config.kis_rest_url == "https://kis.example"
    with pytest.raises(ValueError, match="must be between 0 and 65535"):
        Config(port=70_000)  # an embedding program gets the same check
