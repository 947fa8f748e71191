"""The daemon's HTTP server: /metrics, /healthz, /readyz, and the routers others mount.

FastAPI on uvicorn, run in a thread: the supervisor, not uvicorn, owns the process's signals.
Bounded for an API that may be bound to 0.0.0.0: request bodies over a cap get 413 before
any handler reads them, connections and header sizes are capped, /docs is off unless asked
for, and an unexpected error answers a bare 500 (the traceback goes to the log only).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from lifeguard.asgi import MAX_BODY_BYTES, BodyLimit

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI, Request

log = logging.getLogger(__name__)

Check = Callable[[], tuple[bool, str]]
def create_app(registry: CollectorRegistry, healthy: Check, ready: Check,
               routers: Sequence[APIRouter] = (), max_body_bytes: int = MAX_BODY_BYTES,
               docs: bool = False) -> FastAPI:
    """/metrics and the probes need no token; routers bring their own auth."""
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse

    app = FastAPI(title="lifeguard", docs_url="/docs" if docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if docs else None)
    app.add_middleware(BodyLimit, limit=max_body_bytes)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error (see the daemon's log)"},
                            status_code=500)

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

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                 max_connections: int = 64) -> None:
        import uvicorn

        # Past max_connections uvicorn answers 503; idle keep-alives close after 5 s; a
        # request's head may not exceed 16 KiB.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                lifespan="off", access_log=False,
                                limit_concurrency=max_connections, timeout_keep_alive=5,
                                h11_max_incomplete_event_size=16 * 1024)
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
