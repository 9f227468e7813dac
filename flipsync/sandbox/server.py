"""The sandbox's HTTP/1.1 server: sockets in, ``Sandbox.handle`` out.

Built on ``http.server.ThreadingHTTPServer`` (not WSGI) because the "drop" faults must close
the TCP connection without writing a single byte, which a WSGI app cannot express. One
server answers the API (``/v3``), OAuth (``/oauth2/default/v1``), the admin routes
(``/__sandbox``) and the device activation page (``/activate``). Keep-alive works; every
answer carries an exact Content-Length. Nothing is printed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

from flipsync.sandbox.app import Sandbox
from flipsync.sandbox.oauth import OAUTH_PREFIX
from flipsync.sandbox.wire import SandboxRequest, SandboxResponse, error_array

MAX_BODY_BYTES = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so ``stop()`` can close idle keep-alive sockets at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open client connection (their handler threads then end)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection resets are normal here (faults, impatient clients); log the rest."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        _log.error("sandbox connection failed", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, asks the sandbox, writes (or withholds) the answer."""

    protocol_version = "HTTP/1.1"
    server_version = "flipsync-sandbox"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after a minute
    # Buffer writes so status line, headers and body leave in one segment; written apart,
    # Nagle plus delayed ACKs would stall every response by ~40 ms.
    wbufsize = 64 * 1024
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request stderr line; the sandbox keeps its own log."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header from the sandbox's clock, which tests may move forward."""
        return super().date_time_string(
            self.server.sandbox.now() if timestamp is None else timestamp
        )

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None when it is unreadable."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537).strip():
                        pass  # trailers
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after the chunk
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError:
            return None
        if size < 0 or size > MAX_BODY_BYTES:
            return None
        return self.rfile.read(size)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            self._write(error_array(413, "payload_too_large", "The request body is too large."))
            return
        split = urlsplit(self.path)
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        request = SandboxRequest(
            method=self.command,
            path=split.path,
            query_string=split.query,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            base_url=f"http://{host}",
        )
        try:
            response = self.server.sandbox.handle(request)
        except Exception:  # noqa: BLE001 - a sandbox bug becomes a 500, not a dead thread
            _log.exception("sandbox request handling failed")
            response = error_array(500, "server_error", "The sandbox failed to handle the request.")
        if response.drop:
            # Say nothing at all: the client sees the connection close mid-request.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response)

    def _write(self, response: SandboxResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        has_body = response.status not in (204, 304)
        if has_body:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if has_body and self.command != "HEAD" and response.body:
            self.wfile.write(response.body)
        self.wfile.flush()


class RunningSandbox:
    """A sandbox served on a background thread; ``stop()`` (or ``with``) ends it.

    Attributes:
        sandbox: the ``Sandbox`` being served.
        host, port: where it listens.
        base_url: ``http://HOST:PORT``.
        api_base_url: ``base_url + "/v3"`` (the client's ``api_base_url``).
        oauth_base_url: ``base_url + "/oauth2/default/v1"`` (the client's ``oauth_base_url``).
    """

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.sandbox = server.sandbox
        self.host, self.port = str(server.server_address[0]), int(server.server_address[1])
        self.base_url = f"http://{self.host}:{self.port}"
        self.api_base_url = self.base_url + "/v3"
        self.oauth_base_url = self.base_url + OAUTH_PREFIX
        self._stopped = False

    def stop(self) -> None:
        """Stop accepting, close open connections and release the port (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> RunningSandbox:
    """Serve ``sandbox`` on a daemon thread; ``port=0`` picks a free port."""
    server = _Server((host, port), sandbox)
    thread = threading.Thread(
        target=server.serve_forever,
        # how often the loop looks for a stop: stop() waits up to this long (a test per sandbox)
        kwargs={"poll_interval": 0.005},
        name=f"flipsync-sandbox-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return RunningSandbox(server, thread)


def serve_forever(
    sandbox: Sandbox,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    on_ready: Callable[[RunningSandbox], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT (or KeyboardInterrupt), then stop cleanly.

    ``on_ready`` is called once the port is bound (useful with ``port=0`` to learn it);
    this function itself prints nothing. Signal handlers are only installed when called
    from the main thread, and the previous handlers are restored on return.
    """
    stop = threading.Event()
    previous: dict[signal.Signals, Any] = {}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
    running = start_in_thread(sandbox, host, port)
    try:
        if on_ready is not None:
            on_ready(running)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
