"""Names of well-known symbols, for boards that show a name beside a code.

The Korean names are seed 000's table "주요 종목 코드" (the seed's copy has a few damaged
bytes; the names are the companies' own Korean names). The US names are the short names of
large US companies. A symbol not listed has no name (``None``); neither provider sends
names in its real-time frames (``protocols/kis.md``, ``protocols/fmp.md``), so this table
is the only source. The hub looks a name up once, for a symbol's first state
(:func:`trio_stock.model.merge`), never per tick.
"""

from __future__ import annotations

from collections.abc import Mapping

KOREAN_NAMES: Mapping[str, str] = {
    "005930": "삼성전자",
    "000660": "SK하이닉스",
    "035720": "카카오",
    "035420": "NAVER",
    "051910": "LG화학",
    "068270": "셀트리온",
    "006400": "삼성SDI",
    "207940": "삼성바이오로직스",
    "373220": "LG에너지솔루션",
    "105560": "KB금융",
}

US_NAMES: Mapping[str, str] = {
    "AAPL": "Apple",
    "MSFT": "Microsoft",
    "NVDA": "NVIDIA",
    "GOOGL": "Alphabet (Class A)",
    "GOOG": "Alphabet (Class C)",
    "AMZN": "Amazon",
    "META": "Meta Platforms",
    "TSLA": "Tesla",
    "BRK.B": "Berkshire Hathaway (Class B)",
    "AVGO": "Broadcom",
    "LLY": "Eli Lilly",
    "JPM": "JPMorgan Chase",
    "V": "Visa",
    "MA": "Mastercard",
    "UNH": "UnitedHealth",
    "XOM": "Exxon Mobil",
    "WMT": "Walmart",
    "JNJ": "Johnson & Johnson",
    "PG": "Procter & Gamble",
    "HD": "Home Depot",
    "COST": "Costco",
    "ORCL": "Oracle",
    "NFLX": "Netflix",
    "AMD": "Advanced Micro Devices",
    "CRM": "Salesforce",
    "KO": "Coca-Cola",
    "PEP": "PepsiCo",
    "BAC": "Bank of America",
    "ADBE": "Adobe",
    "INTC": "Intel",
    "CSCO": "Cisco",
    "DIS": "Walt Disney",
    "ABBV": "AbbVie",
    "MRK": "Merck",
}

_NAMES: Mapping[str, str] = {**KOREAN_NAMES, **US_NAMES}


def name_of(symbol: str) -> str | None:
    """The name of ``symbol`` (canonical spelling: ``"005930"``, ``"AAPL"``), or None."""
    return _NAMES.get(symbol)
