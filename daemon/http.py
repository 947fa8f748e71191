"""The daemon's HTTP server: /metrics, /healthz, /readyz, and the routers others mount.

FastAPI on uvicorn, run in a thread: the supervisor, not uvicorn, owns the process's signals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

Check = Callable[[], tuple[bool, str]]


def create_app(registry: CollectorRegistry, healthy: Check, ready: Check,
               routers: Sequence[APIRouter] = ()) -> FastAPI:
    """/metrics and the probes need no token; routers bring their own auth."""
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse

    app = FastAPI(title="lifeguard", docs_url="/docs", redoc_url=None)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def probe(check: Check) -> JSONResponse:
        ok, detail = check()
        return JSONResponse({"status": "ok" if ok else "fail", "detail": detail},
                            status_code=200 if ok else 503)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        return probe(healthy)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        return probe(ready)

    for router in routers:
        app.include_router(router)
    return app


class ApiServer:
    """uvicorn serving an app from a background thread; ``port`` is known after start()."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ApiServer:
        self._thread = threading.Thread(target=self._server.run, name="lifeguard-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"HTTP server failed to start on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise TimeoutError("HTTP server did not start in time")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
