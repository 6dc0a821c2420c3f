"""reelgen: self-hostable AI video generation.

    import reelgen
    frames = reelgen.generate("a red ball moving left on a black background", seed=1)
    reelgen.save(frames, "ball.mp4")
"""

__version__ = "0.1.0"
__all__ = ["generate", "save"]

from reelgen.quiet import silence_known_import_noise

silence_known_import_noise()


def __getattr__(name: str):
    # Imported on first use, so `import reelgen.service` never pulls in torch.
    if name in __all__:
        from reelgen import simple

        return getattr(simple, name)
    raise AttributeError(f"module 'reelgen' has no attribute {name!r}")
