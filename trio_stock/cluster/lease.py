"""Exactly one holder per upstream session across the cluster: a lease in Redis with a fence.

A session (a provider and its key, e.g. ``kis:ab12cd``) may run on one node at a time. Each
node that could run it keeps a :class:`Lease` on its name; :func:`hold_while_leased` runs the
session only while the lease is this node's::

    lease = Lease(redis, "kis:ab12cd", node_id)
    await nursery.start(hold_while_leased, lease, run_session)   # run_session(fence)

The guarantees and what they rest on:

- **One holder.** The lease key (``Keys.lease``, value ``"<node> <token>"``) is set only if
  absent, with a TTL (``ttl``, 10 s), by one Lua script. The holder renews it every ``ttl/3``
  by a script that extends it only if it still carries the holder's token.
- **The holder stops first.** After each renewal the holder sets the deadline of the scope
  its session runs in to *the local time the renewal was sent* + ``ttl`` - ``margin``. Redis
  counts the TTL from when it *received* the renewal, later, so Trio cancels the session at
  least ``margin`` (``ttl/4``) before the lease can expire, even if the renewing task is stuck
  or Redis is unreachable. The margin is the time the session has to close its upstream
  connection; it also covers the clocks of two machines running at slightly different rates.
- **Fencing.** Every acquisition hands out a token greater than any before for that name
  (``Keys.fence`` keeps the last one). A holder's writes go through :func:`fenced_publish`,
  which applies them only while the lease carries the writer's token: a holder that was
  paused (SIGSTOP, a long GC, a partition) past its TTL and resumes finds its writes refused.
- **Takeover.** Nodes that do not hold the lease try again every ``retry`` seconds (1 s), with
  jitter so that they do not try in step; a dead holder's session is taken over within
  ``ttl + retry`` (11 s by default).
- **Redis without its data.** A Redis restarted without persistence has lost the lease and the
  fence counter while the old holder may still run (its deadline has not passed). So when
  the fence counter of a name is missing, the acquire script grants nothing for one TTL (it
  sets the lease to ``"(quarantine) 0"``): by then every former holder has stopped. The same
  happens at the very first use of a name. Tokens are at least Redis's ``TIME`` in
  microseconds, so they keep growing across such a loss and a token is never handed out
  twice (as long as the Redis host's clock does not step back by more than the outage).
- **Redis trouble never ends the task.** Errors while Redis is down or slow are logged,
  counted and retried with capped exponential backoff (``upstream/backoff.py``); only the
  session's deadline decides when it stops.

Assumptions: all nodes use the same ``ttl`` and ``margin`` for a name; Redis runs with
``maxmemory-policy noeviction`` (its default; an evicted lease key would be a second holder);
one Redis (a failover to a replica that missed the last writes can hand a lease out twice).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
from coredis.commands.script import Script

from ..upstream.backoff import Backoff
from .keys import Keys
from .redis import RedisClient, describe_failure, is_redis_failure, open_redis

LOG = logging.getLogger(__name__)

DEFAULT_TTL = 10.0  # seconds a lease lives without renewal
DEFAULT_RETRY = 1.0  # seconds between a standby node's attempts (jittered down to half)
MARGIN_FRACTION = 0.25  # default margin: a quarter of the TTL
RENEW_FRACTION = 1 / 3  # renew every third of the TTL
CALL_FRACTION = 1 / 6  # one call to Redis may take a sixth of the TTL
ERROR_BACKOFF_MAX = 4.0  # cap on the wait between attempts while Redis fails, in retries

_TOKEN = "string.match(v, ' (%d+)$')"  # a lease value is "<node> <token>"

_ACQUIRE: Script[bytes] = Script(
    script="""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local last = redis.call('GET', KEYS[2])
if not last then
  -- No history of this lease: its first use, or Redis lost its data while a holder may
  -- still run. Grant nothing for one TTL, by when every former holder has stopped.
  redis.call('SET', KEYS[2], string.format('%.0f', now_us))
  redis.call('SET', KEYS[1], '(quarantine) 0', 'PX', ARGV[2])
  return false
end
-- Greater than every token before, and than Redis's clock: still greater after a data loss.
local token = string.format('%.0f', math.max(tonumber(last) + 1, now_us))
redis.call('SET', KEYS[2], token)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""
)

_RENEW: Script[bytes] = Script(
    script=f"""
local v = redis.call('GET', KEYS[1])
if v and {_TOKEN} == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

_RELEASE: Script[bytes] = Script(
    script=f"""
local v = redis.call('GET', KEYS[1])
if v and {_TOKEN} == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
)

_FENCED_PUBLISH: Script[bytes] = Script(
    script=f"""
local v = redis.call('GET', KEYS[1])
if not (v and {_TOKEN} == ARGV[1]) then
  return 0
end
for i = 2, #KEYS do
  local a = 2 * i - 2
  redis.call('SET', KEYS[i], ARGV[a + 1])
  redis.call('PUBLISH', ARGV[a], ARGV[a + 1])
end
return 1
"""
)


@attrs.frozen
class Fence:
    """A holding of lease ``name``: ``token`` is greater than every token before it."""

    name: str
    token: int


@attrs.frozen
class LeaseTiming:
    """A lease's times, and the arithmetic on them (no I/O, no clock).

    Args:
        ttl: Seconds the lease lives in Redis after its last renewal.
        retry: Seconds between a standby node's attempts to acquire (before jitter).
        margin: Seconds between the holder's local deadline and the earliest expiry.
    """

    ttl: float
    retry: float
    margin: float

    @classmethod
    def of(cls, ttl: float, retry: float, margin: float | None) -> LeaseTiming:
        """Check the times; ``margin=None`` means a quarter of ``ttl``.

        Raises:
            ValueError: A time is not positive, or the margin leaves no time to renew.
        """
        if not (ttl > 0 and math.isfinite(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        if not (retry > 0 and math.isfinite(retry)):
            raise ValueError(f"retry must be a positive number of seconds, not {retry!r}")
        margin = ttl * MARGIN_FRACTION if margin is None else margin
        # The deadline must fall after the next renewal is due, or every session would end.
        if not 0 < margin < ttl * (1 - RENEW_FRACTION):
            raise ValueError(
                f"margin must be above 0 and below two thirds of the ttl ({ttl:g} s), "
                f"not {margin!r}"
            )
        return cls(ttl=ttl, retry=retry, margin=margin)

    @property
    def ttl_ms(self) -> int:
        """The TTL as Redis takes it (``PX``), never rounded up."""
        return max(1, math.floor(self.ttl * 1000))

    @property
    def renew_every(self) -> float:
        """Seconds between renewals."""
        return self.ttl * RENEW_FRACTION

    @property
    def call_timeout(self) -> float:
        """Seconds one script call may take before the attempt counts as failed."""
        return self.ttl * CALL_FRACTION

    def deadline(self, sent_at: float) -> float:
        """The local time the holder's work must stop, for a grant or renewal sent at ``sent_at``.

        Redis starts the TTL when the command arrives, after ``sent_at``, so this is at least
        ``margin`` before the lease can expire.
        """
        return sent_at + self.ttl - self.margin

    def retry_delay(self, rng: random.Random) -> float:
        """The wait before a standby's next attempt: between half of ``retry`` and all of it."""
        return rng.uniform(self.retry / 2, self.retry)

    def error_backoff(self, rng: random.Random) -> Backoff:
        """The backoff between attempts to acquire while Redis fails."""
        return Backoff(
            initial=self.retry / 2,
            maximum=self.retry * ERROR_BACKOFF_MAX,
            jitter=0.2,
            healthy_after=math.inf,
            rng=rng,
        )

    def renew_backoff(self, rng: random.Random) -> Backoff:
        """The backoff between renewals while Redis fails: several tries before the deadline."""
        return Backoff(
            initial=self.ttl / 40,
            maximum=self.ttl / 10,
            jitter=0.2,
            healthy_after=math.inf,
            rng=rng,
        )


@attrs.frozen
class LeaseStatistics:
    """A lease as one node sees it, for health and metrics."""

    name: str
    node_id: str
    token: int | None  # the token held, None when this node holds nothing
    deadline: float  # Trio time the holder's work stops; -inf when not held
    attempts: int  # acquire scripts sent
    acquisitions: int
    renewals: int
    losses: int  # renewals refused: the lease had expired or was someone else's
    redis_errors: int  # calls that failed or timed out


@attrs.define(eq=False)
class Lease:
    """This node's claim on one lease name; one task at a time acquires and keeps it.

    Args:
        redis: A client from :func:`~trio_stock.cluster.redis.open_redis`.
        name: The session the lease guards (e.g. ``"kis:ab12cd"``).
        node_id: This node, as other nodes and operators see it in the lease's value.
        ttl: Seconds the lease lives in Redis after its last renewal.
        retry: Seconds between attempts to acquire while another node holds it.
        margin: Seconds the holder's work stops before the lease can expire (None: ttl/4).
        keys: The key names (their prefix).
        rng: The source of jitter (a seeded one in tests).
        url: Redis's URL, to release the lease over a connection of its own when the
            client's are gone (at shutdown).
    """

    redis: RedisClient
    name: str
    node_id: str
    ttl: float = attrs.field(default=DEFAULT_TTL, kw_only=True)
    retry: float = attrs.field(default=DEFAULT_RETRY, kw_only=True)
    margin: float | None = attrs.field(default=None, kw_only=True)
    keys: Keys = attrs.field(factory=Keys, kw_only=True)
    rng: random.Random = attrs.field(factory=random.Random, kw_only=True)
    url: str | None = attrs.field(default=None, kw_only=True, repr=False)  # for release()
    timing: LeaseTiming = attrs.field(init=False)
    _held: Fence | None = attrs.field(default=None, init=False)
    _deadline: float = attrs.field(default=-math.inf, init=False)
    _sent_at: float = attrs.field(default=-math.inf, init=False)
    _attempts: int = attrs.field(default=0, init=False)
    _acquisitions: int = attrs.field(default=0, init=False)
    _renewals: int = attrs.field(default=0, init=False)
    _losses: int = attrs.field(default=0, init=False)
    _redis_errors: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        if not self.node_id or any(c.isspace() for c in self.node_id):
            raise ValueError(f"node_id must be a non-empty word, not {self.node_id!r}")
        self.timing = LeaseTiming.of(self.ttl, self.retry, self.margin)

    @property
    def deadline(self) -> float:
        """The Trio time by which the holder's work must have stopped; -inf when not held."""
        return self._deadline

    def statistics(self) -> LeaseStatistics:
        return LeaseStatistics(
            name=self.name,
            node_id=self.node_id,
            token=self._held.token if self._held else None,
            deadline=self._deadline,
            attempts=self._attempts,
            acquisitions=self._acquisitions,
            renewals=self._renewals,
            losses=self._losses,
            redis_errors=self._redis_errors,
        )

    async def acquire(self) -> Fence:
        """Wait until this node holds the lease, and return its fence.

        Tries at once, then every ``retry`` seconds with jitter while another node holds it,
        and with capped exponential backoff while Redis fails. On return :attr:`deadline`
        is set from the moment the winning attempt was sent; run the work under a scope with
        that deadline and :meth:`keep` it.
        """
        backoff = self.timing.error_backoff(self.rng)
        while True:
            self._attempts += 1
            sent_at = trio.current_time()
            try:
                with trio.fail_after(self.timing.call_timeout):
                    token = await self._call(
                        _ACQUIRE,
                        [self.keys.lease(self.name), self.keys.fence(self.name)],
                        [self.node_id, self.timing.ttl_ms],
                    )
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                self._redis_errors += 1
                delay = backoff.failed()
                LOG.warning(
                    "lease %s: cannot reach Redis to acquire (%s); next try in %.1f s",
                    self.name,
                    describe_failure(exc),
                    delay,
                )
                await trio.sleep(delay)
                continue
            if token is not None:
                fence = Fence(self.name, int(token))
                self._held = fence
                self._sent_at = sent_at
                self._deadline = self.timing.deadline(sent_at)
                self._acquisitions += 1
                LOG.info("lease %s: acquired by %s, token %d", self.name, self.node_id, fence.token)
                return fence
            backoff.reset()
            await trio.sleep(self.timing.retry_delay(self.rng))

    async def keep(self, fence: Fence, scope: trio.CancelScope) -> None:
        """Renew the lease while ``scope``'s work runs, and stop the work before it can expire.

        Sets ``scope.deadline`` at once, then renews every ``ttl/3``; after each renewal the
        deadline becomes the local time the renewal was sent + ``ttl`` - ``margin``. A renewal
        that fails (Redis down, slow) is retried with backoff and moves nothing, so Trio
        cancels the work by itself once the deadline passes. Runs until cancelled; returns
        early, after cancelling ``scope``, when Redis refuses a renewal (the lease expired or
        another node holds it).

        Args:
            fence: The fence :meth:`acquire` returned.
            scope: The scope the holder's work runs in.

        Raises:
            ValueError: ``fence`` is not this lease's current holding.
        """
        if fence != self._held:
            raise ValueError(f"{fence} is not held by this lease (held: {self._held})")
        scope.deadline = self._deadline
        backoff = self.timing.renew_backoff(self.rng)
        next_at = self._sent_at + self.timing.renew_every
        while True:
            await trio.sleep_until(next_at)
            sent_at = trio.current_time()
            try:
                with trio.fail_after(self.timing.call_timeout):
                    renewed = await self._call(
                        _RENEW, [self.keys.lease(self.name)], [fence.token, self.timing.ttl_ms]
                    )
            except Exception as exc:
                if not is_redis_failure(exc):
                    raise
                self._redis_errors += 1
                delay = backoff.failed()
                LOG.warning(
                    "lease %s: cannot renew (%s); the session stops in %.1f s unless renewed",
                    self.name,
                    describe_failure(exc),
                    max(0.0, self._deadline - trio.current_time()),
                )
                next_at = trio.current_time() + delay
                continue
            if renewed != 1:
                self._let_go(fence)
                self._losses += 1
                LOG.warning(
                    "lease %s: lost (token %d expired or taken over); stopping the session",
                    self.name,
                    fence.token,
                )
                scope.cancel()
                return
            backoff.reset()
            self._renewals += 1
            self._sent_at = sent_at
            self._deadline = self.timing.deadline(sent_at)
            scope.deadline = self._deadline
            next_at = sent_at + self.timing.renew_every

    async def release(self, fence: Fence) -> None:
        """Give the lease up if it is still ``fence``'s, so a standby takes over at once.

        This node stops counting the lease as held before the call, whatever its outcome.

        Raises:
            coredis.exceptions.RedisError: Redis could not be reached (the lease then
                expires by itself after its TTL).
        """
        self._let_go(fence)
        keys, args = [self.keys.lease(self.name)], [fence.token]
        try:
            released = await self._call(_RELEASE, keys, args)
        except Exception as exc:
            if self.url is None or not is_redis_failure(exc):
                raise
            # At shutdown the cancellation has closed the shared client's connections
            # already; a connection of its own, opened here (in the caller's shielded
            # scope), still gives the lease back so a standby need not wait for its TTL.
            async with open_redis(self.url) as fresh:
                released = await _RELEASE(keys=keys, args=args, client=fresh)
        if released == 1:
            LOG.info("lease %s: released by %s, token %d", self.name, self.node_id, fence.token)

    def _let_go(self, fence: Fence) -> None:
        if self._held == fence:
            self._held = None
            self._deadline = -math.inf

    async def _call(self, script: Script[bytes], keys: list[str], args: list[Any]) -> Any:
        return await script(keys=keys, args=args, client=self.redis)


async def hold_while_leased(
    lease: Lease,
    work: Callable[[Fence], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``work(fence)`` whenever this node holds ``lease``, for ever.

    Starts at once (a standby is running too). Then, in a loop: acquire the lease; run
    ``work`` in a scope that :meth:`Lease.keep` renews and cancels when the lease is lost
    or cannot be renewed in time; when ``work`` ends, release the lease and wait a jittered
    ``retry`` before trying again, so that other nodes get their chance. ``work`` must treat
    cancellation as "close the session now": it has ``margin`` seconds to do so.

    Redis failures never end this task. An exception from ``work`` does, after the lease is
    released, wrapped in an exception group.
    """
    task_status.started()
    while True:
        fence = await lease.acquire()
        try:
            async with trio.open_nursery() as nursery:
                with trio.CancelScope(deadline=lease.deadline) as work_scope:
                    nursery.start_soon(lease.keep, fence, work_scope)
                    await work(fence)
                nursery.cancel_scope.cancel()
            if work_scope.cancelled_caught:
                LOG.info("lease %s: session with token %d stopped", lease.name, fence.token)
        finally:
            with trio.move_on_after(lease.timing.call_timeout, shield=True):
                try:
                    await lease.release(fence)
                except Exception as exc:
                    if not is_redis_failure(exc):
                        raise
                    LOG.warning(
                        "lease %s: cannot release (%s); it expires by itself",
                        lease.name,
                        describe_failure(exc),
                    )
        await trio.sleep(lease.timing.retry_delay(lease.rng))


async def fenced_publish(
    redis: RedisClient,
    fence: Fence,
    items: Sequence[tuple[str, str, bytes]],
    *,
    keys: Keys | None = None,
) -> bool:
    """Write a batch only while ``fence`` still holds its lease, all or nothing.

    For each ``(key, channel, data)``: ``SET key data`` and ``PUBLISH channel data``, in one
    script run after it checked the lease's token; ``data`` crosses to Redis once for both.
    A former holder (paused past its TTL, partitioned) writes nothing. An empty batch only
    checks the lease.

    Args:
        redis: The client.
        fence: The writer's holding, from :meth:`Lease.acquire`.
        items: What to write, in order.
        keys: The key names (their prefix); the default ``Keys()`` when None.

    Returns:
        True if the batch was applied, False if the lease is no longer ``fence``'s.

    Raises:
        coredis.exceptions.RedisError: Redis could not be reached. The batch may or may not
            have been applied (a reply lost after the script ran); do not assume either.
    """
    keys = Keys() if keys is None else keys
    args: list[Any] = [fence.token]
    for _key, channel, data in items:
        args += [channel, data]
    applied: object = await _FENCED_PUBLISH(
        keys=[keys.lease(fence.name), *(key for key, _, _ in items)], args=args, client=redis
    )
    return applied == 1
