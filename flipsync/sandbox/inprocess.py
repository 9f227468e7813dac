"""The sandbox as a ``requests`` transport: the client's requests answered in this process.

``SandboxAdapter`` turns each prepared request into a ``SandboxRequest``, asks
``Sandbox.handle`` and returns a real ``requests.Response``, so the whole client stack
(sessions, auth, retries, error mapping, streaming) runs unchanged with no socket, no
server thread and no waiting on a port. Tests use it through ``InProcessSandbox``, which
gives the sandbox a base URL nothing resolves and routes that URL here for every session
``flipsync.clients`` builds (``mount_transport``).

The answer is what the HTTP server (``server.py``) would send: same status, headers, an
exact ``Content-Length`` and a ``Date`` from the sandbox's clock. A "drop" fault raises
``SandboxDropped``, a ``requests.ConnectionError`` carrying the same urllib3 reason a closed
socket gives, so the client treats it exactly like a connection lost mid-request (an
unknown outcome for a POST). The "_after" faults have already applied their effect inside
``Sandbox.handle`` by then, as over the wire.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from http.client import RemoteDisconnected
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3.exceptions import ProtocolError

from flipsync.sandbox.app import Sandbox
from flipsync.sandbox.oauth import OAUTH_PREFIX
from flipsync.sandbox.wire import SandboxRequest, SandboxResponse, error_array

_log = logging.getLogger(__name__)
_instances = itertools.count(1)


class SandboxDropped(requests.ConnectionError):
    """The sandbox closed the connection without answering (a "drop" fault)."""


def _body_bytes(body: bytes | str | Iterable[bytes] | None) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    read = getattr(body, "read", None)
    if callable(read):
        data = read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(chunk.encode("utf-8") if isinstance(chunk, str) else chunk for chunk in body)


class SandboxAdapter(BaseAdapter):
    """A ``requests`` transport adapter that hands every request to one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__()
        self.sandbox = sandbox

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Answer ``request`` from the sandbox, as its HTTP server would."""
        url = request.url or ""
        split = urlsplit(url)
        wanted = SandboxRequest(
            method=(request.method or "GET").upper(),
            path=split.path or "/",
            query_string=split.query,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=_body_bytes(request.body),
            base_url=f"{split.scheme}://{split.netloc}",
        )
        try:
            answer = self.sandbox.handle(wanted)
        except Exception:  # noqa: BLE001 - a sandbox bug becomes a 500, as over the wire
            _log.exception("sandbox request handling failed")
            answer = error_array(500, "server_error", "The sandbox failed to handle the request.")
        if answer.drop:
            reason = RemoteDisconnected("Remote end closed connection without response")
            raise SandboxDropped(ProtocolError("Connection aborted.", reason), request=request)
        return self._response(request, wanted.method, answer)

    def _response(
        self, request: requests.PreparedRequest, method: str, answer: SandboxResponse
    ) -> requests.Response:
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        headers["Server"] = "flipsync-sandbox"
        headers["Date"] = formatdate(self.sandbox.now(), usegmt=True)
        for name, value in answer.headers:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        has_body = answer.status not in (204, 304)
        if has_body:
            headers["Content-Length"] = str(len(answer.body))
        body = answer.body if has_body and method != "HEAD" else b""
        response = requests.Response()
        response.status_code = answer.status
        try:
            response.reason = HTTPStatus(answer.status).phrase
        except ValueError:
            response.reason = ""
        response.headers = headers
        response.encoding = get_encoding_from_headers(headers)
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        """Nothing to release: there is no connection pool."""


class InProcessSandbox:
    """A sandbox reached through ``SandboxAdapter``: the in-process twin of ``RunningSandbox``.

    Same attributes (``sandbox``, ``base_url``, ``api_base_url``, ``oauth_base_url``) and the
    same ``stop()`` / ``with`` life cycle. ``base_url`` is a unique loopback address on port
    1, where nothing listens (loopback, so the config accepts plain http): while the sandbox
    runs, every session built by ``flipsync.clients`` routes it here; anything else (another
    process, a bare ``requests.get``) is refused at once, never reaching a different server.
    """

    def __init__(
        self, sandbox: Sandbox, mount: Callable[[str, BaseAdapter], Callable[[], None]]
    ) -> None:
        self.sandbox = sandbox
        self.adapter = SandboxAdapter(sandbox)
        number = next(_instances)
        self.base_url = f"http://127.88.{number // 250 % 250}.{number % 250 + 1}:1"
        self.api_base_url = self.base_url + "/v3"
        self.oauth_base_url = self.base_url + OAUTH_PREFIX
        self._unmount = mount(self.base_url + "/", self.adapter)
        self._stopped = False

    def session(self) -> requests.Session:
        """A plain session routed to this sandbox (for tests that send requests themselves)."""
        session = requests.Session()
        session.mount(self.base_url + "/", self.adapter)
        return session

    def stop(self) -> None:
        """Stop routing the base URL here (idempotent)."""
        if not self._stopped:
            self._stopped = True
            self._unmount()

    def __enter__(self) -> InProcessSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_process(sandbox: Sandbox) -> InProcessSandbox:
    """Route a fresh base URL to ``sandbox`` for every session ``flipsync.clients`` builds."""
    from flipsync.clients import mount_transport

    return InProcessSandbox(sandbox, mount_transport)
