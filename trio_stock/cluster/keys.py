"""Every Redis key and channel the cluster uses, in one place.

All names start with a prefix (default ``trio_stock``), so several clusters (or tests) can
share one Redis. ``session`` names an upstream session (a provider, e.g. ``kis``), ``node``
a gateway process.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Keys:
    prefix: str = "trio_stock"

    def lease(self, session: str) -> str:
        """The lease of an upstream session: ``"<node> <token>"`` while held, with a TTL."""
        return f"{self.prefix}:lease:{session}"

    def fence(self, session: str) -> str:
        """The last fencing token of a session (lease.py: grows across Redis restarts)."""
        return f"{self.prefix}:fence:{session}"

    def node(self, node: str) -> str:
        """A node's heartbeat (its role and time), expiring when the node stops renewing it."""
        return f"{self.prefix}:node:{node}"

    def demand(self, session: str, node: str) -> str:
        """The symbols ``node``'s clients hold of ``session`` (a set)."""
        return f"{self.prefix}:demand:{session}:{node}"

    def demanders(self, session: str) -> str:
        """The nodes that registered demand for ``session`` (a set)."""
        return f"{self.prefix}:demanders:{session}"

    def demand_changed(self, session: str) -> str:
        """Channel: a node changed its demand for ``session`` (the message is the node)."""
        return f"{self.prefix}:demand-changed:{session}"

    def answers(self, session: str, node: str) -> str:
        """Channel: the holder's answers to ``node``'s subscribes, and its revocations."""
        return f"{self.prefix}:answers:{session}:{node}"

    def state(self, symbol: str) -> str:
        """The latest state of ``symbol`` (written by its holder, fenced)."""
        return f"{self.prefix}:state:{symbol}"

    def ticks(self, symbol: str) -> str:
        """Channel: every new state of ``symbol``."""
        return f"{self.prefix}:ticks:{symbol}"
