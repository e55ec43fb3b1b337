"""The `stratus` command: `stratus serve`, `stratus models`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common.registry import RegistryError, load_registry
from common.settings import Settings
from common.sources import local_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stratus", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the OpenAI API over HTTP")
    serve.add_argument("--host", help="address to listen on (env HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (env PORT, default 8080)")
    serve.add_argument(
        "--models", type=Path, help="registry YAML file or directory (env STRATUS_MODELS)"
    )

    models = commands.add_parser("models", help="list the registry: ids, backends, sources")
    models.add_argument(
        "--models", type=Path, help="registry YAML file or directory (env STRATUS_MODELS)"
    )

    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    settings = Settings(**overrides)
    try:
        if args.command == "serve":
            return _serve(settings)
        return _models(settings)
    except RegistryError as exc:
        print(f"stratus: bad model registry: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings) -> int:
    import uvicorn

    from adapters.http import create_app

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)  # loads the registry: a bad file fails here, before listening
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def _models(settings: Settings) -> int:
    registry = load_registry(settings.models)
    for config in registry.models:
        try:
            where = str(local_path(config.name, config.source))
        except Exception as exc:  # noqa: BLE001 - shown to the operator, not a client
            where = f"unavailable: {exc}"
        aliases = ", ".join(config.aliases) or "-"
        print(f"{config.name}\t{config.backend}\t{config.source}\t{where}\taliases: {aliases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
