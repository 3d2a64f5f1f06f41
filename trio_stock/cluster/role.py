"""What a node of a cluster does (``--role``)."""

from __future__ import annotations

import enum


class Role(enum.Enum):
    ALL = "all"  # serves clients and may hold upstream sessions
    EDGE = "edge"  # serves clients only
    INGEST = "ingest"  # holds upstream sessions; serves health and metrics only

    @property
    def serves_clients(self) -> bool:
        return self is not Role.INGEST

    @property
    def holds_sessions(self) -> bool:
        return self is not Role.EDGE
