"""``python -m trio_stock watch``: live prices of a gateway in the terminal.

``board`` is the model of the screen, ``render`` draws it (a rich table, or plain lines for
a pipe), ``commands`` reads ``+SYMBOL``/``-SYMBOL`` input, and ``command`` runs it all on
Trio: the stream of :mod:`trio_stock.client`, the keyboard, the redraws, the signals.
"""
