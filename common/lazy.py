"""Code imported only as far as it is used.

The operation table and the dialects name their handlers and protocol types by
"module:attribute", imported on first use, so a process imports only what the requests it gets
need: a cold start (a Lambda or RunPod worker answering its first request) does not pay for
every endpoint's modules. `skipping_inits` imports one module of a library whose package
`__init__` imports much more than that module needs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import threading
import typing
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_placeholders_lock = threading.Lock()


@functools.cache
def imported(name: str) -> Any:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


def types_named(names: Sequence[str]) -> tuple[type, ...]:
    """The types `names` name (a union's name: its members)."""
    found = [imported(name) for name in names]
    return tuple(t for each in found for t in (typing.get_args(each) or (each,)))


def later(name: str) -> Callable[..., Any]:
    """A function named "module:function", imported at its first call."""
    return lambda *args: imported(name)(*args)


def skipping_inits(module: str, packages: Sequence[str]) -> ModuleType:
    """`module`, imported with the `__init__` of each of `packages` (its parent packages, the
    outermost first) not run. Each such package is a placeholder during the import (its path,
    so its submodules are found, and none of its code), dropped at once: a later import of the
    package runs its real `__init__` then, which finds the submodules already loaded, one copy
    of each. What that `__init__` does not import itself is then not bound to the package as an
    attribute: `from package import submodule` reaches it. A package already imported is used
    as it is: then there is nothing to save. (Another thread importing one of `packages` during
    the import would see its placeholder: call this before the threads that import them.)"""
    with _placeholders_lock:
        if module in sys.modules:
            return sys.modules[module]
        placed: list[tuple[str, ModuleType]] = []
        try:
            for package in packages:  # outermost first: finding an inner one imports its parent
                if package in sys.modules:
                    continue
                spec = importlib.util.find_spec(package)
                if spec is None:
                    raise ModuleNotFoundError(f"No module named '{package}'", name=package)
                placeholder = importlib.util.module_from_spec(spec)
                sys.modules[package] = placeholder
                placed.append((package, placeholder))
            return importlib.import_module(module)
        finally:
            for package, placeholder in placed:
                if sys.modules.get(package) is placeholder:
                    del sys.modules[package]
