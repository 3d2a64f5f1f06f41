"""The gateway as a service: ``await nursery.start(trio_stock.serve, config)``.

It opens the root of the nursery tree: the hub (which runs one task per provider and the
linger reaper) and the HTTP/WebSocket listener with one task per client connection.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import attrs
import trio

from .cluster.statistics import ClusterView
from .config import Config, KrProvider, UsProvider
from .errors import ConfigError
from .hub import Hub
from .model import Market
from .upstream.contract import Provider
from .upstream.sim import SimulatedMarket


@attrs.frozen
class Gateway:
    """What :func:`serve` hands back once it is ready."""

    hub: Hub
    config: Config
    port: int | None  # the bound port (useful with port 0); None when not listening
    cluster: ClusterView | None = None  # this node, with --redis-url


def build_providers(config: Config) -> list[Provider]:
    """One provider per market, as the configuration asks.

    Raises:
        ConfigError: a live provider was asked for without its credentials.
    """
    return [_korean_provider(config), _us_provider(config)]


def _korean_provider(config: Config) -> Provider:
    if (config.kis_app_key is None) != (config.kis_app_secret is None):
        missing = "KIS_APP_SECRET" if config.kis_app_secret is None else "KIS_APP_KEY"
        raise ConfigError(
            f"{missing} is missing: KIS needs KIS_APP_KEY and KIS_APP_SECRET together "
            "(or neither, for the simulated Korean market)"
        )
    choice = config.kr_provider
    if choice is KrProvider.AUTO:
        choice = KrProvider.KIS if config.kis_configured else KrProvider.SIM
    if choice is KrProvider.KIS:
        if not config.kis_configured:
            raise ConfigError(
                "--kr-provider kis needs KIS_APP_KEY and KIS_APP_SECRET, or KIS_ACCOUNTS "
                "(environment or .env)"
            )
        if config.kis_accounts is not None:
            from .upstream.kis_pool import KisPool

            return KisPool.from_config(config)  # one session per app key, as one provider
        from .upstream.kis import KisProvider

        return KisProvider.from_config(config)
    return SimulatedMarket(
        Market.KR,
        quota=config.kis_max_subscriptions,
        ticks_per_second=config.sim_ticks_per_second,
        seed=config.sim_seed,
        always_open=config.sim_always_open,
    )


def _us_provider(config: Config) -> Provider:
    choice = config.us_provider
    if choice is UsProvider.AUTO:
        choice = UsProvider.FMP if config.fmp_api_key is not None else UsProvider.SIM
    if choice is UsProvider.FMP:
        if config.fmp_api_key is None:
            raise ConfigError("--us-provider fmp needs FMP_API_KEY (environment or .env)")
        from .upstream.fmp import FmpProvider

        return FmpProvider.from_config(config)
    return SimulatedMarket(
        Market.US,
        quota=config.fmp_max_subscriptions,
        ticks_per_second=config.sim_ticks_per_second,
        seed=config.sim_seed + 1,
        always_open=config.sim_always_open,
    )


def build_hub(config: Config, providers: Iterable[Provider] | None = None) -> Hub:
    """The hub with the configured limits, and ``providers`` or else the configured ones."""
    return Hub(
        build_providers(config) if providers is None else providers,
        linger=config.linger,
        ack_timeout=config.ack_timeout,
        max_symbols_per_subscriber=config.max_symbols_per_client,
    )


async def serve(
    config: Config | None = None,
    *,
    listen: bool = True,
    providers: Iterable[Provider] | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway until cancelled.

    Args:
        config: The settings (default: :meth:`Config.from_env`).
        listen: Serve HTTP/WebSocket on ``config.host:config.port``; ``False`` runs only the
            hub and its providers (for embedding the core).
        providers: The providers to serve, at most one per market, instead of those the
            configuration names (e.g. ``[trio_stock.testing.ScriptedMarket(Market.US)]`` in
            a test); a market none of them serves is unavailable.

    ``task_status.started`` receives a :class:`Gateway` once the hub runs and the port is
    bound, so ``await nursery.start(serve, config)`` returns when clients can connect.
    """
    config = config or Config.from_env()
    async with trio.open_nursery() as nursery:
        cluster = None
        if config.redis_url is None:
            hub = build_hub(config, providers)
            await nursery.start(hub.run)
        else:
            from .cluster.serve import serve_node

            local = build_providers(config) if providers is None else list(providers)
            hub, cluster = await nursery.start(serve_node, config, local, providers is None)
        port = None
        if listen:
            from .server import serve_http

            port = await nursery.start(functools.partial(serve_http, hub, config, cluster=cluster))
        task_status.started(Gateway(hub=hub, config=config, port=port, cluster=cluster))
