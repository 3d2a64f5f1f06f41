"""KIS_ACCOUNTS: several app keys, one session each, serving the Korean market as one pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import trio_stock
from trio_stock.clock import WallClock
from trio_stock.config import Config, KisAccount, Secret
from trio_stock.endpoints.stock import QUOTA_FAILED
from trio_stock.errors import ConfigError
from trio_stock.hub import FailureReason, Hub, Policy
from trio_stock.model import Market
from trio_stock.upstream.backoff import Backoff
from trio_stock.upstream.contract import ProviderState
from trio_stock.upstream.kis import KisProvider
from trio_stock.upstream.kis_pool import FAILED_AFTER_ATTEMPTS, KisPool

from .clients import real_websocket
from .conftest import EPOCH_NS
from .fakes.fake_kis import FakeKis, trade_record
from .test_kis_e2e import _drain, _ready_port, recv

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


# ---- the pool against the fake KIS --------------------------------------------------------

CODES = [f"{100_000 + n:06d}" for n in range(120)]


def session_for(fake: FakeKis, number: int, **options: Any) -> KisProvider:
    settings: dict[str, Any] = {
        "app_key": Secret(KEYS[number]),
        "app_secret": Secret(SECRETS[number]),
        "ws_url": fake.ws_url,
        "rest_url": fake.rest_url,
        "backoff": Backoff(initial=1.0, maximum=30.0, jitter=0.0),
        "register_interval": 0.05,
        "name": f"kis-{number + 1}",
    }
    settings.update(options)
    return KisProvider(**settings)


@asynccontextmanager
async def pooled(
    accepted: int, sessions: int = 3, *, ack_timeout: float = 30.0, **options: Any
) -> AsyncIterator[tuple[FakeKis, KisPool, Hub]]:
    """A fake accepting the first ``accepted`` keys, a pool of ``sessions`` keys, a hub."""
    async with trio.open_nursery() as nursery:
        fake = FakeKis(accounts={KEYS[n]: SECRETS[n] for n in range(accepted)})
        await nursery.start(fake.serve)
        pool = KisPool([session_for(fake, n, **options) for n in range(sessions)])
        hub = Hub([pool], linger=5.0, ack_timeout=ack_timeout, clock=WallClock(EPOCH_NS))
        await nursery.start(hub.run)
        yield fake, pool, hub
        nursery.cancel_scope.cancel()


def assert_each_code_on_one_session(fake: FakeKis, expected: set[str]) -> None:
    by_key = fake.registered_by_key()
    placed = [code for codes in by_key.values() for code in codes]
    assert len(placed) == len(set(placed))  # no code on two sessions
    assert set(placed) == expected


async def test_three_keys_one_refused_serve_80_of_100_codes_across_clients(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pooled(accepted=2) as (fake, pool, hub):
        results = []
        async with (
            hub.subscriber() as a,
            hub.subscriber() as b,
            hub.subscriber() as c,
            hub.subscriber() as d,
            hub.subscriber() as e,
            trio.open_nursery() as nursery,
        ):

            async def subscribe(sub: Any, codes: list[str]) -> None:
                results.append(await hub.subscribe(sub, codes))

            for n, sub in enumerate((a, b, c, d, e)):
                nursery.start_soon(subscribe, sub, CODES[n * 20 : n * 20 + 20])
        accepted = {code for r in results for code in r.accepted}
        failed = [f for r in results for f in r.failed]
        assert (len(accepted), len(failed)) == (80, 20)
        assert {f.reason for f in failed} == {FailureReason.QUOTA}
        assert accepted | {f.symbol for f in failed} == set(CODES[:100])
        assert_each_code_on_one_session(fake, accepted)
        assert {k: len(v) for k, v in fake.registered_by_key().items()} == {
            KEYS[0]: 40,
            KEYS[1]: 40,
        }
        assert fake.max_registrations == 40  # no session ever above its cap
        stats = pool.statistics()
        assert (stats.state, stats.quota, stats.registrations) == (
            ProviderState.CONNECTED,
            80,
            80,
        )
        assert [(s.label, s.state, s.used, s.quota) for s in stats.sessions] == [
            ("kis-1", ProviderState.CONNECTED, 40, 40),
            ("kis-2", ProviderState.CONNECTED, 40, 40),
            ("kis-3", ProviderState.AUTH_FAILED, 0, 40),
        ]
        assert fake.sessions_per_key == {KEYS[0]: 1, KEYS[1]: 1}
        text = repr(stats)
        for secret in (*KEYS, *SECRETS, *fake.approvals):
            assert secret not in text


async def test_a_dropped_session_moves_its_codes_to_sessions_with_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        pooled(accepted=3) as (fake, pool, hub),
        hub.subscriber() as first,
        hub.subscriber() as second,
    ):
        assert (await hub.subscribe(first, CODES[:60])).ok
        assert (await hub.subscribe(second, CODES[60:90])).ok
        before = fake.registered_by_key()
        assert {k: len(v) for k, v in before.items()} == {k: 30 for k in KEYS}
        lost = before[KEYS[0]]
        fake.failing_keys.add(KEYS[0])  # it cannot come back for a while
        assert fake.drop(KEYS[0]) == 1
        with trio.fail_after(60):
            await fake.wait_until(lambda: len(fake.registered()) == 80)
        stats = pool.statistics()
        assert stats.sessions[0].failed
        assert stats.sessions[0].reconnect_attempts >= FAILED_AFTER_ATTEMPTS
        assert [s.used for s in stats.sessions] == [0, 40, 40]
        assert fake.max_registrations == 40
        # 20 of the 30 lost codes found room; 10 were revoked with the quota reason.
        moved = lost & fake.registered()
        assert len(moved) == 20
        assert_each_code_on_one_session(fake, (set(CODES[:90]) - lost) | moved)
        revoked = [*first.take_revoked(), *second.take_revoked()]
        assert {f.symbol for f in revoked} == lost - moved
        assert {f.reason for f in revoked} == {FailureReason.QUOTA}
        # The subscribers of a moved code receive its prices again.
        code = sorted(moved)[0]
        holder = first if code in CODES[:60] else second
        assert await fake.send_trades([trade_record(code, 71_500, size=3)]) == 1
        with trio.fail_after(5):
            while (state := await holder.receive()).symbol != code:
                pass
        assert state.last_price == 71_500
        # Back again: no churn, the session registers nothing until a new code comes.
        registrations = len(fake.requests_of("1"))
        fake.failing_keys.clear()
        connections = fake.connections_total
        with trio.fail_after(60):  # the next approval (<= 8 s), then the connect
            await fake.wait_until(lambda: fake.connections_total > connections)
        await trio.sleep(10)
        assert pool.statistics().sessions[0].state is ProviderState.CONNECTED
        assert len(fake.requests_of("1")) == registrations
        assert not pool.statistics().sessions[0].failed
        assert (await hub.subscribe(first, [CODES[100]])).ok
        assert fake.registered_by_key()[KEYS[0]] == {CODES[100]}
        assert len(fake.requests_of("2")) == 0  # nothing was ever unregistered upstream


async def test_a_key_in_use_elsewhere_backs_off_while_the_others_serve(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with pooled(accepted=2, sessions=2) as (fake, pool, hub):
        fake.in_use_elsewhere.add(KEYS[0])
        async with hub.subscriber() as sub:
            result = await hub.subscribe(sub, CODES[:30])
            assert result.accepted == tuple(CODES[:30])
            assert fake.registered_by_key() == {KEYS[1]: set(CODES[:30])}
            session = pool.statistics().sessions[0]
            assert session.failed and session.detail is not None and "OPSP8996" in session.detail
            refused_at = trio.current_time()
            await trio.sleep(600)  # ten minutes: a long back-off each time, never a storm
            assert fake.refused_sessions <= 2
            assert fake.connections_total <= 2 + 600 / 60
            assert fake.max_sessions_per_key == 1
            assert trio.current_time() - refused_at >= 600
            assert await fake.send_trades([trade_record(CODES[7], 70_100)]) == 1
            while (state := await sub.receive()).symbol != CODES[7]:
                pass
            assert state.last_price == 70_100
            # Back "up" (an idle session is not refused), it takes new codes; when the key
            # is still in use there, they move on at once and are acknowledged all the same.
            refused = fake.refused_sessions
            result = await hub.subscribe(sub, CODES[30:40])
            assert result.accepted == tuple(CODES[30:40]), result.failed
            assert fake.registered_by_key() == {KEYS[1]: set(CODES[:40])}
            assert fake.refused_sessions <= refused + 1
            assert fake.max_sessions_per_key == 1


async def test_seed_000_kis_max_subscriptions_is_the_quota_of_the_usable_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three keys, the third refused at approval: ``/ws/stock/``'s ``kis_max_subscriptions``
    and its quota error name the pool's quota, its two usable sessions' 80 (not 3 x 40)."""
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis(accounts={KEYS[n]: SECRETS[n] for n in range(2)}).serve)
        accounts = Config.from_mapping({"KIS_ACCOUNTS": accounts_json(3)}).kis_accounts
        config = fake.gateway_config().replace(
            kis_app_key=None, kis_app_secret=None, kis_accounts=accounts
        )
        gateway = await nursery.start(trio_stock.serve, config)
        pool = gateway.hub.provider_for(Market.KR)
        assert isinstance(pool, KisPool) and gateway.port is not None
        with trio.fail_after(30):
            await fake.wait_until(lambda: fake.approval_requests >= 3 and len(fake.sessions) == 2)
        await trio.testing.wait_all_tasks_blocked()  # the refusal and the handshakes land
        assert [s.state for s in pool.statistics().sessions] == [
            ProviderState.CONNECTED,
            ProviderState.CONNECTED,
            ProviderState.AUTH_FAILED,
        ]
        async with real_websocket(gateway.port, "/ws/stock/") as ws:
            await recv(ws, "connection_established")
            await ws.send_message(json.dumps({"action": "list_subscriptions"}))
            listing = await recv(ws, "subscriptions_list")
            assert (listing["kis_active_subscriptions"], listing["kis_max_subscriptions"]) == (
                0,
                80,
            )
            await ws.send_message(json.dumps({"action": "subscribe", "codes": CODES[:81]}))
            result = await recv(ws, "subscription_result")
            assert (result["subscribed"], result["failed"]) == (CODES[:80], [CODES[80]])
            assert result["error"] == QUOTA_FAILED.format(limit=80)  # "80개 종목 구독 실패"
            await ws.send_message(json.dumps({"action": "list_subscriptions"}))
            listing = await recv(ws, "subscriptions_list")
            assert (listing["kis_active_subscriptions"], listing["kis_max_subscriptions"]) == (
                80,
                80,
            )
        assert {k: len(v) for k, v in fake.registered_by_key().items()} == {
            KEYS[0]: 40,
            KEYS[1]: 40,
        }
        nursery.cancel_scope.cancel()


def test_the_gateway_builds_a_pool_from_kis_accounts_and_one_provider_from_one_key() -> None:
    from trio_stock.gateway import build_providers

    pooled_config = Config.from_mapping({"KIS_ACCOUNTS": accounts_json(3, env="paper")})
    kr, _ = build_providers(pooled_config)
    assert isinstance(kr, KisPool)
    assert [s.name[:7] for s in kr.sessions] == ["kis-1 (", "kis-2 (", "kis-3 ("]
    assert {s.register_interval for s in kr.sessions} == {0.5}  # paper pacing per session
    assert kr.quota == 120 and kr.name == "kis"
    one = Config.from_mapping({"KIS_APP_KEY": KEYS[0], "KIS_APP_SECRET": SECRETS[0]})
    kr, _ = build_providers(one)
    assert isinstance(kr, KisProvider) and kr.name == "kis"


async def test_40_codes_at_once_on_a_paper_key_are_all_acknowledged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = {"ack_timeout": 10.0, "register_interval": 0.5}
    async with pooled(accepted=1, sessions=1, **options) as (fake, _, hub), hub.subscriber() as sub:
        started = trio.current_time()
        result = await hub.subscribe(sub, CODES[:40])
        assert result.accepted == tuple(CODES[:40]), result.failed
        assert trio.current_time() - started >= 19.5  # past ack_timeout: paced, not lost
        assert len(fake.registered()) == 40


async def test_a_lone_paper_session_also_fits_the_acknowledgement_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis(accounts={KEYS[0]: SECRETS[0]}).serve)
        provider = session_for(fake, 0, register_interval=0.5)
        hub = Hub([provider], ack_timeout=10.0, clock=WallClock(EPOCH_NS))
        await nursery.start(hub.run)
        async with hub.subscriber(Policy.LOSSLESS) as sub:
            result = await hub.subscribe(sub, CODES[:40])
            assert result.accepted == tuple(CODES[:40]), result.failed
        nursery.cancel_scope.cancel()


async def test_sessions_of_a_pool_register_in_parallel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options = {"ack_timeout": 10.0, "register_interval": 0.5}
    async with pooled(accepted=2, sessions=2, **options) as (fake, _, hub), hub.subscriber() as sub:
        started = trio.current_time()
        result = await hub.subscribe(sub, CODES[:80])
        took = trio.current_time() - started
        assert result.accepted == tuple(CODES[:80]), result.failed
        assert 19.5 <= took < 30  # two queues of 40, side by side (one would take 40 s)
        assert {len(v) for v in fake.registered_by_key().values()} == {40}


async def test_python_m_trio_stock_serves_80_codes_from_two_keys(tmp_path: Path) -> None:
    """The real program with KIS_ACCOUNTS of two keys, on the real clock (every wait is on
    an event, bounded by 60 s): 80 codes to two seed 000 clients, 40 on each key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))}
    output: list[bytes | bytearray] = []
    codes = CODES[:80]
    async with trio.open_nursery() as nursery:
        fake = await nursery.start(FakeKis(accounts={KEYS[n]: SECRETS[n] for n in range(2)}).serve)
        env |= {
            "KIS_ACCOUNTS": accounts_json(2),
            "KIS_WS_URL": fake.ws_url,
            "KIS_REST_URL": fake.rest_url,
            "KIS_REGISTER_INTERVAL": "0",
        }
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_stock", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,  # no .env file
        )
        assert process.stdout is not None
        try:
            with trio.fail_after(60):
                port = await _ready_port(process.stdout, output)
                async with (
                    real_websocket(port, "/ws/stock/") as first,
                    real_websocket(port, "/ws/stock/") as second,
                ):
                    for ws, half in ((first, codes[:40]), (second, codes[40:])):
                        await recv(ws, "connection_established")
                        await ws.send_message(json.dumps({"action": "subscribe", "codes": half}))
                    for ws, half in ((first, codes[:40]), (second, codes[40:])):
                        result = await recv(ws, "subscription_result")
                        assert (result["success"], result["subscribed"]) == (True, half)
                    by_key = fake.registered_by_key()
                    assert {k: len(v) for k, v in by_key.items()} == {KEYS[0]: 40, KEYS[1]: 40}
                    assert by_key[KEYS[0]] | by_key[KEYS[1]] == set(codes)
                    for ws, code in ((first, codes[3]), (second, codes[77])):
                        assert await fake.send_trades([trade_record(code, 72_100, size=3)]) == 1
                        while (price := await recv(ws, "stock_price"))["stock_code"] != code:
                            pass
                        assert (price["price"], price["volume"]) == (72_100, 3)
                    await first.send_message(json.dumps({"action": "list_subscriptions"}))
                    listing = await recv(first, "subscriptions_list")
                    assert (
                        listing["kis_active_subscriptions"],
                        listing["kis_max_subscriptions"],
                    ) == (80, 80)
                    async with httpx.AsyncClient() as client:
                        url = f"http://127.0.0.1:{port}/api/v2/realtime/health"
                        health = (await client.get(url)).text
                        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                process.terminate()
                drained = trio.Event()
                nursery.start_soon(_drain, process.stdout, output, drained)
                assert await process.wait() == 0
                await drained.wait()
                await fake.wait_until(lambda: fake.live_connections == 0)
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            await process.stdout.aclose()
        (kis,) = [p for p in json.loads(health)["providers"] if p["kind"] == "kis"]
        assert (kis["state"], kis["quota"], kis["registrations"]) == ("connected", 80, 80)
        assert [(s["state"], s["used"], s["quota"]) for s in kis["sessions"]] == [
            ("connected", 40, 40),
            ("connected", 40, 40),
        ]
        labels = [s["label"] for s in kis["sessions"]]
        assert [label[:7] for label in labels] == ["kis-1 (", "kis-2 ("]
        for label in labels:
            assert f'trio_stock_session_used{{provider="{label}",pool="kis"}} 40' in metrics
            assert f'trio_stock_session_quota{{provider="{label}",pool="kis"}} 40' in metrics
            assert f'trio_stock_session_connected{{provider="{label}",pool="kis"}} 1' in metrics
        assert fake.sessions_per_key == {KEYS[0]: 1, KEYS[1]: 1}
        assert sorted(fake.requests_of("2")) == sorted(codes)  # a graceful shutdown releases
        log = b"".join(output).decode()
        assert f"{labels[0]}: session 1 up" in log
        for secret in (*KEYS, *SECRETS, *fake.approvals):
            assert secret not in log and secret not in health and secret not in metrics
        nursery.cancel_scope.cancel()
