"""What every bench's command line shares: `--smoke`, the same run end to end at its smallest
sizes (seconds; a check that the bench still works, not a measurement: the tests run each one,
tests/e2e/test_bench_smoke.py), and peers that are not installed here skipped with a line that
says so."""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER = ROOT / "build" / "llama-server" / "bin" / "llama-server"
SMOKE_HELP = (
    "the same run at its smallest sizes, in seconds: a check that the bench works, not a "
    "measurement (options given beside it still count)"
)


def parse_args(
    parser: argparse.ArgumentParser,
    smallest: Mapping[str, Any],
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """The command line, with `--smoke`: its `smallest` values (by option dest) replace the
    defaults, so that options given beside --smoke still win."""
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--smoke", action="store_true")
    if first.parse_known_args(argv)[0].smoke:
        parser.set_defaults(**smallest)
    return parser.parse_args(argv)


def skipped(what: str, why: str) -> None:
    print(f"{what}: skipped ({why})", flush=True)


def llama_server(binary: Path = LLAMA_SERVER) -> Path | None:
    """llama.cpp's own server where it was built (`make llama-server`); None, said, where not."""
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    where = binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary
    skipped("llama-server", f"not found at {where}: make llama-server")
    return None


def llama_cpp_server() -> bool:
    """Whether `python -m llama_cpp.server` can start here (llama-cpp-python[server], the
    `bench` extra); said when it cannot."""
    try:
        importlib.import_module("llama_cpp.server.app")
    except ImportError as missing:
        why = f"{missing.name} is not installed: pip install -e '.[bench]'"
        skipped("llama_cpp.server", why)
        return False
    return True
