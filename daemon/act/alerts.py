"""Alertmanager as a trigger source: validate a webhook (payload version 4), drop resends by
(fingerprint, startsAt), record resolved alerts without acting, hand new firing ones to policy.

Validation errors carry a one-line reason for the HTTP 400; nothing is recorded for a payload
that fails validation (it is all or nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from daemon.act.config import AlertsConfig
from daemon.act.policy import PolicyEngine
from daemon.act.store import StateStore
from lifeguard.errors import LifeguardError


class AlertPayloadError(LifeguardError, ValueError):
    """The webhook body is not a valid Alertmanager v4 payload; ``str()`` is the reason."""


class _Lenient(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, required ones are checked.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Alert(_Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str | None = None
    fingerprint: str = Field(min_length=1)

    @field_validator("startsAt")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"not an RFC 3339 time: {value!r}") from exc
        return value


class WebhookPayload(_Lenient):
    version: Literal["4"]
    groupKey: str = ""
    status: Literal["firing", "resolved"]
    receiver: str = ""
    alerts: list[Alert]


def parse_webhook(body: bytes) -> WebhookPayload:
    """Parse and validate, or raise AlertPayloadError naming the first bad field."""
    try:
        raw: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AlertPayloadError(f"body is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise AlertPayloadError("body must be a JSON object")
    try:
        return WebhookPayload.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise AlertPayloadError(f"{path}: {first['msg']}") from exc


@dataclass(frozen=True, slots=True)
class WebhookResult:
    received: int
    duplicates: int
    resolved: int
    runs_created: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # one reason per alert not acted on

    def to_json(self) -> dict[str, Any]:
        return {"received": self.received, "duplicates": self.duplicates,
                "resolved": self.resolved, "runs_created": self.runs_created,
                "ignored": self.ignored}


def handle_webhook(payload: WebhookPayload, store: StateStore, engine: PolicyEngine,
                   labels: AlertsConfig) -> WebhookResult:
    duplicates = resolved = 0
    runs: list[str] = []
    ignored: list[str] = []
    for alert in payload.alerts:
        model = alert.labels.get(labels.model_label)
        if not store.record_alert(alert.fingerprint, alert.startsAt, alert.status, model,
                                  payload.groupKey or None, alert.labels):
            duplicates += 1
            continue
        if alert.status == "resolved":
            resolved += 1
            continue
        if model is None:
            reason = f"alert {alert.fingerprint} has no {labels.model_label!r} label"
            store.audit("trigger.ignored", "alertmanager", None, None, {"reason": reason})
            ignored.append(reason)
            continue
        evidence = {"fingerprint": alert.fingerprint, "startsAt": alert.startsAt,
                    "groupKey": payload.groupKey, "labels": alert.labels,
                    "annotations": alert.annotations}
        try:
            decision = engine.on_alert(model, alert.labels.get(labels.pipeline_label),
                                       alert.fingerprint, alert.startsAt, evidence)
        except Exception as exc:
            # Not acted on: forget we saw it, so Alertmanager's retry of this 500 is not
            # dropped as a duplicate.
            store.forget_alert(alert.fingerprint, alert.startsAt, alert.status, repr(exc))
            raise
        if decision.fire and decision.run_id:
            runs.append(decision.run_id)
        else:
            ignored.append(f"{alert.fingerprint}: {decision.reason}")
    return WebhookResult(received=len(payload.alerts), duplicates=duplicates, resolved=resolved,
                         runs_created=runs, ignored=ignored)
