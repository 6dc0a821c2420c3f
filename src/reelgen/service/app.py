"""The app factory: wires settings, job store, object store, generators, executor and housekeeping into the API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from reelgen.backends.base import Generator
from reelgen.service.api import Services, build_api
from reelgen.service.api.errors import error_body
from reelgen.service.api.monitoring import install_monitoring
from reelgen.service.api.schemas import VideoPublic
from reelgen.service.api.web import install_web
from reelgen.service.delivery import LinkSigner
from reelgen.service.executors import LocalExecutor
from reelgen.service.executors.base import WorkerProcesses
from reelgen.service.executors.generators import build_generators, model_specs_apart
from reelgen.service.health import NOT_LOADED
from reelgen.service.housekeeping import Housekeeper
from reelgen.service.jobs import JobStore
from reelgen.service.metrics import ServiceMetrics
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore
from reelgen.service.tenants import Idempotency, KeyStore
from reelgen.service.webhooks import Outbox, WebhookSender, check_settings
from reelgen.service.webhooks.ssrf import AllowList


def create_app(settings: ServiceSettings | None = None, generators: Sequence[Generator] | None = None) -> FastAPI:
    """The service as an ASGI app. Workers start and stop with the app's lifespan (uvicorn, TestClient)."""
    settings = settings or ServiceSettings()
    check_settings(settings)
    AllowList.parse(settings.image_allow_hosts)  # a malformed entry stops the start, not the first request
    store = JobStore(settings.database_url, lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
                     retention_seconds=settings.retention_seconds)
    storage = ObjectStore.from_settings(settings)
    metrics = ServiceMetrics(store, workers=settings.workers)
    if settings.executor == "ray":
        if generators is not None:
            raise ValueError("the Ray executor builds its generators in its replicas: pass none")
        from reelgen.service.executors.ray import RayExecutor  # imports ray only when asked for

        executor = RayExecutor(settings, store, metrics)
        specs, model_states = executor.model_specs, executor.model_states  # from the cluster: no torch here
    elif settings.workers == 0:  # `reelgen worker` processes generate: no model, and no torch, in this one
        specs = model_specs_apart(settings) if generators is None else [g.spec for g in generators]
        executor, model_states = WorkerProcesses(), {spec.id: NOT_LOADED for spec in specs}
    else:
        generators = build_generators(settings) if generators is None else generators
        executor = LocalExecutor.from_settings(settings, store, storage, generators, metrics)
        specs, model_states = [g.spec for g in generators], executor.runner.model_states
    housekeeper = Housekeeper(store, storage, executor, settings.housekeeping_seconds)
    # an event's data is the video object exactly as GET /v1/videos/{id} returns it
    webhooks = WebhookSender(Outbox(store.engine), settings,
                             render=lambda job: VideoPublic.from_job(job).model_dump(mode="json"),
                             on_attempt=lambda event, outcome: metrics.webhook_deliveries.labels(event, outcome).inc())
    services = Services(settings=settings, store=store, storage=storage, executor=executor,
                        models={spec.id: spec for spec in specs},
                        signer=LinkSigner(settings.signing_secret.get_secret_value()),
                        keys=KeyStore(store.engine), idempotency=Idempotency(store.engine))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.create_schema()
        services.keys.register_configured(settings.api_keys)
        if not services.keys.auth_required():
            logging.getLogger(__name__).warning(
                "auth is off: no API key has been created, so every caller is served without one (allowed on "
                "loopback only); `reelgen keys create` turns it on")
        housekeeper.run_once()  # jobs of a process that was killed come back as soon as their leases lapse
        executor.start()
        housekeeper.start()
        webhooks.start()  # resumes deliveries a previous process left pending
        try:
            yield
        finally:
            # uvicorn turns SIGTERM into this: stop claiming, let running jobs finish or re-queue them
            await run_in_threadpool(executor.stop, settings.shutdown_grace_seconds)
            housekeeper.stop()
            webhooks.stop()
            store.close()

    app = build_api(services, lifespan)
    app.add_exception_handler(OperationalError, _database_unavailable)
    install_monitoring(app, metrics, model_states)
    install_web(app)
    return app


async def _database_unavailable(_: Request, e: OperationalError) -> JSONResponse:
    # The database restarts or fails over: a 503 tells a client to retry (the openai SDK does by itself), where
    # a 500 would say the request itself broke something. pool_pre_ping reconnects once it is back.
    logging.getLogger(__name__).warning("the job store is unreachable: %s", e.orig)
    return JSONResponse(error_body(503, "The job store is unavailable; retry shortly.", code="database_unavailable"),
                        503, headers={"Retry-After": "1"})

