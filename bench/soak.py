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
import base64
import json
import os
import queue
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import stratus_serve  # noqa: E402

API_KEY = "soak-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
CUT = "cut"  # the client abandoned the request, as planned
PROMPTS = [
    "Hello!",
    "Tell me a story about a lighthouse.",
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three colours.",
    "Explain recursion in one sentence.",
]
SENTENCES = ["Hello, this is a test.", "The quick brown fox jumps.", "Good morning."]
MAX_RSS_GROWTH = 5.0  # percent


@dataclass
class Client:
    """One client thread's connection and what every request needs."""

    http: httpx.Client
    rng: random.Random
    mp3: bytes


@dataclass
class Result:
    kind: str
    status: str
    problem: str | None = None
    seconds: float = 0.0


def envelope_problem(response: httpx.Response) -> str | None:
    """What is wrong with an error response's body and headers, if anything."""
    try:
        error = response.json()["error"]
        if not isinstance(error["message"], str) or not all(
            key in error for key in ("type", "param", "code")
        ):
            return f"incomplete envelope: {response.text[:300]}"
    except (ValueError, KeyError, TypeError):
        return f"not an error envelope: {response.text[:300]}"
    if response.status_code == 429 and "retry-after" not in response.headers:
        return "429 without Retry-After"
    return None


def judge(
    response: httpx.Response, expected: set[int], check: Callable[[httpx.Response], bool]
) -> tuple[str, str | None]:
    """(status, problem): a status outside `expected` (429 always expected), an error body
    that is not an envelope, or a 200 that fails `check`."""
    status = response.status_code
    head = f"{response.request.method} {response.request.url.path} -> {status}"
    if status not in expected | {429}:
        return str(status), f"{head}: {response.text[:300]}"
    if status >= 400:
        problem = envelope_problem(response)
        return str(status), problem and f"{head}: {problem}"
    if not check(response):
        return str(status), f"{head}: malformed answer: {response.text[:300]}"
    return str(status), None


def post(client: Client, path: str, body: dict, expected: set[int], check) -> tuple:
    return judge(client.http.post(path, json=body), expected, check)


def has(*keys: str) -> Callable[[httpx.Response], bool]:
    def check(response: httpx.Response) -> bool:
        data = response.json()
        return all(data.get(key) for key in keys)

    return check


def audio(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("audio/") and len(response.content) > 100


def chat_body(client: Client, tokens: int | None = None) -> dict:
    rng = client.rng
    return {
        "model": rng.choice(["gpt-4", "gpt-4o-mini", "gpt-3.5-turbo"]),
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": tokens or rng.randint(8, 32),
        "temperature": rng.choice([0, 0.7]),
    }


def chat(client: Client) -> tuple:
    return post(client, "/v1/chat/completions", chat_body(client), {200}, has("choices", "usage"))


def read_stream(response: httpx.Response, events: int | None = None) -> str | None:
    """Reads an SSE answer (the first `events` only, if given); a problem, if any."""
    seen = 0
    last = None
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        last = line[6:]
        if last != "[DONE]" and "error" in json.loads(last):
            return f"error event: {last[:300]}"
        seen += 1
        if events is not None and seen >= events:
            return None
    return None if last == "[DONE]" else f"stream ended without [DONE] (last: {last!r})"


def chat_stream(client: Client) -> tuple:
    body = {**chat_body(client), "stream": True, "stream_options": {"include_usage": True}}
    with client.http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return judge(response, {200}, bool)
        problem = read_stream(response)
        return "200", problem and f"streamed chat: {problem}"


def completion(client: Client) -> tuple:
    body = {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": client.rng.choice(["The capital of France is", "1, 2, 3, 4,", "Once upon"]),
        "max_tokens": client.rng.randint(8, 32),
    }
    return post(client, "/v1/completions", body, {200}, has("choices", "usage"))


def embeddings(client: Client) -> tuple:
    count = client.rng.randint(1, 8)
    body = {
        "model": client.rng.choice(["text-embedding-ada-002", "text-embedding-3-small"]),
        "input": [client.rng.choice(PROMPTS) for _ in range(count)],
        "encoding_format": client.rng.choice(["float", "base64"]),
    }
    return post(client, "/v1/embeddings", body, {200}, has("data", "usage"))


def speech(client: Client) -> tuple:
    body = {
        "model": "tts-1",
        "input": client.rng.choice(SENTENCES),
        "voice": client.rng.choice(["alloy", "echo", "nova"]),
        "response_format": client.rng.choice(["mp3", "wav", "opus"]),
    }
    return post(client, "/v1/audio/speech", body, {200}, audio)


def transcription(client: Client) -> tuple:
    response = client.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.mp3", client.mp3, "audio/mpeg")},
        data={"model": "whisper-1", "response_format": client.rng.choice(["json", "verbose_json"])},
    )
    return judge(response, {200}, has("text"))


def image(client: Client) -> tuple:
    body = {
        "model": "dall-e-2",
        "prompt": "A cute baby sea otter",
        "size": "64x64",
        "steps": 2,
        "seed": client.rng.randint(0, 1000),
        "response_format": "b64_json",
    }

    def png(response: httpx.Response) -> bool:
        return base64.b64decode(response.json()["data"][0]["b64_json"])[:4] == b"\x89PNG"

    return post(client, "/v1/images/generations", body, {200}, png)


def models(client: Client) -> tuple:
    if client.rng.random() < 0.5:
        return judge(client.http.get("/v1/models"), {200}, has("data"))
    name = client.rng.choice(["gpt-4", "whisper-1", "tts-1", "dall-e-2", "all-minilm-l6-v2"])
    return judge(client.http.get(f"/v1/models/{name}"), {200}, has("id"))


def bad_json(client: Client) -> tuple:
    path = client.rng.choice(["/v1/chat/completions", "/v1/embeddings", "/v1/audio/speech"])
    body = client.rng.choice([b'{"model": "gpt-4", "messages": [', b"not json", b"\xff\xfe"])
    headers = {"content-type": "application/json"}
    return judge(client.http.post(path, content=body, headers=headers), {400}, bool)


def unknown_model(client: Client) -> tuple:
    name = f"no-such-model-{client.rng.randint(0, 99)}"
    choice = client.rng.randrange(4)
    if choice == 0:
        return judge(client.http.get(f"/v1/models/{name}"), {404}, bool)
    if choice == 1:
        body = {"model": name, "input": "hello"}
        return post(client, "/v1/embeddings", body, {404}, bool)
    if choice == 2:
        body = {"model": name, "input": "hello", "voice": "alloy"}
        return post(client, "/v1/audio/speech", body, {404}, bool)
    return post(client, "/v1/chat/completions", {**chat_body(client), "model": name}, {404}, bool)


def bad_params(client: Client) -> tuple:
    bad = client.rng.choice(
        [
            ("/v1/chat/completions", {**chat_body(client), "temperature": 5}),
            ("/v1/chat/completions", {"model": "gpt-4"}),
            ("/v1/chat/completions", {**chat_body(client), "max_tokens": -1}),
            ("/v1/completions", {"model": "gpt-4", "prompt": "hi", "logprobs": 99}),
            ("/v1/embeddings", {"model": "text-embedding-ada-002", "input": 42}),
            ("/v1/audio/speech", {"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 9}),
            ("/v1/images/generations", {"prompt": "otter", "size": "65x65"}),
            ("/v1/images/generations", {"prompt": "otter", "n": 0}),
        ]
    )
    return post(client, *bad, {400}, bool)


def no_key(client: Client) -> tuple:
    response = client.http.post(
        "/v1/chat/completions", json=chat_body(client), headers={"authorization": "Bearer wrong"}
    )
    return judge(response, {401}, bool)


def bad_audio(client: Client) -> tuple:
    response = client.http.post(
        "/v1/audio/transcriptions",
        files={"file": ("speech.mp3", os.urandom(2000), "audio/mpeg")},
        data={"model": "whisper-1"},
    )
    return judge(response, {400}, bool)


def cut_stream(client: Client) -> tuple:
    """A streamed chat the client closes after two events."""
    body = {**chat_body(client, tokens=200), "stream": True}
    with client.http.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return judge(response, {200}, bool)
        problem = read_stream(response, events=2)
        return CUT, problem and f"cut stream: {problem}"


def cut_timeout(client: Client) -> tuple:
    """A request the client gives up on after 0.2-0.5 s: while it waits, or while it runs."""
    timeout = client.rng.uniform(0.2, 0.5)
    if client.rng.random() < 0.7:
        path, body, check = "/v1/chat/completions", chat_body(client, tokens=200), has("choices")
    else:
        text = " ".join(client.rng.choice(SENTENCES) for _ in range(6))
        path, body, check = (
            "/v1/audio/speech",
            {"model": "tts-1", "input": text, "voice": "echo"},
            audio,
        )
    try:
        return judge(client.http.post(path, json=body, timeout=timeout), {200}, check)
    except httpx.TimeoutException:
        return CUT, None


# kind: (weight, request); about 12 % of requests are abandoned by their client.
MIX: dict[str, tuple[int, Callable[[Client], tuple]]] = {
    "chat": (18, chat),
    "chat_stream": (14, chat_stream),
    "completion": (9, completion),
    "embeddings": (12, embeddings),
    "speech": (6, speech),
    "transcription": (5, transcription),
    "image": (2, image),
    "models": (8, models),
    "bad_json": (3, bad_json),
    "unknown_model": (3, unknown_model),
    "bad_params": (5, bad_params),
    "bad_audio": (1, bad_audio),
    "no_key": (2, no_key),
    "cut_stream": (6, cut_stream),
    "cut_timeout": (6, cut_timeout),
}


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
