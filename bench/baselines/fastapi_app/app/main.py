"""seed 003's FastAPI application (app/main.py): the router plus the FMP service at startup.

Run as the guide does: ``uvicorn app.main:app`` (the benchmark adds host/port, no --reload).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .api.websocket_realtime import router
from .services.fmp_websocket_service import fmp_service


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(fmp_service.start())
    yield
    await fmp_service.stop()
    task.cancel()


app = FastAPI(title="FMP real-time (seed 003 baseline)", lifespan=lifespan)
app.include_router(router)
