"""The simulator on a real socket: stdlib ThreadingHTTPServer, so faults can drop or hang."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from contextlib import suppress
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import orjson

from intakeq_sim.app import API_PREFIX, CONTROL_PREFIX, Request, SimulatorApp
from intakeq_sim.clock import Clock, utc_now
from intakeq_sim.config import DEFAULT_API_KEY, SimConfig
from intakeq_sim.data import Dataset, build_dataset
from intakeq_sim.webhooks import WebhookKnobs, WebhookSender

_log = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API; a drop then hits a live socket
    timeout = 120  # an idle keep-alive connection does not hold a thread forever
    # Headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def _app(self) -> SimulatorApp:
        return cast(_HTTPServer, self.server).app

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = {
            name.lower(): values[0]
            for name, values in parse_qs(split.query, keep_blank_values=True).items()
        }
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send(400, {"Message": "Bad Content-Length"})
            return
        request = Request(
            method=self.command,
            path=split.path,
            query=query,
            auth_key=self.headers.get("X-Auth-Key"),
            body=self.rfile.read(length) if length else b"",
            client_host=str(self.client_address[0]),
        )
        try:
            response = self._app().handle(request)
        except Exception:
            # Method and path only: the query and body may hold patient data.
            _log.exception("simulator failed on %s %s", self.command, split.path)
            self._send(500, {"Message": "An error has occurred."})
            return
        if response.drop:
            self._drop()
        else:
            self._send(response.status, response.payload, response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _send(self, status: int, payload: Any, body: bytes | None = None) -> None:
        if body is None:
            body = orjson.dumps(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        # Linger 0: closing resets the connection, with no HTTP response at all.
        self.close_connection = True
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes raw request lines (query strings: emails) to stderr; stay quiet.
        return


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() ends connections itself; a hung client must not block it

    def __init__(self, address: tuple[str, int], app: SimulatorApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-request are routine here, not worth a traceback.
        _log.debug("connection ended with an error", exc_info=True)

    def close_connections(self) -> None:
        """End keep-alive connections so their threads finish with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SimulatorServer:
    """An IntakeQ simulator on a background thread; `port=0` picks a free port.

    Use as a context manager, or call start() and stop(). `dataset` defaults to
    build_dataset(seed, today, patients=..., appointments=...), `today` to the clock's date
    in the practice's zone.
    """

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        today: date | None = None,
        patients: int = 12,
        appointments: int | None = None,
        timezone: str = "America/Denver",
        api_key: str = DEFAULT_API_KEY,
        config: SimConfig | None = None,
        clock: Clock = utc_now,
    ) -> None:
        if dataset is None:
            if today is None:
                today = clock().astimezone(ZoneInfo(timezone)).date()
            dataset = build_dataset(
                seed, today, patients=patients, appointments=appointments, timezone=timezone
            )
        self.dataset = dataset
        self.app = SimulatorApp(dataset, api_key=api_key, config=config, clock=clock)
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> SimulatorServer:
        """Bind and serve on a daemon thread; returns self once the port is open."""
        if self._httpd is not None:
            raise RuntimeError("simulator already started")
        self.app.stopping.clear()
        self._httpd = _HTTPServer(self._address, self.app)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="intakeq-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hung requests and close open connections."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self.app.stopping.set()
        self.app.webhooks.stop()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("simulator not started")
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        host = self._address[0]
        if host in ("", "0.0.0.0", "::"):  # noqa: S104 - comparing, not binding
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What INTAKEQ_BASE_URL should be: `http://127.0.0.1:{port}/api/v1`."""
        return self.root_url + API_PREFIX

    @property
    def control_url(self) -> str:
        """The provider-side control API: `http://127.0.0.1:{port}/_sim`."""
        return self.root_url + CONTROL_PREFIX

    @property
    def config(self) -> SimConfig:
        return self.app.config

    def configure(self, **changes: Any) -> SimConfig:
        """Change knobs at runtime (same names as SimConfig), like `POST /_sim/config`."""
        self.app.config = self.app.config.updated(changes)
        return self.app.config

    def configure_webhooks(self, **changes: Any) -> WebhookKnobs:
        """Where webhooks go and how they travel, like `POST /_sim/webhooks` (names as
        WebhookKnobs: url, practice_id, duplicate_rate, drop_rate, max_delay_ms, attempts)."""
        return self.app.webhooks.configure(changes)

    @property
    def webhooks(self) -> WebhookSender:
        return self.app.webhooks

    def stats(self) -> dict[str, Any]:
        """The same JSON as `GET /_sim/stats`."""
        return self.app.stats.snapshot(self.app.config.minute_window_seconds)


def serve(
    port: int = 8765,
    seed: int = 1,
    latency_ms: int = 0,
    fail_rate: float = 0.0,
    api_key: str = DEFAULT_API_KEY,
    patients: int = 12,
    appointments: int | None = None,
    minute_limit: int | None = 10,
    daily_limit: int | None = 500,
    host: str = "127.0.0.1",
    webhook_url: str | None = None,
) -> None:
    """Run a simulator in the foreground until Ctrl-C; prints one line with its base URL."""
    config = SimConfig(
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        minute_limit=minute_limit,
        daily_limit=daily_limit,
    )
    server = SimulatorServer(
        host=host,
        port=port,
        seed=seed,
        patients=patients,
        appointments=appointments,
        api_key=api_key,
        config=config,
    )
    if webhook_url:
        server.configure_webhooks(url=webhook_url)
    server.start()
    print(
        f"IntakeQ simulator ready at {server.base_url} "
        f"(seed {seed}, {len(server.dataset.appointments)} appointments, "
        f"control API {server.control_url})",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
