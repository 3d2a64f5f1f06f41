"""What trio_stock.cluster.redis says about coredis on Trio, checked against a real redis-server."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import coredis.exceptions
import pytest
import trio
from coredis.commands.script import Script
from coredis.response.types import PubSubMessage

from trio_stock.cluster.redis import (
    MAX_CONNECTIONS,
    PUBSUB_KEEPALIVE,
    STREAM_TIMEOUT,
    describe_failure,
    is_redis_failure,
    open_redis,
    redact_url,
)

from .redis_server import RedisServer, redis_server_binary, running_redis

SLACK = 1.0  # scheduling on a loaded machine
BUSY_FOR_200_MS = """
local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end
local start = now()
repeat until now() - start > 200000
redis.call('SET', KEYS[1], 'done')
return 1
"""


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A server of its own per test: these tests stop, kill and restart it."""
    with running_redis() as server:
        yield server


async def test_one_client_serves_many_tasks(redis_server: RedisServer) -> None:
    async with open_redis(redis_server.url) as redis:

        async def count() -> None:
            for _ in range(20):
                await redis.incr("counter")

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(count)
        assert await redis.get("counter") == b"1000"
        # Commands are multiplexed: 50 tasks did not open 50 connections.
        assert redis.connection_pool.statistics.active_connections <= MAX_CONNECTIONS


async def test_a_cancelled_command_leaves_the_connection_in_step(
    redis_server: RedisServer,
) -> None:
    async with open_redis(redis_server.url) as redis:
        with trio.move_on_after(0.05) as cancelled:
            await redis.eval(BUSY_FOR_200_MS, keys=["k"])
        assert cancelled.cancelled_caught
        # The cancelled command's reply is consumed in order; the next ones match up.
        assert await redis.set("other", "x")
        assert await redis.get("other") == b"x"
        assert await redis.get("k") == b"done"


async def test_a_stalled_redis_fails_calls_in_bounded_time(redis_server: RedisServer) -> None:
    async with open_redis(redis_server.url) as redis:
        assert await redis.ping() == b"PONG"
        redis_server.stop()
        try:
            with trio.fail_after(STREAM_TIMEOUT + SLACK), pytest.raises(TimeoutError) as caught:
                await redis.ping()
            assert is_redis_failure(caught.value)
        finally:
            redis_server.cont()
        assert await redis.ping() == b"PONG"


async def test_commands_and_scripts_work_again_after_a_restart(
    redis_server: RedisServer,
) -> None:
    script: Script[bytes] = Script(script="return redis.call('INCR', KEYS[1])")
    async with open_redis(redis_server.url) as redis:
        assert await script(keys=["n"], client=redis) == 1
        redis_server.kill()
        with pytest.raises(coredis.exceptions.ConnectionError) as caught:
            await redis.ping()
        assert is_redis_failure(caught.value)
        await trio.to_thread.run_sync(redis_server.start)
        # A new connection, a server without the script (NOSCRIPT: loaded again) or the key.
        assert await script(keys=["n"], client=redis) == 1


async def test_pubsub_resubscribes_after_a_restart_and_says_so(
    redis_server: RedisServer,
) -> None:
    async with (
        open_redis(redis_server.url) as redis,
        redis.pubsub(channels=["ticks"], max_idle_seconds=PUBSUB_KEEPALIVE) as pubsub,
    ):
        with trio.fail_after(5):
            first = await pubsub.get_message()
        assert first is not None
        assert first["type"] == "subscribe"
        await redis_server.restart()
        # Published before the resubscription: lost (at most once), so publish until heard.
        with trio.fail_after(20):
            while await redis.publish("ticks", b"after") == 0:  # noqa: ASYNC110 - another process
                await trio.sleep(0.05)
            messages: list[PubSubMessage] = []
            while not messages or messages[-1]["type"] != "message":
                message = await pubsub.get_message()
                if message is not None:
                    messages.append(message)
        # The gap is announced by a new subscribe confirmation before the next message.
        assert [m["type"] for m in messages] == ["subscribe", "message"]
        assert messages[-1]["data"] == b"after"


async def test_failed_connects_leave_nothing_for_the_garbage_collector(
    redis_server: RedisServer,
) -> None:
    """coredis leaves a failed connection's streams open; open_redis's connections close them."""
    redis_server.kill()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with open_redis(redis_server.url) as redis:
            for _ in range(3):
                with pytest.raises(coredis.exceptions.ConnectionError):
                    await redis.ping()
            gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_a_missing_redis_server_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"install-redis\.sh"):
        redis_server_binary()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"install-redis\.sh"):
        redis_server_binary()


def test_redact_url_hides_the_password() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:s3cret@host:6379/1") == "redis://:***@host:6379/1"
    assert redact_url("rediss://user:p%40ss@[::1]:6380") == "rediss://user:***@[::1]:6380"
    assert "s3cret" not in redact_url("redis://u:s3cret@h:99999999")
    assert redact_url("redis://u:s3cret@[::1") == "***"


def test_redis_failures_are_told_from_bugs() -> None:
    assert is_redis_failure(coredis.exceptions.ConnectionError("gone"))
    assert is_redis_failure(TimeoutError())
    assert is_redis_failure(trio.TooSlowError())
    assert is_redis_failure(ExceptionGroup("x", [ConnectionRefusedError(), TimeoutError()]))
    assert not is_redis_failure(ExceptionGroup("x", [TimeoutError(), KeyError("bug")]))
    assert not is_redis_failure(KeyError("bug"))
    assert describe_failure(ExceptionGroup("x", [TimeoutError(), OSError("down")])) == (
        "TimeoutError; OSError: down"
    )
