"""The control plane as one plain ASGI process: `uvicorn neo_ray.control.asgi:app` or `neo-ray api`.

The same routes and code as the Serve deployment (app.py), for a small host where a Ray head
does not fit (512 MB free tiers). It imports no ray: the base install runs it. Settings are read
when the server starts (not at import), so a missing setting stops startup with its name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from neo_ray.config import Settings, check_deployment, load_settings
from neo_ray.control import api
from neo_ray.control.wiring import control_state


def create_app(settings: Settings | None = None) -> FastAPI:
    """A FastAPI app of the control plane; `settings` default to the environment's."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        chosen = settings or load_settings()
        check_deployment(chosen)
        state = control_state(chosen)
        api.configure(state, app)
        try:
            yield
        finally:
            state.broker.close()

    return api.create_app(lifespan=lifespan)


app = create_app()
