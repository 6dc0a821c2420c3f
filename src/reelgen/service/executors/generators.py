"""The generators a service serves, from its settings: shared by the API process and every worker process."""

from __future__ import annotations

from reelgen.backends.base import Generator
from reelgen.service.settings import ServiceSettings


def build_generators(settings: ServiceSettings) -> list[Generator]:
    """The configured models; checks each can run here, loads no weights (the first job, or a replica, does)."""
    if settings.models_file is not None:
        from reelgen.backends.registry import load_registry

        return load_registry(settings.models_file).generators()
    from reelgen.backends.builtin import BuiltinGenerator  # imports torch: only in a process that generates

    return [BuiltinGenerator(settings.model_dir)]
