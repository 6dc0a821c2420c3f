"""The web page at `/`: static files from reelgen/service/web that call only the public /v1 API, like any client."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

# The page loads its own files only, and works offline. Videos and thumbnails may come from another origin: with S3
# storage a download answers with a redirect to the store's presigned URL.
_CSP = ("default-src 'self'; img-src * data:; media-src *; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'none'")


class _Revalidated(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        # revalidate by ETag each time: after an upgrade no browser runs the new page with a cached old app.js
        response.headers["Cache-Control"] = "no-cache"
        return response


def install_web(app: FastAPI) -> None:
    """Serve the page at `/` and its files under /web/; neither is part of the API, so both stay out of OpenAPI."""
    app.mount("/web", _Revalidated(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Content-Security-Policy": _CSP,
                                                             "Cache-Control": "no-cache"})
