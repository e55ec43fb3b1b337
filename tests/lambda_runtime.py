"""AWS Lambda's Runtime API on loopback, for a function image as Lambda runs it.

A Lambda container's runtime client (awslambdaric) long-polls
/2018-06-01/runtime/invocation/next at AWS_LAMBDA_RUNTIME_API for an event, and posts the
handler's result to /invocation/{id}/response, or its failure to /invocation/{id}/error; a
failure before the first event goes to /runtime/init/error. This serves those paths from events
the test puts in, and records what comes back and when.

    with RuntimeApi() as api:
        api.invoke("req-1", event)
        start the image with api.env(), then api.result("req-1", timeout=60)
"""

from __future__ import annotations

import json
import queue as queues
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    event: Any
    done: threading.Event = field(default_factory=threading.Event)
    kind: str = ""  # "response" or "error"
    body: Any = None
    at: float = 0.0  # perf_counter() when the result arrived


class RuntimeApi:
    def __init__(self) -> None:
        self._waiting: queues.Queue[str] = queues.Queue()
        self.invocations: dict[str, Invocation] = {}
        self.init_errors: list[Any] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.address = f"127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """What Lambda gives a function's container (the parts a runtime client reads)."""
        return {
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "AWS_LAMBDA_FUNCTION_NAME": "stratus-text",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/stratus-text",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/07/[$LATEST]0123456789abcdef",
            "AWS_REGION": "us-east-1",
            "_HANDLER": "adapters.aws_lambda.handler",
        }

    def invoke(self, request_id: str, event: Any) -> None:
        self.invocations[request_id] = Invocation(event)
        self._waiting.put(request_id)

    def result(self, request_id: str, timeout: float) -> Invocation:
        invocation = self.invocations[request_id]
        if not invocation.done.wait(timeout):
            raise TimeoutError(f"invocation {request_id} got no result in {timeout} s")
        return invocation

    def __enter__(self) -> RuntimeApi:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _answer(self, status: int, body: bytes = b"", headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._answer(404)
                request_id = api._waiting.get()  # long poll: until there is an event
                event = api.invocations[request_id].event
                deadline = int((time.time() + 300) * 1000)
                self._answer(
                    200,
                    json.dumps(event).encode(),
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline),
                        "Lambda-Runtime-Invoked-Function-Arn": (
                            "arn:aws:lambda:us-east-1:123456789012:function:stratus-text"
                        ),
                        "Lambda-Runtime-Trace-Id": "Root=1-675391c0-0123456789abcdef01234567",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                body = json.loads(data) if data else None
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_errors.append(body)
                    return self._answer(202, b"{}")
                if len(parts) == 3 and parts[0] == "invocation" and parts[1] in api.invocations:
                    invocation = api.invocations[parts[1]]
                    invocation.kind, invocation.body = parts[2], body
                    invocation.at = time.perf_counter()
                    invocation.done.set()
                    return self._answer(202, b"{}")
                self._answer(404)

        return Handler
