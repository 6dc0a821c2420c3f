"""What routes depend on, as Annotated aliases: the service's parts, the caller (its key), the caller's video."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reelgen.backends.base import ModelSpec
from reelgen.service.api.errors import APIError
from reelgen.service.delivery import LinkSigner
from reelgen.service.executors.base import Executor
from reelgen.service.jobs import Job, JobStore
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore
from reelgen.service.tenants import ApiKey, Idempotency, KeyStore, Limits, count_request


@dataclass(frozen=True)
class Services:
    """The parts the app factory wires together, held on app.state for the routes."""

    settings: ServiceSettings
    store: JobStore
    storage: ObjectStore
    executor: Executor
    models: dict[str, ModelSpec]  # by id, in the order GET /v1/models lists them; the first is the default
    signer: LinkSigner
    keys: KeyStore
    idempotency: Idempotency


# The lookups below are async although they do no I/O: FastAPI runs a plain `def` dependency on the thread
# pool, a round trip that costs more than the lookup itself, on every request.
async def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


async def _settings(services: ServicesDep) -> ServiceSettings:
    return services.settings


async def _store(services: ServicesDep) -> JobStore:
    return services.store


async def _storage(services: ServicesDep) -> ObjectStore:
    return services.storage


async def _models(services: ServicesDep) -> dict[str, ModelSpec]:
    return services.models


SettingsDep = Annotated[ServiceSettings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StorageDep = Annotated[ObjectStore, Depends(_storage)]
ModelsDep = Annotated[dict[str, ModelSpec], Depends(_models)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `reelgen keys create` (none needed while the "
                                                    "service has no keys and listens on loopback only)")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an API key, or nobody while the service has no keys (auth off)."""

    key: ApiKey | None

    @property
    def owner(self) -> str | None:
        """The owner of the videos this caller makes and sees."""
        return self.key.id if self.key is not None else None

    def limits(self, settings: ServiceSettings) -> Limits | None:
        return Limits.of(self.key, settings) if self.key is not None else None


def authenticate(credentials: HTTPAuthorizationCredentials | None, services: Services) -> Caller:
    """The caller of a request, counted against its key's requests per minute; 401 for a wrong or revoked key
    once any key exists. Before that (auth off), every caller is anonymous, whatever it sends."""
    keys = services.keys
    key = keys.find(credentials.credentials) if credentials else None
    if key is None or key.revoked_at is not None:
        if not keys.auth_required():
            return Caller(None)
        message = ("This API key has been revoked." if key is not None
                   else "Incorrect or missing API key: send 'Authorization: Bearer <key>'.")
        raise APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    count_request(services.store.engine, key, Limits.of(key, services.settings), keys.clock())
    return Caller(key)


def current_caller(credentials: CredentialsDep, services: ServicesDep) -> Caller:
    return authenticate(credentials, services)


CallerDep = Annotated[Caller, Depends(current_caller)]  # once per request: FastAPI caches a dependency's result

VideoId = Annotated[str, Path(description="a video id, 'video_...'")]


def owned_video(video_id: str, store: JobStore, caller: Caller) -> Job:
    """The caller's video; another key's is as unknown as a missing one (404), so ids reveal nothing."""
    job = store.get(video_id)
    if job is None or job.owner != caller.owner:
        raise APIError.not_found(video_id)
    return job


def _video(video_id: VideoId, store: StoreDep, caller: CallerDep) -> Job:
    return owned_video(video_id, store, caller)


VideoDep = Annotated[Job, Depends(_video)]
