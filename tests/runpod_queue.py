"""RunPod's job API on loopback, for the worker as it runs when deployed (not `--rp_serve_api`).

A deployed worker long-polls RUNPOD_WEBHOOK_GET_JOB for jobs (one, or a batch when its
concurrency is above one) and its stop channel (the job-take URL with /job-stop/) for jobs to
stop, POSTs each streamed output to RUNPOD_WEBHOOK_POST_STREAM and the aggregate to
RUNPOD_WEBHOOK_POST_OUTPUT. This serves those URLs from a queue of jobs the test or benchmark
puts in (and stops), and records what comes back, with the time it came.

    with JobQueue() as queue:
        queue.put("job-1", {"openai_route": ..., "openai_input": ...})
        start the worker with queue.env(), then queue.result("job-1", timeout=60)
"""

from __future__ import annotations

import json
import queue as queues
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

LONG_POLL_SECONDS = 0.5  # how long a job-take waits for a job before answering 204


@dataclass
class JobResult:
    done: Any  # the job-done body: {"output": [every streamed output]} or {"error": ...}
    streamed: list[Any]  # the stream bodies' outputs, in order
    at: float  # time.perf_counter() when the job-done POST arrived
    taken_at: float  # when the worker was given the job


@dataclass
class _Job:
    streamed: list[Any] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    result: JobResult | None = None
    taken_at: float = 0.0


class JobQueue:
    def __init__(self) -> None:
        self._waiting: queues.Queue[dict] = queues.Queue()
        self._stopping: queues.Queue[str] = queues.Queue()
        self._jobs: dict[str, _Job] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, worker_id: str = "worker-1") -> dict[str, str]:
        """The environment RunPod gives a deployed worker, pointed here."""
        return {
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": "local-queue",
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?gpu=none",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID?gpu=none",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=none",
            "RUNPOD_WEBHOOK_PING": f"{self.url}/ping/$RUNPOD_POD_ID?gpu=none",
            "RUNPOD_PING_INTERVAL": "60000",
            # The SDK refuses to start with under 10% of "/" free. A worker here shares the
            # host's disk (a process, or a chroot-isolated container), so that share measures
            # the build machine's image store, not the worker's disk; a nearly full disk
            # still stops it.
            "RUNPOD_MIN_DISK_PERCENT": "1",
        }

    def put(self, job_id: str, job_input: Any) -> None:
        self._jobs[job_id] = _Job()
        self._waiting.put({"id": job_id, "input": job_input})

    def stop(self, job_id: str) -> None:
        """What RunPod does when a job is cancelled or times out."""
        self._stopping.put(job_id)

    def streamed(self, job_id: str) -> list[Any]:
        return list(self._jobs[job_id].streamed)

    def finished(self, job_id: str) -> bool:
        return self._jobs[job_id].finished.is_set()

    def result(self, job_id: str, timeout: float) -> JobResult:
        job = self._jobs[job_id]
        if not job.finished.wait(timeout):
            raise TimeoutError(f"job {job_id} got no result in {timeout} s")
        assert job.result is not None
        return job.result

    def __enter__(self) -> JobQueue:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _long_poll(waiting: queues.Queue, most: int) -> list[Any]:
        try:
            items = [waiting.get(timeout=LONG_POLL_SECONDS)]
        except queues.Empty:
            return []
        while len(items) < most and not waiting.empty():
            items.append(waiting.get_nowait())
        return items

    def _record(self, kind: str, job_id: str, body: Any) -> None:
        job = self._jobs[job_id]
        if kind == "job-stream":
            job.streamed.append(body.get("output"))
            return
        job.result = JobResult(body, list(job.streamed), time.perf_counter(), job.taken_at)
        job.finished.set()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        jobs = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                kind = url.path.split("/")[1]
                if kind == "ping":
                    return self._answer(200, {})
                if kind == "job-stop":
                    stopping = jobs._long_poll(jobs._stopping, 100)
                    return (
                        self._answer(200, {"jobsToStop": stopping})
                        if stopping
                        else self._answer(204)
                    )
                query = dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
                taken = jobs._long_poll(jobs._waiting, int(query.get("batch_size", 1)))
                if not taken:
                    return self._answer(204)
                self._answer(200, taken if kind == "job-take-batch" else taken[0])
                for job in taken:
                    jobs._jobs[job["id"]].taken_at = time.perf_counter()

            def do_POST(self) -> None:
                kind, _, job_id = urlsplit(self.path).path.split("/")[1:4]
                length = int(self.headers.get("Content-Length", 0))
                jobs._record(kind, job_id, json.loads(self.rfile.read(length)))
                self._answer(200, {})

        return Handler
