"""Several KIS app keys serving the Korean market as one provider (``KIS_ACCOUNTS``).

KIS allows one WebSocket session per app key and about 41 registrations per session
(protocols/kis.md §7). :class:`KisPool` runs one :class:`~.kis.KisProvider` per key and
is, to the hub, one provider (the contract in ``contract.py``):

- its quota is the sum of its usable sessions' quotas (each adapting on ``OPSP0008``);
- a new code goes to the least-loaded usable session with room, connected sessions
  first; a code is placed on exactly one session, and its ``Unsubscribe`` goes there;
- each session gets its own inner link; the pool forwards its answers, ticks and
  revocations to the hub's link, translating its own tokens back to the hub's requests.

Failure. A session *fails* when its key is refused (``AUTH_FAILED``), when the upstream
refuses the session (``OPSP8996``: another process uses the key, a ``SessionRefused``
with a long wait), or after ``FAILED_AFTER_ATTEMPTS`` consecutive failed connects. Its
codes move, in the order they were placed, to usable sessions with room: registered there
and, for a subscribe still waiting, acknowledged; the hub's registered topic stays as it
is, so its subscribers receive prices again after a gap. A code that fits nowhere is
revoked to its subscribers with the ``QUOTA`` reason (or its waiting subscribe is refused
so). The failed session is released of those codes, so it re-registers nothing when it
comes back; from then on it only takes new codes: no churn (KIS blocks keys that register
and unregister in loops).

Sessions learn about failures through :attr:`~.session.WebSocketProvider.on_state`,
called synchronously on each state change, so the moves happen at once, without polling.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import trio

from ..config import Config
from ..model import Market, Tick
from ..results import FailureReason
from .contract import (
    COMMAND_BUFFER_MIN,
    COMMAND_BUFFER_PER_SLOT,
    Command,
    ProviderState,
    ProviderStatistics,
    SessionStatistics,
    Subscribe,
    Unsubscribe,
    UpstreamLink,
)
from .kis import KisProvider

log = logging.getLogger(__name__)

FAILED_AFTER_ATTEMPTS = 3  # consecutive failed connects before a session's codes move


class _SessionLink:
    """What the pool gives one session: its own command channel, answers to the pool."""

    def __init__(self, pool: KisPool, index: int, buffer: int) -> None:
        self._pool = pool
        self._index = index
        self.send, self._commands = trio.open_memory_channel[Command](buffer)

    @property
    def commands(self) -> trio.MemoryReceiveChannel[Command]:
        return self._commands

    def registered(self, command: Subscribe) -> None:
        self._pool._registered(self._index, command)

    def rejected(self, command: Subscribe, reason: FailureReason, detail: str) -> None:
        self._pool._rejected(self._index, command, reason, detail)

    def revoked(self, symbol: str, reason: FailureReason, detail: str) -> None:
        self._pool._revoked(self._index, symbol, reason, detail)

    def publish(self, tick: Tick) -> None:
        self._pool._hub().publish(tick)

    def session_started(self) -> None:
        self._pool._hub().session_started()

    def now_ns(self) -> int:
        return self._pool._hub().now_ns()


class KisPool:
    """The Korean market from several KIS sessions, one per app key (see module doc).

    Args:
        sessions: One provider per app key; each named by its account's label.
        name: The pool's name ("kis").
    """

    kind = "kis"

    def __init__(self, sessions: Sequence[KisProvider], *, name: str = "kis") -> None:
        if not sessions:
            raise ValueError("a pool needs at least one session")
        self._name = name
        self.sessions = list(sessions)
        self._links = [
            _SessionLink(self, i, max(COMMAND_BUFFER_MIN, COMMAND_BUFFER_PER_SLOT * s.quota))
            for i, s in enumerate(self.sessions)
        ]
        self._held: list[dict[str, None]] = [{} for _ in self.sessions]  # placement order
        self._holder: dict[str, int] = {}  # code → session index
        self._inner: dict[str, Subscribe] = {}  # code → the pool's request to its session
        self._asked: dict[str, Subscribe] = {}  # code → the hub's request not answered yet
        self._tried: dict[str, set[int]] = {}  # sessions that refused a code in flight
        self._failed: set[int] = set()  # sessions whose codes moved away
        self._tokens = itertools.count(1)
        self._link: UpstreamLink | None = None

    @classmethod
    def from_config(cls, config: Config, **overrides: Any) -> KisPool:
        """One session per ``KIS_ACCOUNTS`` entry, otherwise as ``KisProvider.from_config``."""
        sessions = []
        for number, account in enumerate(config.kis_account_list(), 1):
            assert account.env is not None and account.custtype is not None
            one_key = config.replace(
                kis_accounts=None,
                kis_app_key=account.app_key,
                kis_app_secret=account.app_secret,
                kis_env=account.env,
                kis_custtype=account.custtype,
            )
            sessions.append(
                KisProvider.from_config(one_key, name=account.label(number), **overrides)
            )
        return cls(sessions)

    # ---- the Provider contract -------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def market(self) -> Market:
        return Market.KR

    @property
    def quota(self) -> int:
        """The sum of the usable sessions' quotas."""
        return sum(self.sessions[i].quota for i in self._usable())

    def registration_delay(self, pending: int) -> float:
        """Sessions register in parallel, none more than its quota (a bound, not a plan)."""
        return max(s.registration_delay(min(pending, s.quota)) for s in self.sessions)

    def statistics(self) -> ProviderStatistics:
        each = [s.statistics() for s in self.sessions]
        states = {p.state for p in each}
        if ProviderState.CONNECTED in states:
            state = ProviderState.CONNECTED
        elif states == {ProviderState.AUTH_FAILED}:
            state = ProviderState.AUTH_FAILED
        elif states & {ProviderState.CONNECTING, ProviderState.STARTING}:
            state = ProviderState.CONNECTING
        elif states == {ProviderState.STOPPED}:
            state = ProviderState.STOPPED
        else:
            state = ProviderState.BACKING_OFF
        last = [p.last_message_at for p in each if p.last_message_at is not None]
        errors = [f"{p.name}: {p.last_error}" for p in each if p.last_error]
        details = [f"{p.name}: {p.detail}" for p in each if p.detail]
        return ProviderStatistics(
            name=self._name,
            kind=self.kind,
            market=Market.KR,
            live=True,
            state=state,
            quota=self.quota,
            registrations=sum(p.registrations for p in each),
            connects=sum(p.connects for p in each),
            reconnect_attempts=sum(p.reconnect_attempts for p in each),
            messages=sum(p.messages for p in each),
            malformed=sum(p.malformed for p in each),
            last_message_at=max(last) if last else None,
            last_error="; ".join(errors) or None,
            detail="; ".join(details) or None,
            sessions=tuple(
                SessionStatistics(
                    label=p.name,
                    state=p.state,
                    used=len(self._held[i]),
                    quota=p.quota,
                    registrations=p.registrations,
                    connects=p.connects,
                    reconnect_attempts=p.reconnect_attempts,
                    failed=i in self._failed,
                    last_error=p.last_error,
                    detail=p.detail,
                )
                for i, p in enumerate(each)
            ),
        )

    async def run(
        self, link: UpstreamLink, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run every session and route the hub's commands until cancelled."""
        self._link = link
        async with trio.open_nursery() as nursery:
            for index, session in enumerate(self.sessions):
                session.on_state = lambda index=index: self._check(index)
                await nursery.start(session.run, self._links[index])
            nursery.start_soon(self._intake, link)
            task_status.started()

    # ---- routing -----------------------------------------------------------------------

    async def _intake(self, link: UpstreamLink) -> None:
        async for command in link.commands:
            if isinstance(command, Subscribe):
                self._subscribe(command)
            else:
                self._release(command.symbol)

    def _subscribe(self, command: Subscribe) -> None:
        symbol = command.symbol
        self._asked[symbol] = command
        index = self._holder.get(symbol)
        if index is None:
            index = self._choose(symbol)
            if index is None:
                self._fail(symbol, self._no_room())
                return
        self._place(symbol, index)  # held already: its session answers at once if live

    def _release(self, symbol: str) -> None:
        self._asked.pop(symbol, None)
        self._tried.pop(symbol, None)
        index = self._unplace(symbol)
        if index is not None:
            self._send(index, Unsubscribe(symbol))

    def _usable(self) -> list[int]:
        return [
            i
            for i, s in enumerate(self.sessions)
            if i not in self._failed and s.status.state is not ProviderState.AUTH_FAILED
        ]

    def _choose(self, symbol: str) -> int | None:
        """The least-loaded usable session with room (connected ones first), or None."""
        tried = self._tried.get(symbol, set())
        room = [
            i
            for i in self._usable()
            if i not in tried and len(self._held[i]) < self.sessions[i].quota
        ]
        if not room:
            return None
        connected = ProviderState.CONNECTED
        return min(
            room,
            key=lambda i: (self.sessions[i].status.state is not connected, len(self._held[i]), i),
        )

    def _place(self, symbol: str, index: int) -> None:
        request = Subscribe(symbol, next(self._tokens))
        self._holder[symbol] = index
        self._held[index][symbol] = None
        self._inner[symbol] = request
        if not self._send(index, request):
            self._unplace(symbol)
            detail = f"{self.sessions[index].name} is not taking requests"
            self._fail(symbol, (FailureReason.UNAVAILABLE, detail))

    def _unplace(self, symbol: str) -> int | None:
        index = self._holder.pop(symbol, None)
        self._inner.pop(symbol, None)
        if index is not None:
            self._held[index].pop(symbol, None)
        return index

    def _send(self, index: int, command: Command) -> bool:
        try:
            self._links[index].send.send_nowait(command)
        except (trio.WouldBlock, trio.BrokenResourceError):
            log.warning("%s: command channel full, dropped %s", self.sessions[index].name, command)
            return False
        return True

    def _no_room(self) -> tuple[FailureReason, str]:
        if not self._usable():
            return FailureReason.UNAVAILABLE, f"{self._name}: no session is usable"
        return FailureReason.QUOTA, f"{self._name}: every session is full ({self.quota} codes)"

    def _fail(self, symbol: str, failure: tuple[FailureReason, str]) -> None:
        """Tell the hub ``symbol`` is not served: refuse its waiting request, or revoke it."""
        self._tried.pop(symbol, None)
        asked = self._asked.pop(symbol, None)
        if asked is not None:
            self._hub().rejected(asked, *failure)
        else:
            self._hub().revoked(symbol, *failure)

    # ---- the sessions' answers ---------------------------------------------------------

    def _current(self, index: int, command: Subscribe) -> bool:
        return (
            self._holder.get(command.symbol) == index and self._inner.get(command.symbol) == command
        )

    def _registered(self, index: int, command: Subscribe) -> None:
        if not self._current(index, command):
            return  # an answer to a request the pool withdrew or moved
        self._tried.pop(command.symbol, None)
        asked = self._asked.pop(command.symbol, None)
        if asked is not None:
            self._hub().registered(asked)

    def _rejected(self, index: int, command: Subscribe, reason: FailureReason, detail: str) -> None:
        if not self._current(index, command):
            return
        symbol = command.symbol
        self._unplace(symbol)  # the session dropped it from its book already
        if reason in (FailureReason.QUOTA, FailureReason.UNAVAILABLE):
            self._tried.setdefault(symbol, set()).add(index)  # another session may have room
            other = self._choose(symbol)
            if other is not None:
                self._place(symbol, other)
                return
        self._fail(symbol, (reason, f"{self.sessions[index].name}: {detail}"))

    def _revoked(self, index: int, symbol: str, reason: FailureReason, detail: str) -> None:
        if self._holder.get(symbol) != index:
            return
        self._unplace(symbol)
        self._fail(symbol, (reason, f"{self.sessions[index].name}: {detail}"))

    # ---- failure -------------------------------------------------------------------------

    def _check(self, index: int) -> None:
        """A session's state changed: mark it failed (moving its codes) or usable again."""
        status = self.sessions[index].status
        if status.state is ProviderState.CONNECTED:
            if index in self._failed:
                log.info("%s: back; it takes new codes only", self.sessions[index].name)
            self._failed.discard(index)
            return
        failed = status.state is ProviderState.AUTH_FAILED or (
            status.state is ProviderState.BACKING_OFF
            and (status.detail is not None or status.reconnect_attempts >= FAILED_AFTER_ATTEMPTS)
        )
        if failed and index not in self._failed:
            self._failed.add(index)
            self._evacuate(index)

    def _evacuate(self, index: int) -> None:
        """Move the codes of failed session ``index`` to sessions with room."""
        codes = list(self._held[index])
        session = self.sessions[index]
        moved = 0
        for symbol in codes:
            self._unplace(symbol)
            self._send(index, Unsubscribe(symbol))  # it re-registers nothing when back
            other = self._choose(symbol)
            if other is None:
                reason = f"{session.name} failed and no other session has room"
                self._fail(symbol, (FailureReason.QUOTA, reason))
            else:
                self._place(symbol, other)
                moved += 1
        log.warning(
            "%s failed (%s): %d codes moved, %d revoked",
            session.name,
            session.status.detail or session.status.last_error or session.status.state.value,
            moved,
            len(codes) - moved,
        )

    def _hub(self) -> UpstreamLink:
        if self._link is None:
            raise RuntimeError(f"{self._name} is not running")
        return self._link
