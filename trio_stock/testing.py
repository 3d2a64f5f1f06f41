"""Tools for testing programs that use trio_stock, as ``trio.testing`` is for Trio.

:class:`ScriptedMarket` is an upstream provider your test drives tick by tick — trades,
quotes, refused subscriptions, dropped sessions — behind the bare :class:`~trio_stock.Hub`
or the whole gateway (``serve(config, providers=[market])``)::

    from trio_stock.testing import ScriptedMarket
"""

from .upstream.scripted import ScriptedMarket as ScriptedMarket

__all__ = ["ScriptedMarket"]
