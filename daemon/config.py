"""The daemon's configuration: one YAML file, validated at start-up by pydantic.

Unknown keys are rejected with the dotted path of the key (``models.0.policy.trigerr``), so a
misspelled setting fails loudly instead of silently taking its default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from daemon.act.config import (
    AlertsConfig,
    AuditConfig,
    ModelPolicy,
    PipelineConfig,
    PolicySettings,
    RunnerConfig,
    check_pipeline_refs,
)
from daemon.ingest.config import KafkaConfig
from daemon.monitor.config import (
    EvaluationConfig,
    EvaluatorConfig,
    LabelJoinConfig,
    ReferenceConfig,
    WindowConfig,
)
from deploy.config import FleetConfig
from detectors.config import SuiteConfig
from lifeguard.config import StrictModel
from lifeguard.errors import LifeguardError
from lifeguard.tasks import Task

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class ConfigError(LifeguardError, ValueError):
    """The configuration file cannot be used; the message names each bad key's path."""


MIN_TOKEN_CHARS = 16


def _checked_token(value: str, where: str) -> str:
    """A credential that an empty string or a guessable word would satisfy is no credential."""
    if len(value.strip()) < MIN_TOKEN_CHARS:
        raise ConfigError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} characters "
                          f"(got {len(value.strip())}); generate one with `openssl rand -hex 32`")
    return value.strip()


class ApiConfig(StrictModel):
    """The HTTP server: /metrics, /healthz, /readyz and the control API.

    Two credentials, each good for its own endpoints only: ``token`` for on-call actions
    (approve, reject, pause, resume; audited as ``oncall``) and ``webhook_token`` for the
    Alertmanager webhook (audited as ``alertmanager``). Either may come from its env var.
    """

    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description=f"Bearer token for on-call mutations, at least {MIN_TOKEN_CHARS} "
        "characters.")
    token_env: str = Field("LIFEGUARD_TOKEN", description="Env var read when token is unset.")
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token of the Alertmanager webhook (POST /api/v1/alerts) only; "
        f"at least {MIN_TOKEN_CHARS} characters.")
    webhook_token_env: str = Field("LIFEGUARD_WEBHOOK_TOKEN",
                                   description="Env var read when webhook_token is unset.")
    max_body_bytes: int = Field(64 * 1024, ge=1024,
                                description="Larger request bodies are answered 413.")
    max_connections: int = Field(64, ge=1, description="More at once are answered 503.")
    docs: bool = Field(False, description="Serve the OpenAPI UI at /docs (and /openapi.json).")

    @field_validator("token", "webhook_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                return SecretStr(_checked_token(value.get_secret_value(), "token"))
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("token: ")) from None
        return value

    def resolved_token(self) -> str | None:
        """The on-call token; ConfigError if the env var holds one too short to be safe."""
        return self._resolve(self.token, self.token_env)

    def resolved_webhook_token(self) -> str | None:
        return self._resolve(self.webhook_token, self.webhook_token_env)

    @staticmethod
    def _resolve(token: SecretStr | None, env: str) -> str | None:
        if token is not None:
            return token.get_secret_value()
        value = os.environ.get(env)
        if not value:  # an empty variable is unset (a Secret left empty on purpose)
            return None
        return _checked_token(value, f"environment variable {env}")


class StateConfig(StrictModel):
    """Where the durable state lives: a SQLite file for one instance, or one PostgreSQL
    database that every instance of a consumer group shares."""

    path: Path = Field(Path("var/lifeguard.db"), description="The SQLite file (no url set); "
                       "runs/ and reports/ default to directories beside it.")
    url: str | None = Field(
        None, description="postgresql://user:password@host/db for several instances sharing one "
        "state (or sqlite:///path); default: the SQLite file at `path`.")
    artifacts_dir: Path = Path("var/artifacts")

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgresql+psycopg://",
                                                   "sqlite:///")):
            raise ValueError("state.url must start with postgresql:// or sqlite:///")
        return url

    @property
    def location(self) -> str:
        """The store's URL, or the SQLite path when no url is set."""
        return self.url or str(self.path)


class ModelConfig(StrictModel):
    """One model the daemon watches."""

    name: str
    task: Task = "sequence-classification"
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

    @model_validator(mode="after")
    def _one_task(self) -> ModelConfig:
        """The detectors judge the model's own task: a ``detectors.task`` that says otherwise
        is a mistake, not a setting to overwrite silently."""
        if "task" in self.detectors.model_fields_set and self.detectors.task != self.task:
            raise ValueError(f"detectors.task is {self.detectors.task!r} but the model's task "
                             f"is {self.task!r}; leave detectors.task out")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _MODEL_NAME.match(name):
            raise ValueError("model names are 1-128 of [A-Za-z0-9_.-], starting alphanumeric")
        return name


class DaemonConfig(StrictModel):
    kafka: KafkaConfig = KafkaConfig()
    api: ApiConfig = ApiConfig()
    state: StateConfig = StateConfig()
    models: list[ModelConfig] = Field(default_factory=list)
    evaluation: EvaluatorConfig = Field(
        EvaluatorConfig(), description="Where detector passes run, for every model.")
    pipelines: dict[str, PipelineConfig] = Field(
        default_factory=dict, description="Named pipelines: ordered steps with params."
    )
    runner: RunnerConfig = RunnerConfig()
    fleet: FleetConfig | None = Field(
        None, description="The serving fleet the deploy step rolls out to; none = no deploys.")
    alerts: AlertsConfig = AlertsConfig()
    audit: AuditConfig = AuditConfig()

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

    def replay_depth(self) -> int:
        """Messages re-read per partition on assignment: ``kafka.replay_messages``, or enough
        to refill every model's window and reference (a model with a reference file needs
        only its window), should all the models share one partition."""
        if self.kafka.replay_messages is not None:
            return self.kafka.replay_messages
        models = self.models or [ModelConfig(name="default")]
        return sum(m.window.size + (0 if m.reference.path else m.reference.first_n)
                   for m in models)


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
    from actions.steps import STEPS, check_params

    for name, pipeline in pipelines.items():
        for i, step in enumerate(pipeline.steps):
            if step.uses is None and step.name in STEPS:
                try:
                    check_params(step.name, step.params)
                except ValueError as exc:
                    raise ValueError(f"pipelines.{name}.steps.{i}.params: {exc}") from None
