"""The one cattrs converter through which outside data becomes values, and values become JSON.

Every boundary where text from outside turns into a typed value goes through
:data:`converter`: the configuration (environment, ``.env``, flags), the client requests of
both WebSocket protocols, and the REST bodies; REST and health responses are unstructured
through it too. It is cattrs' orjson preconf converter, so the JSON it produces is orjson's.
Structuring errors are turned into messages a person can read with
:func:`cattrs.transform_error`, or, where a seed document fixes the words, by the type's own
hooks and validators.

Unknown keys are not forbidden here: browsers and the seeds' clients send what they like,
and the configuration reports unknown ``TRIO_STOCK_*`` variables itself (the environment
holds much else). The per-tick frames keep their hand-built fast path
(``endpoints/prices.py``, ``endpoints/stock.py``): README "How it is built" says why.
"""

from __future__ import annotations

from cattrs.preconf.orjson import OrjsonConverter, make_converter

converter: OrjsonConverter = make_converter()
