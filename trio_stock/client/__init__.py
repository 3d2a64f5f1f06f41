"""A Trio client for the gateway's seed 003 price stream (``/api/v2/realtime/ws/prices``).

::

    async with open_price_stream("ws://127.0.0.1:8000", ["AAPL", "005930"]) as stream:
        async for item in stream:
            if isinstance(item, PriceUpdate):
                print(item.symbol, item.last_price, item.gap or "")
            else:
                print(item)  # Connected, Disconnected, SubscriptionFailed

The stream reconnects by itself (capped exponential backoff with jitter), asks again for
every symbol, and reports what the program missed meanwhile as a :class:`Gap` on the
first update of each symbol after it. Modules: :mod:`.values` (what the program gets),
:mod:`.wire` (seed 003 messages), :mod:`.gaps` (seq and epoch per symbol),
:mod:`.pending` (the bounded buffer), :mod:`.stream` (the connection and its task).
"""

from .stream import PriceStream as PriceStream
from .stream import open_price_stream as open_price_stream
from .values import Connected as Connected
from .values import Disconnected as Disconnected
from .values import Gap as Gap
from .values import PriceUpdate as PriceUpdate
from .values import StreamEvent as StreamEvent
from .values import StreamRefused as StreamRefused
from .values import StreamStatistics as StreamStatistics
from .values import SubscriptionFailed as SubscriptionFailed
