"""Operations endpoints outside /v1 and without a key, for probes and scrapers: /healthz, /readyz, /metrics."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from reelgen.service.api.deps import ServicesDep
from reelgen.service.api.schemas import Check, Readiness
from reelgen.service.health import readiness
from reelgen.service.metrics import MetricsMiddleware, ServiceMetrics


def install_monitoring(app: FastAPI, metrics: ServiceMetrics, model_states: Mapping[str, str]) -> None:
    """Count every request in `metrics` and serve the three endpoints; `model_states` is the runner's live view."""
    router = APIRouter(tags=["service"])

    @router.get("/healthz", summary="Liveness: the process answers (checks nothing else)")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", response_model=Readiness, summary="Readiness: database, storage and a model usable",
                description="200 when the job store answers `SELECT 1`, a probe object can be written, read back "
                            "and deleted in storage, and at least one served model is loaded or loadable (built "
                            "at start, its last load not failed); 503 with the same body otherwise.",
                responses={503: {"model": Readiness, "description": "a check failed: see `checks`"}})
    def readyz(services: ServicesDep, response: Response) -> Readiness:
        ok, checks = readiness(services.store, services.storage, model_states)
        response.status_code = 200 if ok else 503
        return Readiness(status="ready" if ok else "not_ready",
                         checks={name: Check(ok=c.ok, detail=c.detail, seconds=c.seconds) for name, c in checks.items()})

    # Prometheus text, not JSON: documented in the README rather than in the OpenAPI document
    @router.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
