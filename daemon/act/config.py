"""The policy part of lifeguard's config: per-model triggers, hold, cooldown, caps and mode, the
named pipelines they run, and the runner's limits. Unknown keys fail with their path.

Triggers are data, never code: a tree of ``all`` / ``any`` groups whose leaves match detector
result keys (``DetectorResult.key``) with a glob where only ``*`` and ``?`` are special, so that
``drift.score[text_length]`` is literal and ``drift.*`` covers every drifted column.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from lifeguard.config import Duration, StrictModel

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"




class Mode(StrEnum):
    AUTO = "auto"  # run as soon as the trigger fires
    APPROVE = "approve"  # wait in pending_approval until someone approves
    DRY_RUN = "dry-run"  # record what would have run; execute nothing


class Condition(StrictModel):
    """A trigger node: exactly one of ``key`` (a leaf), ``all`` or ``any`` (groups).

    A leaf matches detector results whose key matches the glob ``key``. A result counts when
    its verdict is breach (the detector's own threshold) or, when ``above`` / ``below`` is
    given, when its statistic crosses that bound instead. The leaf holds when at least
    ``min_matches`` matching results count. One class rather than a union, so that a
    misspelled key's error path is exactly its path in the YAML.
    """

    key: str | None = Field(
        None, min_length=1, description="glob over DetectorResult.key; only * and ? are special"
    )
    above: float | None = Field(None, description="override: statistic > above counts as breach")
    below: float | None = Field(None, description="override: statistic < below counts as breach")
    min_matches: int = Field(1, ge=1)
    all: list[Condition] | None = Field(None, min_length=1, description="every child holds")
    any: list[Condition] | None = Field(None, min_length=1, description="some child holds")

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        kinds = [k for k in ("key", "all", "any") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a condition needs exactly one of key, all, any (got {kinds})")
        if self.key is None and (
            self.above is not None or self.below is not None or self.min_matches != 1
        ):
            raise ValueError("above / below / min_matches belong on a key condition")
        if self.above is not None and self.below is not None:
            raise ValueError("give at most one of above / below")
        return self


class ModelPolicy(StrictModel):
    """When and how lifeguard acts for one model."""

    trigger: Condition | None = Field(
        None, description="breach condition over detector results; none = alerts only"
    )
    hold: int = Field(1, ge=1, description="consecutive evaluations the trigger must hold")
    min_samples: int = Field(
        0, ge=0, description="results from fewer current samples never count as breached"
    )
    cooldown: Duration = Field(3600.0, description="no new run this long after the last one")
    max_runs_per_day: int = Field(3, ge=1, description="runs created in any 24 h, all sources")
    mode: Mode = Mode.APPROVE
    pipeline: str = Field("retrain", pattern=_NAME)
    alerts: bool = Field(True, description="accept Alertmanager alerts as triggers")
    alert_pipelines: list[str] = Field(
        default_factory=list,
        description="pipelines an alert's pipeline label may start besides `pipeline`; an "
        "alert naming any other pipeline is refused")

    def own_pipelines(self) -> list[str]:
        """What an alert for this model may start: never another model's pipeline."""
        return [self.pipeline, *self.alert_pipelines]


def _step_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class StepConfig(StrictModel):
    """One step of a pipeline: a registered name (or a ``module:function``), params, limits."""

    name: str = Field(pattern=_NAME)
    uses: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function to call instead of the registered step of this name",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    timeout: Duration = Field(3600.0, gt=0, description="the worker is killed after this long")
    max_attempts: int = Field(3, ge=1, description="tries for retryable errors and crashes")


class PipelineConfig(StrictModel):
    steps: list[Annotated[StepConfig, BeforeValidator(_step_shorthand)]] = Field(min_length=1)
    backoff: Duration = Field(5.0, description="first retry delay; doubles per attempt")
    max_backoff: Duration = Field(300.0)


class RunnerConfig(StrictModel):
    max_concurrent_runs: int = Field(1, ge=1, description="runs executing at once, all models")
    poll_interval: Duration = Field(1.0, gt=0)
    work_dir: str | None = Field(None, description="per-run directories; default <state dir>/runs")
    instance_id: str | None = Field(
        None, description="this instance's name in run leases; default: host name and pid")
    lease_ttl: Duration = Field(30.0, gt=0, description="a run's lease lapses when its holder "
                                "has not renewed it for this long; then another instance "
                                "takes the run over from its last finished step")


class AlertsConfig(StrictModel):
    model_label: str = "model"
    pipeline_label: str = "pipeline"


class AuditConfig(StrictModel):
    """How much the audit log says about a breach that lasts: it always records the breach's
    beginning and its end; in between, at most one reminder per ``breach_reminder``."""

    breach_reminder: Duration = Field(
        3600.0, ge=0, description="at most one 'breach.ongoing' line this often (0 = none)")


class PolicySettings(StrictModel):
    """The policy slice of the root config: what the policy engine and runner need."""

    models: dict[str, ModelPolicy] = Field(default_factory=dict)
    pipelines: dict[str, PipelineConfig] = Field(default_factory=dict)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @model_validator(mode="after")
    def _pipelines_exist(self) -> PolicySettings:
        check_pipeline_refs({f"models.{k}": v for k, v in self.models.items()}, self.pipelines)
        return self


def check_pipeline_refs(
    policies: Mapping[str, ModelPolicy], pipelines: Mapping[str, PipelineConfig]
) -> None:
    """Every policy's pipeline must be defined. ``policies`` is keyed by the policy's path in
    the config (e.g. ``models.0.policy``), so the error names where to fix it."""
    for path, policy in policies.items():
        known = ", ".join(sorted(pipelines)) or "none defined"
        if policy.pipeline not in pipelines:
            raise ValueError(f"{path}.pipeline: unknown pipeline {policy.pipeline!r} ({known})")
        for i, name in enumerate(policy.alert_pipelines):
            if name not in pipelines:
                raise ValueError(f"{path}.alert_pipelines.{i}: unknown pipeline {name!r} "
                                 f"({known})")
