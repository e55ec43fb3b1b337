"""The `stratus` command: `stratus serve`, `stratus models`, `stratus prefetch`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

from adapters.runtime import build_fetcher, registry_of
from common.errors import StratusError
from common.registry import ModelConfig, RegistryError
from common.settings import Settings
from common.sources import GENERATED

REGISTRY_HELP = "registry YAML file or directory (env STRATUS_MODELS)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stratus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the OpenAI API over HTTP")
    serve.add_argument("--host", help="address to listen on (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (env PORT, default 8080)")
    serve.add_argument("--models", type=Path, help=REGISTRY_HELP)

    commands.add_parser(
        "health",
        help="ask the server on this machine whether it is ready (a container's HEALTHCHECK): "
        "exit 0 when it is, 1 with the reason when not",
    )

    models = commands.add_parser("models", help="list the registry: sources and cache state")
    models.add_argument("--models", type=Path, help=REGISTRY_HELP)

    prefetch = commands.add_parser(
        "prefetch", help="download models into the cache (bake an image, warm a volume)"
    )
    prefetch.add_argument("names", nargs="*", metavar="MODEL", help="model names or aliases")
    prefetch.add_argument("--all", action="store_true", help="every model in the registry")
    prefetch.add_argument("--models", type=Path, help=REGISTRY_HELP)

    args = parser.parse_args(argv)
    if args.command == "prefetch" and not args.names and not args.all:
        parser.error("name the models to prefetch, or give --all")
    flags = {k: getattr(args, k, None) for k in ("host", "port", "models")}
    settings = Settings(**{k: v for k, v in flags.items() if v is not None})
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "health":
            return _health(settings)
        if args.command == "prefetch":
            return _prefetch(settings, args.names, args.all)
        return _models(settings)
    except RegistryError as exc:
        print(f"stratus: bad model registry: {exc}", file=sys.stderr)
        return 2
    except StratusError as exc:
        print(f"stratus: {exc.message}", file=sys.stderr)
        return 1


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _serve(settings: Settings) -> int:
    import uvicorn

    from adapters.http import create_app
    from adapters.uvicorn_protocol import MAX_HEAD_BYTES, protocol_class

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Loads the registry: a bad file fails here, before listening.
    app = create_app(settings, platform=settings.platform)
    if not settings.api_keys and not is_loopback(settings.host):
        logging.getLogger("stratus").warning(
            "API_KEY is not set and the server listens on %s: anyone who can reach it may use "
            "it. Set API_KEY=key1,key2 (README: Deploy says how on each platform).",
            settings.host,
        )
    # SIGTERM (how every platform scales a worker down): uvicorn stops accepting, lets requests
    # in flight finish for the grace period, then cancels them; the app's lifespan shutdown then
    # stops the generations still running on inference threads, which would otherwise keep the
    # process alive until they end.
    # What uvicorn answers by itself (a request it cannot parse, an oversized head) is in the
    # envelope too. No WebSocket protocol: nothing here speaks it, and an upgrade request is
    # then an ordinary request, answered by the app (behind the key) like any other.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_class(),
        ws="none",
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )
    sockets = [config.bind_socket()]
    if settings.port_health and settings.port_health != settings.port:  # also on PORT_HEALTH
        sockets.append(
            uvicorn.Config(app, host=settings.host, port=settings.port_health).bind_socket()
        )
    server = uvicorn.Server(config)
    server.run(sockets=sockets)
    return 0 if server.started else 3  # as uvicorn.run: 3 when it could not start


def _health(settings: Settings) -> int:
    """GET /health of the server this machine runs (its PORT_HEALTH, else PORT), with the
    first API key: 0 when it answers 200; else 1, and what it answered."""
    import urllib.error
    import urllib.request

    host = settings.host
    if host in ("0.0.0.0", "", "::") or is_loopback(host):
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    request = urllib.request.Request(
        f"http://{host}:{settings.port_health or settings.port}/health"
    )
    if settings.api_keys:
        request.add_header("Authorization", f"Bearer {settings.api_keys[0]}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            print(response.read().decode(errors="replace"))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"not ready ({exc.code}): {exc.read().decode(errors='replace')}", file=sys.stderr)
    except OSError as exc:
        print(f"no answer: {exc}", file=sys.stderr)
    return 1


def _models(settings: Settings) -> int:
    registry = registry_of(settings)
    fetcher = build_fetcher(settings)
    for config in registry.models:
        cached = fetcher.cached(config)
        state = "local" if cached is None else ("cached" if cached else "not cached")
        if config.source.startswith(GENERATED):  # written by Stratus on first use
            state = "generated" if cached else "not generated yet"
        aliases = ", ".join(config.aliases) or "-"
        line = f"{config.name}\t{config.backend}\t{config.source}\t{state}\taliases: {aliases}"
        print(line + _formats(config, _present(fetcher, config, cached)))
    return 0


def _present(fetcher: Any, config: ModelConfig, cached: bool | None) -> Path | None:
    """The model's files if they are here (never fetched to be listed)."""
    if cached is False:
        return None
    try:
        return fetcher.local_path(config)
    except StratusError:  # a local source whose files are missing: listed as it is
        return None


def _formats(config: ModelConfig, path: Path | None) -> str:
    """How a chat model calls tools and thinks, as detected from its template (a GGUF's is
    read when the file is here), or "?" when the template is not at hand."""
    if config.backend not in ("llama-cpp", "exllamav2") or config.parameters.get("embedding"):
        return ""
    from layers.chat_template import formats_of

    template = config.templates.get("chat")
    if template is None and path is not None and config.backend == "llama-cpp":
        from layers.gguf_template import chat_template_of
        from layers.llama_files import gguf_file

        try:
            template = chat_template_of(gguf_file(config, path))
        except Exception:  # a file that cannot be read: its detection is unknown
            template = None
    if template is None and not (config.tool_format and config.reasoning_format):
        return "\ttools: ?\treasoning: ?"
    tools, thinks = formats_of(template, config.reasoning_format, config.tool_format)
    return f"\ttools: {tools}\treasoning: {thinks}"


def _prefetch(settings: Settings, names: list[str], everything: bool) -> int:
    logging.basicConfig(level=logging.WARNING)
    registry = registry_of(settings)
    fetcher = build_fetcher(settings)
    configs = registry.models if everything else [registry.resolve(n) for n in names]
    for config in configs:
        bar = ProgressBar()
        path = fetcher.local_path(config, progress=bar)
        bar.finish(config.name, path)
        if (projector := config.projector_source()) is not None:  # a vision model's own file
            bar = ProgressBar()
            bar.finish(f"{config.name} (mmproj)", fetcher.local_path(projector, progress=bar))
    return 0


class ProgressBar:
    """A download's progress on stderr (tqdm: share, bytes, speed, time left), drawn only when
    stderr is a terminal: a log file or a CI job gets the final line alone."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bar: Any = None

    def start(self, model_name: str, total_bytes: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_bytes,
            desc=model_name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=self.stream,
            disable=not self.stream.isatty(),
        )

    def advance(self, received_bytes: int) -> None:
        self.bar.update(received_bytes)

    def finish(self, model_name: str, path: Path) -> None:
        if self.bar is not None:
            self.bar.close()
            print(f"{model_name}: fetched to {path}")
        else:
            print(f"{model_name}: available at {path}")


if __name__ == "__main__":
    sys.exit(main())
