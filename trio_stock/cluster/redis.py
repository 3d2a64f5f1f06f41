"""The cluster's Redis client: coredis on Trio, with every wait bounded.

coredis (6.x) is built on anyio, so it runs on Trio as it is: its connections, readers and
writers are anyio tasks, which on Trio are tasks in nurseries. What we rely on, read from its
source (``coredis/pool/_basic.py``, ``connection/_base.py``, ``connection/_request.py``,
``patterns/pubsub.py``, ``commands/script.py``) and checked against a real redis-server in
``tests/test_cluster_redis.py``:

**One client, many tasks.** The client is an async context manager and must be entered before
use: :func:`open_redis` does it. Entering it opens the pool's task group, the parent of every
connection's reader and writer tasks, so those live inside the caller's nursery tree and end
when the ``async with`` block ends. Enter it once, in a parent task, then share the client
with any number of child tasks without entering it again: a child that enters a client its
parent had not entered first gets coredis's "implicit concurrent connection pool sharing"
error (coredis PR #345). Commands are multiplexed: a command takes a connection from the pool,
queues its request, gives the connection back and only then awaits the reply, so many tasks
share one pipelined connection (replies are matched in FIFO order). Cancelling a task that
awaits a reply is safe: the reply is still consumed in order and the connection stays in step.
The pool holds at most ``max_connections``; a :class:`coredis.PubSub` holds one for its whole
life.

**Timeouts.** coredis has none by default: ``connect_timeout=None`` waits for a TCP connect
forever, ``stream_timeout=None`` waits for a reply forever. We set both, and the pool's wait
for a free connection. A reply later than ``stream_timeout`` raises the built-in
:class:`TimeoutError` but does not close the connection (later replies still match up); a
connection that hears nothing at all for ``max_idle_time`` is closed by its reader, which is
what gets rid of a half-open TCP connection (a Redis host that vanished without a reset).
Library calls here still take no ``timeout=``: callers bound their own waits with
``trio.fail_after`` (the lease does), these settings only guarantee no call hangs for ever.

**Retries.** coredis retries every command twice after 10 ms on a connection error or timeout
by default. A timed-out command may already have run, so a silent retry could run a
non-idempotent script (a fenced publish) twice, and 20 ms of retries do not outlast a restart
anyway. :func:`open_redis` turns them off: each caller retries with its own backoff and
knows whether its command is idempotent.

**Restarts.** When redis-server goes away, requests in flight fail with
:class:`coredis.exceptions.ConnectionError`, the dead connections leave the pool, and each
later command tries a new connection (refused at once while the server is down; bounded by the
timeouts while it is stopped). Once the server is back, commands work again with no action
from us. A restarted server has lost its script cache: a :class:`coredis.commands.Script`
runs by ``EVALSHA`` and, on ``NOSCRIPT``, loads the script and runs it again. Without
persistence (``--save '' --appendonly no``) it has also lost every key; the lease copes with
that (``lease.py``). coredis logs a failed connect at ERROR and a dropped connection at INFO
on the ``coredis`` logger.

**Pub/sub buffers are unbounded.** Each connection parses incoming push messages into an anyio
memory stream of size ``math.inf``, and :class:`coredis.PubSub` moves them into another one of
size ``math.inf`` that :meth:`~coredis.PubSub.get_message` reads. Nothing in coredis drops or
pushes back, so a consumer that stops reading grows memory without limit (Redis itself cuts a
subscriber off only at ``client-output-buffer-limit pubsub``, 32 MB by default). A consumer
must therefore read every message promptly in a task that does nothing else and move it on
with ``send_nowait`` into a bounded Trio channel, counting what it has to drop; the message's
``seq`` then shows the gap to whoever reads the channel. A ``PubSub`` survives a restart by
itself — read it with :meth:`~coredis.PubSub.get_message` in a loop, because its ``async for``
iterator ends for good at the first reconnect: its run loop reconnects with exponential
backoff (0.1 s doubling to 16 s, with jitter, for ever) and subscribes again. Messages
published meanwhile are lost (Redis pub/sub is at most once); the new ``subscribe``
confirmation it receives after reconnecting is the sign of that gap, so a consumer that must
notice gaps opens its ``PubSub`` with ``ignore_subscribe_messages=False`` and reloads the
latest state when a confirmation arrives after the first. Its keep-alive pings after
``max_idle_seconds`` without traffic; open it with ``max_idle_seconds=PUBSUB_KEEPALIVE``,
below :data:`MAX_IDLE_TIME`, or the connection reader closes a quiet subscription.

**Clocks.** coredis's timeouts run on Trio's clock (anyio's ``fail_after``), so they must not
run under ``MockClock(autojump_threshold=0)``: while a task waits for Redis the clock would
jump to the timeout. Tests that talk to Redis run on the real clock.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio
import coredis
import coredis.exceptions
import trio
from coredis.connection import BaseConnection, TCPConnection, UnixDomainSocketConnection
from coredis.retry import (
    CompositeRetryPolicy,
    ConstantRetryPolicy,
    ExponentialBackoffRetryPolicy,
    NoRetryPolicy,
)

RedisClient: TypeAlias = "coredis.Redis[bytes]"

CONNECT_TIMEOUT = 2.0  # seconds for TCP connect plus handshake; a local Redis needs < 10 ms
STREAM_TIMEOUT = 2.0  # seconds for one reply; our scripts touch a handful of keys
POOL_TIMEOUT = 2.0  # seconds to wait for a free connection from the pool
MAX_CONNECTIONS = 32  # per client; commands multiplex, each PubSub holds one for its life
MAX_IDLE_TIME = 10  # seconds without a byte from Redis before a connection is dropped (int)
PUBSUB_KEEPALIVE = 5.0  # a PubSub's max_idle_seconds: it pings before MAX_IDLE_TIME hits


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[RedisClient]:
    """A coredis client for ``url``, entered, with bounded waits and no silent retries.

    Share the client with child tasks; do not enter it again (module docstring). Opening does
    not connect: it succeeds while Redis is down, and commands fail until it is up. Options
    in the URL's query string (``?stream_timeout=5``) override the defaults above.

    Args:
        url: ``redis://[[user]:password@]host:port[/db]``, ``rediss://`` for TLS or
            ``unix://path``. It may hold a password: log it only through :func:`redact_url`.

    Yields:
        The client, returning ``bytes`` (``decode_responses=False``).
    """
    pool: coredis.ConnectionPool[Any] = coredis.ConnectionPool.from_url(
        url,
        decode_responses=False,
        connect_timeout=CONNECT_TIMEOUT,
        stream_timeout=STREAM_TIMEOUT,
        timeout=POOL_TIMEOUT,
        max_connections=MAX_CONNECTIONS,
        max_idle_time=MAX_IDLE_TIME,
    )
    pool.connection_class = _CLOSING.get(pool.connection_class, pool.connection_class)
    client: RedisClient = coredis.Redis(
        connection_pool=pool, decode_responses=False, retry_policy=NoRetryPolicy()
    )
    async with client:
        yield client


def _close_buffers(connection: BaseConnection) -> None:
    """Close the six memory streams a coredis connection opens in its constructor.

    coredis 6.9 closes them only once the connection is established, so every failed connect
    (Redis down) leaves them to the garbage collector, which warns ``ResourceWarning:
    Unclosed <MemoryObjectSendStream>`` in whatever code runs then (an error in our tests).
    Closing a closed stream does nothing.
    """
    for stream in (
        connection._write_buffer_in,
        connection._write_buffer_out,
        connection._push_message_buffer_in,
        connection._push_message_buffer_out,
        connection._streamed_message_buffer_in,
        connection._streamed_message_buffer_out,
    ):
        stream.close()


class _TCPConnection(TCPConnection):
    """A TCP connection that closes its buffers however it ends (:func:`_close_buffers`)."""

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            _close_buffers(self)


class _UnixConnection(UnixDomainSocketConnection):
    """A Unix-socket connection that closes its buffers however it ends."""

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            _close_buffers(self)


_CLOSING: dict[type[BaseConnection], type[BaseConnection]] = {
    TCPConnection: _TCPConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


PUBSUB_MAX_BACKOFF = 2.0  # seconds between a PubSub's reconnect attempts at most (coredis: 16)


@asynccontextmanager
async def open_pubsub(
    redis: RedisClient, channels: list[str], *, ignore_subscribe_messages: bool = True
) -> AsyncIterator[Any]:
    """A coredis PubSub on ``channels``, entered; read it with ``get_message`` in a loop.

    It reconnects by itself (backoff capped at :data:`PUBSUB_MAX_BACKOFF`) and keeps its
    connection alive (:data:`PUBSUB_KEEPALIVE`). When the caller is cancelled, coredis's
    own cleanup may fail on the connection the cancellation already closed (it sends
    ``UNSUBSCRIBE`` into a closed stream); that noise becomes the cancellation it is.
    """
    retry = CompositeRetryPolicy(
        ExponentialBackoffRetryPolicy(
            (coredis.exceptions.ConnectionError,),
            retries=None,
            base_delay=0.1,
            max_delay=PUBSUB_MAX_BACKOFF,
            jitter=True,
        ),
        ConstantRetryPolicy((TimeoutError,), retries=2, delay=0.1),
    )
    pubsub = redis.pubsub(
        channels=channels,
        ignore_subscribe_messages=ignore_subscribe_messages,
        retry_policy=retry,
        max_idle_seconds=PUBSUB_KEEPALIVE,
    )
    try:
        async with pubsub:
            yield pubsub
    except BaseException as error:
        if not _shutdown_noise(error):
            raise
        await trio.lowlevel.checkpoint()  # cancelled: raises Cancelled in its place
        raise


def _shutdown_noise(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_shutdown_noise(inner) for inner in exc.exceptions)
    return isinstance(exc, trio.Cancelled | anyio.ClosedResourceError | anyio.EndOfStream)


def as_text(value: bytes | str) -> str:
    """A Redis reply (``bytes`` from this client) as text."""
    return value.decode() if isinstance(value, bytes) else value


def is_redis_failure(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis could not be reached or answered, so a retry may succeed.

    True for coredis errors, OS errors (``TimeoutError`` included), :class:`trio.TooSlowError`
    of a caller's own deadline, anyio's closed or broken stream errors (a pooled connection
    that its reader closed for idleness just as a command took it raises those), and
    exception groups made only of those (coredis runs its connections in task groups). False
    for anything else, above all :class:`trio.Cancelled`.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_redis_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, _FAILURES)


_FAILURES = (
    coredis.exceptions.RedisError,
    OSError,
    trio.TooSlowError,
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def describe_failure(exc: BaseException) -> str:
    """A one-line description of a Redis failure for a log line (no traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_failure(inner) for inner in exc.exceptions)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for logs, health and errors."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not a URL at all: show nothing of it
        return "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
