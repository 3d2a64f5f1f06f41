"""``python -m trio_stock``: run the gateway as a server.

Two subcommands are dispatched before the server's flags are read: ``token``
(:mod:`.token_command`) and ``watch`` (:mod:`.watch.command`).

Every setting has a flag generated from :class:`~trio_stock.config.Config` (flags win over
the environment and ``.env``). Secrets have no flags on purpose: a command line is visible
to every user of the machine in ``ps``; set them in the environment or ``.env``.
SIGINT/SIGTERM shut down gracefully: clients are closed with 1001, upstream released.
"""

from __future__ import annotations

import argparse
import enum
import gc
import logging
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any, TypeVar, cast

import attrs
import trio

from . import __version__, logs
from .config import AuthMode, Config, is_secret
from .errors import ConfigError
from .gateway import Gateway, serve
from .server import ListenError

log = logging.getLogger("trio_stock")


def build_parser() -> argparse.ArgumentParser:
    """Flags for every non-secret setting, each naming its environment variable."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_stock",
        description="A real-time stock-price gateway: KIS, FMP and a simulated market over "
        "WebSocket and REST. With no configuration it serves a simulated market on "
        "127.0.0.1:8000. Secrets (KIS_APP_KEY, KIS_APP_SECRET, KIS_ACCOUNTS, FMP_API_KEY) are "
        "read from the environment or a .env file only.",
        epilog="Other commands: 'python -m trio_stock token --help' (a development token), "
        "'python -m trio_stock watch --help' (live prices in the terminal).",
    )
    parser.add_argument("--version", action="version", version=f"trio_stock {__version__}")
    for field in attrs.fields(Config):
        if is_secret(field):
            continue  # secrets: environment or .env only
        default = getattr(field.default, "value", field.default)  # enums show their value
        allowed = _allowed(field)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=None,  # the text goes through the same check as its variable's
            metavar="BOOL" if field.type is bool else field.name.upper(),
            help=f"{HELP.get(field.name, '')} env {field.metadata['env']} (default: {default}"
            + (f"; {allowed}" if allowed else "")
            + ")",
        )
    return parser


HELP = {
    "host": "Address to bind; a non-loopback one needs --auth.",
    "port": "Port to listen on; 0 picks a free one (printed in the banner).",
    "kr_provider": "Who serves Korean codes: KIS when its keys are set, else simulated.",
    "us_provider": "Who serves US tickers: FMP when its key is set, else simulated.",
    "linger": "Seconds a symbol nobody holds stays registered upstream.",
    "ack_timeout": "Seconds a subscribe waits for the upstream's answer.",
    "max_symbols_per_client": "Symbols one WebSocket client may hold.",
    "max_clients": "Open connections in all.",
    "max_connections_per_ip": "Open connections per client address.",
    "connect_rate_per_ip": "New connections per second per address.",
    "ping_interval": "Seconds between the server's pings (0: none).",
    "ping_timeout": "Seconds a client has to answer a ping.",
    "sim_ticks_per_second": "Simulated ticks per symbol and second.",
    "sim_seed": "Seed of the simulated market.",
    "sim_always_open": "Simulated market trades around the clock, not in exchange hours.",
    "auth": "Client authentication: none, or jwt (tokens required).",
    "jwt_key_file": "PEM public key or JWKS that verifies tokens.",
    "jwt_audience": "Required 'aud' of tokens.",
    "jwt_issuer": "Required 'iss' of tokens.",
    "allowed_origins": "Browser origins allowed besides our own and loopback (comma list).",
    "allowed_hosts": "Host names served (comma list; * for any).",
    "tls_cert": "Certificate chain (PEM): serve https and wss.",
    "tls_key": "Private key (PEM) of --tls-cert.",
    "log_level": "How much to log.",
    "log_format": "Log lines as text or JSON objects.",
    "redis_url": "Redis of a cluster (redis://host:port): run as one node of it.",
    "role": "A cluster node's part: all, edge (clients only) or ingest (upstream only).",
    "node_id": "This node's name in the cluster (default: host-pid-random).",
    "node_ttl": "Seconds after which a silent node's demand expires.",
    "lease_ttl": "Seconds after which a silent holder's upstream sessions are taken over.",
    "cluster_prefix": "Prefix of every Redis key, so clusters can share one Redis.",
    "kis_env": "KIS real or paper trading (picks the default URLs).",
    "kis_ws_url": "KIS WebSocket URL.",
    "kis_rest_url": "KIS REST base URL (approval key).",
    "kis_max_subscriptions": "Korean quota (also of the simulated market).",
    "kis_orderbook": "Also register KIS best bid/ask (H0STASP0).",
    "kis_custtype": "KIS customer type: P individual, B corporate.",
    "kis_watchdog": "Reconnect KIS after this many seconds without any frame.",
    "kis_register_interval": "Least seconds between KIS registrations.",
    "fmp_ws_url": "FMP WebSocket URL.",
    "fmp_rest_url": "FMP REST base URL (snapshot quotes).",
    "fmp_max_subscriptions": "US quota (also of the simulated market).",
    "fmp_ca_bundle": "CA bundle for FMP's wss and https.",
    "fmp_watchdog": "Reconnect FMP after this many seconds without any frame.",
}


def _allowed(field: attrs.Attribute[Any]) -> str:
    """The allowed values of a setting, for --help."""
    kinds = typing.get_args(field.type) or (field.type,)
    for kind in kinds:
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return "one of " + ", ".join(m.value for m in kind)
    if field.type is bool:
        return "true or false"
    return str(getattr(field.validator, "allowed", ""))


def load_config(argv: Sequence[str] | None = None) -> Config:
    """The configuration: environment and ``.env``, then flags on top (same checks)."""
    args = build_parser().parse_args(argv)
    flags = {name: value for name, value in vars(args).items() if value is not None}
    return Config.from_env(flags=flags)


def banner(gateway: Gateway) -> str:
    """The start-up banner with the URL of every endpoint."""
    host, port = gateway.config.host, gateway.port
    secure = gateway.config.tls_cert is not None
    base = f"{'https' if secure else 'http'}://{host}:{port}"
    ws = f"{'wss' if secure else 'ws'}://{host}:{port}"
    providers = "  ".join(
        f"{p.market.value}: {p.name} ({'live' if p.live else 'simulated'}, quota {p.quota})"
        for p in gateway.hub.statistics().providers
    )
    return "\n".join(
        [
            f"trio_stock {__version__} listening on {base}",
            f"  dashboard         {base}/",
            f"  seed 000 (KIS)    {ws}/ws/stock/",
            f"  seed 003 (FMP)    {ws}/api/v2/realtime/ws/prices",
            f"  REST              {base}/api/v2/realtime/"
            "{health,status,subscribe,unsubscribe,cache}",
            f"  metrics           {base}/metrics",
            f"  providers         {providers}",
            f"  auth              {(gateway.config.auth or AuthMode.NONE).value}",
        ]
    )


GC_YOUNG_THRESHOLD = 20_000  # container allocations between young collections (default 700)


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector cheap for a server full of short-lived updates.

    Found by profiling the benchmark (README "Benchmark"). With the default threshold of
    700, young collections ran constantly and each traversed the updates still queued for
    clients: 14 % of the server's time at 500,000 updates/s, and W2's p99 latency 95-158
    ms. At 20,000 they take 0.3 ms on average (6 ms at most, during connection bursts)
    and W2's p99 is 57-60 ms. Everything alive after start-up (modules, classes,
    configuration) lives as long as the process, so it is frozen out of full
    collections, which otherwise traverse it all (pauses of 45-130 ms -> 20-30 ms).
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


async def run(config: Config) -> None:
    """Serve until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            print(banner(gateway), flush=True)
            tune_garbage_collector()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["token"]:
        from . import token_command

        return token_command.main(argv[1:])
    if argv[:1] == ["watch"]:
        from .watch import command

        return command.main(argv[1:])
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"trio_stock: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)
    code = 0
    try:
        trio.run(run, config)
    except* ConfigError as group:
        print(f"trio_stock: configuration error: {_leaf(group)}", file=sys.stderr)
        code = 2
    except* ListenError as group:  # only a real bind failure: anything else is a crash
        print(f"trio_stock: {_leaf(group).strerror}", file=sys.stderr)
        code = 1
    except* KeyboardInterrupt:  # Ctrl-C before the signal handler is up: no traceback
        code = 130
    return code


_E = TypeVar("_E", bound=BaseException)


def _leaf(group: BaseExceptionGroup[_E]) -> _E:
    """The first exception of a group of nested nursery groups."""
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return cast(_E, first)


if __name__ == "__main__":
    sys.exit(main())
