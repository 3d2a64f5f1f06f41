"""KIS_ACCOUNTS: several app keys, one session each, serving the Korean market as one pool."""

from __future__ import annotations

import json

import pytest

from trio_stock.config import Config, KisAccount
from trio_stock.errors import ConfigError

KEYS = [f"PSpoolKey{n}0123456789abcdefghijklmn"[:36] for n in range(3)]
SECRETS = [f"pool-secret-{n}-do-not-log" for n in range(3)]


def accounts_json(count: int, **extra: str) -> str:
    return json.dumps(
        [{"app_key": KEYS[n], "app_secret": SECRETS[n], **extra} for n in range(count)]
    )


# ---- configuration -----------------------------------------------------------------------


def test_kis_accounts_are_structured_with_defaults_from_kis_env_and_custtype() -> None:
    text = json.dumps(
        [
            {"app_key": KEYS[0], "app_secret": SECRETS[0], "env": "paper"},
            {"app_key": KEYS[1], "app_secret": SECRETS[1], "custtype": "P"},
        ]
    )
    config = Config.from_mapping({"KIS_ACCOUNTS": text, "KIS_CUSTTYPE": "B"})
    assert config.kis_configured
    first, second = config.kis_account_list()
    assert isinstance(first, KisAccount)
    assert (first.app_key.reveal(), first.app_secret.reveal()) == (KEYS[0], SECRETS[0])
    assert (first.env, first.custtype) == ("paper", "B")
    assert (second.env, second.custtype) == ("real", "P")
    assert KEYS[0] not in repr(config) and SECRETS[0] not in repr(config)


def test_without_kis_accounts_nothing_changes() -> None:
    config = Config.from_mapping({})
    assert (config.kis_accounts, config.kis_account_list(), config.kis_configured) == (
        None,
        (),
        False,
    )


def test_labels_are_short_distinct_and_never_the_key() -> None:
    accounts = Config.from_mapping({"KIS_ACCOUNTS": accounts_json(3)}).kis_account_list()
    labels = [a.label(n) for n, a in enumerate(accounts, 1)]
    assert len(set(labels)) == 3
    assert labels[0].startswith("kis-1 (") and labels[0].endswith("\u2026)")
    for label in labels:
        assert len(label) <= 16
        assert not any(key[:4] in label or key[-4:] in label for key in KEYS)


def test_both_forms_are_an_error_naming_both() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping(
            {"KIS_ACCOUNTS": accounts_json(1), "KIS_APP_KEY": KEYS[2], "KIS_APP_SECRET": "x"}
        )
    text = str(caught.value)
    assert "KIS_ACCOUNTS" in text and "KIS_APP_KEY" in text
    assert KEYS[0] not in text and KEYS[2] not in text and SECRETS[0] not in text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("not json " + KEYS[0], "not JSON"),
        (json.dumps({"app_key": KEYS[0], "app_secret": SECRETS[0]}), "not a non-empty array"),
        ("[]", "not a non-empty array"),
        (json.dumps([KEYS[0]]), "item 1 is not an object"),
        (json.dumps([{"app_key": KEYS[0]}]), "item 1 does not fit"),
        (json.dumps([{"app_key": KEYS[0], "app_secret": ""}]), "item 1 does not fit"),
        (json.dumps([{"app_key": KEYS[0], "app_secret": 5}]), "item 1 does not fit"),
        (accounts_json(1)[:-1] + f', {{"{KEYS[1]}": "{SECRETS[1]}"}}]', "item 2 does not fit"),
        (accounts_json(1, env="moon"), "item 1 does not fit"),
        (accounts_json(1, custtype="X"), "item 1 does not fit"),
        (json.dumps([{"app_key": KEYS[0], "app_secret": SECRETS[0], "typo": 1}]), "item 1"),
        (json.dumps([{"app_key": KEYS[0], "app_secret": SECRETS[n]} for n in (0, 1)]), "twice"),
    ],
)
def test_a_malformed_value_names_kis_accounts_and_never_echoes_a_secret(
    text: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"KIS_ACCOUNTS": text})
    message = str(caught.value)
    assert message.startswith("KIS_ACCOUNTS=***: must be a JSON array of objects")
    assert why in message
    for secret in (*KEYS, *SECRETS):
        assert secret not in message
