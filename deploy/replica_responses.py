"""The replica's shared HTTP answers: an error body, a shed request, the request id header."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from deploy.batching import QueueFull

REQUEST_ID_HEADER = "x-request-id"


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def overloaded_response(exc: QueueFull) -> JSONResponse:
    """The batch queue is full: shed the request, and say when to come back."""
    return JSONResponse({"error": f"overloaded: {exc}"}, status_code=503,
                        headers={"Retry-After": str(exc.retry_after_s)})
