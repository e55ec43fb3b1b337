"""Code named by "module:attribute", imported on first use.

The operation table and the dialects name their handlers and protocol types this way, so a
process imports only what the requests it gets need: a cold start (a Lambda or RunPod worker
answering its first request) does not pay for every endpoint's modules.
"""

from __future__ import annotations

import functools
import importlib
import typing
from collections.abc import Callable, Sequence
from typing import Any


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
