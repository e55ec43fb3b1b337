"""Time to first token of a one-image chat: llama.cpp in-process (mtmd, no server), Stratus, and
llama.cpp's own llama-server with --mmproj, on the same generated model (tiny-vlm), taking turns.

    make llama-server   # once: llama.cpp's server from the vendored source, portable flags
    .venv/bin/python bench/bench_vision.py [--rounds 15]
    .venv/bin/python bench/bench_vision.py --smoke   # 1 round, every target at 1 thread

Each round draws a new image (noise, so no server can answer it from a cache) and sends it to
each target in turn: a chat with the image and one line of text, max_tokens 1, temperature 0,
not streamed: the answer comes when the image is encoded, the prompt evaluated and one token
sampled. llama-server runs at its defaults (as its users run it), and beside them with one
thread, its best setting here; Stratus at its own. Without llama-server, it is skipped (said so)
and Stratus is compared with the raw engine alone.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.batching_servers import shown_command, wait_healthy  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

MODEL_DIR = ROOT / "build/bench-vlm"
QUESTION = "Describe this image."
SIZE = (640, 480)


def noise_png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def generated_model() -> Path:
    if not (MODEL_DIR / "mmproj.gguf").is_file():
        from layers import tiny_vlm

        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        tiny_vlm.generate(MODEL_DIR)
    return MODEL_DIR


def chat_body(model: str, image: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "temperature": 0,
    }


Ask = Callable[[bytes], tuple[float, int]]  # an image -> (seconds, prompt tokens)


def http_target(url: str, model: str) -> Ask:
    def ask(image: bytes) -> tuple[float, int]:
        body = chat_body(model, image)
        started = time.perf_counter()
        # A connection per request: llama-server drops kept-alive connections at times.
        answer = httpx.post(url, json=body, timeout=120, headers={"Connection": "close"})
        seconds = time.perf_counter() - started
        answer.raise_for_status()
        return seconds, answer.json()["usage"]["prompt_tokens"]

    return ask


@contextlib.contextmanager
def stratus(model_dir: Path, **settings: str) -> Iterator[tuple[Ask, str]]:
    registry = Path(tempfile.mkdtemp()) / "models.yaml"
    registry.write_text(
        f"- name: bench-vlm\n  backend: llama-cpp\n  source: file://{model_dir}\n"
        "  mmproj: mmproj.gguf\n"
        "  parameters: {file: model.gguf, n_ctx: 4096, parallel: 4, mmproj_threads: 1}\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port),
               "--models", str(registry)]  # fmt: skip
    env = {**os.environ, "STRATUS_LOG_LEVEL": "warning", **settings}
    shown = " ".join(f"{k}={v}" for k, v in settings.items())
    with running(command, f"http://127.0.0.1:{port}/health", env):
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        yield http_target(url, "bench-vlm"), f"{shown} {shown_command(command, port)}".strip()


@contextlib.contextmanager
def llama_server(model_dir: Path, *options: str) -> Iterator[tuple[Ask, str]]:
    port = free_port()
    files = ["-m", str(model_dir / "model.gguf"), "--mmproj", str(model_dir / "mmproj.gguf")]
    command = [str(smoke.LLAMA_SERVER), *files, *options, "--port", str(port)]
    with running(command, f"http://127.0.0.1:{port}/health", os.environ):
        with httpx.Client(timeout=10) as client:
            wait_healthy(client, f"http://127.0.0.1:{port}/health")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        yield http_target(url, "tiny-vlm"), shown_command(command, port)


@contextlib.contextmanager
def raw_engine(model_dir: Path, threads: int = 2) -> Iterator[tuple[Ask, str]]:
    """llama.cpp and mtmd in this process: the image decoded by mtmd's helper, the chat
    template applied by hand (ChatML, as the model's), one token sampled."""
    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp._internals import LlamaModel
    from llama_cpp._logger import llama_log_callback, set_verbose

    set_verbose(False)
    mtmd.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
    model = LlamaModel(path_model=str(model_dir / "model.gguf"),
                       params=llama_cpp.llama_model_default_params(), verbose=False)  # fmt: skip
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_threads, params.n_threads_batch = 4096, threads, threads
    context = llama_cpp.llama_init_from_model(model.model, params)
    vision = mtmd.mtmd_context_params_default()
    # One thread for the projector, as Stratus's entry for tiny-vlm has (mmproj_threads).
    vision.use_gpu, vision.n_threads, vision.print_timings = False, 1, False
    projector = mtmd.mtmd_init_from_file(str(model_dir / "mmproj.gguf").encode(), model.model,
                                         vision)  # fmt: skip
    sampler = llama_cpp.llama_sampler_init_greedy()
    prompt = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
              "Hugging Face<|im_end|>\n"  # what the template adds without a system message
              f"<|im_start|>user\n{mtmd.mtmd_default_marker().decode()}{QUESTION}<|im_end|>\n"
              "<|im_start|>assistant\n").encode()  # fmt: skip

    def ask(image: bytes) -> tuple[float, int]:
        started = time.perf_counter()
        data = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(projector, data, len(image), False)
        text = mtmd.mtmd_input_text(prompt, len(prompt), True, True)
        chunks = mtmd.mtmd_input_chunks_init()
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(projector, chunks, ctypes.byref(text), bitmaps, 1) == 0
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        past = llama_cpp.llama_pos(0)
        status = mtmd.mtmd_helper_eval_chunks(
            projector, context, chunks, 0, 0, params.n_batch, True, ctypes.byref(past)
        )
        assert status == 0
        llama_cpp.llama_sampler_sample(sampler, context, -1)
        seconds = time.perf_counter() - started
        places = mtmd.mtmd_helper_get_n_tokens(chunks)
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        return seconds, places

    try:
        yield ask, "llama_cpp + mtmd_helper_eval_chunks in-process (no server)"
    finally:
        mtmd.mtmd_free(projector)
        llama_cpp.llama_free(context)
        model.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--threads",
        type=int,
        help="every target's (default: each at its own, and beside them at one thread)",
    )
    args = smoke.parse_args(parser, {"rounds": 1, "threads": 1})
    rounds, threads = args.rounds, args.threads
    peer = smoke.llama_server()
    model_dir = generated_model()
    with contextlib.ExitStack() as stack:
        settings = {"STRATUS_THREADS": str(threads)} if threads else {}
        options = ("-t", str(threads)) if threads else ()
        targets = {
            "llama.cpp (raw)": stack.enter_context(raw_engine(model_dir, threads or 2)),
            "stratus": stack.enter_context(stratus(model_dir, **settings)),
        }
        if threads is None:
            targets["stratus threads=1"] = stack.enter_context(
                stratus(model_dir, STRATUS_THREADS="1")
            )
        if peer:
            targets["llama-server"] = stack.enter_context(llama_server(model_dir, *options))
            if threads is None:
                # Beside its defaults, its best setting here: at its defaults the projector's
                # threads and the model's spinning ones share two cores, and each 64-pixel tile
                # takes 80 ms to encode instead of 1.
                targets["llama-server -t 1"] = stack.enter_context(
                    llama_server(model_dir, "-t", "1")
                )
        for name, (_, command) in targets.items():
            print(f"{name}: {command}")
        times: dict[str, list[float]] = {name: [] for name in targets}
        tokens: dict[str, set[int]] = {name: set() for name in targets}
        for ask, _ in targets.values():  # warm up: first requests load and compile
            ask(noise_png(10_000))
        names = list(targets)
        for round_ in range(rounds):
            image = noise_png(round_)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                # Right before its timed turn, each target answers another image untimed: on
                # these machines two threads that were idle for a tenth of a second take
                # ~10 ms to meet at each step of a decode (the raw engine's 10 ms image turns
                # 250-480 ms), a cost every multi-threaded engine pays alike after a pause.
                targets[name][0](noise_png(50_000 + round_))
                seconds, prompt_tokens = targets[name][0](image)
                times[name].append(seconds)
                tokens[name].add(prompt_tokens)
    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name in targets:
        shown = " ".join(f"{t * 1000:.0f}" for t in times[name])
        print(f"{name:20} each (ms): {shown}")
    for name in targets:
        print(f"{name:20} median {median[name]:7.1f} ms   prompt tokens {sorted(tokens[name])}")
    if "llama-server" in median:
        ratio = median["stratus"] / median["llama-server"]
        print(f"stratus / llama-server: {ratio:.3f} (goal <= 1.1)")
    if "llama-server -t 1" in median:
        print(f"stratus / llama-server -t 1: {median['stratus'] / median['llama-server -t 1']:.3f}")
        one = median["stratus threads=1"] / median["llama-server -t 1"]
        print(f"stratus threads=1 / llama-server -t 1: {one:.3f}")
    print(f"stratus / raw engine:   {median['stratus'] / median['llama.cpp (raw)']:.3f}")


if __name__ == "__main__":
    main()
