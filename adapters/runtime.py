"""The composition root: settings -> registry, disk cache, S3, fetcher, engines, store,
stored responses, image URLs.

Every entry point (the HTTP server, the CLI, Lambda through the HTTP app, the RunPod worker)
builds its store here, once per process.
"""

from __future__ import annotations

import os

from common.disk_cache import DiskCache
from common.fetch import ModelFetcher
from common.image_urls import ImageUrls, NoImageUrls, S3ImageUrls, ServedImages
from common.registry import Registry, load_registry
from common.response_store import ResponseStore, response_store_from_setting
from common.s3 import S3, S3Settings
from common.settings import Settings
from common.store import ModelStore
from layers import EngineOptions, ModelGenerators, make_loader


def build_fetcher(settings: Settings) -> ModelFetcher:
    cache = DiskCache(settings.cache_dir, settings.cache_max_bytes)
    cache.clean_partials()
    s3 = S3(
        S3Settings(
            max_concurrency=settings.s3_concurrency,
            chunk_bytes=settings.s3_chunk_mb * 1024 * 1024,
        )
    )
    return ModelFetcher(cache, s3, ModelGenerators())


def registry_of(settings: Settings) -> Registry:
    """The registry these settings name, its entries' tool-call formats checked against the
    engines' table (a format that does not exist stops the start, naming the ones that do)."""
    from layers.tool_formats import formats

    return load_registry(settings.models, settings.max_tokens, tool_formats=formats)


def build_store(settings: Settings, registry: Registry | None = None) -> ModelStore:
    # Before any engine loads torch: its OpenMP teams size themselves from this once, in every
    # thread (torch.set_num_threads reaches only the thread that calls it). Engines run on
    # worker threads; without it, on a busy machine, one embedding took 500 ms instead of 30.
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
    registry = registry or registry_of(settings)
    fetcher = build_fetcher(settings)
    return ModelStore(
        registry,
        make_loader(
            EngineOptions(threads=settings.threads, max_audio_seconds=settings.max_audio_seconds)
        ),
        fetcher.local_path,
        ttl=settings.model_ttl,
        max_loaded=settings.max_loaded_models,
        max_bytes=int(settings.max_model_gb * 1e9),
    )


def build_image_urls(settings: Settings, platform: str, serves_files: bool) -> ImageUrls:
    """Where images asked for as `url` go: the bucket if there is one; else the gateway's own
    directory where this platform serves files (HTTP), else nowhere (a clear 400)."""
    if settings.image_bucket:
        s3 = S3(S3Settings(max_concurrency=settings.s3_concurrency))
        return S3ImageUrls.from_setting(
            lambda: s3.client, settings.image_bucket, settings.image_url_ttl
        )
    if serves_files:
        return ServedImages(
            settings.generated_images_dir, settings.image_url_ttl, settings.public_url
        )
    return NoImageUrls(platform)


def build_response_store(settings: Settings) -> ResponseStore:
    """Where stored responses live (STRATUS_RESPONSES_STORE): a SQLite file, by default in the
    cache directory, or S3. Nothing is opened here: the file or the S3 client on first use.
    Raises ValueError for a setting it cannot read."""
    s3 = S3(S3Settings(max_concurrency=settings.s3_concurrency))
    return response_store_from_setting(
        settings.responses_store,
        settings.responses_path,
        settings.responses_ttl,
        settings.responses_max_bytes,
        lambda: s3.client,
    )
