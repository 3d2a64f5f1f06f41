"""A market your tests script tick by tick: ``from trio_stock.testing import ScriptedMarket``.

It is a provider like the simulated market, KIS or FMP (it keeps the contract in
:mod:`.contract`), except that nothing happens on its own: the test trades, quotes, refuses
subscriptions and drops the upstream session, and the hub and everything behind it (the
gateway's WebSocket and REST endpoints) react as they would to a real upstream::

    market = ScriptedMarket(Market.US)
    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([market]).run)  # or serve(config, providers=[market])
        async with hub.subscriber() as updates:
            await hub.subscribe(updates, ["AAPL"])
            market.trade("AAPL", 190.12, size=100)
            state = await updates.receive()           # state.last_price == 190.12

It behaves like an upstream that answers at once: a subscribe is acknowledged as soon as the
provider reads it, ticks exist only for symbols registered upstream (trading anything else
does nothing, as a real feed sends nothing for it), and a dropped session comes back
straight away with every held symbol registered again. All of it is synchronous and follows
Trio's clock, so tests run on ``MockClock`` unchanged.

One instance serves one market, because the hub routes each market to one provider; a test
of both markets runs two (``providers=[ScriptedMarket(Market.KR), ScriptedMarket(Market.US)]``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import attrs
import trio
import trio.testing

from ..model import Market, Tick, TickKind
from ..results import FailureReason
from ..symbols import normalize_symbol
from .contract import (
    Command,
    ProviderState,
    ProviderStatistics,
    ProviderStatus,
    Subscribe,
    UpstreamLink,
)

DEFAULT_REJECTION = "refused by the scripted market"
QUOTA_REJECTION = "MAX SUBSCRIBE OVER"  # the words KIS uses (protocols/kis.md)
DEFAULT_KR_QUOTA = 40  # as KIS_MAX_SUBSCRIPTIONS' default
DEFAULT_US_QUOTA = 500  # as FMP_MAX_SUBSCRIPTIONS' default

_TickMaker = Callable[[str, int], Tick]  # (canonical symbol, epoch ns now) → the tick to send


class ScriptedMarket:
    """A provider for one market whose every tick and fault the test decides.

    Args:
        market: ``Market.KR`` (6-digit codes) or ``Market.US`` (tickers).
        quota: Symbols it holds upstream at once (default: as KIS, 40, or FMP, 500).
        name: Provider name in health and statistics (default ``scripted-kr`` /
            ``scripted-us``).

    Symbols may be written in any spelling the hub accepts (``"aapl"``); one of the other
    market raises ``ValueError``, since no hub would ever route it here.
    """

    def __init__(
        self, market: Market, *, quota: int | None = None, name: str | None = None
    ) -> None:
        if quota is None:
            quota = DEFAULT_KR_QUOTA if market is Market.KR else DEFAULT_US_QUOTA
        if quota < 1:
            raise ValueError(f"quota must be at least 1, not {quota}")
        self._market = market
        self._quota = quota
        self._name = name or f"scripted-{market.value.lower()}"
        self._status = ProviderStatus(self._name, "scripted", market, live=False)
        self._link: UpstreamLink | None = None
        self._held: dict[str, None] = {}  # registered upstream, in registration order
        # Refusals the test asked for, per symbol, oldest first. They grow only by the
        # test's own calls and shrink with each registration they refuse.
        self._refusals: dict[str, collections.deque[str]] = {}
        self._changed = trio.Event()  # set (and replaced) whenever ``_held`` changes

    # ---- the provider contract ----------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def market(self) -> Market:
        return self._market

    @property
    def quota(self) -> int:
        return self._quota

    def statistics(self) -> ProviderStatistics:
        return self._status.snapshot(self._quota)

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Answer the hub's commands until cancelled.

        Raises:
            RuntimeError: the market already serves another hub.
        """
        if self._link is not None:
            raise RuntimeError(f"{self._name} already serves a hub")
        self._link = link
        self._status.state = ProviderState.CONNECTED
        self._start_session(link)
        task_status.started()
        try:
            while True:
                self._apply(await link.commands.receive(), link)
        finally:
            self._link = None
            self._held.clear()
            self._status.state = ProviderState.STOPPED
            self._status.registrations = 0
            self._notify()

    # ---- what a test scripts ------------------------------------------------------------

    def trade(self, symbol: str, price: float, *, size: float = 1.0) -> bool:
        """A trade of ``size`` at ``price``, stamped with the hub's clock.

        Returns:
            True if it reached the hub; False when ``symbol`` is not registered upstream
            (nobody holds it: a real feed would not send it either).
        """
        return self._send(symbol, lambda s, now: Tick(s, TickKind.TRADE, now, now, price, size))

    def quote(
        self,
        symbol: str,
        *,
        bid: float,
        ask: float,
        bid_size: float | None = None,
        ask_size: float | None = None,
    ) -> bool:
        """A new best bid and ask; the last trade stays as it was.

        Returns:
            True if it reached the hub (see :meth:`trade`).
        """
        return self._send(
            symbol,
            lambda s, now: Tick(
                s, TickKind.QUOTE, now, now, bid=bid, bid_size=bid_size, ask=ask, ask_size=ask_size
            ),
        )

    def publish(self, tick: Tick) -> bool:
        """Any tick as it is, for what :meth:`trade` and :meth:`quote` do not cover (a
        trade break, day statistics, a previous close, a provider time of your choice).

        Returns:
            True if it reached the hub (see :meth:`trade`).
        """
        return self._send(tick.symbol, lambda s, now: attrs.evolve(tick, symbol=s))

    def fail_next_subscribe(self, symbol: str, reason: str = DEFAULT_REJECTION) -> None:
        """Refuse the next registration of ``symbol`` upstream with ``reason``.

        A new subscribe then fails with ``FailureReason.REJECTED`` and ``reason`` as its
        detail. If the symbol is already registered, the refusal waits for the next
        registration: after :meth:`disconnect` that revokes it from its subscribers. Each
        call refuses one more registration.
        """
        canonical = self._canonical(symbol)
        self._refusals.setdefault(canonical, collections.deque()).append(reason)

    def disconnect(self) -> None:
        """Drop the upstream session; it comes back at once.

        The new session has a new epoch (later states carry it) and every held symbol is
        registered again, except those :meth:`fail_next_subscribe` refuses: they are
        revoked, and their subscribers are told.

        Raises:
            RuntimeError: the market is not running in a hub.
        """
        link = self._link
        if link is None:
            raise RuntimeError(f"{self._name} is not running in a hub")
        self._start_session(link)
        for symbol in list(self._held):
            reason = self._take_refusal(symbol)
            if reason is not None:
                del self._held[symbol]
                link.revoked(symbol, FailureReason.REJECTED, reason)
        self._status.registrations = len(self._held)
        self._notify()

    @property
    def subscribed(self) -> frozenset[str]:
        """The symbols registered upstream now (canonical spelling)."""
        return frozenset(self._held)

    async def wait_subscribed(self, symbol: str) -> None:
        """Return once ``symbol`` is registered upstream and the hub has acted on it.

        The subscribe that asked for the symbol (a gateway client's, or your program's in
        another task) has then attached its subscriber, so every tick you send next reaches
        it live: without that wait, ticks sent before the subscriber is attached would reach
        it folded into one first update (the symbol's latest state).

        "Acted on" is :func:`trio.testing.wait_all_tasks_blocked`: every task woken by the
        registration has run until it waits again. A program with a task that never waits
        (a busy loop of ``trio.sleep(0)``) would keep this from returning.
        """
        canonical = self._canonical(symbol)
        while canonical not in self._held:
            await self._changed.wait()
        # The hub's subscribe wakes on the registration at the same moment as this task,
        # and Trio runs tasks woken together in a random order: let it attach first.
        await trio.testing.wait_all_tasks_blocked()

    async def wait_unsubscribed(self, symbol: str) -> None:
        """Return once ``symbol`` is not registered upstream (at once if it is not).

        The hub releases a symbol nobody holds after its linger (5 s by default).
        """
        canonical = self._canonical(symbol)
        while canonical in self._held:
            await self._changed.wait()

    # ---- inside -------------------------------------------------------------------------

    def _start_session(self, link: UpstreamLink) -> None:
        link.session_started()
        self._status.connects += 1

    def _apply(self, command: Command, link: UpstreamLink) -> None:
        symbol = command.symbol
        if not isinstance(command, Subscribe):
            self._held.pop(symbol, None)
        elif symbol in self._held:  # live already: not a second registration (contract)
            link.registered(command)
        elif (reason := self._take_refusal(symbol)) is not None:
            link.rejected(command, FailureReason.REJECTED, reason)
        elif len(self._held) >= self._quota:
            link.rejected(command, FailureReason.QUOTA, QUOTA_REJECTION)
        else:
            self._held[symbol] = None
            link.registered(command)
        self._status.registrations = len(self._held)
        self._notify()

    def _take_refusal(self, symbol: str) -> str | None:
        refusals = self._refusals.get(symbol)
        if not refusals:
            return None
        reason = refusals.popleft()
        if not refusals:
            del self._refusals[symbol]
        return reason

    def _send(self, symbol: str, make: _TickMaker) -> bool:
        canonical = self._canonical(symbol)
        link = self._link
        if link is None or canonical not in self._held:
            return False
        now = link.now_ns()
        link.publish(make(canonical, now))
        self._status.messages += 1
        self._status.last_message_at = now / 1e9
        return True

    def _canonical(self, symbol: str) -> str:
        canonical, market = normalize_symbol(symbol)
        if market is not self._market:
            raise ValueError(
                f"{symbol!r} is a {market.value} symbol; {self._name} serves {self._market.value}"
            )
        return canonical

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
