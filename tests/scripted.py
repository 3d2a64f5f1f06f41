"""A provider whose answers the test scripts: delays, rejections, silence, stalls.

It keeps the upstream side's own view (``registered``) so tests can check that the hub
never leaves a registration behind. It is a test double of the provider contract, used to
drive the hub into states a real upstream reaches only by accident.

Switches: ``reject`` and ``silent`` (per symbol), ``ack_delay``; :meth:`stop_draining` /
:meth:`resume_draining` (a provider that stops reading its command channel, so the hub's
bounded channel fills up); :meth:`pull` (read a few commands off the channel without
applying them yet, as a slow provider would); :meth:`revoke` (the upstream stops serving a
registered symbol, as after a refused re-registration).
"""

from __future__ import annotations

import collections

import trio

from trio_stock.model import Market, Tick, TickKind
from trio_stock.results import FailureReason
from trio_stock.upstream.contract import (
    Command,
    ProviderState,
    ProviderStatistics,
    ProviderStatus,
    Subscribe,
    Unsubscribe,
    UpstreamLink,
)


class ScriptedProvider:
    def __init__(
        self,
        market: Market = Market.KR,
        *,
        quota: int = 40,
        ack_delay: float = 0.0,
        reject: frozenset[str] = frozenset(),
        silent: frozenset[str] = frozenset(),
    ) -> None:
        self.market = market
        self.quota = quota
        self.name = f"scripted-{market.value.lower()}"
        self.ack_delay = ack_delay
        self.reject = set(reject)
        self.silent = set(silent)
        self.registered: set[str] = set()
        self.peak = 0  # the most symbols registered at once
        self.log: list[tuple[str, str]] = []  # ("sub"/"unsub", symbol) in arrival order
        self.subscribes: list[Subscribe] = []  # every Subscribe applied, in order
        self.link: UpstreamLink | None = None
        self._status = ProviderStatus(self.name, "scripted", market, live=False)
        self._draining = trio.Event()
        self._draining.set()
        self._receiving = trio.CancelScope()  # the wait for a command, which a stop ends
        self._pulled: collections.deque[Command] = collections.deque()

    def statistics(self) -> ProviderStatistics:
        return self._status.snapshot(self.quota)

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.link = link
        link.session_started()
        self._status.state = ProviderState.CONNECTED
        task_status.started()
        while True:
            if not self._draining.is_set():  # no extra checkpoint while draining
                await self._draining.wait()
            if self._pulled:
                await self._apply(self._pulled.popleft(), link)
                continue
            with trio.CancelScope() as self._receiving:
                command = await link.commands.receive()
            if not self._receiving.cancelled_caught:
                await self._apply(command, link)

    def stop_draining(self) -> None:
        """Stop reading commands (after one already received) until resumed."""
        if self._draining.is_set():
            self._draining = trio.Event()
        self._receiving.cancel()  # a waiting receive takes nothing more

    def resume_draining(self) -> None:
        """Read and apply commands again, the pulled ones first."""
        self._draining.set()

    def pull(self, count: int) -> None:
        """Take ``count`` commands off the channel now; they are applied when draining."""
        assert self.link is not None
        for _ in range(count):
            self._pulled.append(self.link.commands.receive_nowait())

    def revoke(
        self,
        symbol: str,
        reason: FailureReason = FailureReason.QUOTA,
        detail: str = "OPSP0008 MAX SUBSCRIBE OVER",
    ) -> None:
        """The upstream stops serving ``symbol``: drop it and tell the hub."""
        assert self.link is not None
        self.registered.discard(symbol)
        self.link.revoked(symbol, reason, detail)

    async def _apply(self, command: Command, link: UpstreamLink) -> None:
        if isinstance(command, Unsubscribe):
            self.log.append(("unsub", command.symbol))
            self.registered.discard(command.symbol)
            return
        self.log.append(("sub", command.symbol))
        self.subscribes.append(command)
        await self._answer(command, link)

    async def _answer(self, command: Subscribe, link: UpstreamLink) -> None:
        if command.symbol in self.silent:
            return
        if self.ack_delay:
            await trio.sleep(self.ack_delay)
        if command.symbol in self.reject:
            link.rejected(command, FailureReason.REJECTED, "OPSP8992 invalid tr_key")
            return
        self.registered.add(command.symbol)
        self.peak = max(self.peak, len(self.registered))
        link.registered(command)

    def trade(self, symbol: str, price: float, size: float = 1.0) -> None:
        """Publish one trade through the link, as an upstream reader would."""
        assert self.link is not None
        now = self.link.now_ns()
        self.link.publish(Tick(symbol, TickKind.TRADE, now, now, price=price, size=size))
