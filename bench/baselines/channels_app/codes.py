"""The feed's tickers as seed 000's 6-digit codes: by position, ``100000 + i``.

Shared by the publisher (which maps each tick) and the harness (which tells clients what to
subscribe); free of Django so the harness can import it.
"""


def code_for(index: int) -> str:
    """The code of the ``index``-th ticker of the feed."""
    return f"{100000 + index:06d}"
