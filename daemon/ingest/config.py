"""Where events come from: the Kafka part of lifeguard's config."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from lifeguard.config import Duration, StrictModel

EMBEDDED: Final = "embedded"


class KafkaConfig(StrictModel):
    """Where inference and feedback events come from."""

    bootstrap_servers: list[str] | Literal["embedded"] = Field(
        EMBEDDED, description="Kafka brokers, or 'embedded' to start a local broker."
    )
    topics: list[str] = Field(["inference"], min_length=1)
    group_id: str = "lifeguard"
    client_id: str = "lifeguard"
    dead_letter_topic: str = Field("lifeguard.dead-letter", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    dead_letter_retries: int = Field(
        5, ge=1, description="Failed sends in a row before a partition whose dead letters the "
        "topic refuses is reported paused (/healthz fails); retries go on at max backoff.")
    dead_letter_backoff: Duration = Field(0.5, gt=0, description="First retry delay; doubles.")
    dead_letter_max_backoff: Duration = Field(30.0, gt=0)
    max_message_bytes: int = Field(1 << 20, gt=0, description="Larger messages are dead-lettered.")
    max_batch: int = Field(2000, gt=0, description="Most records applied per poll.")
    poll_timeout_ms: int = Field(100, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3000, ge=100)
    replay_messages: int | None = Field(
        None, ge=0,
        description="On partition assignment, re-read up to this many already-committed messages "
        "per partition to rebuild windows and references (counted as replayed, never acted "
        "on). Default: the models' window sizes plus reference sizes; 0 turns replay off.",
    )
    max_models: int = Field(
        100, ge=0, description="Models not named under `models:` admitted, first come, up to "
        "this many; events of any other model are dead-lettered as unknown_model.")
    max_versions: int = Field(
        8, ge=1, description="Versions tracked per model. A new one beyond this retires the "
        "least recently seen version (its series leave /metrics) once that has been idle for "
        "version_idle; until then the new version's events are dead-lettered "
        "as too_many_versions.")
    version_idle: Duration = Field(600.0, gt=0)
    max_event_skew: Duration | None = Field(
        300.0, gt=0, description="An event time further than this from its record's broker "
        "timestamp (and, ahead, from the daemon's clock) is clamped to that bound and counted; "
        "null trusts event times as they come.")
    max_text_bytes: int = Field(
        4096, ge=64, description="Input text, output text, reference and error are cut to this "
        "many UTF-8 bytes (counted in lifeguard_truncated_fields_total).")
    max_id_bytes: int = Field(
        256, ge=16, description="Request ids, model and version names, replica, labels and "
        "feature keys are cut to this many bytes.")
    max_input_fields: int = Field(64, ge=1, description="Flat input features kept per event.")
    partitions: int = Field(3, gt=0, description="Partitions for topics the daemon creates.")
    create_topics: bool = Field(True, description="Create missing topics at start-up.")
    replication_factor: int = Field(
        1, ge=1, description="Replicas of the topics the daemon creates (the dead-letter topic "
        "included); 3 on a production cluster.")
    client_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to kafka-python as-is: security_protocol, sasl_*, ssl_*, ...",
    )
