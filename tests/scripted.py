"""A provider whose answers the test scripts: delays, rejections, silence.

It keeps the upstream side's own view (``registered``) so tests can check that the hub
never leaves a registration behind. It is a test double of the provider contract, used to
drive the hub into states a real upstream reaches only by accident.
"""

from __future__ import annotations

import trio

from trio_stock.hub.results import FailureReason
from trio_stock.model import Market, Tick, TickKind
from trio_stock.upstream.contract import (
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
        self.log: list[tuple[str, str]] = []  # ("sub"/"unsub", symbol) in arrival order
        self.link: UpstreamLink | None = None
        self._status = ProviderStatus(self.name, "scripted", market, live=False)

    def statistics(self) -> ProviderStatistics:
        return self._status.snapshot(self.quota)

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.link = link
        link.session_started()
        self._status.state = ProviderState.CONNECTED
        task_status.started()
        async for command in link.commands:
            if isinstance(command, Unsubscribe):
                self.log.append(("unsub", command.symbol))
                self.registered.discard(command.symbol)
                continue
            self.log.append(("sub", command.symbol))
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
        link.registered(command)

    def trade(self, symbol: str, price: float, size: float = 1.0) -> None:
        """Publish one trade through the link, as an upstream reader would."""
        assert self.link is not None
        now = self.link.now_ns()
        self.link.publish(Tick(symbol, TickKind.TRADE, now, now, price=price, size=size))
