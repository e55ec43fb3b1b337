"""Soak: many mixed requests, with overload and disconnects, against one `stratus serve`.

Starts its own server (the built-in registry: chat, embeddings, speech, transcription and
images; API_KEY set; a small STRATUS_MAX_QUEUE so that concurrent clients overflow it), loads
every model, then sends --requests requests from --clients threads, drawn from a seeded mix:
chat (plain and streamed), completions, embeddings, speech, transcription, images, model
listing, bad requests (malformed JSON, unknown models, invalid fields, no key) and requests the
client abandons on purpose (a stream closed after two events; a request cut by a short client
timeout while it waits or runs). A client that gets a 429 waits the second its Retry-After
asks for. The server runs one engine thread by default (--threads): with two on a 2-core machine
that anything else also uses, generation slows down by 100x and more (llama.cpp's threads wait
for each other), and the soak measures the machine instead of the server. It passes when:

- no answer is unexpected: no 5xx, no transport error, every error in OpenAI's envelope, every
  4xx one that request may get (429 with Retry-After is expected under overload), every 200
  well formed (a stream ends with [DONE] and carries no error event);
- the server's RSS after the run is less than 5 % above its RSS after warm-up (the first
  --warmup share of the requests; both sampled with the server idle);
- /health reports `active` and `waiting` back at 0 within 10 s of the last request;
- SIGTERM stops the server cleanly (exit code 0, or -15: uvicorn re-raises the signal it shut
  down for) and its log holds no traceback.

    .venv/bin/python bench/soak.py                   # 1,000 requests, 6 clients
    .venv/bin/python bench/soak.py --requests 100    # a quick check
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.soak_requests import MIX, Client, Result  # noqa: E402
from tests.processes import stratus_serve  # noqa: E402

API_KEY = "soak-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MAX_RSS_GROWTH = 5.0  # percent


@dataclass
class Run:
    base_url: str
    mp3: bytes
    clients: int
    seed: int
    results: list[Result] = field(default_factory=list)

    def send(self, plan: list[tuple[int, str]]) -> None:
        """Every (index, kind) of the plan, from `clients` threads sharing one queue."""
        todo: queue.Queue[tuple[int, str]] = queue.Queue()
        for item in plan:
            todo.put(item)
        lock = threading.Lock()

        def work() -> None:
            with httpx.Client(base_url=self.base_url, headers=AUTH, timeout=300) as http:
                while True:
                    try:
                        index, kind = todo.get_nowait()
                    except queue.Empty:
                        return
                    client = Client(http, random.Random(self.seed * 1_000_003 + index), self.mp3)
                    start = time.perf_counter()
                    try:
                        status, problem = MIX[kind][1](client)
                    except Exception as error:  # transport errors and malformed answers
                        status, problem = type(error).__name__, f"{kind}: {error!r}"
                    with lock:
                        seconds = time.perf_counter() - start
                        self.results.append(Result(kind, status, problem, seconds))
                    if status == "429":  # as the answer's Retry-After asks
                        time.sleep(1)

        threads = [threading.Thread(target=work) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_idle(http: httpx.Client, timeout: float = 10) -> tuple[dict, float]:
    """/health once `active` and `waiting` are 0 (or at the timeout), and the seconds taken."""
    start = time.perf_counter()
    while True:
        health = http.get("/health").json()
        took = time.perf_counter() - start
        if (health["active"] == 0 and health["waiting"] == 0) or took > timeout:
            return health, took
        time.sleep(0.05)


def warm_up(http: httpx.Client) -> bytes:
    """Loads every model once; the transcription's mp3, made by the speech endpoint."""
    speech_body = {"model": "tts-1", "input": "Hello, this is a soak test.", "voice": "alloy"}
    mp3 = http.post("/v1/audio/speech", json=speech_body).raise_for_status().content
    hi = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    image_body = {"prompt": "otter", "size": "64x64", "response_format": "b64_json"}
    http.post("/v1/chat/completions", json=hi).raise_for_status()
    embed = {"model": "text-embedding-ada-002", "input": "hello"}
    http.post("/v1/embeddings", json=embed).raise_for_status()
    http.post("/v1/images/generations", json=image_body).raise_for_status()
    files = {"file": ("speech.mp3", mp3, "audio/mpeg")}
    http.post(
        "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}
    ).raise_for_status()
    return mp3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="mixed requests to send")
    parser.add_argument("--clients", type=int, default=6, help="concurrent client threads")
    parser.add_argument("--max-queue", type=int, default=4, help="the server's STRATUS_MAX_QUEUE")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of requests before RSS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="the server's STRATUS_THREADS (0: its default)"
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    kinds = list(MIX)
    plan = list(enumerate(rng.choices(kinds, [MIX[k][0] for k in kinds], k=args.requests)))
    split = max(1, int(len(plan) * args.warmup))
    failures: list[str] = []

    with tempfile.TemporaryDirectory() as scratch, open(Path(scratch) / "server.log", "wb") as log:
        env = {
            **os.environ,
            "API_KEY": API_KEY,
            "STRATUS_MAX_QUEUE": str(args.max_queue),
            "STRATUS_LOG_LEVEL": "warning",
            "STRATUS_CACHE_DIR": str(Path(scratch) / "cache"),
        }
        if args.threads:
            env["STRATUS_THREADS"] = str(args.threads)
        with (
            stratus_serve(env=env, log=log) as server,
            httpx.Client(base_url=server.url, headers=AUTH, timeout=300) as http,
        ):
            pid = server.process.pid
            started = time.perf_counter()
            mp3 = warm_up(http)
            loaded_rss = rss_kib(pid)
            warm_s = time.perf_counter() - started
            run = Run(server.url, mp3, args.clients, args.seed)
            samples: list[int] = []
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(1):
                    samples.append(rss_kib(pid))

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            run.send(plan[:split])
            wait_idle(http)
            warm_rss = rss_kib(pid)
            run.send(plan[split:])
            duration = time.perf_counter() - started
            health, settle_s = wait_idle(http)
            sampling.set()
            sampler.join()
            time.sleep(1)  # let freed memory settle before the last sample
            end_rss = rss_kib(pid)
            stopping = time.perf_counter()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
            stop_s = time.perf_counter() - stopping
        exit_code = server.process.returncode
        log_text = Path(log.name).read_text(errors="replace")

    table: dict[str, Counter] = defaultdict(Counter)
    slowest: dict[str, float] = defaultdict(float)  # seconds, the slowest request of a kind
    for result in run.results:
        table[result.kind][result.status] += 1
        slowest[result.kind] = max(slowest[result.kind], result.seconds)
    statuses = sorted({s for counts in table.values() for s in counts}, key=lambda s: (len(s), s))
    widths = [max(7, len(s)) + 1 for s in statuses]

    def row(name: str, counts: Counter, seconds: float) -> str:
        cells = "".join(f"{counts[s]:>{w}}" for s, w in zip(statuses, widths, strict=True))
        return f"{name:15}{cells}{sum(counts.values()):>8}{seconds:>8.1f}"

    heads = "".join(f"{s:>{w}}" for s, w in zip(statuses, widths, strict=True))
    print(f"{'kind':15}{heads}{'total':>8}{'max s':>8}")
    for kind in kinds:
        print(row(kind, table.get(kind, Counter()), slowest[kind]))
    print(row("all", Counter(r.status for r in run.results), max(slowest.values())))

    problems = [r.problem for r in run.results if r.problem]
    growth = 100 * (end_rss - warm_rss) / warm_rss
    tracebacks = log_text.count("Traceback")
    print()
    print(
        f"requests              {len(run.results)} ({args.clients} clients, seed {args.seed}, "
        f"STRATUS_MAX_QUEUE {args.max_queue}, STRATUS_THREADS {args.threads or 'default'})"
    )
    print(f"models loaded in      {warm_s:.1f} s (RSS {loaded_rss / 1024:.1f} MiB)")
    print(f"duration              {duration:.1f} s ({len(run.results) / duration:.1f} requests/s)")
    print(f"unexpected            {len(problems)}")
    print(f"RSS after warm-up     {warm_rss / 1024:.1f} MiB (after {split} requests)")
    peak = max(samples, default=end_rss)
    print(f"RSS at the end        {end_rss / 1024:.1f} MiB (peak {peak / 1024:.1f} MiB)")
    print(f"RSS growth            {growth:+.2f} %")
    print(f"health after          active {health['active']}, waiting {health['waiting']} "
          f"({settle_s:.2f} s after the last request)")  # fmt: skip
    print(f"server exit code      {exit_code} ({stop_s:.2f} s after SIGTERM)")
    print(f"log tracebacks        {tracebacks} ({len(log_text.splitlines())} log lines)")
    for problem in problems[:20]:
        print(f"  unexpected: {problem}")
    for line in log_text.splitlines()[:20]:
        print(f"  log: {line}")

    if problems:
        failures.append(f"{len(problems)} unexpected answers")
    if growth >= MAX_RSS_GROWTH:
        failures.append(f"RSS grew {growth:.2f} % (limit {MAX_RSS_GROWTH} %)")
    if health["active"] or health["waiting"]:
        failures.append(f"/health did not return to idle: {health}")
    # uvicorn re-raises the SIGTERM it shut down for: -15 is a clean exit too.
    if exit_code not in (0, -signal.SIGTERM):
        failures.append(f"the server exited with {exit_code}")
    if tracebacks:
        failures.append(f"{tracebacks} tracebacks in the server log")
    print("FAIL: " + "; ".join(failures) if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
