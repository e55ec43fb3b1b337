"""diffusers text-to-image pipelines behind the ImageModel interface.

A model is a diffusers directory (model_index.json and one folder per component): Stable
Diffusion 1.x/2.x, SD-Turbo, SDXL and SDXL-Turbo layouts, from a volume, an S3 prefix or a baked
image. The pipeline is the text-to-image class that AutoPipelineForText2Image maps the
directory's `_class_name` to (or that class itself, when it has no mapping). float16 on CUDA,
float32 on the CPU.

Registry parameters (all optional):
    steps, guidance_scale       defaults when a request gives none (else the pipeline's own)
    scheduler                   a diffusers scheduler class, e.g. EulerAncestralDiscreteScheduler,
    scheduler_options           made from the model's scheduler config plus these options
    size                        the default WIDTHxHEIGHT (else the UNet's native size)
    min_size, max_size          the smallest and largest side accepted (64, 2048)
    size_multiple               each side a multiple of it (8)
    max_steps                   the most steps a request may ask for (150)
    max_work                    the most a request may ask for in all, in pixel-steps: images x
                                steps x width x height (4 images of 1024x1024 at 50 steps)
    max_batch                   images per pipeline call; more are drawn in turns (4)
    device, dtype, variant      cuda/cpu; float16/bfloat16/float32; e.g. fp16 weight files
    cpu_offload                 move each component to the GPU only while it runs (big models
                                on small GPUs; needs accelerate)
    safety_checker              false: do not load the SD 1.x safety checker
    png_compress_level          zlib level of the PNG files, 0-9 (1: fast; see layers/png.py)
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common import cancellation
from common.errors import EngineUnavailable
from common.protocol.images import parse_size
from common.registry import ModelConfig
from layers import EngineOptions
from layers.images import Drawing, SizeLimits
from layers.png import encode_png

log = logging.getLogger("stratus.diffusers")

DTYPES = ("float16", "bfloat16", "float32")


def load(config: ModelConfig, path: Path, options: EngineOptions) -> DiffusersImageModel:
    return DiffusersImageModel(config, path, options)


@dataclass(frozen=True)
class PipelineOptions:
    """A registry entry's parameters, checked (a pure function of the entry: tested alone)."""

    device: str | None
    dtype: str | None
    variant: str | None
    steps: int | None
    guidance_scale: float | None
    scheduler: str | None
    scheduler_options: Mapping[str, Any]
    size: tuple[int, int] | None
    min_size: int
    max_size: int
    size_multiple: int
    max_steps: int
    max_work: int
    max_batch: int
    cpu_offload: bool
    safety_checker: bool
    png_compress_level: int


MAX_WORK = 4 * 50 * 1024 * 1024  # pixel-steps: a few minutes of a mid-range GPU for SD 1.5


def pipeline_options(config: ModelConfig) -> PipelineOptions:
    p = config.parameters

    def integer(name: str, default: int | None, low: int = 1) -> Any:
        value = p.get(name, default)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _bad(config, name, "a whole number")
        if value is not None and value < low:
            raise _bad(config, name, f"at least {low}")
        return value

    guidance = p.get("guidance_scale")
    if isinstance(guidance, bool) or not isinstance(guidance, int | float | None):
        raise _bad(config, "guidance_scale", "a number")
    dtype = p.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise _bad(config, "dtype", f"one of {', '.join(DTYPES)}")
    size = None
    if p.get("size") is not None:
        size = parse_size(str(p["size"]))
        if size is None:
            raise _bad(config, "size", "WIDTHxHEIGHT, e.g. 512x512")
    options = p.get("scheduler_options") or {}
    if not isinstance(options, Mapping):
        raise _bad(config, "scheduler_options", "a mapping of scheduler config values")
    return PipelineOptions(
        device=p.get("device"),
        dtype=dtype,
        variant=p.get("variant"),
        steps=integer("steps", None),
        guidance_scale=None if guidance is None else float(guidance),
        scheduler=p.get("scheduler"),
        scheduler_options=dict(options),
        size=size,
        min_size=integer("min_size", 64, low=8),
        max_size=integer("max_size", 2048, low=8),
        size_multiple=integer("size_multiple", 8),
        max_steps=integer("max_steps", 150),
        max_work=integer("max_work", MAX_WORK),
        max_batch=integer("max_batch", 4),
        cpu_offload=bool(p.get("cpu_offload", False)),
        safety_checker=bool(p.get("safety_checker", True)),
        png_compress_level=_png_level(config),
    )


def _png_level(config: ModelConfig) -> int:
    level = config.parameters.get("png_compress_level", 1)
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise _bad(config, "png_compress_level", "a whole number from 0 to 9")
    return level


def _bad(config: ModelConfig, name: str, what: str) -> EngineUnavailable:
    return EngineUnavailable(
        f"The model '{config.name}' is misconfigured: its parameter '{name}' must be {what}."
    )


class DiffusersImageModel:
    def __init__(self, config: ModelConfig, path: Path, options: EngineOptions) -> None:
        import torch

        quiet_libraries()
        import diffusers

        settings = pipeline_options(config)
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = settings.dtype or ("float16" if device.startswith("cuda") else "float32")
        if device == "cpu":
            torch.set_num_threads(options.threads)
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype_name), "local_files_only": True}
        if settings.variant:
            kwargs["variant"] = settings.variant
        if not settings.safety_checker:
            kwargs["safety_checker"] = None
        try:
            pipeline = diffusers.AutoPipelineForText2Image.from_pretrained(str(path), **kwargs)
        except ValueError as exc:
            if "AutoPipeline can't find" not in str(exc):
                raise
            pipeline = diffusers.DiffusionPipeline.from_pretrained(str(path), **kwargs)
        if settings.scheduler:
            scheduler_class = getattr(diffusers, settings.scheduler, None)
            if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
                raise _bad(config, "scheduler", "a diffusers scheduler class name")
            pipeline.scheduler = scheduler_class.from_config(
                pipeline.scheduler.config, **settings.scheduler_options
            )
        if settings.cpu_offload and device.startswith("cuda"):
            pipeline.enable_model_cpu_offload()
        else:
            pipeline.to(device)
        pipeline.set_progress_bar_config(disable=True)
        vae = getattr(pipeline, "vae", None)
        if hasattr(vae, "enable_slicing"):
            vae.enable_slicing()  # decode one image at a time: n images cost no more memory
        self._pipeline = pipeline
        # Per-step callbacks let a request whose client has gone stop between steps.
        self._takes_step_callback = (
            "callback_on_step_end" in inspect.signature(pipeline.__call__).parameters
        )
        self._torch = torch
        self._settings = settings
        self._lock = threading.Lock()  # a pipeline's scheduler holds per-call state
        self.name = config.name
        self.device = device
        self.dtype = dtype_name
        self.max_steps = settings.max_steps
        self.max_work = settings.max_work
        self.default_steps = settings.steps or _default_steps(pipeline)
        self.sizes = SizeLimits(
            default=settings.size or _native_size(pipeline),
            smallest=settings.min_size,
            largest=settings.max_size,
            multiple=settings.size_multiple,
        )

    def draw(self, drawing: Drawing) -> list[bytes]:
        settings = self._settings
        steps = drawing.steps or settings.steps
        guidance = drawing.guidance_scale
        if guidance is None:
            guidance = settings.guidance_scale
        call: dict[str, Any] = {
            "prompt": drawing.prompt,
            "width": drawing.width,
            "height": drawing.height,
            "output_type": "np",  # floats in [0, 1], encoded below
        }
        if drawing.negative_prompt is not None:
            call["negative_prompt"] = drawing.negative_prompt
        if steps is not None:
            call["num_inference_steps"] = steps
        if guidance is not None:
            call["guidance_scale"] = guidance
        if self._takes_step_callback:
            call["callback_on_step_end"] = _stop_when_cancelled
        images: list[Any] = []
        for start in range(0, drawing.n, settings.max_batch):
            count = min(settings.max_batch, drawing.n - start)
            # One CPU generator per image: image i depends only on seed + i, on any device.
            generators = [
                self._torch.Generator("cpu").manual_seed((drawing.seed + i) % 2**64)
                for i in range(start, start + count)
            ]
            images += self._run({**call, "num_images_per_prompt": count, "generator": generators})
        # As diffusers makes PIL images: x 255, rounded. The PNG is encoded outside the lock.
        pixels = [
            (np.nan_to_num(image) * 255).round().clip(0, 255).astype(np.uint8) for image in images
        ]
        return [encode_png(rgb, settings.png_compress_level) for rgb in pixels]

    def _run(self, call: dict[str, Any]) -> list[Any]:
        torch = self._torch
        with self._lock:
            try:
                return list(self._pipeline(**call).images)
            except (torch.cuda.OutOfMemoryError, MemoryError):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                log.warning("model %s ran out of memory for %s", self.name, _describe(call))
                raise EngineUnavailable(
                    f"The model '{self.name}' ran out of memory for this request; ask for fewer "
                    "or smaller images.",
                    code="out_of_memory",
                ) from None

    def close(self) -> None:
        self._pipeline = None
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()


def _default_steps(pipeline: Any) -> int:
    """The steps the pipeline takes when a call names none (its __call__ default)."""
    parameter = inspect.signature(pipeline.__call__).parameters.get("num_inference_steps")
    default = getattr(parameter, "default", None)
    return default if isinstance(default, int) else 50


def _native_size(pipeline: Any) -> tuple[int, int]:
    """The size the model was trained at: its denoiser's sample size times the VAE's scale."""
    denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if sample is None:
        sample = getattr(pipeline, "default_sample_size", None) or 64
    scale = int(getattr(pipeline, "vae_scale_factor", 8))
    height, width = (sample, sample) if isinstance(sample, int) else tuple(sample)
    return int(width) * scale, int(height) * scale


def _describe(call: dict[str, Any]) -> str:
    return f"{call['num_images_per_prompt']} images of {call['width']}x{call['height']}"


def quiet_libraries() -> None:
    """No progress bars, and no prompt text in warnings (truncated prompts), in server logs."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def _stop_when_cancelled(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
    """diffusers' per-step callback: a cancelled request (client gone, deadline passed) stops
    drawing here."""
    cancellation.check()
    return tensors
