"""A Judge that asks the daemon's canary-analysis endpoint over HTTP.

The deploy step runs in a worker process, away from the daemon's windows: it reaches them the
way an external progressive-delivery controller would.
"""

from __future__ import annotations

import httpx

from deploy.verdict import CanaryQuery, CanaryVerdict


class RemoteJudge:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        params: dict[str, float | int] = {"canary": query.canary_version, "since": query.since_s}
        if query.stable_version is not None:
            params["stable"] = query.stable_version
        try:
            response = self._client.get(f"{self.base_url}/canary/{query.model}", params=params)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            # The judge being unreachable is no evidence either way: wait, never promote.
            return CanaryVerdict("insufficient", f"canary analysis unavailable: {exc}", 0)
        return CanaryVerdict(body["verdict"], body.get("reason", ""), int(body.get("events", 0)),
                             body.get("evidence") or {})

    def close(self) -> None:
        self._client.close()
