"""The hub: reference-counted upstream subscriptions, quotas, linger, and fan-out.

Data flow::

    provider ──publish(tick)──▶ Hub ──offer(state)──▶ subscribers (bounded, per client)
    client ──subscribe──▶ Hub ──Subscribe──▶ provider ──registered/rejected──▶ Hub

One *topic* per symbol held upstream. A topic is PENDING from the moment the hub asks its
provider for it until the provider answers, then REGISTERED. Subscribers attach only to
REGISTERED topics. A topic with no subscribers and no subscribe waiting on it *lingers*
for ``linger`` seconds before it is released upstream, so page switches do not churn the
provider; a lingering topic is released at once when its quota slot is needed.

Everything that changes a topic is synchronous; the only awaits are waiting for upstream
answers, the linger reaper and the release retry (below). A subscribe counts as a
*waiter* on each topic it wants until it returns, and :meth:`Hub._settle` decides each
topic's fate whenever its subscribers or waiters change. That single rule is what makes
cancellation at any point leave nothing behind.

Commands reach a provider through a bounded channel, with ``send_nowait``. When it is
full, a dropped ``Subscribe`` fails its symbol as ``UNAVAILABLE``; a dropped
``Unsubscribe`` is *owed*: the provider still holds a symbol the hub forgot, so the link
keeps it (once per symbol) and sends it again before any later command, or from its retry
task as soon as the channel has room. A subscribe of an owed symbol takes its place (the
provider still holds it). So the provider ends up holding exactly what the hub holds.

A registration the upstream refuses after a reconnect is *revoked* by the provider
(``link.revoked``): the topic is dropped, and each subscriber that held it is told with a
:class:`~.results.Failure` (:meth:`Subscriber.take_revoked`).
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Iterable

import attrs
import trio

from ..clock import WallClock
from ..errors import InvalidSymbol
from ..model import Market, SymbolState, Tick, TickKind, merge
from ..results import Failure, FailureReason, SubscribeResult
from ..symbols import normalize_symbol
from ..upstream.contract import (
    COMMAND_BUFFER_MIN,
    COMMAND_BUFFER_PER_SLOT,
    Command,
    Provider,
    ProviderState,
    ProviderStatistics,
    Subscribe,
    Unsubscribe,
)
from .history import DEFAULT_HISTORY_BARS, Bar, BarHistory
from .subscriber import (
    DEFAULT_LOSSLESS_CAPACITY,
    DEFAULT_MAX_BACKLOG,
    DEFAULT_MAX_DELAY,
    ConflatingSubscriber,
    DiscardingSubscriber,
    LosslessSubscriber,
    Policy,
    StrictConflatingSubscriber,
    Subscriber,
)

log = logging.getLogger(__name__)

DEFAULT_LINGER = 5.0  # seconds a symbol nobody holds stays registered upstream
DEFAULT_ACK_TIMEOUT = 10.0  # seconds to wait for an upstream acknowledgement
DEFAULT_MAX_SYMBOLS_PER_SUBSCRIBER = 200
# A new symbol of a provider in one of these states fails at once as UNAVAILABLE, so the
# healthy market's symbols of the same request are not held back by the ack timeout.
# (Starting and connecting providers are waited for: the gateway's first clients come
# before its upstream sessions are up.)
FAIL_FAST_STATES = frozenset({ProviderState.BACKING_OFF, ProviderState.AUTH_FAILED})
DEFAULT_CACHE_LIMIT = 10_000  # latest states kept for symbols nobody holds any more
_TRADE = TickKind.TRADE  # publish's one test for a trade, without the enum lookup


class _TopicState(enum.Enum):
    PENDING = "pending"
    REGISTERED = "registered"
    FAILED = "failed"
    RELEASED = "released"


@attrs.define(eq=False)
class _Topic:
    symbol: str
    link: _Link
    token: int
    state: _TopicState = _TopicState.PENDING
    subscribers: set[Subscriber] = attrs.Factory(set)
    waiters: int = 0
    answered: trio.Event = attrs.Factory(trio.Event)
    failure: Failure | None = None


@attrs.frozen
class UpstreamUsage:
    """How much of one provider's quota is in use.

    ``used`` counts what somebody holds or waits for; lingering symbols are registered
    upstream too but are free capacity (evicted the moment a slot is needed), so they are
    counted apart: ``registered`` = ``used`` + ``lingering``.
    """

    provider: str
    market: Market
    quota: int
    used: int  # held by somebody: registered with a holder, or pending for a waiter
    pending: int
    lingering: int  # registered, nobody holds it, released after the linger
    registered: int  # everything the upstream holds for us (used + lingering)


@attrs.frozen
class HubStatistics:
    """The hub's counters at one moment."""

    subscribers: int
    symbols: int  # topics held upstream (pending, registered or lingering)
    cached_symbols: int
    published: int  # ticks accepted
    unrouted: int  # ticks for symbols the hub does not hold (ignored)
    delivered: int  # updates received by subscribers
    conflated: int  # updates replaced by a newer one before delivery
    too_slow: int  # lossless subscribers cut off
    commands_dropped: int  # commands a provider's full channel refused
    releases_owed: int  # dropped Unsubscribes not delivered yet (symbols providers still hold)
    revoked: int  # held symbols the upstream stopped serving (subscribers were told)
    upstream: tuple[UpstreamUsage, ...]
    providers: tuple[ProviderStatistics, ...]


class _Link:
    """The hub's side of one provider (implements ``UpstreamLink``).

    Args:
        hub: The hub.
        provider: The provider it serves.
        buffer: Commands the channel holds; None: ``COMMAND_BUFFER_PER_SLOT`` per quota
            slot, at least ``COMMAND_BUFFER_MIN``.
    """

    def __init__(self, hub: Hub, provider: Provider, buffer: int | None = None) -> None:
        self.hub = hub
        self.provider = provider
        self.market = provider.market
        self.name = provider.name
        self.epoch = 0
        self.topics: set[_Topic] = set()
        if buffer is None:
            buffer = max(COMMAND_BUFFER_MIN, COMMAND_BUFFER_PER_SLOT * provider.quota)
        self._send, self._commands = trio.open_memory_channel[Command](buffer)
        # Owed releases: symbols whose Unsubscribe the full channel refused, in drop order.
        # The provider still holds each one; the hub holds none of them. A symbol is in
        # here at most once, and no Subscribe gets through while any other is owed (they
        # go first), so the provider is never asked to hold more than the hub's quota and
        # topics plus owed releases stay within it: a bound by construction.
        self._owed: dict[str, None] = {}
        self._owed_lot = trio.lowlevel.ParkingLot()  # the retry task, waiting for a drop
        self._in_flight: str | None = None  # the owed release the retry task is sending

    @property
    def commands(self) -> trio.MemoryReceiveChannel[Command]:
        return self._commands

    @property
    def owed(self) -> int:
        """Releases the provider has not been sent yet."""
        return len(self._owed) + (self._in_flight is not None)

    def send(self, command: Command) -> bool:
        """Queue ``command`` for the provider, never blocking; False if it was dropped.

        Owed releases go first, so the provider sees commands in the order the hub decided
        them. A dropped ``Unsubscribe`` becomes owed. A ``Subscribe`` of an owed symbol
        replaces the release: the provider still holds the symbol and answers the new
        request as for any symbol it holds, with no churn upstream.
        """
        symbol = command.symbol
        replaces = isinstance(command, Subscribe) and symbol in self._owed
        if self._pay(skip=symbol if replaces else None) and self._put(command):
            if replaces:
                del self._owed[symbol]
            return True
        self.hub._commands_dropped += 1
        if isinstance(command, Unsubscribe):
            self._owed[symbol] = None
            self._owed_lot.unpark_all()
        log.warning("%s: command channel full, dropped %s", self.name, command)
        return False

    def _put(self, command: Command) -> bool:
        try:
            self._send.send_nowait(command)
        except (trio.WouldBlock, trio.BrokenResourceError):
            return False
        return True

    def _pay(self, skip: str | None = None) -> bool:
        """Send every owed release but ``skip``'s; True if none but that one is left."""
        if not self._owed:
            return True
        for symbol in list(self._owed):
            if symbol != skip:
                if not self._put(Unsubscribe(symbol)):
                    return False
                del self._owed[symbol]
        return True

    async def run_releases(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Send owed releases as soon as the channel has room, until cancelled.

        A blocked ``send`` on a memory channel goes in the moment the provider takes a
        command, ahead of any later ``send_nowait``, so the order above holds.
        """
        task_status.started()
        while True:
            if not self._owed:
                await self._owed_lot.park()
                continue
            symbol = next(iter(self._owed))
            del self._owed[symbol]
            self._in_flight = symbol
            try:
                await self._send.send(Unsubscribe(symbol))
            except trio.BrokenResourceError:
                # The provider closed its channel: it holds nothing any more.
                self._owed.clear()
                return
            except BaseException:
                self._owed[symbol] = None  # not sent (cancelled): still owed
                raise
            finally:
                self._in_flight = None

    def registered(self, command: Subscribe) -> None:
        topic = self._current(command)
        if topic is not None:
            topic.state = _TopicState.REGISTERED
            topic.answered.set()
            self.hub._settle(topic)

    def rejected(self, command: Subscribe, reason: FailureReason, detail: str) -> None:
        topic = self._current(command)
        if topic is not None:
            topic.failure = Failure(command.symbol, reason, detail)
            self.hub._drop(topic, _TopicState.FAILED)
            topic.answered.set()

    def revoked(self, symbol: str, reason: FailureReason, detail: str) -> None:
        # Only a registered topic is revoked: a pending one has a request in flight that
        # the provider answers on its own, and a symbol the hub released since is gone.
        topic = self.hub._topics.get(symbol)
        if topic is not None and topic.link is self and topic.state is _TopicState.REGISTERED:
            self.hub._revoke(topic, Failure(symbol, reason, detail))

    def publish(self, tick: Tick) -> None:
        self.hub.publish(tick)

    def session_started(self) -> None:
        self.epoch += 1

    def now_ns(self) -> int:
        return self.hub.clock.now_ns()

    def _current(self, command: Subscribe) -> _Topic | None:
        # Answers to withdrawn or superseded requests carry a stale token: ignore them.
        topic = self.hub._topics.get(command.symbol)
        if topic is None or topic.token != command.token or topic.state is not _TopicState.PENDING:
            return None
        return topic


class Hub:
    """The pub/sub hub between providers and subscribers.

    Args:
        providers: One provider per market; symbols are routed by market.
        linger: Seconds an unheld symbol stays registered upstream before release.
        ack_timeout: Seconds a subscribe waits for the upstream's answer.
        max_symbols_per_subscriber: Default per-subscriber limit.
        cache_limit: How many latest states of symbols nobody holds are kept.
        history_bars: One-minute bars kept per symbol that traded (``history``); a
            symbol's bars are evicted with its latest state.
        clock: Epoch time source (follows Trio's clock); a fixed one for tests.
        command_buffer: Commands each provider's channel holds; None: 4 per quota slot,
            at least 64 (``contract.COMMAND_BUFFER_*``).
        on_state: Called with every new state, after the subscribers were offered it;
            synchronous, must not block (a cluster holder forwards states with it).

    Run it as a service, which also runs its providers::

        hub = await nursery.start(Hub([SimulatedMarket(Market.KR)]).run)
    """

    def __init__(
        self,
        providers: Iterable[Provider] = (),
        *,
        linger: float = DEFAULT_LINGER,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        max_symbols_per_subscriber: int = DEFAULT_MAX_SYMBOLS_PER_SUBSCRIBER,
        cache_limit: int = DEFAULT_CACHE_LIMIT,
        history_bars: int = DEFAULT_HISTORY_BARS,
        clock: WallClock | None = None,
        command_buffer: int | None = None,
        on_state: Callable[[SymbolState], None] | None = None,
    ) -> None:
        if history_bars < 1:
            raise ValueError(f"history_bars must be at least 1, not {history_bars}")
        self.linger = linger
        self.ack_timeout = ack_timeout
        self.max_symbols_per_subscriber = max_symbols_per_subscriber
        self.cache_limit = cache_limit
        self.history_bars = history_bars
        self.clock = clock or WallClock()
        self._on_state = on_state
        self._links: dict[Market, _Link] = {}
        for provider in providers:
            if provider.market in self._links:
                raise ValueError(f"two providers for market {provider.market.value}")
            self._links[provider.market] = _Link(self, provider, command_buffer)
        self._topics: dict[str, _Topic] = {}
        self._latest: dict[str, SymbolState] = {}
        self._history: dict[str, BarHistory] = {}  # keys: a subset of _latest's
        self._lingering: dict[_Topic, float] = {}  # topic → deadline, in deadline order
        self._linger_lot = trio.lowlevel.ParkingLot()
        self._subscribers: set[Subscriber] = set()
        self._names = itertools.count(1)
        self._tokens = itertools.count(1)
        self._published = 0
        self._unrouted = 0
        self._commands_dropped = 0
        self._revoked = 0
        self._retired_delivered = 0
        self._retired_conflated = 0
        self._too_slow = 0

    # ---- running -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Hub] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the providers, their release retries and the linger reaper until cancelled."""
        async with trio.open_nursery() as nursery:
            for link in self._links.values():
                await nursery.start(link.run_releases)
                await nursery.start(link.provider.run, link)
            nursery.start_soon(self._reap_lingering)
            task_status.started(self)

    async def _reap_lingering(self) -> None:
        # Deadlines are added in time order (linger is constant), so the first is the next.
        while True:
            if not self._lingering:
                await self._linger_lot.park()
                continue
            await trio.sleep_until(next(iter(self._lingering.values())))
            now = trio.current_time()
            for topic, deadline in list(self._lingering.items()):
                if deadline > now:
                    break
                self._drop(topic, _TopicState.RELEASED)

    # ---- subscribers ---------------------------------------------------------------

    def subscriber(
        self,
        policy: Policy = Policy.CONFLATE,
        *,
        name: str | None = None,
        capacity: int = DEFAULT_LOSSLESS_CAPACITY,
        max_symbols: int | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> Subscriber:
        """Create a subscriber. Use it as ``async with hub.subscriber() as sub:``.

        Args:
            policy: ``CONFLATE`` (default), ``LOSSLESS`` or ``DISCARD``.
            name: For statistics and logs.
            capacity: The lossless bound, in updates (at least 1).
            max_symbols: How many symbols it may hold (default: the hub's limit).
            max_backlog: Conflating only: updates queued before the backlog collapses to
                the latest state per symbol; 0 keeps at most one pending per symbol.
            max_delay: Conflating only: seconds of feed time the queued updates may span
                before the backlog collapses; ``math.inf`` turns this rule off.

        Raises:
            ValueError: a bound is out of range.
        """
        name = name or f"subscriber-{next(self._names)}"
        limit = self.max_symbols_per_subscriber if max_symbols is None else max_symbols
        sub: Subscriber
        if policy is Policy.CONFLATE and max_backlog == 0:
            sub = StrictConflatingSubscriber(self, name, limit, max_delay=max_delay)
        elif policy is Policy.CONFLATE:
            sub = ConflatingSubscriber(
                self, name, limit, max_backlog=max_backlog, max_delay=max_delay
            )
        elif policy is Policy.LOSSLESS:
            sub = LosslessSubscriber(self, name, limit, capacity)
        else:
            sub = DiscardingSubscriber(self, name, limit)
        self._subscribers.add(sub)
        return sub

    async def subscribe(self, subscriber: Subscriber, symbols: Iterable[object]) -> SubscribeResult:
        """Subscribe to ``symbols``; return once the upstream answered each new one.

        Symbols are normalised and routed by market. A symbol the subscriber already holds
        is accepted again without side effects. A new symbol is attached only after its
        provider acknowledged it (or it was already live upstream), and its latest state,
        if any, is the first update the subscriber gets for it. Cancellation leaves no
        trace: nothing is attached until the end, and pending requests nobody waits for
        any more are withdrawn.
        """
        subscriber._check_open()
        wanted: list[tuple[str, _Topic | Failure | None]] = []
        seen: set[str] = set()
        budget = subscriber.max_symbols - subscriber._slots_used()
        try:
            for raw in symbols:
                claim = self._claim(subscriber, raw, budget, seen)
                if claim is None:
                    continue  # a repeat within this request: answered once
                if isinstance(claim[1], _Topic):
                    budget -= 1
                wanted.append(claim)
            await self._wait_for_answers([o for _, o in wanted if isinstance(o, _Topic)])
            subscriber._check_open()
            return self._attach_answered(subscriber, wanted)
        finally:
            for _, outcome in wanted:
                if isinstance(outcome, _Topic):
                    outcome.waiters -= 1
                    self._settle(outcome)

    def unsubscribe(self, subscriber: Subscriber, symbols: Iterable[object]) -> tuple[str, ...]:
        """Release ``symbols``; return the normalised ones the subscriber held. Never blocks."""
        released: list[str] = []
        for raw in symbols:
            try:
                symbol, _ = normalize_symbol(raw)
            except InvalidSymbol:
                continue
            if subscriber.holds(symbol):
                self._detach(subscriber, symbol)
                released.append(symbol)
        return tuple(released)

    def _claim(
        self, subscriber: Subscriber, raw: object, budget: int, seen: set[str]
    ) -> tuple[str, _Topic | Failure | None] | None:
        """Decide one requested symbol: already held (None), a failure, or a topic to wait
        on; or None for the whole claim when this request named the symbol before."""
        try:
            symbol, market = normalize_symbol(raw)
        except InvalidSymbol:
            text = raw if isinstance(raw, str) else repr(raw)[:64]
            return text, Failure(text, FailureReason.INVALID, "not a 6-digit code or a ticker")
        if symbol in seen:
            return None
        seen.add(symbol)
        if subscriber.markets is not None and market not in subscriber.markets:
            detail = f"not entitled to the {market.value} market"
            return symbol, Failure(symbol, FailureReason.FORBIDDEN, detail)
        if subscriber.holds(symbol):
            return symbol, None
        if budget <= 0:
            detail = f"a subscriber may hold at most {subscriber.max_symbols} symbols"
            return symbol, Failure(symbol, FailureReason.LIMIT, detail)
        topic = self._topics.get(symbol)
        if topic is None:
            outcome = self._open_topic(symbol, market)
            if isinstance(outcome, Failure):
                return symbol, outcome
            topic = outcome
        topic.waiters += 1
        self._settle(topic)  # a lingering topic stops lingering while someone waits on it
        return symbol, topic

    def _open_topic(self, symbol: str, market: Market) -> _Topic | Failure:
        link = self._links.get(market)
        if link is None:
            return Failure(symbol, FailureReason.UNAVAILABLE, f"no provider for {market.value}")
        state = link.provider.statistics().state
        if state in FAIL_FAST_STATES:  # no answer can come soon: say so now, not at the timeout
            detail = f"{link.name} is not connected ({state.value}); retry later"
            return Failure(symbol, FailureReason.UNAVAILABLE, detail)
        quota = link.provider.quota
        if len(link.topics) >= quota:
            victim = next((t for t in self._lingering if t.link is link), None)
            if victim is None:
                detail = f"{link.name} holds {quota} symbols, its limit"
                return Failure(symbol, FailureReason.QUOTA, detail)
            self._drop(victim, _TopicState.RELEASED)
        topic = _Topic(symbol, link, next(self._tokens))
        if not link.send(Subscribe(symbol, topic.token)):
            return Failure(symbol, FailureReason.UNAVAILABLE, f"{link.name} is not taking requests")
        self._topics[symbol] = topic
        link.topics.add(topic)
        return topic

    async def _wait_for_answers(self, topics: list[_Topic]) -> None:
        unanswered = [t for t in topics if t.state is _TopicState.PENDING]
        if not unanswered:
            await trio.lowlevel.checkpoint()
            return
        # A paced provider registers one symbol after another (KIS paper: 0.5 s each): the
        # deadline grows by the time its queue, this request's symbols included, needs.
        with trio.move_on_after(self.ack_timeout + self._pacing(unanswered)):
            for topic in unanswered:
                await topic.answered.wait()

    def _pacing(self, topics: list[_Topic]) -> float:
        """Seconds the providers of ``topics`` need to register what is pending on them
        (``registration_delay``, optional in the provider contract: 0 without it)."""
        delay = 0.0
        for link in {topic.link for topic in topics}:
            estimate = getattr(link.provider, "registration_delay", None)
            if estimate is not None:
                pending = sum(t.state is _TopicState.PENDING for t in link.topics)
                delay = max(delay, float(estimate(pending)))
        return delay

    def _attach_answered(
        self, subscriber: Subscriber, wanted: list[tuple[str, _Topic | Failure | None]]
    ) -> SubscribeResult:
        accepted: list[str] = []
        failed: list[Failure] = []
        for symbol, outcome in wanted:
            if outcome is None:
                accepted.append(symbol)
            elif isinstance(outcome, Failure):
                failed.append(outcome)
            elif outcome.state is _TopicState.REGISTERED:
                self._attach(subscriber, outcome)
                accepted.append(symbol)
            elif outcome.failure is not None:
                failed.append(outcome.failure)
            else:
                detail = f"{outcome.link.name} did not answer within {self.ack_timeout:g} s"
                failed.append(Failure(symbol, FailureReason.TIMEOUT, detail))
        return SubscribeResult(tuple(accepted), tuple(failed))

    def _attach(self, subscriber: Subscriber, topic: _Topic) -> None:
        topic.subscribers.add(subscriber)
        subscriber._attach(topic.symbol)
        self._settle(topic)
        snapshot = self._latest.get(topic.symbol)
        if snapshot is not None:
            subscriber._offer(snapshot)

    def _detach(self, subscriber: Subscriber, symbol: str) -> None:
        subscriber._detach(symbol)
        topic = self._topics.get(symbol)
        if topic is not None:
            topic.subscribers.discard(subscriber)
            self._settle(topic)

    def _retire(self, subscriber: Subscriber) -> None:
        """Called by ``Subscriber.close``: release everything it holds."""
        for symbol in list(subscriber._symbols):
            self._detach(subscriber, symbol)
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            stats = subscriber.statistics()
            self._retired_delivered += stats.delivered
            self._retired_conflated += stats.conflated
            self._too_slow += stats.too_slow

    # ---- topic lifecycle -----------------------------------------------------------

    def _settle(self, topic: _Topic) -> None:
        """Bring ``topic`` in line with its subscribers and waiters."""
        if topic.state is _TopicState.PENDING:
            if topic.waiters == 0:
                self._drop(topic, _TopicState.RELEASED)  # nobody waits: withdraw the request
        elif topic.state is _TopicState.REGISTERED:
            idle = not topic.subscribers and topic.waiters == 0
            if idle and topic not in self._lingering:
                if self.linger <= 0:
                    self._drop(topic, _TopicState.RELEASED)
                    return
                self._lingering[topic] = trio.current_time() + self.linger
                if len(self._lingering) == 1:
                    self._linger_lot.unpark_all()
            elif not idle:
                self._lingering.pop(topic, None)

    def _revoke(self, topic: _Topic, failure: Failure) -> None:
        """The provider stopped serving ``topic``: tell its subscribers, forget it.

        Nothing is sent upstream: the provider already dropped the symbol. A subscribe
        still waiting on the topic gets ``failure`` too.
        """
        log.warning(
            "%s: %s revoked (%s: %s); %d subscribers told",
            topic.link.name,
            topic.symbol,
            failure.reason.value,
            failure.detail,
            len(topic.subscribers),
        )
        self._revoked += 1
        topic.failure = failure
        for subscriber in topic.subscribers:
            subscriber._revoke(failure)
        self._drop(topic, _TopicState.FAILED)

    def _drop(self, topic: _Topic, state: _TopicState) -> None:
        """Remove ``topic``; a registered or pending one is released upstream."""
        was_upstream = topic.state in (_TopicState.PENDING, _TopicState.REGISTERED)
        self._lingering.pop(topic, None)
        if self._topics.get(topic.symbol) is topic:
            del self._topics[topic.symbol]
        topic.link.topics.discard(topic)
        for subscriber in topic.subscribers:
            subscriber._detach(topic.symbol)
        topic.subscribers.clear()
        if was_upstream and state is _TopicState.RELEASED:
            topic.link.send(Unsubscribe(topic.symbol))
        topic.state = state
        topic.answered.set()

    # ---- data ----------------------------------------------------------------------

    def publish(self, tick: Tick) -> None:
        """Fold ``tick`` into its symbol's state and offer it to every subscriber.

        A trade also updates the symbol's one-minute bars (``history``), in constant time.
        Synchronous and never blocks; costs O(subscribers of the symbol). Ticks for symbols
        the hub does not hold upstream are counted as unrouted and ignored.
        """
        topic = self._topics.get(tick.symbol)
        if topic is None:
            self._unrouted += 1
            return
        link = topic.link
        prev = self._latest.get(tick.symbol)
        state = merge(
            prev,
            tick,
            market=link.market,
            provider=link.name,
            epoch=link.epoch,
        )
        if tick.symbol not in self._latest and len(self._latest) >= self.cache_limit:
            self._evict_cold()
        self._latest[tick.symbol] = state
        if tick.kind is _TRADE and tick.price is not None and not _replayed(prev, tick):
            bars = self._history.get(tick.symbol)
            if bars is None:
                self._history[tick.symbol] = BarHistory(
                    tick.provider_time_ns, tick.price, tick.size, self.history_bars
                )
            else:
                bars.trade(tick.provider_time_ns, tick.price, tick.size)
        self._published += 1
        for subscriber in topic.subscribers:
            subscriber._offer(state)
        if self._on_state is not None:
            self._on_state(state)

    def _evict_cold(self) -> None:
        for symbol in self._latest:
            if symbol not in self._topics:
                del self._latest[symbol]
                self._history.pop(symbol, None)
                return

    def latest(self, symbol: str) -> SymbolState | None:
        """The latest state of ``symbol`` (any spelling), or None if never seen."""
        try:
            canonical, _ = normalize_symbol(symbol)
        except InvalidSymbol:
            return None
        return self._latest.get(canonical)

    def history(self, symbol: str) -> list[Bar]:
        """The one-minute bars of ``symbol`` (any spelling), oldest first.

        The forming minute is last. Empty if the symbol never traded, or its cache entry
        was evicted (its bars go with it).
        """
        try:
            canonical, _ = normalize_symbol(symbol)
        except InvalidSymbol:
            return []
        bars = self._history.get(canonical)
        return [] if bars is None else bars.bars()

    def cached(self) -> list[SymbolState]:
        """Every cached latest state, oldest symbol first."""
        return list(self._latest.values())

    def held(self, market: Market | None = None) -> list[str]:
        """Symbols somebody holds (or waits for), optionally of a market; not lingering ones."""
        return [
            s
            for s, t in self._topics.items()
            if (market is None or t.link.market is market) and t not in self._lingering
        ]

    def lingering(self, market: Market | None = None) -> list[str]:
        """Symbols nobody holds that stay registered upstream for the linger (free capacity)."""
        return [t.symbol for t in self._lingering if market is None or t.link.market is market]

    def provider_for(self, market: Market) -> Provider | None:
        """The provider serving ``market``, if any."""
        link = self._links.get(market)
        return None if link is None else link.provider

    # ---- statistics ----------------------------------------------------------------

    def statistics(self) -> HubStatistics:
        """The hub's counters, with each provider's usage and state."""
        live = [s.statistics() for s in self._subscribers]
        usage = []
        for link in self._links.values():
            pending = sum(t.state is _TopicState.PENDING for t in link.topics)
            lingering = sum(t.link is link for t in self._lingering)
            usage.append(
                UpstreamUsage(
                    provider=link.name,
                    market=link.market,
                    quota=link.provider.quota,
                    used=len(link.topics) - lingering,
                    pending=pending,
                    lingering=lingering,
                    registered=len(link.topics),
                )
            )
        return HubStatistics(
            subscribers=len(live),
            symbols=len(self._topics),
            cached_symbols=len(self._latest),
            published=self._published,
            unrouted=self._unrouted,
            delivered=self._retired_delivered + sum(s.delivered for s in live),
            conflated=self._retired_conflated + sum(s.conflated for s in live),
            too_slow=self._too_slow + sum(s.too_slow for s in live),
            commands_dropped=self._commands_dropped,
            releases_owed=sum(link.owed for link in self._links.values()),
            revoked=self._revoked,
            upstream=tuple(usage),
            providers=tuple(link.provider.statistics() for link in self._links.values()),
        )


def _replayed(prev: SymbolState | None, tick: Tick) -> bool:
    """True when ``tick`` repeats the last trade (a provider's snapshot on subscribe, e.g. the
    simulated market outside trading hours): counting it again would double its volume."""
    return (
        prev is not None
        and tick.provider_time_ns == prev.last_time_ns
        and tick.price == prev.last_price
        and tick.size == prev.last_size
    )
