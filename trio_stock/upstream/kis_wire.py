"""The KIS real-time WebSocket's wire format, free of I/O: frames in, values out.

The protocol (``protocols/kis.md``), in the order a session uses it:

1. ``POST {KIS_REST_URL}/oauth2/Approval`` with ``grant_type``/``appkey``/``secretkey``
   gives an ``approval_key``; a fresh one is fetched before every connect (§1.1, §8.9).
2. One WebSocket per app key (§7: a second one is refused with ``OPSP8996``).
   Registrations are JSON frames, ``tr_type`` "1" register / "2" unregister (§2), for
   ``H0STCNT0`` (trades) and, with ``KIS_ORDERBOOK``, ``H0STASP0`` (best bid/ask). Both
   count against the session's 41 registrations (§7), so the quota in symbols is
   ``min(KIS_MAX_SUBSCRIPTIONS, 41) // (2 if orderbook else 1)``.
3. Each registration is acknowledged by ``msg_cd`` (§3.1): ``OPSP0000``/``OPSP0002``
   registered (``ALREADY IN SUBSCRIBE`` is success, common after a reconnect, §8.5),
   ``OPSP0001`` released, ``OPSP0008`` quota (the quota then adapts down to what the
   server accepted for ``QUOTA_PROBE_AFTER`` seconds, §7), any other code a rejection
   carrying the code.
4. ``PINGPONG`` frames are echoed as the identical text (§4).
5. Data frames ``0|TR_ID|NNN|f^f^...`` carry NNN records of ``len(values) / NNN`` fields
   each (§5, §8.6); extra trailing fields are ignored (§6). Encrypted frames (flag ``1``,
   notices only) are counted and dropped with one warning.

Untrusted input. A frame that is not one of these shapes (any text, any JSON, bytes that
are not UTF-8, a binary frame) is malformed: counted and skipped. Each record of a data
frame stands alone: one that fails its checks is counted (``status.malformed``) and
skipped, and the frame's other records are still published. A record's numbers are held
to the engine's bounds (``session.py``): the date's year to ``MIN_YEAR``..``MAX_YEAR``,
prices to ``PRICE_MIN``..``PRICE_MAX`` (``0`` in an optional price means "no price", as
KIS sends for an empty book level), sizes and volumes to ``0``..``SIZE_MAX``, the change
to ``±PRICE_MAX`` and the change rate to ``±CHANGE_RATE_MAX``; a value outside them makes
the record malformed, since a positional record with one wrong field cannot be trusted in
its others. Texts of control frames are cut to ``MAX_CONTROL_TEXT`` characters, since
they reach logs and clients' error messages.

Everything here is pure (text in, values out): :func:`parse_frame`, :func:`parse_trade`,
:func:`parse_orderbook`, :func:`kst_ns`, :func:`registration`, so the protocol rules are
tested without sockets; :mod:`.kis` wires them to the shared reconnecting session.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Sequence

import attrs
import orjson

from ..clock import KST
from ..config import Secret
from ..model import Tick, TickKind
from .bounds import CHANGE_RATE_MAX, PRICE_MAX, PRICE_MIN, SIZE_MAX, bounded, in_time_window

TRADES = "H0STCNT0"  # 국내주식 실시간체결가 (KRX), §6.1
ORDERBOOK = "H0STASP0"  # 국내주식 실시간호가 (KRX), §6.2
TRADE_FIELDS = 46
ORDERBOOK_FIELDS = 59
MAX_RECORDS = 1_000  # a frame announcing more records is malformed (observed up to 20, §5)
MAX_COUNT_DIGITS = 4  # the NNN field: 3 digits observed (§5); it is seed 000's `symbol`
MAX_TR_ID = 16  # TR ids are 8 characters (§6); a longer one is not a TR id
MAX_CONTROL_TEXT = 200  # characters kept of each text of a control frame (logs, clients)
MIN_YEAR, MAX_YEAR = 2000, 2099  # business dates outside are malformed (session.py window)

# msg_cd of the real-time server (§3.1).
SUBSCRIBED = "OPSP0000"
UNSUBSCRIBED = "OPSP0001"
ALREADY_SUBSCRIBED = "OPSP0002"
NOT_SUBSCRIBED = "OPSP0003"
MAX_SUBSCRIBE_OVER = "OPSP0008"
APPROVAL_NOT_FOUND = "OPSP0011"
APPKEY_IN_USE = "OPSP8996"


# ---- pure protocol: values ------------------------------------------------------------


@attrs.frozen
class Control:
    """A JSON control frame: an acknowledgement or error (§3) or a ``PINGPONG`` (§4)."""

    tr_id: str
    tr_key: str = ""
    rt_cd: str = ""
    msg_cd: str = ""
    msg1: str = ""

    @property
    def is_ping(self) -> bool:
        return self.tr_id == "PINGPONG"

    @property
    def ok(self) -> bool:
        """Success is ``rt_cd == "0"``; ``ALREADY IN SUBSCRIBE`` (``rt_cd`` "1") too (§3)."""
        return self.rt_cd == "0" or self.msg_cd == ALREADY_SUBSCRIBED


@attrs.frozen
class DataFrame:
    """A real-time data frame (§5): ``records`` split by width, or an encrypted payload."""

    tr_id: str
    count: str  # the NNN field as sent, e.g. "001" (seed 000 calls it `symbol`)
    encrypted: bool
    records: tuple[tuple[str, ...], ...] = ()


@attrs.frozen
class KisTrade:
    """One H0STCNT0 record (§6.1), typed. Fields that can be empty are ``None``."""

    code: str  # 0 MKSC_SHRN_ISCD
    time_ns: int  # 33 BSOP_DATE + 1 STCK_CNTG_HOUR, KST
    price: float  # 2 STCK_PRPR
    sign: str  # 3 PRDY_VRSS_SIGN: 1 upper limit, 2 up, 3 flat, 4 lower limit, 5 down
    change: float | None  # 4 PRDY_VRSS (signed)
    change_rate: float | None  # 5 PRDY_CTRT (signed %)
    vwap: float | None  # 6 WGHN_AVRG_STCK_PRC
    open: float | None  # 7 STCK_OPRC
    high: float | None  # 8 STCK_HGPR
    low: float | None  # 9 STCK_LWPR
    ask: float | None  # 10 ASKP1
    bid: float | None  # 11 BIDP1
    size: float  # 12 CNTG_VOL: this trade
    volume: float | None  # 13 ACML_VOL: the day so far
    side: str  # 21 CCLD_DVSN: 1 buy, 3 pre-market, 5 sell
    session_code: str  # 34 NEW_MKOP_CLS_CODE
    halted: bool  # 35 TRHT_YN
    ask_size: float | None  # 36 ASKP_RSQN1
    bid_size: float | None  # 37 BIDP_RSQN1
    hour_class: str  # 43 HOUR_CLS_CODE

    def tick(self, record_seq: str, received_ns: int) -> Tick:
        """This trade as a :class:`Tick` (previous close = price - change, if positive)."""
        prev_close = None if self.change is None else self.price - self.change
        if prev_close is not None and not PRICE_MIN <= prev_close <= PRICE_MAX:
            prev_close = None  # a change that says nothing sensible about yesterday
        return Tick(
            symbol=self.code,
            kind=TickKind.TRADE,
            provider_time_ns=self.time_ns,
            received_ns=received_ns,
            price=self.price,
            size=self.size,
            bid=self.bid,
            bid_size=self.bid_size,
            ask=self.ask,
            ask_size=self.ask_size,
            open=self.open,
            high=self.high,
            low=self.low,
            volume=self.volume,
            prev_close=prev_close,
            change=self.change,
            change_rate=self.change_rate,
            record_seq=record_seq,
        )


# ---- pure protocol: functions ---------------------------------------------------------


def approval_body(app_key: Secret, app_secret: Secret) -> dict[str, str]:
    """The body of ``POST /oauth2/Approval`` (§1.1: the secret goes in ``secretkey``)."""
    return {
        "grant_type": "client_credentials",
        "appkey": app_key.reveal(),
        "secretkey": app_secret.reveal(),
    }


def registration(approval_key: str, custtype: str, tr_id: str, code: str, register: bool) -> str:
    """A register (``tr_type`` "1") or unregister ("2") frame (§2)."""
    return json.dumps(
        {
            "header": {
                "approval_key": approval_key,
                "custtype": custtype,
                "tr_type": "1" if register else "2",
                "content-type": "utf-8",
            },
            "body": {"input": {"tr_id": tr_id, "tr_key": code}},
        },
        separators=(",", ":"),
    )


def parse_frame(text: str) -> Control | DataFrame:
    """Parse one inbound text frame: data if it starts with ``0``/``1``, else JSON (§3, §5).

    Raises:
        ValueError: the frame is malformed (bad JSON, wrong shape, count/width mismatch).
    """
    if text[:1] in ("0", "1"):
        return _parse_data(text)
    # orjson: bounded nesting (a deep array is a ValueError, not a RecursionError) and
    # never a Python int of unbounded size.
    message = orjson.loads(text)
    header = message.get("header") if isinstance(message, dict) else None
    if not isinstance(header, dict) or not isinstance(header.get("tr_id"), str):
        raise ValueError("control frame without header.tr_id")
    body = message.get("body")
    body = body if isinstance(body, dict) else {}
    return Control(
        tr_id=_text(header["tr_id"]),
        tr_key=_text(header.get("tr_key")),
        rt_cd=_text(body.get("rt_cd")),
        msg_cd=_text(body.get("msg_cd")),
        msg1=_text(body.get("msg1")),
    )


def _text(value: object) -> str:
    """A control frame's text field: a string or an integer, cut; anything else is empty."""
    if isinstance(value, str):
        return value[:MAX_CONTROL_TEXT]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)[:MAX_CONTROL_TEXT]  # JSON integers fit 64 bits (orjson)
    return ""


def _parse_data(text: str) -> DataFrame:
    parts = text.split("|", 3)
    if len(parts) != 4:
        raise ValueError("data frame needs 4 '|'-separated parts")
    flag, tr_id, count, payload = parts
    if not 0 < len(tr_id) <= MAX_TR_ID or not _ascii_alnum(tr_id):
        raise ValueError(f"bad TR id {tr_id[:MAX_TR_ID]!r}")
    if not 0 < len(count) <= MAX_COUNT_DIGITS or not _digits(count):
        raise ValueError(f"bad record count {count[:8]!r}")
    if not 1 <= int(count) <= MAX_RECORDS:
        raise ValueError(f"bad record count {count!r}")
    if flag == "1":
        return DataFrame(tr_id, count, encrypted=True)
    values = payload.split("^")
    records = int(count)
    if len(values) % records:
        raise ValueError(f"{len(values)} values do not split into {records} records")
    width = len(values) // records  # live widths drift (§6): take it from the frame
    return DataFrame(
        tr_id,
        count,
        encrypted=False,
        records=tuple(tuple(values[i : i + width]) for i in range(0, len(values), width)),
    )


def kst_ns(date: str, hhmmss: str) -> int:
    """Epoch nanoseconds of a KST ``YYYYMMDD`` date and ``HHMMSS`` time.

    The result lies in the engine's time window (``session.TIME_MIN_NS``..``TIME_MAX_NS``:
    years 2000 to 2099, UTC), so no encoder (``datetime``, ``orjson``) can overflow on it.

    Raises:
        ValueError: not a valid date and time, or outside the time window.
    """
    if len(hhmmss) != 6 or not _digits(hhmmss):
        raise ValueError(f"bad KST time {hhmmss[:8]!r}")
    hours, minutes, seconds = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"bad KST time {hhmmss!r}")
    ns = _kst_midnight_ns(date) + (hours * 3600 + minutes * 60 + seconds) * 1_000_000_000
    if not in_time_window(ns):  # 2000-01-01 before 09:00 KST is still 1999 in UTC
        raise ValueError(f"KST {date} {hhmmss} is outside the time window")
    return ns


@functools.lru_cache(maxsize=16)  # one business date per day: parse it once, not per record
def _kst_midnight_ns(date: str) -> int:
    if len(date) != 8 or not _digits(date):
        raise ValueError(f"bad KST date {date[:10]!r}")
    if not MIN_YEAR <= int(date[:4]) <= MAX_YEAR:  # before strptime: years 1..9999 parse
        raise ValueError(f"KST date {date!r} outside {MIN_YEAR}..{MAX_YEAR}")
    midnight = dt.datetime.strptime(date, "%Y%m%d").replace(tzinfo=KST)
    return int(midnight.timestamp()) * 1_000_000_000


def parse_trade(record: Sequence[str]) -> KisTrade:
    """Type one H0STCNT0 record (§6.1); fields past the 46th are ignored.

    Raises:
        ValueError: too few fields, or a required field is empty or not a number.
    """
    if len(record) < TRADE_FIELDS:
        raise ValueError(f"H0STCNT0 record has {len(record)} fields, needs {TRADE_FIELDS}")
    r = record
    return KisTrade(
        code=_code(r[0]),
        time_ns=kst_ns(r[33], r[1]),
        price=_price(r[2]),
        sign=r[3],
        change=_optional_signed(r[4], PRICE_MAX),
        change_rate=_optional_signed(r[5], CHANGE_RATE_MAX),
        vwap=_optional_price(r[6]),
        open=_optional_price(r[7]),
        high=_optional_price(r[8]),
        low=_optional_price(r[9]),
        ask=_optional_price(r[10]),
        bid=_optional_price(r[11]),
        size=_size(r[12]),
        volume=_optional_size(r[13]),
        side=r[21],
        session_code=r[34],
        halted=r[35] == "Y",
        ask_size=_optional_size(r[36]),
        bid_size=_optional_size(r[37]),
        hour_class=r[43],
    )


def parse_orderbook(record: Sequence[str], today: str, record_seq: str, received_ns: int) -> Tick:
    """One H0STASP0 record (§6.2) as a best bid/ask quote; fields past the 59th ignored.

    ``today`` is the KST date ``YYYYMMDD`` (this TR carries only the time).

    Raises:
        ValueError: too few fields, or a required field is malformed.
    """
    if len(record) < ORDERBOOK_FIELDS:
        raise ValueError(f"H0STASP0 record has {len(record)} fields, needs {ORDERBOOK_FIELDS}")
    return Tick(
        symbol=_code(record[0]),
        kind=TickKind.QUOTE,
        provider_time_ns=kst_ns(today, record[1]),
        received_ns=received_ns,
        ask=_optional_price(record[3]),  # ASKP1
        bid=_optional_price(record[13]),  # BIDP1
        ask_size=_optional_size(record[23]),  # ASKP_RSQN1
        bid_size=_optional_size(record[33]),  # BIDP_RSQN1
        volume=_optional_size(record[53]),  # ACML_VOL
        record_seq=record_seq,
    )


def _code(text: str) -> str:
    if len(text) != 6 or not _ascii_alnum(text):
        raise ValueError(f"bad stock code {text[:8]!r}")
    return text


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes e.g. ``"²"``, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _ascii_alnum(text: str) -> bool:
    return text.isascii() and text.isalnum()


def _number(text: str, low: float, high: float) -> float:
    """A finite number in ``low..high``.

    Raises:
        ValueError: empty, junk, not finite, or out of bounds.
    """
    value = bounded(float(text), low, high)  # float() raises ValueError on "" and junk
    if value is None:
        raise ValueError(f"{text[:16]!r} is not a number in {low:g}..{high:g}")
    return value


def _price(text: str) -> float:
    return _number(text, PRICE_MIN, PRICE_MAX)


def _size(text: str) -> float:
    return _number(text, 0.0, SIZE_MAX)


def _optional_price(text: str) -> float | None:
    """A price, or None when empty or zero (KIS sends 0 for an empty book level)."""
    if not text:
        return None
    value = _number(text, 0.0, PRICE_MAX)
    if value == 0.0:
        return None
    if value < PRICE_MIN:
        raise ValueError(f"price {text[:16]!r} below {PRICE_MIN:g}")
    return value


def _optional_size(text: str) -> float | None:
    return _size(text) if text else None


def _optional_signed(text: str, bound: float) -> float | None:
    return _number(text, -bound, bound) if text else None
