"""ASGI entry point: HTTP through Django, WebSocket ``/ws/stock/`` to the consumer (seed 000)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baselines.channels_app.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from .stock.consumers import StockPriceConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/stock/", StockPriceConsumer.as_asgi())]),
    }
)
