"""Stratus's build of llama.cpp against llama.cpp as released, inside llama-server's own process.

llama-server (`make llama-server`, built from the unpatched source) runs once as built and once
with Stratus's libraries in front of its own (`LD_LIBRARY_PATH` wins over their RUNPATH): the
same server, sampler and HTTP loop, only the engine's code differs. A third server runs Stratus's
libraries with `GGML_FA_SEGMENTS=0` (llama.cpp's own attention paths on Stratus's build), so a
difference that the build makes shows apart from one the patch makes. The servers take turns,
a pause between (a pool's workers poll for a moment after a request). Each request reuses its
cached prompt of N random tokens and generates 32 with `ignore_eos`; the figure is llama-server's
own `timings.predicted_per_token_ms`, median and minimum over the rounds.

    .venv/bin/python bench/attention_in_peer.py [--lengths 2048,4096,8000] [--rounds 8]

Its first use (docs/PERFORMANCE.md, agent-scale speed): Stratus's segmented kernel was 10-25%
slower per token than llama.cpp's split path at 4k-8k cells, which the Python process's own
timings had hidden in their noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.agent_speed_targets import MODEL_SOURCE, PAUSE_SECONDS, THREADS  # noqa: E402
from bench.batching_servers import wait_healthy  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import free_port, running  # noqa: E402

SERVER = ROOT / "build/llama-server/bin/llama-server"
STRATUS_LIBS = ROOT / ".venv/lib/python3.11/site-packages/llama_cpp/lib"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="2048,4096,8000")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if not SERVER.exists():
        sys.exit(f"{SERVER} is missing: run `make llama-server`")
    model = local_path("smollm2", MODEL_SOURCE)
    ours = {"LD_LIBRARY_PATH": str(STRATUS_LIBS)}
    variants = {
        "llama.cpp": {},
        "stratus-build": ours,
        "stratus-build-unsegmented": {**ours, "GGML_FA_SEGMENTS": "0"},
    }
    with contextlib.ExitStack() as stack:
        urls = _servers(stack, model, variants)
        rng = random.Random(0)
        print(f"{'cells':>6}  " + "  ".join(f"{name:>28}" for name in urls))
        for length in (int(x) for x in args.lengths.split(",")):
            prompt = [rng.randrange(100, 40000) for _ in range(length)]
            body = {"prompt": prompt, "n_predict": 32, "ignore_eos": True, "temperature": 0,
                    "cache_prompt": True, "id_slot": 0}  # fmt: skip
            times: dict[str, list[float]] = {name: [] for name in urls}
            with httpx.Client(timeout=600) as client:
                for url in urls.values():
                    client.post(url, json=body).raise_for_status()  # evaluates the prompt
                for _ in range(args.rounds):
                    for name, url in urls.items():
                        time.sleep(PAUSE_SECONDS)
                        answer = client.post(url, json=body).raise_for_status().json()
                        times[name].append(answer["timings"]["predicted_per_token_ms"])
            cells = "  ".join(
                f"{statistics.median(t):8.1f} ms (min {min(t):5.1f}){'':>7}" for t in times.values()
            )
            print(f"{length:>6}  {cells}", flush=True)


def _servers(stack: contextlib.ExitStack, model: Path, variants: dict) -> dict[str, str]:
    """Every variant's llama-server, started one after another; the stack stops them."""
    urls = {}
    for name, env in variants.items():
        port = free_port()
        command = [
            str(SERVER), "-m", str(model), "-c", "32768", "--parallel", "2",
            "-t", str(THREADS), "-tb", str(THREADS), "--no-webui", "--port", str(port),
        ]  # fmt: skip
        health = f"http://127.0.0.1:{port}/health"
        stack.enter_context(running(command, health, {**os.environ, **env}, timeout=180))
        with httpx.Client(timeout=10) as client:
            wait_healthy(client, health)
        urls[name] = f"http://127.0.0.1:{port}/completion"
    return urls


if __name__ == "__main__":
    main()
