"""The contract between the hub and an upstream provider (sim, KIS, FMP).

A provider declares a ``name``, the ``market`` it serves and its ``quota`` (how many
symbols it can hold upstream at once). The hub runs it as a service::

    await nursery.start(provider.run, link)

and talks to it only through the :class:`UpstreamLink` it passes in:

- ``link.commands`` yields :class:`Subscribe` / :class:`Unsubscribe` in the order the hub
  decided them. A provider must drain it at all times, also while it is disconnected or
  backing off, and keep what it was asked to hold: it re-registers every held symbol after
  each reconnect. The channel is bounded (see ``COMMAND_BUFFER``); a provider that stops
  draining makes new subscribes fail as ``UNAVAILABLE`` instead of growing memory, and the
  releases it missed reach it, in order, once it drains again.
- A :class:`Subscribe` of a symbol the provider already holds (live or still pending) is
  not a second registration: it replaces the pending request, or is answered
  ``registered`` at once when the symbol is live. The hub relies on it: a subscribe may
  take the place of a release the provider has not seen yet.
- Every :class:`Subscribe` must be answered, once, with ``link.registered(command)`` after
  the upstream acknowledged it, or ``link.rejected(command, reason, detail)``. The hub
  times out and withdraws (with an :class:`Unsubscribe`) requests that are never answered,
  and ignores answers to withdrawn requests (the ``token`` tells them apart).
- A registered symbol the upstream stops serving (e.g. it refuses the re-registration
  after a reconnect) is dropped by the provider and reported with
  ``link.revoked(symbol, reason, detail)``; the hub tells the subscribers that held it and
  frees its slot, and sends no :class:`Unsubscribe` for it.
- ``link.publish(tick)`` hands a normalised :class:`~trio_stock.model.Tick` to the hub; it
  is synchronous and never blocks, so a provider's reader never waits on clients.
- ``link.session_started()`` marks a new upstream session (the symbol states' ``epoch``).
- ``statistics()`` reports the provider's state for health, status and metrics; it must
  never contain a secret. A pool of sessions lists each in ``sessions``.
- Optional: ``registration_delay(pending) -> float``, the seconds a paced provider needs
  to register ``pending`` symbols; the hub extends a subscribe's acknowledgement deadline
  by it (a provider without it: 0).
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs
import trio

from ..model import Market, Tick
from ..results import FailureReason

COMMAND_BUFFER_PER_SLOT = 4  # room for a subscribe/unsubscribe churn cycle per quota slot
COMMAND_BUFFER_MIN = 64


@attrs.frozen
class Subscribe:
    """Register ``symbol`` upstream. ``token`` identifies this request in the answer."""

    symbol: str
    token: int


@attrs.frozen
class Unsubscribe:
    """Release ``symbol`` upstream (or withdraw a pending request for it)."""

    symbol: str


Command = Subscribe | Unsubscribe


class ProviderState(enum.Enum):
    """Where a provider's upstream session stands."""

    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"
    AUTH_FAILED = "auth_failed"  # permanent until the configuration changes
    STOPPED = "stopped"


@attrs.frozen
class SessionStatistics:
    """One session of a pool (e.g. one KIS app key), named by a label, never by its key."""

    label: str
    state: ProviderState
    used: int  # codes the pool placed on this session (registered or pending)
    quota: int
    registrations: int
    connects: int
    reconnect_attempts: int
    failed: bool  # the pool moved its codes away; it takes new codes once back
    last_error: str | None = None
    detail: str | None = None


@attrs.frozen
class ProviderStatistics:
    """A provider's state at one moment. Never carries a key or secret."""

    name: str
    kind: str  # "sim", "kis", "fmp"
    market: Market
    live: bool  # real market data (False for the simulated market)
    state: ProviderState
    quota: int
    registrations: int  # symbols registered upstream in the current session
    connects: int  # sessions opened since start
    reconnect_attempts: int  # consecutive failed attempts since the last healthy session
    messages: int  # inbound frames read
    malformed: int  # inbound frames that could not be parsed (skipped)
    last_message_at: float | None  # epoch seconds of the last inbound frame
    last_error: str | None
    detail: str | None = None  # e.g. "another process is using this API key"
    sessions: tuple[SessionStatistics, ...] = ()  # a pool's sessions (kis_pool.py)


@attrs.define(eq=False)
class ProviderStatus:
    """The mutable counters behind :class:`ProviderStatistics`, kept by one provider."""

    name: str
    kind: str
    market: Market
    live: bool
    state: ProviderState = ProviderState.STARTING
    registrations: int = 0
    connects: int = 0
    reconnect_attempts: int = 0
    messages: int = 0
    malformed: int = 0
    last_message_at: float | None = None
    last_error: str | None = None
    detail: str | None = None

    def snapshot(self, quota: int) -> ProviderStatistics:
        """Freeze the current values."""
        return ProviderStatistics(
            name=self.name,
            kind=self.kind,
            market=self.market,
            live=self.live,
            state=self.state,
            quota=quota,
            registrations=self.registrations,
            connects=self.connects,
            reconnect_attempts=self.reconnect_attempts,
            messages=self.messages,
            malformed=self.malformed,
            last_message_at=self.last_message_at,
            last_error=self.last_error,
            detail=self.detail,
        )


class UpstreamLink(Protocol):
    """What the hub gives a provider. Every method is synchronous and never blocks."""

    @property
    def commands(self) -> trio.MemoryReceiveChannel[Command]:
        """Subscribe/unsubscribe requests, in order."""
        ...

    def registered(self, command: Subscribe) -> None:
        """The upstream acknowledged ``command``: the symbol is live."""
        ...

    def rejected(self, command: Subscribe, reason: FailureReason, detail: str) -> None:
        """The upstream refused ``command`` (``QUOTA``, ``REJECTED`` or ``UNAVAILABLE``)."""
        ...

    def revoked(self, symbol: str, reason: FailureReason, detail: str) -> None:
        """The upstream stopped serving ``symbol``, which was registered (e.g. it refused
        the re-registration after a reconnect); the provider no longer holds it."""
        ...

    def publish(self, tick: Tick) -> None:
        """Hand a tick to the hub."""
        ...

    def session_started(self) -> None:
        """A new upstream session began: later states carry a new epoch."""
        ...

    def now_ns(self) -> int:
        """Epoch nanoseconds on the hub's clock (follows Trio's clock)."""
        ...


class Provider(Protocol):
    """An upstream market-data source the hub can run."""

    @property
    def name(self) -> str:
        """Short unique name ("sim-kr", "kis", "fmp")."""
        ...

    @property
    def market(self) -> Market:
        """The market whose symbols this provider serves."""
        ...

    @property
    def quota(self) -> int:
        """How many symbols it can hold upstream at once (may shrink while running)."""
        ...

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``link`` until cancelled. Calls ``task_status.started()`` without waiting
        for the upstream, so the gateway comes up even when a provider is down."""
        ...

    def statistics(self) -> ProviderStatistics:
        """The provider's current state."""
        ...
