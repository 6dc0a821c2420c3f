"""The HTTP API: OpenAI's Videos API plus reelgen's extensions. Never imports torch."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from reelgen import __version__
from reelgen.service.api.body_limit import BodyLimit
from reelgen.service.api.deps import Services
from reelgen.service.api.errors import install_error_handlers
from reelgen.service.api.openapi import install_openapi
from reelgen.service.api.routes import content_router, router

__all__ = ["Services", "build_api"]

_DESCRIPTION = (
    "Compatible with the OpenAI Videos API: point the official `openai` SDK at this server with `base_url`. "
    "Extensions: generation settings in the create body, `POST /v1/videos/{id}/cancel`, a server-sent event "
    "stream per video, per-stage timings, and signed download links."
)


def build_api(services: Services, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]]) -> FastAPI:
    # operation ids are the route functions' names (create_video, ...): what generated clients call them
    app = FastAPI(title="reelgen", version=__version__, description=_DESCRIPTION, lifespan=lifespan,
                  generate_unique_id_function=lambda route: route.name)
    app.add_middleware(BodyLimit, max_bytes=services.settings.max_upload_bytes)
    app.state.services = services
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(content_router)

    @app.get("/health", tags=["service"], summary="Liveness: the process answers")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    install_openapi(app)
    return app
