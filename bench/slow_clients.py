"""Benchmark: `/healthz` latency while 1,000 slow clients hold connections open (slowloris:
headers trickled a byte at a time), against `/healthz` alone, in the same run, on
`pqsync serve` in its own process. Prints p95 of each, their ratio, and the statuses seen
(uvicorn answers 503 past PQSYNC_MAX_CONNECTIONS; /healthz itself is 503 without a worker,
which is what it is asked here: no worker runs). It probes again once the header timeout
(PQSYNC_HEADER_TIMEOUT_SECONDS) has passed, when the server has closed the slow connections.

    .venv/bin/python bench/slow_clients.py [--slow 1000] [--probes 200] [--workers 1]
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
from common import fresh_database
from roster import server


def probe(root: str, count: int) -> tuple[list[float], Counter[str]]:
    """`count` sequential /healthz requests: their times, and what came back ("503 down":
    /healthz's own answer; "503 refused": uvicorn past its connection bound)."""
    timings: list[float] = []
    statuses: Counter[str] = Counter()
    with httpx.Client(base_url=root, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            try:
                answer = client.get("/healthz")
                own = answer.text.startswith("{")
                statuses[f"{answer.status_code} {'answered' if own else 'refused'}"] += 1
            except httpx.HTTPError:
                statuses["no answer"] += 1
            timings.append(time.perf_counter() - started)
    return timings, statuses


def p95(timings: list[float]) -> float:
    return statistics.quantiles(timings, n=20)[-1] * 1000


def slow_connections(root: str, count: int, stop: threading.Event) -> list[socket.socket]:
    """Open `count` connections that send a request line and then a header a byte every
    few seconds, never finishing it."""
    address = urlsplit(root)
    opened: list[socket.socket] = []
    for _ in range(count):
        try:
            sock = socket.create_connection((address.hostname, address.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
            opened.append(sock)
        except OSError:
            break

    def trickle() -> None:
        while not stop.wait(5):
            for sock in list(opened):
                try:
                    sock.sendall(b"a")
                except OSError:
                    opened.remove(sock)

    threading.Thread(target=trickle, daemon=True).start()
    return opened


def closed_by_server(held: list[socket.socket]) -> int:
    """How many of the slow connections the server has answered (408) or closed."""
    closed = 0
    for sock in held:
        try:
            sock.setblocking(False)
            data = sock.recv(64)
            closed += 1 if data == b"" or data.startswith(b"HTTP/1.1 408") else 0
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, help="PQSYNC_HEADER_TIMEOUT_SECONDS's default"
    )
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.slow * 2 + 256)), hard))
    with fresh_database("sqlite") as url, server(url, args.workers) as root:
        probe(root, 20)  # warm up
        alone, alone_statuses = probe(root, args.probes)
        stop = threading.Event()
        held = slow_connections(root, args.slow, stop)
        time.sleep(2)
        loaded, loaded_statuses = probe(root, args.probes)
        time.sleep(max(0.0, args.header_timeout + 3 - 2))
        after, after_statuses = probe(root, args.probes)
        closed = closed_by_server(held)
        stop.set()
        for sock in held:
            sock.close()
    print(f"/healthz alone:                  p95 {p95(alone):7.1f} ms  {dict(alone_statuses)}")
    print(
        f"/healthz with {len(held)} slow connections: p95 {p95(loaded):7.1f} ms  "
        f"{dict(loaded_statuses)} (within the header timeout)"
    )
    print(
        f"/healthz {args.header_timeout + 3:.0f} s later:            p95 {p95(after):7.1f} ms  "
        f"{dict(after_statuses)} ({closed} of {len(held)} slow connections closed by the server)"
    )
    print(f"ratio (loaded / alone): {p95(loaded) / p95(alone):.2f}")
    print(f"ratio (after the header timeout / alone): {p95(after) / p95(alone):.2f}")


if __name__ == "__main__":
    main()
