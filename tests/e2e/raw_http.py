"""HTTP/1.1 over a plain socket, for requests no well-behaved client sends: undecodable bytes in
headers and request targets, bodies that contradict their Content-Type."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(
    port: int, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]] = (), body: bytes = b""
) -> RawResponse:
    """Send one request exactly as given (plus Host, Content-Length and Connection: close) and read
    the whole response."""
    head = [
        method.encode() + b" " + target + b" HTTP/1.1",
        b"Host: 127.0.0.1:%d" % port,
        b"Connection: close",
        b"Content-Length: %d" % len(body),
        *(name + b": " + value for name, value in headers),
    ]
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        # The server may answer (e.g. 400, 413) and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    raw = b"".join(chunks)
    response_head, _, response_body = raw.partition(b"\r\n\r\n")
    lines = response_head.split(b"\r\n")
    # aiohttp answers a request it cannot parse as HTTP/1.0.
    assert lines[0].startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), f"no HTTP response: {raw[:200]!r}"
    response_headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), response_headers, response_body)
