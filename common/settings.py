"""Process settings, read once at the entry point and passed down (never read at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

RUNPOD_VOLUME = Path("/runpod-volume")


def default_cache_dir() -> Path:
    """On RunPod the network volume outlives workers: cache there; elsewhere in /tmp."""
    if RUNPOD_VOLUME.is_dir():
        return RUNPOD_VOLUME / "stratus-cache"
    return Path("/tmp/stratus-cache")


class Settings(BaseModel):
    """Every knob, with its environment variable (a name of its `validation_alias`, in any
    case). Keyword arguments (the CLI's flags, tests) override the environment."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_from_environment(type(self), os.environ), **values})

    host: str = Field("127.0.0.1", validation_alias=AliasChoices("HOST", "host"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=AliasChoices("PORT", "port"))
    port_health: int | None = Field(
        None,
        ge=1,
        le=65535,
        validation_alias=AliasChoices("PORT_HEALTH", "port_health"),
        description="A second port the server also listens on, for health checks (RunPod's "
        "load balancers poll /ping there); default: PORT alone.",
    )
    api_key: str = Field(
        "",
        validation_alias=AliasChoices("API_KEY", "api_key"),
        description="Comma-separated API keys; empty means no authentication.",
    )
    models: Path | None = Field(
        None,
        validation_alias=AliasChoices("STRATUS_MODELS", "models"),
        description="A YAML registry file or a directory of them, merged over the defaults.",
    )
    max_concurrency: int = Field(
        1,
        ge=1,
        validation_alias=AliasChoices("STRATUS_MAX_CONCURRENCY", "max_concurrency"),
        description="Models whose requests run at once (each runs as many requests as its "
        "registry `parallel` says, batched in one engine); on a CPU, one: two engines fight "
        "over the cores.",
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        validation_alias=AliasChoices("STRATUS_MAX_TOKENS", "max_tokens"),
        description="Tokens a text generation may produce when the request names no max_tokens "
        "and the model's registry entry sets none (default: until the context is full).",
    )
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        validation_alias=AliasChoices("STRATUS_SHUTDOWN_GRACE", "shutdown_grace"),
        description="Seconds in-flight requests may finish after SIGTERM before their work is "
        "stopped and the process exits.",
    )
    request_timeout: float = Field(
        600.0,
        ge=0,
        validation_alias=AliasChoices("STRATUS_REQUEST_TIMEOUT", "request_timeout"),
        description="Seconds a request may take, queue included, before its work is stopped "
        "and it is answered with a timeout error; 0: no deadline.",
    )
    max_audio_seconds: float = Field(
        3600.0,
        gt=0,
        validation_alias=AliasChoices("STRATUS_MAX_AUDIO_SECONDS", "max_audio_seconds"),
        description="Longest audio a transcription or translation accepts.",
    )
    max_queue: int = Field(
        16,
        ge=0,
        validation_alias=AliasChoices("STRATUS_MAX_QUEUE", "max_queue"),
        description="Requests that may wait for an inference slot before new ones get 429.",
    )
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        validation_alias=AliasChoices("STRATUS_THREADS", "threads"),
        description="CPU threads per engine.",
    )
    max_body_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("STRATUS_MAX_BODY_BYTES", "max_body_bytes"),
    )
    log_level: str = Field("info", validation_alias=AliasChoices("STRATUS_LOG_LEVEL", "log_level"))
    cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir(),
        validation_alias=AliasChoices("STRATUS_CACHE_DIR", "cache_dir"),
        description="Where models fetched from S3 are cached on disk.",
    )
    cache_max_gb: float = Field(
        0,
        ge=0,
        validation_alias=AliasChoices("STRATUS_CACHE_MAX_GB", "cache_max_gb"),
        description="Size cap of the disk cache (least recently used entries go); 0: none.",
    )
    model_ttl: float = Field(
        -1,
        ge=-1,
        validation_alias=AliasChoices("STRATUS_MODEL_TTL", "model_ttl"),
        description="Seconds an idle model stays loaded: -1 forever, 0 unload when idle.",
    )
    preload: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_PRELOAD", "preload"),
        description="Models to load when the process starts, comma-separated (registry names "
        "or aliases), in the background: a cold start's first request does not wait for all "
        "of the load. Empty: each model loads on its first request.",
    )
    max_loaded_models: int = Field(
        0,
        ge=0,
        validation_alias=AliasChoices("STRATUS_MAX_LOADED_MODELS", "max_loaded_models"),
        description="Models loaded at once (least recently used idle ones unload); 0: no cap.",
    )
    max_model_gb: float = Field(
        0,
        ge=0,
        validation_alias=AliasChoices("STRATUS_MAX_MODEL_GB", "max_model_gb"),
        description="Model files loaded at once, in GB (an estimate of memory); 0: no cap.",
    )
    s3_concurrency: int = Field(
        10, ge=1, validation_alias=AliasChoices("STRATUS_S3_CONCURRENCY", "s3_concurrency")
    )
    s3_chunk_mb: int = Field(
        8, ge=5, validation_alias=AliasChoices("STRATUS_S3_CHUNK_MB", "s3_chunk_mb")
    )

    image_bucket: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_IMAGE_BUCKET", "image_bucket"),
        description="BUCKET or BUCKET/PREFIX: images asked for as `url` are uploaded there and "
        "answered with presigned URLs (every platform). Empty: the HTTP gateway serves them.",
    )
    image_url_ttl: int = Field(
        3600,
        ge=60,
        le=604800,  # the longest a SigV4 presigned URL may live
        validation_alias=AliasChoices("STRATUS_IMAGE_URL_TTL", "image_url_ttl"),
        description="Seconds an image URL works: the presigned URL's expiry, or how long the "
        "gateway keeps the file.",
    )
    image_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("STRATUS_IMAGE_DIR", "image_dir"),
        description="Where the HTTP gateway keeps the images it serves (default: "
        "<cache dir>/generated-images).",
    )
    public_url: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_PUBLIC_URL", "public_url"),
        description="The server's public base URL (https://host), for the image URLs it "
        "serves; empty: taken from each request.",
    )

    responses_store: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_RESPONSES_STORE", "responses_store"),
        description="Where stored responses (the Responses API's `store`, "
        "`previous_response_id`) are kept: empty for a SQLite file in the cache directory (on "
        "RunPod, the network volume), a path or sqlite:///path, or s3://BUCKET[/PREFIX] shared "
        "by a fleet.",
    )
    responses_ttl: float = Field(
        30 * 24 * 3600,
        ge=60,
        validation_alias=AliasChoices("STRATUS_RESPONSES_TTL", "responses_ttl"),
        description="Seconds a stored response is kept (OpenAI keeps them 30 days).",
    )
    responses_max_mb: float = Field(
        16,
        gt=0,
        validation_alias=AliasChoices("STRATUS_RESPONSES_MAX_MB", "responses_max_mb"),
        description="Largest stored response, conversation included, in MiB; a larger one is "
        "a 400 that asks for `store: false`.",
    )
    secret: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_SECRET", "secret"),
        description="The key of the blobs clients hand back (the Responses API's "
        "reasoning.encrypted_content): set the same on every worker of a fleet. Empty: derived "
        "from the API keys, or, without keys, random to each process.",
    )

    fetch_allow: str = Field(
        "",
        validation_alias=AliasChoices("STRATUS_FETCH_ALLOW", "fetch_allow"),
        description="Comma-separated hosts and networks (CIDR) that URLs in requests may reach "
        "even though they are private, loopback or link-local; empty: public addresses only.",
    )
    max_image_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("STRATUS_MAX_IMAGE_BYTES", "max_image_bytes"),
        description="The largest image a chat may send (its encoded bytes, as a data: URL's "
        "payload or a URL's body); OpenAI's limit is 20 MB.",
    )
    max_image_pixels: int = Field(
        8192 * 8192,
        ge=1,
        validation_alias=AliasChoices("STRATUS_MAX_IMAGE_PIXELS", "max_image_pixels"),
        description="The most pixels (width times height, as the file declares them) an image "
        "in a chat may have; a larger one is refused before it is decoded.",
    )
    runpod_concurrency: int | None = Field(
        None,
        ge=1,
        validation_alias=AliasChoices("STRATUS_RUNPOD_CONCURRENCY", "runpod_concurrency"),
        description="Jobs a RunPod worker takes at once (its concurrency_modifier); default: "
        "the most requests any of its models serves at once (registry `parallel`), so the "
        "worker takes as many jobs as its engine batches.",
    )

    platform: Literal["http", "lambda", "runpod"] = Field(
        "http",
        validation_alias=AliasChoices("STRATUS_PLATFORM", "platform"),
        description="What `stratus serve` runs on, for the cost lines and metrics: lambda "
        "behind the Lambda Web Adapter (whose x-amzn-lambda-context header then names each "
        "invocation); the Lambda and RunPod entry points say so themselves.",
    )
    metrics: bool | None = Field(
        None,
        validation_alias=AliasChoices("STRATUS_METRICS", "metrics"),
        description="Serve Prometheus metrics at GET /metrics (behind the API key). Default: "
        "on for a server (`stratus serve` with STRATUS_PLATFORM http), off on Lambda and "
        "RunPod, where each instance counts only its own requests and lives briefly, no "
        "scraper can choose the instance it reaches, and the cost lines are the record.",
    )
    cost_log: bool = Field(
        True,
        validation_alias=AliasChoices("STRATUS_COST_LOG", "cost_log"),
        description="Write one JSON line per finished request to stdout: its units (tokens, "
        "audio seconds, characters, images) and where its time went.",
    )
    prometheus_multiproc_dir: str | None = Field(
        None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"),
        description="prometheus-client's multiprocess mode: a directory shared by the worker "
        "processes of one server, whose /metrics then sums them all.",
    )

    @property
    def cache_max_bytes(self) -> int | None:
        return int(self.cache_max_gb * 1e9) or None

    @property
    def generated_images_dir(self) -> Path:
        return self.image_dir or self.cache_dir / "generated-images"

    @property
    def responses_path(self) -> Path:
        return self.cache_dir / "responses.sqlite3"

    @property
    def responses_max_bytes(self) -> int:
        return int(self.responses_max_mb * 1024 * 1024)

    def serves_metrics(self, platform: str) -> bool:
        """Whether /metrics is served (and requests counted) on `platform`."""
        return self.metrics if self.metrics is not None else platform == "http"

    @property
    def preload_models(self) -> tuple[str, ...]:
        return _comma_list(self.preload)

    @property
    def api_keys(self) -> tuple[str, ...]:
        return _comma_list(self.api_key)


def _from_environment(settings: type[BaseModel], environ: Mapping[str, str]) -> dict[str, str]:
    """The fields that the environment sets, by field name, its variables' names compared
    without case (as pydantic-settings does; importing it cost 16 ms of every cold start)."""
    variables = {name.lower(): value for name, value in environ.items()}
    found = {}
    for field_name, field in settings.model_fields.items():
        alias = field.validation_alias
        names = alias.choices if isinstance(alias, AliasChoices) else [field_name]
        for name in names:
            if isinstance(name, str) and name.lower() in variables:
                found[field_name] = variables[name.lower()]
                break
    return found


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())
