"""Captions for procedural clips: several templates, synonyms and word orders.

Training and evaluation draw from disjoint template sets, so evaluation
prompts are phrasings the model never saw (the text encoder must carry them).
"""

from __future__ import annotations

import re

import numpy as np

from reelgen.data.world import ClipSpec, ShapeSpec

SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "pyramid shape", "three-sided shape"),
}
DIRECTION_WORDS = {
    "left": ("to the left", "left", "leftward"),
    "right": ("to the right", "right", "rightward"),
    "up": ("up", "upward", "towards the top"),
    "down": ("down", "downward", "towards the bottom"),
}
VERBS = ("moving", "drifting", "sliding", "gliding")
STILL = ("standing still", "resting", "not moving", "staying in place")
SPEED_WORDS = {"slowly": ("slowly", "gently"), "quickly": ("quickly", "fast", "rapidly")}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}

# Training phrasings. {obj} is one object phrase, {bg} a background name.
TRAIN_TEMPLATES = (
    "a {obj} on a {bg} background",
    "{obj} over {bg}",
    "on a {bg} background, a {obj}",
    "a {bg} background with a {obj}",
    "video of a {obj}, {bg} background",
)
# Held-out phrasings: never used in training.
EVAL_TEMPLATES = (
    "a clip showing a {obj} against a plain {bg} backdrop",
    "{bg} scene: a {obj}",
)
HELD_OUT_VERBS = ("travelling", "heading")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def object_phrase(obj: ShapeSpec, rng: np.random.Generator, *, evaluation: bool = False) -> str:
    """E.g. "small red ball drifting left quickly"; word order varies."""
    size = _pick(rng, SIZE_WORDS[obj.size]) + " " if rng.random() < 0.5 else ""
    noun = f"{size}{obj.color} {_pick(rng, SHAPE_WORDS[obj.shape])}"
    if obj.direction == "still":
        return f"{noun} {_pick(rng, STILL)}"
    verb = _pick(rng, HELD_OUT_VERBS if evaluation else VERBS)
    direction = _pick(rng, DIRECTION_WORDS[obj.direction])
    speed = _pick(rng, SPEED_WORDS[obj.speed]) if rng.random() < 0.7 else ""
    if not speed:
        return f"{noun} {verb} {direction}"
    return f"{noun} {verb} {speed} {direction}" if rng.random() < 0.5 else f"{noun} {verb} {direction} {speed}"


def caption(spec: ClipSpec, rng: np.random.Generator, *, evaluation: bool = False) -> str:
    """A caption that names every object's colour, shape, motion and the background."""
    phrases = [object_phrase(o, rng, evaluation=evaluation) for o in spec.objects]
    obj = " and a ".join(phrases)
    template = _pick(rng, EVAL_TEMPLATES if evaluation else TRAIN_TEMPLATES)
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(obj=obj, bg=spec.background))
