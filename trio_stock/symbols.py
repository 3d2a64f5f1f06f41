"""Symbol normalisation, validation and routing to a market.

Korean codes are exactly six digits (seed 000: "6자리 숫자"). US tickers are upper-cased,
1-10 characters of letters, digits, ``.`` and ``-`` with at least one letter (``BRK.B``,
``BF-B``); an all-digit string that is not six long is neither, so a mistyped Korean code
is reported instead of being routed to the US market.
"""

from __future__ import annotations

import re

from .errors import InvalidSymbol
from .model import Market

KOREAN_CODE = re.compile(r"[0-9]{6}")  # ASCII only: "٠٠٥٩٣٠" and "００５９３０" are not codes
US_TICKER = re.compile(r"(?=[A-Z0-9.\-]*[A-Z])[A-Z0-9.\-]{1,10}")
MAX_RAW_LENGTH = 32  # anything longer is rejected before any regex runs


def normalize_symbol(raw: object) -> tuple[str, Market]:
    """Return the canonical symbol and its market.

    Raises:
        InvalidSymbol: ``raw`` is not a string, or neither a Korean code nor a US ticker.
    """
    if not isinstance(raw, str) or len(raw) > MAX_RAW_LENGTH:
        raise InvalidSymbol(raw)
    text = raw.strip()
    if KOREAN_CODE.fullmatch(text):
        return text, Market.KR
    text = text.upper()
    if US_TICKER.fullmatch(text):
        return text, Market.US
    raise InvalidSymbol(raw)


def is_korean_code(raw: object) -> bool:
    """True for a 6-digit Korean stock code (the only symbols seed 000's endpoint takes)."""
    return isinstance(raw, str) and KOREAN_CODE.fullmatch(raw.strip()) is not None
