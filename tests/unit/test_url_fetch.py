"""common.url_fetch against real HTTP servers on loopback.

The servers count the connections they accept, so a test can tell a refusal made before any
connection from one made after; socket.create_connection is spied on where the refused
target has no server at all.
"""

from __future__ import annotations

import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from common import url_fetch
from common.errors import InvalidRequest, PayloadTooLarge
from common.url_fetch import FetchPolicy, fetch_url, unfetchable_message

OPEN = FetchPolicy.from_setting("127.0.0.1")
MB = 1 << 20


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, family: int = socket.AF_INET) -> None:
        self.address_family = family
        super().__init__((host, 0), _Handler)
        self.host = host
        self.port = self.server_address[1]
        self.routes: dict[str, Callable[[_Handler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        self.done = threading.Event()  # set by a streaming route when it stops writing
        self.completed: bool | None = None  # whether that route wrote its whole body

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1  # called once per accepted connection, before any request
        return True

    def url(self, path: str = "/") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
        else:
            route(self)

    def log_message(self, *args) -> None:
        pass


def _body(data: bytes, status: int = 200) -> Callable[[_Handler], None]:
    def route(h: _Handler) -> None:
        h.send_response(status)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def _redirect(location: str, cookie: bool = False) -> Callable[[_Handler], None]:
    def route(h: _Handler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        if cookie:
            h.send_header("Set-Cookie", "session=secret; Path=/")
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def _stream(total: int, *, chunked: bool, delay: float = 0.0, piece: int = 64 * 1024):
    """Writes `total` bytes, recording on the server whether it got to the end."""

    def route(h: _Handler) -> None:
        h.send_response(200)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Content-Length", str(total))
        h.end_headers()
        try:
            for _ in range(total // piece):
                block = b"x" * piece
                h.wfile.write(b"%x\r\n%b\r\n" % (piece, block) if chunked else block)
                h.wfile.flush()
                if delay:
                    time.sleep(delay)
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
            h.server.completed = True
        except OSError:  # the client closed the connection: the download was cut
            h.server.completed = False
        finally:
            h.server.done.set()

    return route


def _serve(host: str, family: int = socket.AF_INET) -> Iterator[_Server]:
    server = _Server(host, family)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other() -> Iterator[_Server]:
    """A second loopback server at an address the tests' allow-list does not name."""
    try:
        yield from _serve("127.0.0.2")
    except OSError:
        pytest.skip("127.0.0.2 is not bindable here")


@pytest.fixture
def connects(monkeypatch) -> list[tuple[str, int]]:
    """Every address a socket was opened to (httpcore's sync backend uses create_connection)."""
    attempts: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", spy)
    return attempts


def _refused(url: str, policy: FetchPolicy = OPEN, **kwargs) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        fetch_url(url, max_bytes=MB, policy=policy, **kwargs)
    return caught.value


# (1), (2): loopback is refused by default, fetched when the allow-list names it.


def test_loopback_is_refused_by_default_before_connecting(server):
    server.routes["/a.wav"] = _body(b"RIFF")
    error = _refused(server.url("/a.wav"), FetchPolicy())
    assert error.message == unfetchable_message("file") and error.param == "file"
    assert "127.0.0.1" not in error.message and server.connections == 0


def test_the_allow_list_lets_loopback_through(server):
    server.routes["/a.wav"] = _body(b"RIFF....WAVE")
    assert fetch_url(server.url("/a.wav"), max_bytes=MB, policy=OPEN) == b"RIFF....WAVE"
    path, headers = server.requests[0]
    assert headers["Host"] == f"127.0.0.1:{server.port}"
    assert headers["Accept-Encoding"] == "identity"


def test_ipv6_loopback_keeps_its_brackets_in_the_host_header():
    try:
        servers = _serve("::1", socket.AF_INET6)
        v6 = next(servers)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        v6.routes["/"] = _body(b"six")
        assert _refused(v6.url()).message == unfetchable_message("file")  # ::1 is not 127.0.0.1
        assert v6.connections == 0
        assert fetch_url(v6.url(), max_bytes=MB, policy=FetchPolicy.from_setting("::1")) == b"six"
        assert v6.requests[0][1]["Host"] == f"[::1]:{v6.port}"
    finally:
        servers.close()


# (3): each redirect hop is checked before it is connected to.


def test_a_redirect_to_a_refused_address_is_never_connected_to(server, other, connects):
    other.routes["/secret"] = _body(b"internal")
    server.routes["/go"] = _redirect(other.url("/secret"))
    _refused(server.url("/go"))
    assert other.connections == 0 and other.requests == []
    assert connects == [("127.0.0.1", server.port)]


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.2]:9/",  # IPv4-mapped
        "http://[2002:7f00:2::]:9/",  # 6to4 of 127.0.0.2
        "http://2130706434:9/",  # 127.0.0.2 as one number, which getaddrinfo accepts
        "http://100.64.0.1/",  # shared address space
        "http://0.0.0.0:9/",
    ],
)
def test_redirects_to_internal_forms_are_refused_before_connecting(server, connects, target):
    server.routes["/go"] = _redirect(target)
    assert _refused(server.url("/go")).message == unfetchable_message("file")
    assert connects == [("127.0.0.1", server.port)]


def test_redirects_are_followed_relative_and_without_cookies(server):
    server.routes["/one"] = _redirect("/two", cookie=True)
    server.routes["/two"] = _redirect(server.url("/three#fragment"))
    server.routes["/three"] = _body(b"end")
    assert fetch_url(server.url("/one"), max_bytes=MB, policy=OPEN) == b"end"
    assert [path for path, _ in server.requests] == ["/one", "/two", "/three"]
    assert all("Cookie" not in headers for _, headers in server.requests)


def test_proxies_from_the_environment_are_not_used(server, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    server.routes["/"] = _body(b"direct")
    assert fetch_url(server.url(), max_bytes=MB, policy=OPEN) == b"direct"


# (4): DNS rebinding: one resolution per connection, and the connect uses its answer.


def _rebinding(monkeypatch, answers: list[str]) -> list[str]:
    """socket.getaddrinfo answering rebind.test with the next of `answers` at each call."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def fake(host, port, *args, **kwargs):
        if host != "rebind.test":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = answers[min(len(asked), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


def test_the_connection_goes_to_the_checked_address_not_a_later_answer(
    server, monkeypatch, connects
):
    # Checked: 127.0.0.1 (allowed); any later lookup would say 10.255.255.1 (refused, and
    # nothing answers there): the download succeeds only if the connect used the first answer.
    asked = _rebinding(monkeypatch, ["127.0.0.1", "10.255.255.1"])
    server.routes["/a"] = _body(b"pinned")
    url = f"http://rebind.test:{server.port}/a"
    assert fetch_url(url, max_bytes=MB, policy=OPEN) == b"pinned"
    assert asked == ["rebind.test"]
    assert connects == [("127.0.0.1", server.port)]
    assert server.requests[0][1]["Host"] == f"rebind.test:{server.port}"


def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_it(
    server, monkeypatch, connects
):
    # Checked: a public address; then the name "rebinds" to the loopback server.
    asked = _rebinding(monkeypatch, ["93.184.215.14", "127.0.0.1"])
    real = socket.create_connection

    def no_internet(address, *args, **kwargs):
        if address[0] == "93.184.215.14":
            raise ConnectionRefusedError("no internet in tests")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", no_internet)
    server.routes["/a"] = _body(b"internal")
    error = _refused(f"http://rebind.test:{server.port}/a", FetchPolicy())
    assert error.message == unfetchable_message("file")
    assert asked == ["rebind.test"] and server.connections == 0


# (5): the size cap, declared or streamed.


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_size_cap_cuts_the_download(server, chunked):
    server.routes["/big"] = _stream(32 * MB, chunked=chunked)
    with pytest.raises(PayloadTooLarge) as caught:
        fetch_url(server.url("/big"), max_bytes=MB, policy=OPEN, param="audio")
    assert caught.value.status == 413 and caught.value.param == "audio"
    assert str(MB) in caught.value.message
    assert server.done.wait(5) and server.completed is False


def test_a_body_at_the_cap_is_whole(server):
    server.routes["/exact"] = _stream(MB, chunked=True)
    assert len(fetch_url(server.url("/exact"), max_bytes=MB, policy=OPEN)) == MB


# (6): URLs refused for their form, with their own message.


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///etc/passwd", "http or https"),
        ("ftp://127.0.0.1/a", "http or https"),
        ("gopher://127.0.0.1:70/", "http or https"),
        ("http://user:pass@127.0.0.1/", "user name or password"),
        ("https://token@127.0.0.1/", "user name or password"),
        ("http:///no-host", "no host"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_urls_of_the_wrong_form_are_refused(connects, url, says):
    error = _refused(url, param="file")
    assert says in error.message and error.param == "file"
    assert connects == []


# (7): every failure reads the same.


def test_every_failure_gives_the_same_message(server, monkeypatch, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    real = socket.getaddrinfo

    def no_dns(host, *args, **kwargs):
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    server.routes["/500"] = _body(b"oops", status=500)
    server.routes["/loop"] = _redirect("/loop")
    server.routes["/ftp"] = _redirect("ftp://127.0.0.1/a")
    server.routes["/slow"] = _stream(1000, chunked=False, delay=0.05, piece=10)
    cases = {
        "closed port": (f"http://127.0.0.1:{closed_port}/", OPEN),
        "404": (server.url("/missing"), OPEN),
        "500": (server.url("/500"), OPEN),
        "refused address": (server.url("/500"), FetchPolicy()),
        "no DNS": ("http://nowhere.test/", OPEN),
        "redirect loop": (server.url("/loop"), OPEN),
        "redirect to ftp": (server.url("/ftp"), OPEN),
        "deadline": (server.url("/slow"), OPEN),
    }
    messages = {}
    with caplog.at_level(logging.INFO, logger="stratus.fetch"):
        for reason, (url, policy) in cases.items():
            started = time.monotonic()
            error = _refused(url, policy, param="file", timeout=0.5)
            assert time.monotonic() - started < 2, reason  # the deadline bounds a drip-feed
            messages[reason] = (error.message, error.param, error.status)
    assert set(messages.values()) == {(unfetchable_message("file"), "file", 400)}
    assert len([p for p, _ in server.requests if p == "/loop"]) == 1 + url_fetch.MAX_REDIRECTS
    logged = caplog.text
    for reason in ("status 404", "status 500", "not public or allowed", "does not resolve"):
        assert reason in logged
    assert "more than 5 redirects" in logged and "ConnectError" in logged
