"""A real HTTP server that answers like the Orchestra API (docs/orchestra-api.md).

Standard library only: a ThreadingHTTPServer in a background thread, speaking HTTP/1.1
with keep-alive (httpx reuses connections). API endpoints live under `base_path` and need
`Authorization: Bearer <api_key>`; control endpoints under `/_emulator/` at the server
root need nothing, so a test can steer an emulator that a daemon subprocess is polling.

The parts, each in its module: the emulated API (api.py: routes, key, answers from the
scenario), the control endpoints (control.py), how a faulted answer goes out (answers.py)
and the HTTP transport (transport.py). `Emulator` owns them, runs the server and counts.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from exporter.emulator.answers import delivery_for
from exporter.emulator.api import MAX_LIMIT, EmulatedApi
from exporter.emulator.control import CONTROL_PREFIX, ControlApi
from exporter.emulator.faults import ENDPOINT_KINDS, FaultPlan
from exporter.emulator.messages import Request, Response
from exporter.emulator.scenario import Scenario
from exporter.emulator.stats import NO_RESPONSE, RequestStats
from exporter.emulator.transport import RequestHandler, ThreadedServer


class Emulator:
    """The Orchestra API emulator: `start()` it, point a client at `base_url`, `stop()` it.

    Also a context manager. `faults` injects misbehaviour; `stats()` tells what arrived.
    `api_key` (None: no auth) may be changed while it runs, to rehearse a key rotation.
    A stopped emulator answers nothing; `start()` again comes back on the same port.
    Used by `orchestra-otel demo`, `python -m exporter.emulator`, the tests and benchmarks.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = "demo-key",
        base_path: str = "/api/v1/workflow",
        history_limit: int = MAX_LIMIT,
        run_as_array: bool = True,
        recent_limit: int = 1000,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.faults = FaultPlan()
        self.base_url = ""
        self.api = EmulatedApi(
            scenario,
            api_key=api_key,
            base_path=self.base_path,
            history_limit=history_limit,  # only the newest runs are listed
            run_as_array=run_as_array,  # GET one run answers [run], as documented
        )
        self._stats = RequestStats(recent_limit)
        self._control = ControlApi(self.api, self.faults, self._stats)
        self._stopping = threading.Event()
        self._server: ThreadedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def api_key(self) -> str | None:
        return self.api.api_key

    @api_key.setter
    def api_key(self, api_key: str | None) -> None:
        self.api.api_key = api_key

    @property
    def root_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Listen and serve in a background thread; returns `base_url`."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._stopping.clear()
        server = ThreadedServer((self.host, self.port), self.serve)
        # Keep the bound port: a later start() after stop() comes back on the same one.
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long for the loop
            name=f"orchestra-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self.base_url = self.root_url + self.base_path
        return self.base_url

    def stop(self) -> None:
        """Stop serving and drop every open connection; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests held by a `delay` fault
        server.shutdown()
        server.server_close()
        server.close_open_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """`total`, `by_kind`, `by_status` ({kind: {"200": n}}) and `recent` requests.

        Each recent request: `at` (time.monotonic() on arrival), `wall` (time.time()),
        `method`, `kind`, `path` (with query), `status` (None in flight, 0 reset).
        Control requests are not counted.
        """
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    # ------------------------------------------------------------------ serving

    def serve(self, handler: RequestHandler, request: Request) -> None:
        """Answer one request through `handler`, applying faults and counting it."""
        if request.path.startswith(CONTROL_PREFIX):
            handler.send(self._control.answer(request))
            return
        endpoint = self.api.route(request.path)
        entry = self._stats.begin(request.method, endpoint.kind, request.target)
        kind = endpoint.kind
        fault = self.faults.take(kind, request.target) if kind in ENDPOINT_KINDS else None

        def answer(asked: Request) -> Response:
            return self.api.answer(asked, endpoint)

        delivery = delivery_for(fault, kind, request, answer, self._stopping.wait)
        # Counted before the bytes leave: a client that just got its answer sees it counted.
        self._stats.finish(
            entry, NO_RESPONSE if delivery.response is None else delivery.response.status
        )
        handler.deliver(delivery, self._stopping.wait)
