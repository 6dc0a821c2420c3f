"""Drop two known, harmless warnings that third-party imports print on every run.

transformers and diffusers import torchao whenever it is installed. On a CPU
machine torchao then warns that its CUDA-only kernels (mxfp8, cutlass) failed
to load, and torch warns about torchao's enum registrations. Neither affects
reelgen; both would bury the one line a user needs. Only these messages are
filtered, so every other warning from those loggers still shows.
"""

from __future__ import annotations

import logging

_NOISE = {
    "torchao": ("Failed to load ",),
    "torch.utils._pytree": ("is an Enum subclass and is now natively supported",),
}


class _DropNoise(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_known_import_noise() -> None:
    """Install the filters once (idempotent); cheap, imports nothing."""
    for name, fragments in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise(fragments))
