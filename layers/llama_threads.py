"""The CPU threads a llama.cpp model computes with: one pool for the model's life.

Given no thread pool, llama.cpp's CPU backend starts its worker threads for each graph it
computes and joins them after: one decode call per generated token, so every token pays for
creating and waking threads. llama-server keeps a pool whose workers poll for the next graph
for a moment before they sleep (`--poll 50`, its default); on SmolLM2-135M with two threads here
that is 7% more tokens/s in a bare decode loop (docs/PERFORMANCE.md). The pool changes when
work runs, never how it is split between threads: the numbers are the same bits.

The pool comes from llama.cpp's CPU backend through ggml's backend registry (the CPU backend
may be a library loaded at run time); where something is missing the contexts keep the
per-graph threads.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# How long a worker polls for the next graph before it sleeps: llama-server's default (`--poll
# 50`), registry `parameters.poll` (0 sleeps at once, 100 polls the longest). Measured here, a
# worker polls about 3.6 ms per unit: at 50 a core stays busy ~180 ms after a model's last
# graph (0.18 s of CPU after each request, as llama-server); at 0 none is. Tokens/s and first
# tokens showed no difference between the two through this VM's noise (docs/PERFORMANCE.md).
POLL = 50
_MAX_THREADS = 512  # GGML_MAX_N_THREADS: the size of the cpumask in the parameters
_CPU_DEVICE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU


class _PoolParams(ctypes.Structure):
    """ggml.h's `struct ggml_threadpool_params`."""

    _fields_ = [
        ("cpumask", ctypes.c_bool * _MAX_THREADS),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


class ThreadPools:
    """The pools for a model's contexts: one when decoding and prompt batches use as many
    threads (the usual case), else one of each, as llama.cpp's common code makes them."""

    def __init__(self, lib: Any, threads: int, batch_threads: int, poll: int) -> None:
        self._poll = poll
        self._pools: list[int] = []
        self._free: Any = None
        self._attach: Any = None
        self.generation: int | None = None
        self.batch: int | None = None
        try:
            api = _backend_api(lib)
        except (OSError, AttributeError) as error:
            log.info("llama.cpp thread pools unavailable (%s): threads per graph", error)
            return
        if api is None:
            return
        new, self._free, init, self._attach = api
        self.batch = self._new(new, init, batch_threads, paused=False)
        if threads == batch_threads:
            self.generation = self.batch
        else:  # started paused, as llama.cpp's common code does: one runs at a time
            self.generation = self._new(new, init, threads, paused=True)

    def attach(self, context: Any) -> None:
        if self.generation is not None:
            self._attach(context, self.generation, self.batch)

    def free(self) -> None:
        """After the contexts that use them."""
        for pool in self._pools:
            self._free(pool)
        self._pools.clear()

    def _new(self, new: Any, init: Any, threads: int, paused: bool) -> int | None:
        params = _PoolParams()
        init(ctypes.byref(params), threads)
        params.poll, params.paused = self._poll, paused
        pool = new(ctypes.byref(params))
        if pool:
            self._pools.append(pool)
        return pool or None


def _backend_api(lib: Any) -> tuple[Any, Any, Any, Any] | None:
    """ggml_threadpool_new and _free of the CPU backend, ggml_threadpool_params_init and
    llama_attach_threadpool (which llama-cpp-python does not bind)."""
    folder = Path(lib.__file__).parent / "lib"
    ggml = ctypes.CDLL(str(library(folder, "ggml")))
    base = ctypes.CDLL(str(library(folder, "ggml-base")))
    lib.llama_backend_init()  # registers the backends
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    base.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    base.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    base.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    base.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    device = ggml.ggml_backend_dev_by_type(_CPU_DEVICE)
    if not device:
        return None
    registry = base.ggml_backend_dev_backend_reg(device)
    new_address = base.ggml_backend_reg_get_proc_address(registry, b"ggml_threadpool_new")
    free_address = base.ggml_backend_reg_get_proc_address(registry, b"ggml_threadpool_free")
    if not new_address or not free_address:
        return None
    new = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_PoolParams))(new_address)
    free = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(free_address)
    init = base.ggml_threadpool_params_init
    init.restype, init.argtypes = None, [ctypes.POINTER(_PoolParams), ctypes.c_int]
    llama = ctypes.CDLL(str(library(folder, "llama")))
    attach = llama.llama_attach_threadpool
    attach.restype, attach.argtypes = None, [ctypes.c_void_p] * 3
    return new, free, init, attach


def library(folder: Path, name: str) -> Path:
    for candidate in (f"lib{name}.so", f"lib{name}.dylib", f"{name}.dll"):
        if (folder / candidate).exists():
            return folder / candidate
    raise OSError(f"no {name} library in {folder}")
