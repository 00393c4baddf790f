"""A keep-alive HTTP client for Orthanc's REST API and DICOMweb's STOW-RS, on http.client.

Connections are kept alive and reused by whichever sending thread asks next. Measured
against Orthanc here (docs/storage.md), a POST of a 512x512 CT slice cost about 1.0-1.5 ms
of CPU through requests, 0.5 ms less through urllib3, and another 0.4-0.6 ms less through
http.client, on which both are built: for a send step that does little else per image,
their per-request layers (pools, header dictionaries, response wrappers, retry and
redirect machinery) are a tenth of the node's CPU per image.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO
from urllib.parse import urlsplit

#: one piece of a request body: bytes, or a file opened for reading (sent whole, from its start)
BodyPart = bytes | bytearray | BinaryIO
#: a request body: one piece, or pieces sent one after the other (a multipart body)
Body = BodyPart | list[BodyPart]


class RequestFailed(Exception):
    """No HTTP answer at all; `reason` says why in words fit for a batch's error list."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Response:
    """The parts of an answer the destinations read."""

    __slots__ = ("status_code", "content", "url")

    def __init__(self, status_code: int, content: bytes, url: str) -> None:
        self.status_code, self.content, self.url = status_code, content, url

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


#: the server hung up on a connection it had kept alive, before answering
_HUNG_UP = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def failure_reason(exc: BaseException) -> str:
    # Most specific first: every one of these is an OSError.
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate not trusted"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, _HUNG_UP + (http.client.IncompleteRead,)):
        return "connection reset"
    return "connection failed"


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """True when the server closed an idle kept-alive connection (its socket reads EOF)."""
    if conn.sock is None:
        return False
    try:
        return bool(select.select([conn.sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _send(
    conn: http.client.HTTPConnection, method: str, target: str, body: Body | None, headers: Mapping[str, str]
) -> None:
    """Send one request. A file body goes from the page cache to the socket (sendfile),
    from its start, so that a request tried again sends the whole file. Not reading a
    512 kB image into Python first saved about a tenth of a POST's CPU here (0.36 to
    0.32 ms, POSTs to the test Orthanc alternated over four rounds)."""
    if body is None or isinstance(body, (bytes, bytearray)):
        conn.request(method, target, body=body, headers=headers)
        return
    if isinstance(body, list):
        # A multipart body (DICOMweb STOW-RS): bytes (boundaries, part headers) and files,
        # each file sent from its start by sendfile, as a single-file body is.
        length = sum(len(p) if isinstance(p, (bytes, bytearray)) else os.fstat(p.fileno()).st_size for p in body)
        conn.putrequest(method, target)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        for piece in body:
            if isinstance(piece, (bytes, bytearray)):
                conn.sock.sendall(piece)
            else:
                conn.sock.sendfile(piece, 0)
        return
    conn.putrequest(method, target)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(os.fstat(body.fileno()).st_size))
    conn.endheaders()
    conn.sock.sendfile(body, 0)  # from offset 0, whatever the file's position


class Client:
    """Keep-alive connections, reused by whichever thread asks next; thread-safe.

    A connection is taken out of the idle list for one request and put back after it, so
    SEND_WORKERS threads hold at most SEND_WORKERS connections, across retry rounds.
    """

    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.headers: dict[str, str] = {}
        if auth:
            token = f"{auth[0]}:{auth[1]}"
            try:
                raw = token.encode("latin-1")  # what urllib3 and requests send
            except UnicodeEncodeError:
                raw = token.encode("utf-8")
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    def _take(self, scheme: str, netloc: str, timeout: float, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
        """(connection, whether it was used before) for one request to this server."""
        conn = None
        if not fresh:
            with self._lock:
                idle = self._idle.get((scheme, netloc))
                conn = idle.pop() if idle else None
            if conn is not None and _dropped(conn):
                conn.close()
                conn = None
        if conn is not None:
            conn.timeout = timeout
            conn.sock.settimeout(timeout)
            return conn, True
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()  # verifies, as urllib3 did
            return http.client.HTTPSConnection(netloc, timeout=timeout, context=self._tls), False
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=timeout), False
        raise RequestFailed(f"unsupported URL scheme {scheme!r}")

    def _give_back(self, scheme: str, netloc: str, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.setdefault((scheme, netloc), []).append(conn)

    def request(
        self,
        method: str,
        url: str,
        body: Body | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        merged = {**self.headers, **headers} if headers else self.headers
        for attempt in (1, 2):
            conn, reused = self._take(parts.scheme, parts.netloc, timeout, fresh=attempt == 2)
            try:
                _send(conn, method, target, body, merged)
                answer = conn.getresponse()
                data = answer.read()
            except _HUNG_UP as exc:
                conn.close()
                if reused and attempt == 1:
                    # The server closed a kept-alive connection as the request went out:
                    # once more on a new one (sendit's requests to Orthanc are safe to repeat).
                    continue
                raise RequestFailed(failure_reason(exc)) from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise RequestFailed(failure_reason(exc)) from exc
            if answer.will_close:
                conn.close()
            else:
                self._give_back(parts.scheme, parts.netloc, conn)
            return Response(answer.status, data, url)
        raise AssertionError("unreachable")

    def get(self, url: str, timeout: float = 30.0) -> Response:
        return self.request("GET", url, timeout=timeout)

    def post(self, url: str, data: Body, headers: Mapping[str, str] | None = None, timeout: float = 30.0) -> Response:
        """POST ``data``: bytes, a file opened for reading (sent whole, from its start), or a
        list of both, sent one after the other (a multipart body)."""
        return self.request("POST", url, body=data, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the idle connections (those in use are closed by their request's end)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()
