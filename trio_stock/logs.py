"""Log lines an operator can use: plain text for a terminal, JSON lines for a log shipper.

``--log-format json`` writes one JSON object per line with ``time``, ``level``,
``logger``, ``message`` and the structured fields a line carries (``connection``,
``peer``, ``protocol``, ``close_code``, ``status``, ``ms``, ...), so a shipper needs no
parsing rules. Nothing here decides what is logged: tokens and keys never reach a log line
in the first place (``access.redact``, ``config.Secret``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with its ``extra`` fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str, log_format: str) -> None:
    """Send the process's logs to stderr at ``level`` in ``text`` or ``json``."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # coredis logs every failed connect with a traceback at ERROR and every idle close at
    # INFO; the cluster reports Redis trouble itself (health, metrics, one warning line).
    logging.getLogger("coredis").setLevel(logging.CRITICAL)
