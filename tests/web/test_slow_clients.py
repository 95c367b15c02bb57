"""What a client that misbehaves at the HTTP level gets, from a real server on loopback:
Content-Length with chunked is refused, oversized headers are refused, headers that arrive
too slowly (or never) and a body that stops arriving time out, and an aborted upload is one
quiet log line."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from live_server import LiveServer, live_server, server_env

from intakeq_sim import SimulatorServer


@pytest.fixture(scope="module")
def server(module_url: str, simulator: SimulatorServer) -> Iterator[LiveServer]:
    env = server_env(module_url, simulator.base_url)
    env["PQSYNC_BODY_TIMEOUT_SECONDS"] = "1"
    env["PQSYNC_HEADER_TIMEOUT_SECONDS"] = "2"
    with live_server(env) as live:
        yield live


def exchange(server: LiveServer, raw: bytes, *, wait: float = 10) -> bytes:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=wait) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while part := sock.recv(65536):
                data += part
        except TimeoutError:
            pass
        return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


def test_content_length_with_chunked_is_refused(server: LiveServer) -> None:
    answer = exchange(
        server,
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert status_of(answer) == 400


def test_oversized_headers_are_refused(server: LiveServer) -> None:
    filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
    answer = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n")
    assert status_of(answer) in (400, 431)


def drip_headers(server: LiveServer, *, lines: int, pause: float) -> bytes | None:
    """Send a request head one header line every `pause` seconds (`lines` of them, then
    the blank line). The server's answer, b"" if it closed the connection, or None if it
    let the whole slow head arrive."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for i in range(lines):
            time.sleep(pause)
            try:
                sock.sendall(b"X-Slow-%d: yes\r\n" % i)
            except (BrokenPipeError, ConnectionResetError):
                return b""
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                answer = None
            except ConnectionResetError:
                answer = b""
            sock.setblocking(True)
            if answer is not None:
                return answer
        return None


def test_headers_that_arrive_too_slowly_are_cut_off_while_healthz_answers(
    server: LiveServer,
) -> None:
    # Ten clients drip a header line every 0.3 s for 30 s; the server gives a head 2 s.
    with ThreadPoolExecutor(10) as pool:
        slow = [pool.submit(drip_headers, server, lines=100, pause=0.3) for _ in range(10)]
        time.sleep(0.5)
        during = exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = [future.result() for future in slow]

    # Up, or 503 for want of a worker (none runs here): either way, it answers.
    assert status_of(during) in (200, 503)
    for answer in answers:
        assert answer is not None, "a head dripping for 30 s was let in"
        assert answer == b"" or status_of(answer) == 408


def test_a_connection_that_never_sends_a_request_is_closed(server: LiveServer) -> None:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        try:
            answer = sock.recv(65536)  # blocks until the server closes it (or 30 s pass)
        except TimeoutError:
            answer = None
    assert answer is not None and (answer == b"" or status_of(answer) == 408)


def test_a_head_that_arrives_in_pieces_within_the_timeout_is_answered(server: LiveServer) -> None:
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
            sock.sendall(piece)
            time.sleep(0.2)
        answer = b""
        while part := sock.recv(65536):
            answer += part
    assert status_of(answer) in (200, 503)


def test_a_body_that_stops_arriving_times_out(server: LiveServer) -> None:
    answer = exchange(
        server,
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 100\r\n\r\n{"email":',
        wait=20,
    )
    assert status_of(answer) == 408


def test_an_aborted_upload_is_one_quiet_log_line(
    module_url: str, simulator: SimulatorServer
) -> None:
    with live_server(server_env(module_url, simulator.base_url)) as live:
        address = urlsplit(live.url)
        for _ in range(5):
            with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                    + b"x"
                    * 1000
                )
            # The next request is answered once the aborted one has been dealt with.
            assert (
                status_of(
                    exchange(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                )
                == 503
            )

    aborted = [
        line
        for line in live.log.splitlines()
        if '"method": "POST"' in line and '"status": 400' in line
    ]
    assert len(aborted) == 5, live.log[-3000:]
    assert all('"level": "info"' in line for line in aborted)
    assert "Traceback" not in live.log, live.log[live.log.index("Traceback") - 300 :][:3000]
    assert '"level": "error"' not in live.log and "'level': 'error'" not in live.log
