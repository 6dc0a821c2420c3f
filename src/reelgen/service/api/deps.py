"""What routes depend on, as Annotated aliases: the service's parts, the caller's key, the video in the path."""

from __future__ import annotations

import hmac
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


@dataclass(frozen=True)
class Services:
    """The parts the app factory wires together, held on app.state for the routes."""

    settings: ServiceSettings
    store: JobStore
    storage: ObjectStore
    executor: Executor
    models: dict[str, ModelSpec]  # by id, in the order GET /v1/models lists them; the first is the default
    signer: LinkSigner


def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


def _settings(services: ServicesDep) -> ServiceSettings:
    return services.settings


def _store(services: ServicesDep) -> JobStore:
    return services.store


def _storage(services: ServicesDep) -> ObjectStore:
    return services.storage


def _models(services: ServicesDep) -> dict[str, ModelSpec]:
    return services.models


SettingsDep = Annotated[ServiceSettings, Depends(_settings)]
StoreDep = Annotated[JobStore, Depends(_store)]
StorageDep = Annotated[ObjectStore, Depends(_storage)]
ModelsDep = Annotated[dict[str, ModelSpec], Depends(_models)]

_bearer = HTTPBearer(auto_error=False, description="one of the service's API keys (none needed if it has none)")
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def check_key(credentials: HTTPAuthorizationCredentials | None, settings: ServiceSettings) -> None:
    if not settings.api_keys:
        return
    given = credentials.credentials if credentials else ""
    # compare_digest against every key: the time taken says nothing about which key came close
    if not any(hmac.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        raise APIError(401, "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def require_key(credentials: CredentialsDep, settings: SettingsDep) -> None:
    check_key(credentials, settings)


VideoId = Annotated[str, Path(description="a video id, 'video_...'")]


def _video(video_id: VideoId, store: StoreDep) -> Job:
    job = store.get(video_id)
    if job is None:
        raise APIError.not_found(video_id)
    return job


VideoDep = Annotated[Job, Depends(_video)]
