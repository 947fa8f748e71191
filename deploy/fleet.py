"""A client for a set of serving replicas speaking the Open Inference Protocol v2 and Triton's
repository extension (explicit model control), so a real Triton fleet is a drop-in target."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from deploy.errors import ReplicaRejectedError, ReplicaUnavailableError
from deploy.repository import validate_model_name


@dataclass(frozen=True)
class Observation:
    """What one replica serves for one model right now."""

    url: str
    reachable: bool
    ready: bool
    version: int | None
    error: str | None = None


@dataclass(frozen=True)
class TensorInference:
    """A tensor inference (Triton's path): the version that answered, outputs by name."""

    model_version: str
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class TextInference:
    """One text inference: the version that answered, and its outputs by name."""

    model_version: str
    request_id: str | None
    outputs: dict[str, list[Any]]


# The env var holding the bearer token of the replicas' repository API (load / unload).
REPLICA_TOKEN_ENV = "LIFEGUARD_REPLICA_TOKEN"

class ReplicaClient:
    """One replica. Transport failures and 5xx raise ReplicaUnavailableError (retryable);
    4xx raise ReplicaRejectedError (the replica refused, e.g. a tampered version)."""

    def __init__(self, url: str, timeout_s: float = 10.0, token: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"replica URL {url!r} must start with http:// or https://")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.url = url.rstrip("/")
        # The replicas' control token (load/unload), from the environment by default.
        token = token if token is not None else os.environ.get(REPLICA_TOKEN_ENV) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def live(self) -> bool:
        return self._ok("GET", "/v2/health/live")

    def ready(self) -> bool:
        return self._ok("GET", "/v2/health/ready")

    def model_ready(self, model: str, version: int | None = None) -> bool:
        return self._ok("GET", _model_path(model, version) + "/ready")

    def metadata(self, model: str) -> dict[str, Any]:
        return self._json("GET", _model_path(model))

    def index(self) -> list[dict[str, Any]]:
        return list(self._json("POST", "/v2/repository/index", json={}))

    def served_version(self, model: str) -> int | None:
        """The version this replica serves for ``model``, or None when it serves none."""
        for entry in self.index():
            if entry.get("name") == model and entry.get("state") == "READY":
                return int(entry["version"])
        return None

    def load(self, model: str, config: dict[str, Any], timeout_s: float | None = None) -> None:
        """Triton's explicit load; the version is chosen by ``config``'s version_policy."""
        body = {"parameters": {"config": json.dumps(config)}}
        self._json("POST", f"/v2/repository/models/{validate_model_name(model)}/load",
                   json=body, timeout=timeout_s)

    def unload(self, model: str) -> None:
        self._json("POST", f"/v2/repository/models/{validate_model_name(model)}/unload", json={})

    def infer_text(self, model: str, texts: Sequence[str], request_id: str | None = None,
                   version: int | None = None) -> TextInference:
        body: dict[str, Any] = {"inputs": [{"name": "text", "shape": [len(texts)],
                                            "datatype": "BYTES", "data": list(texts)}]}
        if request_id is not None:
            body["id"] = request_id
        answer = self._json("POST", _model_path(model, version) + "/infer", json=body)
        return TextInference(model_version=str(answer.get("model_version")),
                             request_id=answer.get("id"),
                             outputs={o["name"]: list(o["data"]) for o in answer["outputs"]})

    def infer_tensors(self, model: str, inputs: dict[str, np.ndarray],
                      version: int | None = None) -> TensorInference:
        """INT64 (ids) and FP32 (a KV cache) tensors in, FP32 outputs back as arrays: what
        Triton's ONNX backend serves."""
        body = {"inputs": [_tensor(name, array) for name, array in inputs.items()]}
        answer = self._json("POST", _model_path(model, version) + "/infer", json=body)
        outputs = {o["name"]: np.asarray(o["data"], dtype=np.float32).reshape(o["shape"])
                   for o in answer["outputs"]}
        return TensorInference(model_version=str(answer.get("model_version")), outputs=outputs)

    def observe(self, model: str) -> Observation:
        try:
            ready = self.ready()
            version = self.served_version(model)
        except ReplicaUnavailableError as exc:
            return Observation(self.url, reachable=False, ready=False, version=None,
                               error=exc.message)
        return Observation(self.url, reachable=True, ready=ready, version=version)

    def _ok(self, method: str, path: str) -> bool:
        try:
            response = self._http.request(method, path)
        except httpx.TransportError as exc:
            raise ReplicaUnavailableError(self.url, f"{method} {path}: {exc!r}") from exc
        return response.status_code == 200

    def _json(self, method: str, path: str, json: Any = None,
              timeout: float | None = None) -> Any:
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, path, json=json, **extra)
        except httpx.TransportError as exc:
            raise ReplicaUnavailableError(self.url, f"{method} {path}: {exc!r}") from exc
        if response.status_code >= 500:
            raise ReplicaUnavailableError(self.url, f"{method} {path}: HTTP "
                                          f"{response.status_code}: {_error_text(response)}")
        if response.status_code >= 400:
            raise ReplicaRejectedError(self.url, response.status_code, _error_text(response))
        return response.json() if response.content else {}


class FleetClient:
    """The replicas of one fleet, in configuration order (the rollout order)."""

    def __init__(self, urls: Sequence[str], timeout_s: float = 10.0,
                 token: str | None = None) -> None:
        if not urls:
            raise ValueError("a fleet needs at least one replica URL")
        self.replicas = [ReplicaClient(url, timeout_s, token) for url in urls]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def replica(self, url: str) -> ReplicaClient:
        for replica in self.replicas:
            if replica.url == url.rstrip("/"):
                return replica
        raise KeyError(url)

    def observe(self, model: str) -> dict[str, Observation]:
        return {r.url: r.observe(model) for r in self.replicas}

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()


def _model_path(model: str, version: int | None = None) -> str:
    path = f"/v2/models/{validate_model_name(model)}"
    return path if version is None else f"{path}/versions/{int(version)}"


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        return response.text[:500]


def _tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """One KServe v2 JSON tensor: floats as FP32, everything else as INT64."""
    floating = np.issubdtype(array.dtype, np.floating)
    data = array.astype(np.float32 if floating else np.int64)
    return {"name": name, "datatype": "FP32" if floating else "INT64",
            "shape": list(array.shape), "data": data.ravel().tolist()}
