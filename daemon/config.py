"""The daemon's configuration: one YAML file, validated at start-up by pydantic.

Unknown keys are rejected with the dotted path of the key (``models.0.policy.trigerr``), so a
misspelled setting fails loudly instead of silently taking its default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.monitoring_config import (
    EvaluationConfig,
    LabelJoinConfig,
    ReferenceConfig,
    WindowConfig,
)
from daemon.policy_config import (
    AlertsConfig,
    ModelPolicy,
    PipelineConfig,
    PolicySettings,
    RunnerConfig,
    check_pipeline_refs,
)
from deploy.config import FleetConfig
from detectors.config import SuiteConfig

EMBEDDED: Final = "embedded"
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigError(ValueError):
    """The configuration file cannot be used; the message names each bad key's path."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(Strict):
    """Where inference and feedback events come from."""

    bootstrap_servers: list[str] | Literal["embedded"] = Field(
        EMBEDDED, description="Kafka brokers, or 'embedded' to start a local broker."
    )
    topics: list[str] = Field(["inference"], min_length=1)
    group_id: str = "lifeguard"
    client_id: str = "lifeguard"
    dead_letter_topic: str = "lifeguard.dead-letter"
    max_message_bytes: int = Field(1 << 20, gt=0, description="Larger messages are dead-lettered.")
    max_batch: int = Field(2000, gt=0, description="Most records applied per poll.")
    poll_timeout_ms: int = Field(100, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    replay_messages: int = Field(
        0, ge=0,
        description="On partition assignment, re-read up to this many already-committed messages "
        "per partition to rebuild windows (counted as replayed, never acted on).",
    )
    partitions: int = Field(3, gt=0, description="Partitions for topics the daemon creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to kafka-python as-is: security_protocol, sasl_*, ssl_*, ...",
    )


class ApiConfig(Strict):
    """The HTTP server: /metrics, /healthz, /readyz and the control API."""

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token: SecretStr | None = Field(None, description="Bearer token for mutating endpoints.")
    token_env: str = Field("LIFEGUARD_TOKEN", description="Env var read when token is unset.")

    def resolved_token(self) -> str | None:
        if self.token is not None:
            return self.token.get_secret_value()
        return os.environ.get(self.token_env) or None


class StateConfig(Strict):
    path: Path = Path("var/lifeguard.db")
    artifacts_dir: Path = Path("var/artifacts")


class ModelConfig(Strict):
    """One model the daemon watches."""

    name: str
    task: Literal["sequence-classification", "causal-lm"] = "sequence-classification"
    window: WindowConfig = WindowConfig()
    reference: ReferenceConfig = ReferenceConfig()
    labels: LabelJoinConfig = LabelJoinConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    detectors: SuiteConfig = Field(SuiteConfig(), description="Detector thresholds and methods.")
    base_model: Path | None = Field(
        None, description="The serving model's training checkpoint (save_pretrained layout): "
        "what the first retrain starts from and the gate's first champion.")
    embedding_model: Path | None = Field(
        None, description="Sentence encoder directory for embedding drift; default: the "
        "packaged all-MiniLM-L6-v2.")
    policy: ModelPolicy | None = Field(None, description="When and how to act; none = watch only.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _MODEL_NAME.match(name):
            raise ValueError("model names are 1-128 of [A-Za-z0-9_.-], starting alphanumeric")
        return name


class DaemonConfig(Strict):
    kafka: KafkaConfig = KafkaConfig()
    api: ApiConfig = ApiConfig()
    state: StateConfig = StateConfig()
    models: list[ModelConfig] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig] = Field(
        default_factory=dict, description="Named pipelines: ordered steps with params."
    )
    runner: RunnerConfig = RunnerConfig()
    fleet: FleetConfig | None = Field(
        None, description="The serving fleet the deploy step rolls out to; none = no deploys.")
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _pipelines_exist(self) -> DaemonConfig:
        policies = {f"models.{i}.policy": m.policy for i, m in enumerate(self.models) if m.policy}
        check_pipeline_refs(policies, self.pipelines)
        _check_step_params(self.pipelines)
        return self

    def policy_settings(self) -> PolicySettings:
        """The slice the policy engine, runner and control API need."""
        return PolicySettings(
            models={m.name: m.policy for m in self.models if m.policy is not None},
            pipelines=self.pipelines, runner=self.runner, alerts=self.alerts,
        )

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique, repeated: {', '.join(dupes)}")
        return models

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def parse_config(data: object, source: str = "<config>") -> DaemonConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return DaemonConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None


def load_config(path: Path | str) -> DaemonConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{where}: {message}")
    return f"{len(lines)} invalid setting(s)\n  " + "\n  ".join(lines)


def _check_step_params(pipelines: dict[str, PipelineConfig]) -> None:
    """Params of the built-in steps are checked now, not when a run reaches them."""
    from actions.pipeline import STEP_REFS, check_params

    for name, pipeline in pipelines.items():
        for i, step in enumerate(pipeline.steps):
            if step.uses is None and step.name in STEP_REFS:
                try:
                    check_params(step.name, step.params)
                except ValueError as exc:
                    raise ValueError(f"pipelines.{name}.steps.{i}.params: {exc}") from None
