"""The byte-level transport: HTTP/1.1 on h11 and server-side WebSockets on wsproto.

``server.py`` is the front door that wires these to the endpoints:

- :mod:`.http`: read a request head and body with limits and deadlines, answer, keep alive;
- :mod:`.wsserver`: the handshake answer, messages in (bounded), pre-built frames out;
- :mod:`.wsmessage`: a message's fragments joined under a size limit (server and upstream).
"""
