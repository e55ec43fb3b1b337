"""The drawing interface every text-to-image engine implements (diffusers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SizeLimits:
    """The sizes a model draws: each side a multiple of `multiple`, from `smallest` to
    `largest` pixels; `default` (width, height) when a request names none."""

    default: tuple[int, int]
    smallest: int = 64
    largest: int = 2048
    multiple: int = 8


@dataclass(frozen=True)
class Drawing:
    """One request's worth of images to draw, every value already checked."""

    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int | None  # None: the model's registry default, else the pipeline's own
    guidance_scale: float | None
    seed: int  # image i uses seed + i: the same seed gives the same images


class ImageModel(Protocol):
    name: str
    sizes: SizeLimits
    max_steps: int
    default_steps: int  # when a request names none
    max_work: int  # pixel-steps a request may ask for: n x steps x width x height

    def draw(self, drawing: Drawing) -> list[bytes]:
        """`drawing.n` PNG files of `width` x `height` pixels, in order."""
        ...
