"""A registration the upstream refuses after a reconnect reaches the subscribers that held it.

Against the fake KIS: the server takes fewer registrations after a reconnect than before
(its cap drops, kis.md §7), so re-registering what the hub holds is refused for one code.
The subscribers holding that code are told (``Subscriber.take_revoked``), the hub and the
provider stop holding it, and the client protocols render the news as an ``error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import pytest
import trio
import trio.testing

from trio_stock.clock import WallClock
from trio_stock.config import Secret
from trio_stock.endpoints.prices import PricesProtocol
from trio_stock.endpoints.stock import StockProtocol
from trio_stock.hub import Failure, FailureReason, Hub, Subscriber
from trio_stock.upstream.backoff import Backoff
from trio_stock.upstream.kis import KisProvider

from .conftest import EPOCH_NS
from .fakes.fake_kis import DEFAULT_APP_KEY, DEFAULT_APP_SECRET, FakeKis

SAMSUNG, HYNIX = "005930", "000660"


@pytest.fixture
async def fake() -> AsyncIterator[FakeKis]:
    async with trio.open_nursery() as nursery:
        yield await nursery.start(FakeKis().serve)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(fake: FakeKis) -> AsyncIterator[tuple[KisProvider, Hub]]:
    provider = KisProvider(
        app_key=Secret(DEFAULT_APP_KEY),
        app_secret=Secret(DEFAULT_APP_SECRET),
        ws_url=fake.ws_url,
        rest_url=fake.rest_url,
        backoff=Backoff(initial=1.0, maximum=30.0, jitter=0.0),
        register_interval=0.05,
    )
    hub = Hub([provider], ack_timeout=30.0, clock=WallClock(EPOCH_NS))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        yield provider, hub
        nursery.cancel_scope.cancel()


async def revocations(sub: Subscriber) -> list[Failure]:
    """Wait as a client writer does (a revocation wakes ``receive_batch``), then take them."""
    while not (taken := sub.take_revoked()):
        await sub.receive_batch()
    return taken


async def test_a_code_refused_after_a_reconnect_is_revoked_from_its_holders(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with (
        running(fake) as (provider, hub),
        hub.subscriber() as both,
        hub.subscriber() as one,
        hub.subscriber() as bystander,
    ):
        assert (await hub.subscribe(both, [SAMSUNG, HYNIX])).ok
        assert (await hub.subscribe(one, [HYNIX])).ok
        assert (await hub.subscribe(bystander, [SAMSUNG])).ok
        fake.cap = 1  # the next session takes one registration
        assert fake.drop() == 1
        refused = Failure(HYNIX, FailureReason.QUOTA, "OPSP0008 MAX SUBSCRIBE OVER")
        with trio.fail_after(120):
            assert await revocations(both) == [refused]
            assert await revocations(one) == [refused]
        assert fake.requests_of("1") == [SAMSUNG, HYNIX, SAMSUNG, HYNIX]
        assert [a["body"]["msg_cd"] for a in fake.answers[2:]] == ["OPSP0000", "OPSP0008"]
        assert [both.symbols, one.symbols, bystander.symbols] == [{SAMSUNG}, set(), {SAMSUNG}]
        assert bystander.take_revoked() == []
        # Nobody holds HYNIX any more: not the hub, not the provider, not the server.
        assert hub.held() == [SAMSUNG]
        assert provider.wanted() == [SAMSUNG]
        assert fake.registered() == {SAMSUNG}
        stats = hub.statistics()
        assert (stats.revoked, stats.upstream[0].used) == (1, 1)
        assert provider.statistics().registrations == 1
        assert "re-registration of 000660 refused" in (provider.statistics().last_error or "")


async def test_a_code_refused_after_a_reconnect_is_not_retried_nor_unregistered(
    autojump_clock: trio.testing.MockClock, fake: FakeKis
) -> None:
    async with running(fake) as (_, hub), hub.subscriber() as sub:
        assert (await hub.subscribe(sub, [SAMSUNG, HYNIX])).ok
        fake.cap = 1
        assert fake.drop() == 1
        with trio.fail_after(120):
            await revocations(sub)
        fake.cap = 41
        assert fake.drop() == 1  # one more session: only what is still held comes back
        await fake.wait_until(lambda: len(fake.requests_of("1")) == 5)
        await trio.sleep(10)
        assert fake.requests_of("1") == [SAMSUNG, HYNIX, SAMSUNG, HYNIX, SAMSUNG]
        assert fake.requests_of("2") == []  # nothing to release: the server refused it
        assert fake.registered() == {SAMSUNG}
        assert hub.held() == [SAMSUNG]


# ---- how each client protocol tells it --------------------------------------------------


def test_seed_003_tells_revoked_symbols_in_an_error_message() -> None:
    failures = [
        Failure("AAPL", FailureReason.REJECTED, "FMP: unknown ticker"),
        Failure("005930", FailureReason.QUOTA, ""),
    ]
    payload = PricesProtocol().revoked(failures)
    assert payload == {
        "type": "error",
        "message": "Subscription ended: AAPL (rejected: FMP: unknown ticker), 005930 (quota)",
        "failed": ["AAPL", "005930"],
    }
    orjson.dumps(payload)  # the writer encodes it as is


def test_seed_000_tells_revoked_codes_in_an_error_message() -> None:
    failures = [
        Failure(HYNIX, FailureReason.QUOTA, "OPSP0008 MAX SUBSCRIBE OVER"),
        Failure(SAMSUNG, FailureReason.REJECTED, ""),
    ]
    payload = StockProtocol().revoked(failures)
    assert payload == {
        "type": "error",
        "message": "종목 구독 종료: 000660: OPSP0008 MAX SUBSCRIBE OVER; 005930: rejected",
        "failed": [HYNIX, SAMSUNG],
    }
    orjson.dumps(payload)
