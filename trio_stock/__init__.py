"""trio_stock: a real-time stock-price gateway on Trio.

Run it as a server (``python -m trio_stock``), embed it (``await nursery.start(serve,
config)``), or use the hub directly::

    async with trio.open_nursery() as nursery:
        hub = await nursery.start(Hub([SimulatedMarket(Market.KR)]).run)
        async with hub.subscriber() as updates:
            await hub.subscribe(updates, ["005930"])
            async for state in updates:
                print(state.symbol, state.last_price)
"""

from .config import Config as Config
from .config import Secret as Secret
from .errors import AuthFailed as AuthFailed
from .errors import ConfigError as ConfigError
from .errors import InvalidSymbol as InvalidSymbol
from .errors import SubscriberTooSlow as SubscriberTooSlow
from .errors import TrioStockError as TrioStockError
from .errors import UpstreamError as UpstreamError
from .gateway import Gateway as Gateway
from .gateway import serve as serve
from .hub import Failure as Failure
from .hub import FailureReason as FailureReason
from .hub import Hub as Hub
from .hub import HubStatistics as HubStatistics
from .hub import Policy as Policy
from .hub import Subscriber as Subscriber
from .hub import SubscribeResult as SubscribeResult
from .model import Market as Market
from .model import SymbolState as SymbolState
from .model import Tick as Tick
from .model import TickKind as TickKind
from .symbols import normalize_symbol as normalize_symbol
from .upstream.sim import SimulatedMarket as SimulatedMarket

__version__ = "0.1.0"
