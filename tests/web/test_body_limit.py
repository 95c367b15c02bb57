"""Request bodies are limited while they stream, with or without Content-Length: a real
server on loopback, its memory read from /proc while a chunked body is sent."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from live_server import LiveServer, live_server, server_env
from web_support import PASSWORD, USERS, WEBHOOK_TOKEN

from intakeq_sim import SimulatorServer
from pqsync.web.security import MAX_BODY_BYTES

MB = 1024 * 1024
SENT_AT_MOST = 200 * MB


@pytest.fixture(scope="module")
def server(module_url: str, simulator: SimulatorServer) -> Iterator[LiveServer]:
    with live_server(server_env(module_url, simulator.base_url)) as live:
        yield live


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def send_chunked(
    server: LiveServer, path: str, chunks: Iterator[bytes], watch: list[int]
) -> tuple[int, bytes, int]:
    """POST a chunked body, chunk by chunk, until the server answers or the chunks end;
    notes the server's memory after every chunk. Returns status, body and bytes sent."""
    address = urlsplit(server.url)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            watch.append(server.rss)
        else:
            sock.sendall(b"0\r\n\r\n")
        status, body = read_response(sock)
    return status, body, sent


def endless_json(limit: int) -> Iterator[bytes]:
    """A JSON object with one very long string, in 1 MiB chunks, `limit` bytes at most."""
    yield b'{"email": "a@example.org", "password": "'
    sent = 0
    while sent < limit:
        yield b"x" * MB
        sent += MB


@pytest.mark.e2e
@pytest.mark.parametrize(
    "path",
    ["/api/auth/login", f"/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}"],
)
def test_a_chunked_body_past_the_limit_is_refused_and_memory_stays_flat(
    server: LiveServer, path: str
) -> None:
    before = server.rss
    watch: list[int] = []
    status, body, sent = send_chunked(server, path, endless_json(SENT_AT_MOST), watch)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert sent < SENT_AT_MOST  # the server stopped it long before the end
    # The server holds at most about one limit's worth of the body, not what was sent.
    assert max([*watch, server.rss]) - before < 40 * MB


@pytest.mark.e2e
def test_a_chunked_body_under_the_limit_still_works(server: LiveServer) -> None:
    login = json.dumps({"email": USERS["partner_admin"], "password": PASSWORD}).encode()
    status, body, _ = send_chunked(server, "/api/auth/login", iter([login[:10], login[10:]]), [])
    assert status == 200, body
    assert json.loads(body)["user"]["email"] == USERS["partner_admin"]


def test_a_declared_length_past_the_limit_is_refused_before_reading(client: TestClient) -> None:
    response = client.post(
        "/api/auth/login",
        content=b"{}",
        headers={"Content-Length": str(MAX_BODY_BYTES + 1)},
    )
    assert response.status_code == 413
