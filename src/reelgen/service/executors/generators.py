"""The generators a service serves, from its settings: shared by the API process and every worker process."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from reelgen.backends.base import Generator, ModelSpec
from reelgen.service.settings import ServiceSettings


def build_generators(settings: ServiceSettings) -> list[Generator]:
    """The configured models; checks each can run here, loads no weights (the first job, or a replica, does)."""
    if settings.models_file is not None:
        from reelgen.backends.registry import load_registry

        return load_registry(settings.models_file).generators()
    from reelgen.backends.builtin import BuiltinGenerator  # imports torch: only in a process that generates

    return [BuiltinGenerator(settings.model_dir)]


def model_specs(settings: ServiceSettings) -> list[ModelSpec]:
    """The configured models' specs, from their configuration only: an API process whose workers run
    elsewhere (`serve --workers 0`) may sit on a machine that could not run the models."""
    if settings.models_file is not None:
        from reelgen.backends.registry import load_registry

        registry = load_registry(settings.models_file)
        return [registry.spec(model_id) for model_id in registry.ids]
    from reelgen.backends.builtin import BuiltinGenerator

    return [BuiltinGenerator(settings.model_dir).spec]


def model_specs_apart(settings: ServiceSettings) -> list[ModelSpec]:
    """model_specs read in a child process: the built-in model's config is read by a module that imports torch,
    which an API process without workers has no other use for (hundreds of MB, seconds to import)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(model_specs, settings).result()
