"""The CPU text images: their size, how long they take to build (cold, and after a one-line code
change), and each target's cold start inside its container: process start -> first answer.

http        `stratus serve` (read-only root), then POST /v1/chat/completions
runpod-lb   the same server as a RunPod load-balancing worker: until /ping answers 200 and a
            chat is answered (STRATUS_PRELOAD names the embedded model)
runpod      the queue worker: a job waits in RunPod's job API (tests/runpod_queue.py) from the
            start; the time is when its result is posted back
lambda      awslambdaric against Lambda's Runtime API (tests/lambda_runtime.py), an API Gateway
            v1 event waiting from the start; the time is when its response is posted back

.venv/bin/python bench/bench_container_images.py --rounds 5
.venv/bin/python bench/bench_container_images.py --smoke   # cached builds, one start of each

The builds run from a copy of this checkout (the one-line change is made there, never here),
with buildah, offline from the wheelhouse (containers/build.py); the cold build rebuilds every
step but the base image (`make base-image`, built once) and the wheelhouse (pip's cache).
Sizes are as `buildah images` reports them (uncompressed) and as pushed (gzip layers, what a
registry stores and a platform pulls). Starts are run by tests/container.py, as in the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import smoke  # noqa: E402
from containers import build as image_build  # noqa: E402
from tests import container  # noqa: E402
from tests.lambda_runtime import RuntimeApi  # noqa: E402
from tests.processes import free_port  # noqa: E402
from tests.runpod_queue import JobQueue  # noqa: E402

TARGETS = ("http", "runpod-lb", "runpod", "lambda")
CHAT = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8}
EVENT = ROOT / "tests" / "events" / "apigw_rest_v1_chat.json"
GOAL_START_S = 1.0


def timed_build(context: Path, no_cache: bool = False) -> float:
    started = time.perf_counter()
    image_build.build_images(
        "text", "cpu", TARGETS, pip=[sys.executable, "-m", "pip"], tool="buildah",
        context=context, no_cache=no_cache, quiet=True,
    )  # fmt: skip
    return time.perf_counter() - started


def sizes(tag: str, work: Path) -> tuple[float, float]:
    """(uncompressed, pushed) MB."""
    listed = container.buildah("images", "--format", "{{.Size}}", tag).split()
    uncompressed = _megabytes(" ".join(listed[:2]))
    archive = work / "pushed"
    shutil.rmtree(archive, ignore_errors=True)
    container.buildah("push", "--compression-format", "gzip", tag, f"oci:{archive}")
    pushed = sum(f.stat().st_size for f in (archive / "blobs").rglob("*") if f.is_file())
    shutil.rmtree(archive)
    return uncompressed, pushed / 1e6


def _megabytes(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"kB": 1e-3, "MB": 1, "GB": 1e3}[unit]


def until(answered: Callable[[], bool], box: container.Container, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if box.process.poll() is not None:
            raise RuntimeError(f"the container exited:\n{box.output()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if answered():
                return time.perf_counter() - box.started
        time.sleep(0.005)
    raise RuntimeError(f"no answer in {timeout} s:\n{box.output()[-2000:]}")


def start_http(tag: str, volumes: dict[str, str], threads: str) -> float:
    port = free_port()
    env = {"PORT": str(port), "STRATUS_THREADS": threads, "STRATUS_LOG_LEVEL": "warning"}
    with container.started(tag, env=env, volumes=volumes) as box:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return until(lambda: httpx.post(url, json=CHAT, timeout=60).status_code == 200, box)


def start_runpod_lb(tag: str, volumes: dict[str, str], threads: str) -> float:
    port = free_port()
    env = {
        "PORT": str(port),
        "PORT_HEALTH": str(port),
        "STRATUS_PRELOAD": "gpt-4",
        "STRATUS_THREADS": threads,
        "STRATUS_LOG_LEVEL": "warning",
    }
    with container.started(tag, env=env, volumes=volumes) as box:
        base = f"http://127.0.0.1:{port}"
        until(lambda: httpx.get(f"{base}/ping", timeout=5).status_code == 200, box)
        return until(
            lambda: (
                httpx.post(f"{base}/v1/chat/completions", json=CHAT, timeout=60).status_code == 200
            ),
            box,
        )


def start_runpod(tag: str, volumes: dict[str, str], threads: str) -> float:
    with JobQueue() as queue:
        queue.put("cold", {"openai_route": "/v1/chat/completions", "openai_input": CHAT})
        env = {**queue.env(), "RUNPOD_DEBUG_LEVEL": "ERROR", "STRATUS_THREADS": threads}
        with container.started(tag, env=env, volumes=volumes) as box:
            result = queue.result("cold", timeout=120)
            return result.at - box.started


def start_lambda(tag: str, volumes: dict[str, str], threads: str) -> float:
    del volumes  # Lambda's only writable place is /tmp
    with RuntimeApi() as api:
        api.invoke("cold", json.loads(EVENT.read_text()))
        env = {
            **api.env(),
            "API_KEY": "test-key",
            "STRATUS_CACHE_DIR": "/tmp/stratus-cache",
            "STRATUS_THREADS": threads,
        }
        with container.started(tag, env=env) as box:
            answer = api.result("cold", timeout=120)
            assert answer.kind == "response" and answer.body["statusCode"] == 200, answer.body
            return answer.at - box.started


STARTS = {
    "http": start_http,
    "runpod-lb": start_runpod_lb,
    "runpod": start_runpod,
    "lambda": start_lambda,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="starts of each target")
    parser.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", default=str(os.cpu_count() or 1))
    args = smoke.parse_args(parser, {"rounds": 1, "cold": False})
    if shutil.which("buildah") is None or os.geteuid() != 0:
        print("skipped: building and starting images here takes buildah and root")
        return
    with tempfile.TemporaryDirectory(prefix="stratus-images-") as work:
        context = container.checkout_copy(Path(work) / "checkout")
        print("build (wheelhouse filled, base image present):")
        if args.cold:
            print(f"  cold (every step)          {timed_build(context, no_cache=True):7.1f} s")
        cached = timed_build(context)
        print(f"  nothing changed             {cached:7.1f} s")
        changed = context / "adapters" / "__init__.py"
        changed.write_text(changed.read_text() + "# a one-line change\n")
        print(f"  after a one-line change     {timed_build(context):7.1f} s")

        print("\nimage                        uncompressed MB   pushed (gzip) MB")
        for target in TARGETS:
            tag = image_build.tag("text", "cpu", target)
            uncompressed, pushed = sizes(tag, Path(work))
            print(f"{tag:28} {uncompressed:13.0f} {pushed:18.0f}")

        print(f"\nprocess start -> first answer, inside the container ({args.rounds} starts):")
        for target in TARGETS:
            seconds = []
            for _ in range(args.rounds):
                cache = Path(tempfile.mkdtemp(dir=work))
                volumes = {str(cache): "/opt/stratus-cache"}
                seconds.append(
                    STARTS[target](image_build.tag("text", "cpu", target), volumes, args.threads)
                )
            median = statistics.median(seconds)
            verdict = "met" if median <= GOAL_START_S else "missed"
            spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
            print(
                f"{target:10} process start -> first answer: {median:.2f} s median "
                f"({spread}; goal <= {GOAL_START_S} s: {verdict})"
            )


if __name__ == "__main__":
    main()
