"""A cluster of gateways on Redis, end to end: issue 14's "Must show".

Every test starts a real ``redis-server`` on a free port of 127.0.0.1 (``tests/redis_server.py``),
the project's fake KIS (and fake FMP) on 127.0.0.1, and gateway nodes as real
``python -m trio_stock`` processes pointed at both; clients are real WebSocket clients of the
nodes. Redis's TTLs run on the real clock, so the nodes use short ones (``LEASE_TTL``,
``NODE_TTL``, ``LINGER``) and every wait is for a condition (a message on a socket, the
fake's state, a node's health) with a bound; nothing sleeps to make a test pass. A node's
health is polled: it is another process, with no event a test could wait on.

The fake market is live while a test runs: :class:`Feed` sends a trade for every code the
fake has registered every ``TICK`` seconds, so "clients receive prices again" means a
price reaches a socket, whoever holds the upstream session by then.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
import trio_websocket

from trio_stock.cluster.keys import Keys
from trio_stock.cluster.redis import open_redis
from trio_stock.cluster.wire import RemoteState, decode_state
from trio_stock.endpoints.stock import QUOTA_FAILED

from .clients import real_websocket
from .fakes.fake_fmp import FakeFmp
from .fakes.fake_kis import DEFAULT_APP_KEY, DEFAULT_APP_SECRET, FakeKis, trade_record
from .redis_server import RedisServer, running_redis

LEASE_TTL = 2.0  # seconds; a stopped or killed holder's sessions move after this (+ a retry)
NODE_TTL = 1.5  # seconds; a silent node's demand is dropped after this (+ a reconcile period)
LINGER = 1.0  # seconds a released code stays registered upstream
TICK = 0.1  # seconds between the fake market's trades of each registered code
SLACK = 3.0  # seconds a bound on a takeover allows for a loaded machine and a reconnect
WITHIN = 20.0  # bound on every wait for a condition (a loaded two-core CI machine)
POLL = 0.05  # seconds between two looks at another process's state
SAMSUNG = "005930"

Message = dict[str, Any]


def lease_retry(ttl: float) -> float:
    """How often a standby tries to take a free lease (``serve.settings_of``)."""
    return min(1.0, ttl / 3)


# ---- the nodes ------------------------------------------------------------------------


@attrs.define(eq=False)
class Node:
    """One ``python -m trio_stock`` node of the cluster, its port and everything it printed."""

    name: str
    process: trio.Process
    port: int
    output: bytearray

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.output.decode(errors="replace")

    async def health(self) -> Message:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(self.url + "/api/v2/realtime/health")
        assert response.status_code == 200, response.text[:300]
        body = response.json()
        assert isinstance(body, dict)
        return body

    async def cluster(self) -> Message:
        cluster = (await self.health())["cluster"]
        assert isinstance(cluster, dict)
        return cluster

    async def fence(self, session: str) -> int | None:
        """The fence of ``session`` while this node holds it, else None."""
        for lease in (await self.cluster())["leases"]:
            if lease["session"] == session and lease["held"]:
                fence = lease["fence"]
                assert isinstance(fence, int)
                return fence
        return None

    def send_signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)


def node_env(
    redis: RedisServer,
    kis: FakeKis,
    fmp: FakeFmp | None,
    name: str,
    *,
    lease_ttl: float = LEASE_TTL,
) -> dict[str, str]:
    """A node's environment: the cluster's Redis, short TTLs, the fakes; nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIS_", "FMP_", "TRIO_STOCK_"))}
    env |= {
        "TRIO_STOCK_REDIS_URL": redis.url,
        "TRIO_STOCK_NODE_ID": name,
        "TRIO_STOCK_LEASE_TTL": str(lease_ttl),
        "TRIO_STOCK_NODE_TTL": str(NODE_TTL),
        "TRIO_STOCK_LINGER": str(LINGER),
        "TRIO_STOCK_LOG_LEVEL": "INFO",
        "TRIO_STOCK_SIM_ALWAYS_OPEN": "1",
        "KIS_APP_KEY": DEFAULT_APP_KEY,
        "KIS_APP_SECRET": DEFAULT_APP_SECRET,
        "KIS_WS_URL": kis.ws_url,
        "KIS_REST_URL": kis.rest_url,
        "KIS_REGISTER_INTERVAL": "0",
    }
    if fmp is not None:
        env |= {"FMP_API_KEY": fmp.api_key, "FMP_WS_URL": fmp.ws_url, "FMP_REST_URL": fmp.rest_url}
    return env


async def _start_node(
    name: str,
    env: dict[str, str],
    cwd: Path,
    *,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Start a node, hand it back once it listens, and keep reading its output until it exits."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_stock", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    assert process.stdout is not None
    output = bytearray()
    try:
        with trio.fail_after(WITHIN):
            while (match := re.search(rb"listening on http://127\.0\.0\.1:(\d+)", output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"node {name} exited before listening:\n{output.decode()}"
                output += chunk
        task_status.started(Node(name, process, int(match.group(1)), output))
        while chunk := await process.stdout.receive_some():
            output += chunk
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            await process.stdout.aclose()


@asynccontextmanager
async def cluster_of(
    names: Sequence[str], env_of: Callable[[str], dict[str, str]], cwd: Path
) -> AsyncIterator[list[Node]]:
    """The named nodes, started together; killed (SIGKILL) when the block ends."""
    async with trio.open_nursery() as nursery:
        started: list[Node | None] = [None] * len(names)

        async def start(i: int) -> None:
            started[i] = await nursery.start(_start_node, names[i], env_of(names[i]), cwd)

        async with trio.open_nursery() as starting:
            for i in range(len(names)):
                starting.start_soon(start, i)
        nodes = [node for node in started if node is not None]
        try:
            yield nodes
        except BaseException:
            for node in nodes:  # pytest shows them with the failure
                print(f"---- node {node.name} ----\n{node.log}")
            raise
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.process.send_signal(signal.SIGCONT)  # a stopped node must die too
                    node.process.kill()
            nursery.cancel_scope.cancel()


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail after ``WITHIN`` seconds."""
    with trio.move_on_after(WITHIN):
        while not await check():  # noqa: ASYNC110 - another process's state: no event to wait on
            await trio.sleep(POLL)
        return
    raise AssertionError(f"not within {WITHIN} s: {what}")


async def holder_of(nodes: Sequence[Node], session: str) -> tuple[Node, int]:
    """The node that holds ``session`` (waiting for one to), and its fence."""
    found: list[tuple[Node, int]] = []

    async def held() -> bool:
        found.clear()
        for node in nodes:
            if node.process.poll() is None and (fence := await node.fence(session)):
                found.append((node, fence))
        return len(found) == 1

    await eventually(held, f"one node holds {session}")
    return found[0]


# ---- the market and the clients -------------------------------------------------------


@attrs.define(eq=False)
class Feed:
    """The fake KIS as a live market: every ``TICK`` s, a trade for every registered code."""

    kis: FakeKis
    price: int = 70_000
    running: bool = True
    sent: int = 0

    async def run(self) -> None:
        while True:
            if self.running:
                for code in sorted(self.kis.registered()):
                    self.sent += await self.kis.send_trades([trade_record(code, self.price)])
            await trio.sleep(TICK)


@attrs.define(eq=False)
class Client:
    """A WebSocket client of a node, and every price it was pushed."""

    ws: trio_websocket.WebSocketConnection
    prices: list[Message] = attrs.Factory(list)

    async def send(self, payload: Message) -> None:
        await self.ws.send_message(json.dumps(payload))

    async def receive(self) -> Message:
        with trio.fail_after(WITHIN):
            message = json.loads(await self.ws.get_message())
        assert isinstance(message, dict)
        if message["type"] in ("stock_price", "price_update"):
            self.prices.append(message)
        return message

    async def reply(self, kind: str) -> Message:
        """The next message of type ``kind``; pushed prices in between are skipped."""
        while True:
            message = await self.receive()
            if message["type"] == kind:
                return message
            assert message["type"] in ("stock_price", "price_update"), message

    async def price(self, when: Callable[[Message], bool] = lambda m: True) -> Message:
        """The next pushed price for which ``when`` holds (others are skipped)."""
        while True:
            message = await self.receive()
            if message["type"] in ("stock_price", "price_update") and when(message):
                return message

    async def subscribe(self, symbols: Sequence[str]) -> Message:
        """A seed 000 client's ``subscribe``, and its ``subscription_result``."""
        await self.send({"action": "subscribe", "codes": list(symbols)})
        return await self.reply("subscription_result")


@asynccontextmanager
async def seed_000(node: Node) -> AsyncIterator[Client]:
    async with real_websocket(node.port, "/ws/stock/") as ws:
        client = Client(ws)
        assert (await client.receive())["type"] == "connection_established"
        yield client


@asynccontextmanager
async def seed_003(node: Node) -> AsyncIterator[Client]:
    async with real_websocket(node.port, "/api/v2/realtime/ws/prices") as ws:
        client = Client(ws)
        assert (await client.receive())["type"] == "connected"
        yield client


@asynccontextmanager
async def watch_states(redis: RedisServer, symbol: str) -> AsyncIterator[list[RemoteState]]:
    """Every state of ``symbol`` published on its Redis channel, as the nodes receive them."""
    states: list[RemoteState] = []
    async with open_redis(redis.url) as client, trio.open_nursery() as nursery:
        pubsub = client.pubsub(channels=[Keys().ticks(symbol)], ignore_subscribe_messages=True)
        async with pubsub:

            async def read() -> None:
                while True:
                    message = await pubsub.get_message()
                    if message is not None and message["type"] == "message":
                        data = message["data"]
                        assert isinstance(data, bytes), message
                        states.append(decode_state(data))  # MalformedState fails the test

            nursery.start_soon(read)
            yield states
            nursery.cancel_scope.cancel()


# ---- the tests --------------------------------------------------------------------------


async def test_two_nodes_serve_one_symbol_with_one_upstream_registration(tmp_path: Path) -> None:
    """Clients on both nodes get the same KIS code (seed 000) and the same FMP ticker (seed
    003); each upstream saw it registered once, by the one node holding its session."""
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            fmp = await nursery.start(FakeFmp(heartbeat_interval=None).serve)
            feed = Feed(kis)
            nursery.start_soon(feed.run)
            env = lambda name: node_env(redis, kis, fmp, name)  # noqa: E731
            async with cluster_of(["a", "b"], env, tmp_path) as nodes:
                async with seed_000(nodes[0]) as first, seed_000(nodes[1]) as second:
                    for client in (first, second):
                        result = await client.subscribe([SAMSUNG])
                        assert (result["success"], result["subscribed"]) == (True, [SAMSUNG])
                    for client in (first, second):
                        got = await client.price(lambda m: m["stock_code"] == SAMSUNG)
                        assert got["price"] == feed.price
                    holder, _ = await holder_of(nodes, "kis")
                    cluster = await holder.cluster()
                    assert cluster["holder_demand"]["kis"] == {"a": 1, "b": 1}
                    assert cluster["holder_quota"]["kis"] == [1, 40]
                assert kis.requests_of("1") == [SAMSUNG]
                assert kis.sessions_per_key == {DEFAULT_APP_KEY: 1}

                async with seed_003(nodes[0]) as first, seed_003(nodes[1]) as second:
                    for client in (first, second):
                        await client.send({"action": "subscribe", "symbols": ["AAPL"]})
                        answer = await client.reply("subscription")
                        assert answer["symbols"] == ["AAPL"]
                    # Both are answered, so the holder registered it: one trade reaches both.
                    assert await fmp.trade("AAPL", 187.25, 10) == 1
                    for client in (first, second):  # (after the snapshot the holder fetched)
                        await client.price(lambda m: m["symbol"] == "AAPL" and m["last_size"] == 10)
                assert [t for _, tickers in fmp.subscribe_frames for t in tickers] == ["aapl"]
                assert fmp.login_outcomes == ["ok"]
            nursery.cancel_scope.cancel()


CODES = [f"{100_000 + 7 * i:06d}" for i in range(41)]  # 41 distinct valid codes


async def test_41_codes_across_two_nodes_register_40_and_the_41st_fails_for_quota(
    tmp_path: Path,
) -> None:
    """One KIS key (quota 40) for the whole cluster: 21 codes asked on one node (seed 000),
    then 20 on the other (seed 003); 40 are registered upstream, the 41st fails to its
    client with the quota as the reason, and the fake never saw a 41st registration."""
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            env = lambda name: node_env(redis, kis, None, name)  # noqa: E731
            async with (
                cluster_of(["a", "b"], env, tmp_path) as nodes,
                seed_000(nodes[0]) as first,
                seed_003(nodes[1]) as second,
            ):
                codes_a, codes_b = CODES[:21], CODES[21:]
                result = await first.subscribe(codes_a)
                assert (result["success"], result["subscribed"]) == (True, codes_a)
                await second.send({"action": "subscribe", "symbols": codes_b})
                answer = await second.reply("subscription")
                (failed,) = answer["failed"]
                assert failed in codes_b
                assert answer["symbols"] == [c for c in codes_b if c != failed]
                error = await second.reply("error")
                assert error["message"].startswith(f"Could not subscribe: {failed} (quota")
                registered = set(CODES) - {failed}
                assert kis.registered() == registered
                assert sorted(kis.requests_of("1")) == sorted(registered)
                assert kis.max_registrations == 40
                holder, _ = await holder_of(nodes, "kis")
                cluster = await holder.cluster()
                assert cluster["holder_quota"]["kis"] == [40, 40]
                assert cluster["holder_demand"]["kis"] == {"a": 21, "b": 19}
                # Asked again, it fails for the quota again (not for an earlier refusal);
                # a seed 000 client asking for it is told the seed's text.
                await second.send({"action": "subscribe", "symbols": [failed]})
                assert (await second.reply("subscription"))["failed"] == [failed]
                error = await second.reply("error")
                assert error["message"].startswith(f"Could not subscribe: {failed} (quota")
                again = await first.subscribe([failed])
                assert (again["success"], again["failed"]) == (False, [failed])
                assert again["error"] == QUOTA_FAILED.format(limit=40)
                # A code let go on one node is free capacity for the whole cluster at once
                # (it lingers upstream, and a lingering code yields its slot when needed).
                await first.send({"action": "unsubscribe", "codes": [codes_a[0]]})
                assert (await first.reply("unsubscription_result"))["success"]

                async def let_go() -> bool:
                    demand = (await holder.cluster())["holder_demand"]["kis"]
                    return bool(demand["a"] == 20)

                await eventually(let_go, "the holder hears that node a let a code go")
                await second.send({"action": "subscribe", "symbols": [failed]})
                answer = await second.reply("subscription")
                assert (answer["symbols"], answer.get("failed")) == ([failed], None)
                assert kis.registered() == set(CODES) - {codes_a[0]}
                assert kis.max_registrations == 40
            nursery.cancel_scope.cancel()


async def test_kill_9_of_the_holder_moves_the_session_and_prices_flow_again(
    tmp_path: Path,
) -> None:
    """SIGKILL of the node holding the KIS session: the other node holds it within the
    lease's TTL plus a retry (and ``SLACK`` for a reconnect on a loaded machine), its
    clients receive prices again, and the fake never saw two sessions of the key at once."""
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            feed = Feed(kis)
            nursery.start_soon(feed.run)
            env = lambda name: node_env(redis, kis, None, name)  # noqa: E731
            async with cluster_of(["a", "b"], env, tmp_path) as nodes:
                holder, fence = await holder_of(nodes, "kis")
                (survivor,) = [node for node in nodes if node is not holder]
                async with seed_000(survivor) as client:
                    assert (await client.subscribe([SAMSUNG]))["success"]
                    await client.price(lambda m: m["price"] == feed.price)
                    feed.price = 71_000
                    killed_at = time.monotonic()
                    holder.process.kill()
                    await client.price(lambda m: m["price"] == 71_000)
                    took = time.monotonic() - killed_at
                new_holder, new_fence = await holder_of(nodes, "kis")
                assert (new_holder, new_fence > fence) == (survivor, True)
                assert took < LEASE_TTL + lease_retry(LEASE_TTL) + SLACK, took
                assert kis.sessions_per_key == {DEFAULT_APP_KEY: 2}
                assert kis.max_sessions_per_key == 1
            nursery.cancel_scope.cancel()


async def test_a_holder_stopped_with_sigterm_hands_its_session_over_at_once(
    tmp_path: Path,
) -> None:
    """SIGTERM of the node holding the KIS session: it exits 0 without a traceback and
    releases its lease on the way out, so the other node takes the session over at its next
    try instead of waiting out a long lease."""
    ttl = 10.0
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            env = lambda name: node_env(redis, kis, None, name, lease_ttl=ttl)  # noqa: E731
            async with cluster_of(["a", "b"], env, tmp_path) as nodes:
                holder, fence = await holder_of(nodes, "kis")
                (survivor,) = [node for node in nodes if node is not holder]
                stopped_at = time.monotonic()
                holder.send_signal(signal.SIGTERM)  # its listener closes at once: ask the other
                new_holder, new_fence = await holder_of([survivor], "kis")
                took = time.monotonic() - stopped_at
                assert (new_holder, new_fence > fence) == (survivor, True)
                assert took < ttl / 2, took  # released, not expired
                with trio.fail_after(WITHIN):
                    assert await holder.process.wait() == 0
                assert f"lease kis: released by {holder.name}" in holder.log
                assert "Traceback" not in holder.log, holder.log
                assert kis.max_sessions_per_key <= 1  # KIS connects once a code is held
            nursery.cancel_scope.cancel()


async def test_a_holder_stopped_past_its_lease_is_taken_over_and_publishes_nothing_after(
    tmp_path: Path,
) -> None:
    """SIGSTOP of the node holding the KIS session, past its lease; then SIGCONT.

    A stopped process keeps its TCP connections open, and KIS refuses a second session of
    the key (``OPSP8996``, after which the gateway waits a minute before trying again)
    until the first one is gone. What ends it is KIS's own keep-alive (protocols/kis.md
    §4): the fake's PINGPONG goes unanswered and the fake drops the socket, here within a
    second (``ping_interval`` + ``pong_timeout``), before the lease can expire. So the
    takeover is real: the other node holds the lease with a greater fence, opens the only
    session of the key, and its clients receive its prices.

    While the holder is stopped, one trade at ``stale_price`` reaches its socket and waits
    in its receive buffer (readable even after the fake's reset). After SIGCONT the old
    holder finds its lease's deadline passed and stops its session (a write it still
    tried would be refused by the fence): no state at that price, and none with the old
    fence after the new holder's first, ever reaches Redis or a client; the old holder's
    health shows it holds nothing, and its clients are served by the new holder. The fake
    never saw two sessions of the key at once.
    """
    stale_price, new_price = 66_600, 73_300
    # The fake drops the silent session ~0.6 s after the stale trade; the lease cannot
    # expire sooner than two thirds of its TTL after the stop (renewed every third).
    ping, ttl = 0.3, 3.0
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis(ping_interval=ping, pong_timeout=ping).serve)
            feed = Feed(kis)
            nursery.start_soon(feed.run)
            env = lambda name: node_env(redis, kis, None, name, lease_ttl=ttl)  # noqa: E731
            async with (
                cluster_of(["a", "b"], env, tmp_path) as nodes,
                watch_states(redis, SAMSUNG) as states,
                seed_000(nodes[0]) as first,
                seed_000(nodes[1]) as second,
            ):
                clients = {nodes[0].name: first, nodes[1].name: second}
                for client in clients.values():
                    assert (await client.subscribe([SAMSUNG]))["success"]
                    await client.price(lambda m: m["price"] == feed.price)
                holder, old_fence = await holder_of(nodes, "kis")
                (survivor,) = [node for node in nodes if node is not holder]

                feed.running = False
                holder.send_signal(signal.SIGSTOP)
                stopped_at = time.monotonic()
                assert await kis.send_trades([trade_record(SAMSUNG, stale_price)]) == 1
                with trio.fail_after(WITHIN):  # KIS's keep-alive ends the silent session
                    await kis.wait_until(lambda: not kis.sessions)
                new_fence = 0

                async def taken_over() -> bool:
                    nonlocal new_fence
                    new_fence = await survivor.fence("kis") or 0
                    return new_fence > old_fence

                await eventually(taken_over, "the other node holds the session")
                assert time.monotonic() - stopped_at < ttl + lease_retry(ttl) + SLACK
                with trio.fail_after(WITHIN):
                    await kis.wait_until(lambda: kis.registered() == {SAMSUNG})
                assert kis.refused_sessions == 0
                feed.price, feed.running = new_price, True
                await clients[survivor.name].price(lambda m: m["price"] == new_price)

                holder.send_signal(signal.SIGCONT)

                async def let_go() -> bool:
                    cluster = await holder.cluster()
                    return cluster["redis_connected"] and await holder.fence("kis") is None

                await eventually(let_go, "the old holder lets the session go")
                assert "kis: no longer held by this node" in holder.log
                await clients[holder.name].price(lambda m: m["price"] == new_price)
                feed.price = new_price + 100
                for client in clients.values():
                    await client.price(lambda m: m["price"] == new_price + 100)

            assert states, "the watcher saw no state at all"
            assert stale_price not in {state.last_price for state in states}
            for client in clients.values():
                assert stale_price not in {m["price"] for m in client.prices}
            first_new = next(i for i, s in enumerate(states) if s.fence == new_fence)
            assert {s.fence for s in states[first_new:]} == {new_fence}
            assert {s.fence for s in states[:first_new]} <= {old_fence}
            assert kis.max_sessions_per_key == 1
            nursery.cancel_scope.cancel()


async def test_a_killed_nodes_codes_are_released_upstream_after_its_heartbeat_and_linger(
    tmp_path: Path,
) -> None:
    """An edge node holding demand is killed: the holder drops its demand once its heartbeat
    key expired, and the code goes upstream after the linger — not before — while a code
    another node still holds stays registered."""
    kakao = "035720"
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            feed = Feed(kis)
            nursery.start_soon(feed.run)

            def env(name: str) -> dict[str, str]:
                role = {"TRIO_STOCK_ROLE": "edge"} if name == "edge" else {}
                return node_env(redis, kis, None, name) | role

            async with (
                cluster_of(["holder", "edge"], env, tmp_path) as (holder, edge),
                seed_000(holder) as staying,
                seed_000(edge) as doomed,
            ):
                assert (await staying.subscribe([SAMSUNG]))["success"]
                assert (await doomed.subscribe([SAMSUNG, kakao]))["success"]
                await doomed.price(lambda m: m["stock_code"] == kakao)
                demand = {"holder": 1, "edge": 2}
                assert (await holder.cluster())["holder_demand"]["kis"] == demand
                killed_at = time.monotonic()
                edge.process.kill()
                with trio.fail_after(WITHIN):
                    await kis.wait_until(lambda: kakao in kis.requests_of("2"))
                took = time.monotonic() - killed_at
                # Not before its heartbeat could expire (a beat every NODE_TTL / 3) and the
                # linger passed, with NODE_TTL / 3 to spare for a slow beat.
                assert took >= NODE_TTL / 3 + LINGER, took
                assert kis.registered() == {SAMSUNG}
                assert (await holder.cluster())["holder_demand"]["kis"] == {"holder": 1}
                await staying.price(lambda m: m["stock_code"] == SAMSUNG)  # still served
            nursery.cancel_scope.cancel()


async def test_a_redis_restart_without_its_data_heals_without_restarting_a_node(
    tmp_path: Path,
) -> None:
    """Redis killed (its data lost), then started again on the same port: while it is down
    both nodes' health says ``redis_connected: false`` (and their hops stale), the holder
    closes its upstream session once its lease can no longer be renewed, and the clients
    stay connected; once Redis is back the nodes say ``true``, the session is held again
    (after the lease's quarantine) and the same client connections receive prices again."""
    with running_redis() as redis:
        async with trio.open_nursery() as nursery:
            kis = await nursery.start(FakeKis().serve)
            feed = Feed(kis)
            nursery.start_soon(feed.run)
            env = lambda name: node_env(redis, kis, None, name)  # noqa: E731
            async with (
                cluster_of(["a", "b"], env, tmp_path) as nodes,
                seed_000(nodes[0]) as first,
                seed_000(nodes[1]) as second,
            ):
                for client in (first, second):
                    assert (await client.subscribe([SAMSUNG]))["success"]
                    await client.price(lambda m: m["price"] == feed.price)
                redis.kill()

                async def down() -> bool:
                    return not any([(await n.cluster())["redis_connected"] for n in nodes])

                await eventually(down, "both nodes see Redis gone")
                for node in nodes:
                    assert all(hop["stale"] for hop in (await node.cluster())["hops"])

                async def let_go() -> bool:
                    return all([await n.fence("kis") is None for n in nodes])

                # The holder cannot renew its lease: it closes the upstream session itself.
                await eventually(let_go, "the holder gives the session up")
                with trio.fail_after(WITHIN):
                    await kis.wait_until(lambda: not kis.sessions)
                for client in (first, second):  # still connected, still answering
                    await client.send({"action": "ping"})
                    await client.reply("pong")

                await trio.to_thread.run_sync(redis.start)
                feed.price = 72_500

                async def up() -> bool:
                    return all([(await n.cluster())["redis_connected"] for n in nodes])

                await eventually(up, "both nodes see Redis back")
                for client in (first, second):
                    await client.price(lambda m: m["price"] == 72_500)
                await holder_of(nodes, "kis")
                for node in nodes:
                    assert not any(hop["stale"] for hop in (await node.cluster())["hops"])
            assert kis.max_sessions_per_key == 1
            nursery.cancel_scope.cancel()
