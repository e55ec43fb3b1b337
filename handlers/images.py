"""POST /v1/images/generations: a prompt in, PNG images out, inline (b64_json) or as URLs."""

from __future__ import annotations

import base64
import secrets
import time

from common import metering
from common.errors import InvalidRequest
from common.image_urls import ImageUrls
from common.protocol.images import Image, ImageGenerationRequest, ImagesResponse, parse_size
from common.store import ModelStore
from handlers.capabilities import require
from layers.images import Drawing, ImageModel, SizeLimits

OPENAI_SIZES = ("256x256", "512x512", "1024x1024", "1792x1024", "1024x1792", "1536x1024")


def create_images(
    request: ImageGenerationRequest, store: ModelStore, urls: ImageUrls, base_url: str | None
) -> ImagesResponse:
    if request.response_format == "url":
        urls.check()  # before drawing anything
    model_id = request.model or request.default_model
    with store.use(model_id) as loaded:
        model: ImageModel = require(loaded, "draw", model_id, "generate images")
        width, height = image_size(request.size, model.sizes)
        if request.steps is not None and request.steps > model.max_steps:
            raise InvalidRequest(
                f"'steps' may be at most {model.max_steps} for model '{model_id}'.", param="steps"
            )
        check_work(request, model, width, height)
        drawing = Drawing(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            n=request.n,
            width=width,
            height=height,
            steps=request.steps,
            guidance_scale=request.guidance_scale,
            seed=secrets.randbits(63) if request.seed is None else request.seed,
        )
        pngs = model.draw(drawing)
    steps = request.steps or model.default_steps
    metering.count("images", len(pngs))
    metering.count("image_pixels", len(pngs) * width * height)
    metering.count("image_steps", len(pngs) * steps)
    if request.response_format == "b64_json":
        data = [Image(b64_json=base64.b64encode(png).decode()) for png in pngs]
    else:
        data = [Image(url=url) for url in urls.publish(pngs, base_url)]
    return ImagesResponse(created=int(time.time()), data=data)


def check_work(request: ImageGenerationRequest, model: ImageModel, width: int, height: int) -> None:
    """Every image, step and pixel costs time: a request for more than the model's share of
    work in all is refused before it holds the engine for hours."""
    steps = request.steps or model.default_steps
    if request.n * steps * width * height <= model.max_work:
        return
    param = "n" if request.n > 1 else "steps" if request.steps else "size"
    raise InvalidRequest(
        f"This request asks for too much work: {request.n} image(s) x {steps} steps x "
        f"{width}x{height} pixels is over the {model.max_work:,} pixel-steps model "
        f"'{request.model or request.default_model}' draws per request. Ask for fewer images, "
        "fewer steps or a smaller size.",
        param=param,
    )


def image_size(size: str | None, limits: SizeLimits) -> tuple[int, int]:
    """(width, height) of a request's `size`: the model's default for none or auto; else each
    side a multiple of the model's step (8) within its limits, or a 400 that names them."""
    if size in (None, "auto"):
        return limits.default
    w, h = parse_size(size) or (0, 0)  # the request's validator let only that shape through
    if not all(
        limits.smallest <= side <= limits.largest and side % limits.multiple == 0 for side in (w, h)
    ):
        openai_sizes = ", ".join(s for s in OPENAI_SIZES if _fits(s, limits))
        raise InvalidRequest(
            f"Invalid value for 'size': {size} is not a size this model draws. Each side must "
            f"be a multiple of {limits.multiple} from {limits.smallest} to {limits.largest} "
            "pixels"
            + (f" (OpenAI's {openai_sizes} among them)" if openai_sizes else "")
            + ", or the size may be auto.",
            param="size",
            code="invalid_value",
        )
    return w, h


def _fits(size: str, limits: SizeLimits) -> bool:
    return all(limits.smallest <= int(side) <= limits.largest for side in size.split("x"))
